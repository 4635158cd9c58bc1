"""The blob stores, each behaviour checked on both: a local directory, and S3 through a real S3
server speaking HTTP (moto's standalone server, in a thread of this process)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from lectern.blobs import CHUNK, BlobStore, LocalBlobStore, S3BlobStore

S3_OPTIONS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
DATA = bytes(range(256)) * 40  # 10 KB, every byte value at a known position


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"lectern-{uuid.uuid4().hex[:12]}"  # a fresh bucket per test
    boto3.client("s3", endpoint_url=endpoint, **S3_OPTIONS).create_bucket(Bucket=bucket)
    return S3BlobStore(bucket, prefix="files/", endpoint_url=endpoint, **S3_OPTIONS)


@pytest.fixture
def upload(tmp_path: Path) -> Iterator:
    """A spooled upload: a temporary file holding ``data``, as the files API will hand over."""
    spool = tmp_path / "spool"
    spool.mkdir()

    def make(data: bytes) -> Path:
        path = spool / uuid.uuid4().hex
        path.write_bytes(data)
        return path

    yield make


async def read_all(store: BlobStore, key: str, start: int = 0, length: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, start, length)])


async def test_put_then_read_gives_the_bytes_back_and_takes_the_upload(store: BlobStore, upload) -> None:
    source = upload(DATA)
    await store.put("ab/cd/upload.wav", source)
    assert await read_all(store, "ab/cd/upload.wav") == DATA
    assert not source.exists()  # taken, not copied: no spooled upload is left behind


@pytest.mark.parametrize(
    ("start", "length", "expected"),
    [
        (1000, None, DATA[1000:]),  # start only
        (1000, 300, DATA[1000:1300]),  # start and length
        (0, 300, DATA[:300]),  # length only
        (len(DATA) - 10, 300, DATA[-10:]),  # length past the end: what there is
        (len(DATA) - 1, None, DATA[-1:]),
        (len(DATA), None, b""),  # start at the end: nothing, not an error
        (len(DATA) + 500, 10, b""),  # start past the end
        (1000, 0, b""),  # length 0 (S3 would ignore "bytes=1000-999" and send the whole object)
    ],
    ids=["start", "start+length", "length", "length-past-end", "last-byte", "at-end", "past-end", "length-0"],
)
async def test_read_a_range(store: BlobStore, upload, start: int, length: int | None, expected: bytes) -> None:
    await store.put("blob", upload(DATA))
    assert await read_all(store, "blob", start, length) == expected


async def test_an_empty_blob_reads_as_nothing(store: BlobStore, upload) -> None:
    await store.put("empty", upload(b""))
    assert await read_all(store, "empty") == b""
    assert await read_all(store, "empty", 0, 10) == b""
    async with store.local_path("empty") as path:
        assert path.read_bytes() == b""


async def test_a_multi_megabyte_blob_reads_in_bounded_chunks_and_any_ranges(store: BlobStore, upload) -> None:
    data = random.Random(7).randbytes(9 * 1024 * 1024 + 123)  # past boto3's 8 MB multipart threshold
    await store.put("big.flac", upload(data))
    sizes = [len(chunk) async for chunk in store.read("big.flac")]
    assert sum(sizes) == len(data) and max(sizes) <= CHUNK
    # Ranges of odd sizes crossing chunk boundaries, read one after another, make up the blob.
    step = 1024 * 1024 + 7
    parts = [await read_all(store, "big.flac", start, step) for start in range(0, len(data), step)]
    assert [len(p) for p in parts[:-1]] == [step] * (len(parts) - 1)
    assert b"".join(parts) == data
    assert await read_all(store, "big.flac", 5 * 1024 * 1024 - 3, 10) == data[5 * 1024 * 1024 - 3 :][:10]


async def test_local_path_holds_the_bytes(store: BlobStore, upload) -> None:
    await store.put("a/b/c.mp3", upload(DATA))
    async with store.local_path("a/b/c.mp3") as path:
        assert path.is_file()
        assert path.read_bytes() == DATA


async def test_put_on_an_existing_key_replaces_the_blob(store: BlobStore, upload) -> None:
    await store.put("k", upload(b"first version, longer than the second"))
    await store.put("k", upload(b"second"))
    assert await read_all(store, "k") == b"second"


async def test_a_missing_blob_is_file_not_found(store: BlobStore) -> None:
    with pytest.raises(FileNotFoundError):
        await read_all(store, "never/was")
    with pytest.raises(FileNotFoundError):
        await read_all(store, "never/was", 10, 5)
    with pytest.raises(FileNotFoundError):
        async with store.local_path("never/was"):
            pass


async def test_delete_removes_the_blob_and_deleting_a_missing_one_is_fine(store: BlobStore, upload) -> None:
    await store.put("gone/soon", upload(DATA))
    await store.put("gone/stays", upload(b"other"))
    await store.delete("gone/soon")
    with pytest.raises(FileNotFoundError):
        await read_all(store, "gone/soon")
    await store.delete("gone/soon")  # again
    await store.delete("never/was")
    assert await read_all(store, "gone/stays") == b"other"


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "", "a//b", "./a"])
async def test_a_key_that_is_not_a_plain_relative_path_is_refused(
    store: BlobStore, upload, tmp_path: Path, key: str
) -> None:
    source = upload(DATA)
    with pytest.raises(ValueError):
        await store.put(key, source)
    assert source.exists()  # nothing was taken
    with pytest.raises(ValueError):
        await read_all(store, key)
    with pytest.raises(ValueError):
        async with store.local_path(key):
            pass
    with pytest.raises(ValueError):
        await store.delete(key)
    assert not (tmp_path / "x").exists()


async def test_local_blobs_are_files_under_the_root(tmp_path: Path, upload) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.put("a/b.wav", upload(DATA))
    assert (tmp_path / "blobs" / "a" / "b.wav").read_bytes() == DATA
    async with store.local_path("a/b.wav") as path:
        assert path == (tmp_path / "blobs" / "a" / "b.wav").resolve()


async def test_a_symlink_out_of_the_local_root_is_refused(tmp_path: Path, upload) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "link").symlink_to(outside)
    store = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(ValueError, match="escapes"):
        await store.put("link/x", upload(DATA))
    assert not (outside / "x").exists()


async def test_s3_blobs_are_objects_under_the_prefix(s3_endpoint: str, upload) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint, **S3_OPTIONS)
    client.create_bucket(Bucket="lectern-prefix")
    store = S3BlobStore("lectern-prefix", prefix="tenant-1/", endpoint_url=s3_endpoint, **S3_OPTIONS)
    await store.put("a/b.wav", upload(DATA))
    listed = client.list_objects_v2(Bucket="lectern-prefix")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("tenant-1/a/b.wav", len(DATA))]
    await store.delete("a/b.wav")
    assert client.list_objects_v2(Bucket="lectern-prefix")["KeyCount"] == 0
