"""Where uploaded files' bytes live: a local directory by default, or an S3-compatible bucket.

Both stores take a finished temporary file (an upload is spooled to disk while its size limit is
enforced), hand bytes back in chunks, and give a local path for decoders that need one.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lectern.settings import Settings

CHUNK = 256 * 1024
_MISSING = ("NoSuchKey", "404")  # GET's error code, and HEAD's (download_file), which has only the status


def _checked(key: str) -> str:
    """A key is a relative path of plain names ("uploads/ab/c.wav"), valid the same on every store:
    a key S3 would take but a directory would not ("../x", "/x", "a//b") is refused by both."""
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"blob key {key!r} is not a relative path of plain names")
    return key


class BlobStore(Protocol):
    """A missing blob is FileNotFoundError from ``read`` and ``local_path``; a malformed key is ValueError."""

    async def put(self, key: str, source: Path) -> None:
        """Take ``source`` (which may be moved away) as the blob ``key``."""
        ...

    def read(self, key: str, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """The bytes from ``start`` on (``length`` of them at most; none when ``start`` is past the end)."""
        ...

    def local_path(self, key: str) -> contextlib.AbstractAsyncContextManager[Path]:
        """The blob as a local file for the duration of the block."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob; removing a missing blob is not an error."""
        ...


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / _checked(key)).resolve()  # resolved: a symlink must not lead out either
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"blob key {key!r} escapes the store")
        return path

    async def put(self, key: str, source: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.move, source, target)

    async def read(self, key: str, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        with self._path(key).open("rb") as f:
            f.seek(start)
            remaining = length
            while remaining is None or remaining > 0:
                chunk = await asyncio.to_thread(f.read, CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    @contextlib.asynccontextmanager
    async def local_path(self, key: str) -> AsyncIterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no blob {key!r}")
        yield path

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3BlobStore:
    """Any S3-compatible service (AWS, MinIO, Ceph...) through boto3, run in threads."""

    def __init__(self, bucket: str, prefix: str = "", **client_options: Any) -> None:
        import boto3  # only needed when S3 is configured

        self.bucket = bucket
        self.prefix = prefix
        self._client = boto3.client("s3", **client_options)

    def _key(self, key: str) -> str:
        return f"{self.prefix}{_checked(key)}"

    async def put(self, key: str, source: Path) -> None:
        await asyncio.to_thread(self._client.upload_file, str(source), self.bucket, self._key(key))
        source.unlink(missing_ok=True)

    async def read(self, key: str, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        from botocore.exceptions import ClientError

        if length == 0:
            return  # "bytes=start-(start-1)" is no range at all: S3 would send the whole object
        options: dict[str, str] = {}
        if start or length is not None:
            last = "" if length is None else str(start + length - 1)
            options["Range"] = f"bytes={start}-{last}"
        try:
            response = await asyncio.to_thread(
                self._client.get_object, Bucket=self.bucket, Key=self._key(key), **options
            )
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == "InvalidRange":
                return  # starts at or past the end: nothing, as from a file
            if code in _MISSING:
                raise FileNotFoundError(f"no blob {key!r}") from exc
            raise
        body = response["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, CHUNK):
                yield chunk
        finally:
            body.close()

    @contextlib.asynccontextmanager
    async def local_path(self, key: str) -> AsyncIterator[Path]:
        from botocore.exceptions import ClientError

        with tempfile.TemporaryDirectory(prefix="lectern-blob-") as tmp:
            path = Path(tmp) / "blob"
            try:
                await asyncio.to_thread(self._client.download_file, self.bucket, self._key(key), str(path))
            except ClientError as exc:
                if exc.response["Error"]["Code"] in _MISSING:
                    raise FileNotFoundError(f"no blob {key!r}") from exc
                raise
            yield path

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=self._key(key))


def blob_store(settings: "Settings") -> BlobStore:
    """The configured store: an S3-compatible bucket when one is named, else the data dir."""
    if settings.s3_bucket:
        given = (("endpoint_url", settings.s3_endpoint_url), ("region_name", settings.s3_region))
        options = {name: value for name, value in given if value}
        return S3BlobStore(settings.s3_bucket, settings.s3_prefix, **options)
    return LocalBlobStore(settings.blobs_dir)
