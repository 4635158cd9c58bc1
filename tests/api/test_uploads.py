"""Multipart reception (``api/uploads.py``) through the files upload endpoint, on a server whose
``max_upload_bytes`` is the size of one small WAV: the limit holds at its edge whether the body
declares its length, lies about it, or is chunked; malformed bodies are clean 400s; and no
temporary file outlives a request, whatever becomes of it.

Raw sockets send what no well-behaved client would (a body that stops short of its end) and show
that the server answers at the limit, without waiting for the rest.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.api.test_files_api import BASE, Stored, files_in, fresh_key, stored, upload, wav_of
from tests.api.test_streams_api import assert_problem, auth
from tests.conftest import LecternServer

WAV = wav_of(1.0)  # 32,044 bytes
LIMIT = len(WAV)
BOUNDARY = "lectern-upload-test-7f3a"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, value: bytes, filename: str | None = None, content_type: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    headers = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if content_type:
        headers += f"Content-Type: {content_type}\r\n"
    return headers.encode() + b"\r\n" + value + b"\r\n"


def multipart(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def file_part(content: bytes) -> bytes:
    return part("file", content, "a.wav", "audio/wav")


FILE_HEAD = file_part(b"")[:-2]  # what precedes the file's bytes in multipart(file_part(...))


@pytest.fixture(scope="module")
def small(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    srv = LecternServer(tmp_path_factory.mktemp(f"uploads-{backend}"), backend, {"max_upload_bytes": LIMIT})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key(small: LecternServer) -> str:
    return fresh_key(small)


@pytest.fixture(scope="module")
def http(small: LecternServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small.base_url, timeout=60) as client:
        yield client


def post(http: httpx.Client, key: str, body: bytes | Iterator[bytes], content_type: str = MULTIPART) -> httpx.Response:
    return http.post(BASE, headers={**auth(key), "Content-Type": content_type}, content=body)


def pieces(body: bytes, size: int = 4096) -> Iterator[bytes]:
    """A generator body: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def unchanged(srv: LecternServer, before: Stored) -> bool:
    return stored(srv) == Stored(before.rows, before.blobs, 0)


# -- the size limit ---------------------------------------------------------------------------------


def test_exactly_the_limit_is_accepted_and_one_byte_more_is_413(http, small, key):
    accepted = upload(http, key, WAV)
    assert accepted.status_code == 201, accepted.text
    assert (accepted.json()["size"], accepted.json()["sha256"]) == (LIMIT, hashlib.sha256(WAV).hexdigest())
    before = stored(small)
    body = assert_problem(upload(http, key, WAV + b"\x00"), 413, "file")
    assert str(LIMIT) in body["detail"]
    assert unchanged(small, before)


def test_a_chunked_body_without_content_length_is_held_to_the_same_limit(http, small, key):
    accepted = post(http, key, pieces(multipart(file_part(WAV))))
    assert "content-length" not in accepted.request.headers
    assert accepted.request.headers["transfer-encoding"] == "chunked"
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["sha256"] == hashlib.sha256(WAV).hexdigest()
    before = stored(small)
    assert_problem(post(http, key, pieces(multipart(file_part(WAV + b"\x00")))), 413, "file")
    assert unchanged(small, before)


def test_a_declared_length_beyond_any_acceptable_body_is_refused_before_reading(small, key):
    status, _ = raw_exchange(small, key, {"Content-Length": str(100 * LIMIT + 10_000_000)}, [])  # no body sent
    assert status == 413
    assert not files_in(small.data_dir / "uploads")


@pytest.mark.parametrize("framing", ["chunked", "lying-content-length"])
def test_a_body_is_cut_as_soon_as_the_file_passes_the_limit(small, key, framing):
    """limit + 1 bytes of the file, then the client goes quiet: the answer comes at once (were the
    server to read on, it would wait for the rest of the body and this exchange would time out)."""
    before = stored(small)
    sent = FILE_HEAD + b"x" * (LIMIT + 1)
    if framing == "chunked":
        headers, chunks = {"Transfer-Encoding": "chunked"}, [f"{len(sent):x}\r\n".encode() + sent + b"\r\n"]
    else:
        headers, chunks = {"Content-Length": str(len(sent) + 100_000)}, [sent]
    status, body = raw_exchange(small, key, headers, chunks)
    assert status == 413, body
    assert unchanged(small, before)


def test_a_client_that_disconnects_mid_upload_leaves_no_temporary_file(http, small, key):
    before = stored(small)
    spool = small.data_dir / "uploads"
    with connect(small) as sock:
        sock.sendall(request_head(key, {"Content-Length": str(LIMIT + 1000)}))
        sock.sendall(FILE_HEAD + WAV[: LIMIT // 2])
        assert wait_for(lambda: len(files_in(spool)) == 1), "the upload was never spooled"
    assert wait_for(lambda: not files_in(spool)), files_in(spool)
    assert unchanged(small, before)
    assert upload(http, key, WAV).status_code == 201  # and the server is none the worse


# -- malformed bodies -------------------------------------------------------------------------------

FILE = file_part(WAV)
MALFORMED = {
    "no-file-part": (multipart(part("name", b"x")), "no file"),
    "two-file-parts": (multipart(FILE, FILE), "two"),
    "a-file-in-another-field": (multipart(FILE, part("other", b"x", "b.wav")), "only 'file'"),
    "field-too-large": (multipart(part("description", b"x" * 65537), FILE), "larger than"),
    "too-many-fields": (multipart(*(part(f"f{i}", b"v") for i in range(33)), FILE), "more than 32"),
    "non-utf8-field": (multipart(part("name", b"caf\xe9"), FILE), "UTF-8"),
    "no-closing-boundary": (FILE, "closing boundary"),
    "garbage": (b"this is not a multipart body at all", "malformed"),
    "no-field-name": (f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n".encode() + multipart(FILE),
                      "field name"),
    "bad-file-content-type": (multipart(part("file", WAV, "a.wav", "not a type")), "media type"),
    "empty-body": (b"", "closing boundary"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_body_is_400_and_leaves_nothing(http, small, key, case):
    body, says = MALFORMED[case]
    before = stored(small)
    problem = assert_problem(post(http, key, body), 400)
    assert says in problem["detail"], problem
    assert unchanged(small, before)


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("application/json", 415), ("application/x-www-form-urlencoded", 415), ("audio/wav", 415), ("", 415),
     ("multipart/mixed; boundary=x", 415), ("multipart/form-data", 400)],
)
def test_a_body_that_is_not_multipart_form_data_is_refused(http, small, key, content_type, status):
    before = stored(small)
    response = http.post(BASE, headers={**auth(key), "Content-Type": content_type}, content=WAV)
    assert_problem(response, status)
    assert unchanged(small, before)


def test_fields_may_come_before_or_after_the_file_and_repeat_is_refused(http, small, key):
    after = post(http, key, multipart(FILE, part("name", "naïve".encode()), part("tags", b'["x"]')))
    assert after.status_code == 201, after.text
    assert (after.json()["name"], after.json()["tags"]) == ("naïve", ["x"])
    before = stored(small)
    assert_problem(post(http, key, multipart(part("name", b"a"), part("name", b"b"), FILE)), 400, "name")
    assert unchanged(small, before)


# -- raw HTTP ---------------------------------------------------------------------------------------


def connect(srv: LecternServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)  # a hang fails the test, no more
    return sock


def request_head(key: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {BASE} HTTP/1.1", "Host: 127.0.0.1", f"X-API-Key: {key}", f"Content-Type: {MULTIPART}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def raw_exchange(srv: LecternServer, key: str, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, bytes]:
    """Send the head and ``chunks``, never the rest, and read the response's status and body."""
    with connect(srv) as sock:
        sock.sendall(request_head(key, headers))
        for chunk in chunks:
            sock.sendall(chunk)
        received = b""
        while b"\r\n\r\n" not in received:
            data = sock.recv(65536)
            assert data, f"the server closed the connection without answering: {received!r}"
            received += data
        head, _, body = received.partition(b"\r\n\r\n")
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
        length = int({k.strip().lower(): v for k, v in fields.items()}[b"content-length"])
        while len(body) < length:
            data = sock.recv(65536)
            assert data, "the server closed the connection mid-response"
            body += data
        return int(head.split(b" ")[1]), body


def wait_for(condition: Callable[[], Any], timeout: float = 15.0) -> bool:
    """Poll ``condition`` until it holds (the server acts on its own time), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
