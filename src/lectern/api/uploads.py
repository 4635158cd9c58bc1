"""Streaming multipart/form-data reception, shared by every endpoint that takes an uploaded file.

The body is parsed as it arrives (python-multipart's streaming parser): the one file part goes to a
temporary file in a spool directory, hashed on the way, and the other parts are small text fields
kept in memory. The size limit holds while the body streams, whatever the client declared, so an
oversized upload costs at most one network chunk past the limit, never the whole body.

Nothing here knows an endpoint's fields or error format: a caller maps ``UploadError`` to its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

# File bytes collect in memory up to this much, then one thread call hashes and writes them: the
# event loop never waits on the disk, and a thread hop costs once per batch, not once per chunk.
SPOOL_BATCH = 256 * 1024
# Per-part headers python-multipart accepts (lines, bytes per line). With a boundary line and its
# CRLFs this bounds a part's framing, which the Content-Length check allows for beside the payloads.
MAX_PART_HEADERS = 8
MAX_PART_HEADER_BYTES = 4096
PART_FRAMING = MAX_PART_HEADERS * (MAX_PART_HEADER_BYTES + 2) + 200
MAX_CONTENT_TYPE = 200  # the files table's column
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;[^\x00-\x1f\x7f]*)?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# python-multipart logs every malformed body as a warning; here that is the client's error, answered 400.
_PARSER_LOG = logging.getLogger(f"{__name__}.parser")
_PARSER_LOG.setLevel(logging.ERROR)


class UploadError(Exception):
    """The request is not an acceptable upload: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class StorageQuotaExceeded(UploadError):
    """The file passes what is left of its tenant's storage quota (413: refused while it streams)."""


@dataclass(slots=True)
class Upload:
    """A received upload: the file part spooled to ``path``, the text fields in memory.

    The temporary file is the caller's: move it away to keep it, or ``discard()`` it (leaving an
    ``async with upload:`` block discards it, a no-op once it has been moved).
    """

    path: Path
    filename: str  # as the client named it, without any directory part; "" when it gave none
    content_type: str | None  # the file part's declared Content-Type
    size: int
    sha256: str  # hex
    fields: dict[str, str]  # the last value of each text field
    values: dict[str, list[str]] = field(default_factory=dict)  # every value of each field, in order

    def getlist(self, name: str) -> list[str]:
        return self.values.get(name, [])

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)

    async def __aenter__(self) -> Upload:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


async def receive_upload(
    request: Request,
    *,
    max_bytes: int,
    spool_dir: Path,
    file_field: str = "file",
    max_field_bytes: int = 65536,
    max_fields: int = 32,
    storage_left: int | None = None,
    storage_refusal: str = "",
) -> Upload:
    """Read the request's multipart/form-data body: exactly one file part named ``file_field`` of
    at most ``max_bytes`` bytes, and at most ``max_fields`` UTF-8 text fields of ``max_field_bytes``.

    UploadError: 415 when the body is not multipart/form-data, 413 when the file passes its limit
    (or the body cannot fit the limits at all), 400 for anything malformed; StorageQuotaExceeded
    (with ``storage_refusal`` as its message) as soon as the file passes ``storage_left`` bytes
    (None: no quota), since a multipart file's size is known only as it streams. On any error, a client
    disconnect or a cancellation, the temporary file is removed before this returns.
    """
    boundary = _boundary(request.headers.get("content-type"))
    # Everything a body within the limits can hold: the file, the fields, and each part's framing.
    max_body = max_bytes + max_fields * max_field_bytes + (max_fields + 1) * PART_FRAMING
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body:
        raise UploadError(413, f"the upload is larger than the limit of {max_bytes} bytes", file_field)
    # Two quick syscalls, made on the loop: in a thread, a cancellation while waiting for them
    # would leave a file created that nobody knows the name of.
    spool_dir.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=spool_dir, prefix="upload-", suffix=".part")
    path = Path(name)
    spool = os.fdopen(descriptor, "wb")
    try:
        reception = _Reception(file_field, max_bytes, max_field_bytes, max_fields, storage_left, storage_refusal)
        try:
            parser = MultipartParser(
                boundary, reception.callbacks(),
                max_header_count=MAX_PART_HEADERS, max_header_size=MAX_PART_HEADER_BYTES,
            )
        except FormParserError as exc:
            raise UploadError(400, f"malformed multipart boundary: {exc}") from None
        parser.logger = _PARSER_LOG
        hasher = hashlib.sha256()
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body:
                raise UploadError(413, f"the upload is larger than the limit of {max_bytes} bytes", file_field)
            try:
                parser.write(chunk)
            except FormParserError as exc:  # MultipartParseError is one
                raise UploadError(400, f"malformed multipart body: {exc}") from None
            if reception.pending_bytes >= SPOOL_BATCH:
                await asyncio.to_thread(_spool, spool, hasher, reception.take_pending())
        await asyncio.to_thread(_spool, spool, hasher, reception.take_pending())
        await asyncio.to_thread(spool.close)
        if not reception.ended:
            raise UploadError(400, "the multipart body ends before its closing boundary")
        if not reception.file_seen:
            raise UploadError(400, f"no file: the form has no {file_field!r} part", file_field)
        return Upload(
            path=path,
            filename=reception.filename,
            content_type=reception.content_type,
            size=reception.file_size,
            sha256=hasher.hexdigest(),
            fields={k: v[-1] for k, v in reception.values.items()},
            values=reception.values,
        )
    except ClientDisconnect:
        _remove(spool, path)
        raise UploadError(400, "the client disconnected before the upload was complete") from None
    except BaseException:  # an UploadError, a cancellation, a server error: the spool file goes
        _remove(spool, path)
        raise


def _boundary(content_type: str | None) -> bytes:
    media_type, options = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        shown = media_type.decode("latin-1") or "no Content-Type"
        raise UploadError(415, f"the request body must be multipart/form-data, not {shown}")
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadError(400, "the multipart/form-data Content-Type has no boundary")
    return boundary


def _spool(spool: IO[bytes], hasher: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)
        spool.write(chunk)


def _remove(spool: IO[bytes], path: Path) -> None:
    try:
        spool.close()
    finally:
        path.unlink(missing_ok=True)


def _text(raw: bytes, what: str) -> str:
    # Header values reach us as latin-1 (parse_options_header's round trip); browsers send UTF-8.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UploadError(400, f"the {what} is not valid UTF-8") from None


class _Reception:
    """python-multipart's callbacks: the state of one body as it is parsed.

    Callbacks run inside ``parser.write`` and raise UploadError there; file bytes only queue up
    (``take_pending``), since writing them is the async caller's business.
    """

    def __init__(self, file_field: str, max_bytes: int, max_field_bytes: int, max_fields: int,
                 storage_left: int | None = None, storage_refusal: str = "") -> None:
        self.file_field = file_field
        self.max_bytes = max_bytes
        self.storage_left = storage_left
        self.storage_refusal = storage_refusal
        self.max_field_bytes = max_field_bytes
        self.max_fields = max_fields
        self.values: dict[str, list[str]] = {}
        self.field_count = 0
        self.file_seen = False
        self.filename = ""
        self.content_type: str | None = None
        self.file_size = 0
        self.ended = False
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self._headers: dict[bytes, bytes] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._name = ""  # the current part's field name
        self._in_file = False
        self._data = bytearray()  # the current text field's value

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def take_pending(self) -> list[bytes]:
        chunks, self.pending, self.pending_bytes = self.pending, [], 0
        return chunks

    def on_part_begin(self) -> None:
        self._headers = {}
        self._in_file = False
        self._data = bytearray()

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_name).strip().lower()] = bytes(self._header_value).strip()
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b"").decode("latin-1"))
        if disposition != b"form-data":
            raise UploadError(400, "a multipart part has no 'Content-Disposition: form-data' header")
        if b"name" not in options:
            raise UploadError(400, "a multipart part has no field name")
        self._name = _text(options[b"name"], "field name")
        if self._name == self.file_field:
            if self.file_seen:
                raise UploadError(400, f"the form has two {self.file_field!r} parts: send one file", self.file_field)
            self.file_seen = self._in_file = True
            self.filename = _filename(_text(options.get(b"filename", b""), "filename"))
            self.content_type = _content_type(self._headers.get(b"content-type", b""), self.file_field)
        elif b"filename" in options:
            raise UploadError(400, f"unexpected file in field {self._name!r}: only {self.file_field!r} takes a file",
                              self._name)
        else:
            self.field_count += 1
            if self.field_count > self.max_fields:
                raise UploadError(400, f"the form has more than {self.max_fields} fields")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.file_size += end - start
            if self.file_size > self.max_bytes:
                raise UploadError(413, f"the file is larger than the limit of {self.max_bytes} bytes", self.file_field)
            if self.storage_left is not None and self.file_size > self.storage_left:
                raise StorageQuotaExceeded(413, self.storage_refusal, self.file_field)
            self.pending.append(data[start:end])
            self.pending_bytes += end - start
        else:
            self._data.extend(data[start:end])
            if len(self._data) > self.max_field_bytes:
                raise UploadError(400, f"the field {self._name!r} is larger than {self.max_field_bytes} bytes",
                                  self._name)

    def on_part_end(self) -> None:
        if not self._in_file:
            try:
                value = self._data.decode("utf-8")
            except UnicodeDecodeError:
                raise UploadError(400, f"the field {self._name!r} is not valid UTF-8 text", self._name) from None
            self.values.setdefault(self._name, []).append(value)

    def on_end(self) -> None:
        self.ended = True


def _filename(raw: str) -> str:
    """The name without any directory a client put in (``C:\\x\\a.wav``, ``../a.wav``), nor control characters."""
    name = _CONTROL.sub("", raw.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return name[:500]


def _content_type(raw: bytes, file_field: str) -> str | None:
    value = raw.decode("latin-1").strip()
    if not value:
        return None
    if len(value) > MAX_CONTENT_TYPE or not _MEDIA_TYPE.match(value):
        message = f"the {file_field!r} part's Content-Type {value[:100]!r} is not a media type"
        raise UploadError(400, message, file_field)
    return value


def remove_stale_spools(spool_dir: Path, older_than_seconds: float = 86400.0) -> int:
    """Remove spool files a killed process left behind (a live upload's file is never a day old)."""
    cutoff = time.time() - older_than_seconds
    removed = 0
    for path in spool_dir.glob("upload-*.part"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed
