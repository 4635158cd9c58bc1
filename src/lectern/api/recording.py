"""Recording downloads: HTTP byte ranges, paced by the tenant's download bandwidth (api/pacing.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi.responses import StreamingResponse

from lectern.api.errors import ApiError
from lectern.api.pacing import Pacer

MEDIA_TYPE = "audio/x-pcm"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# Positions past any file's end: more digits than this are compared as text, never given to int()
# (which refuses more than 4300 of them).
_MAX_DIGITS = 18


def _position(digits: str) -> int:
    """A byte position; any number too long to be a real one becomes one past every file's end."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _before(a: str, b: str) -> bool:
    """Whether position ``a`` < ``b``, exactly, however many digits either has."""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)


def shown_range(header: str) -> str:
    """The header as an error message quotes it: a long one cut short."""
    return repr(header if len(header) <= 100 else f"{header[:60]}... ({len(header)} characters)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range asked for, as (first, last) inclusive; None for the whole file.

    A malformed or multi-range header is ignored (RFC 9110 allows serving the whole file);
    a range that starts past the end is 416.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # suffix range: the last N bytes
        length = _position(last)
        if length == 0:
            raise ApiError(416, f"the range {shown_range(header)} selects no bytes",
                           headers={"Content-Range": f"bytes */{size}"})
        return max(size - length, 0), size - 1
    if last and _before(last, first):  # an invalid range-spec: the header is ignored (RFC 9110 14.1.1)
        return None
    start = _position(first)
    if start >= size:
        raise ApiError(416, f"the range {shown_range(header)} is outside the recording's {size} bytes",
                       headers={"Content-Range": f"bytes */{size}"})
    return start, min(_position(last), size - 1) if last else size - 1


async def _read(path: Path, start: int, length: int, chunk_size: int) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        f.seek(start)
        sent = 0
        while sent < length:
            chunk = await asyncio.to_thread(f.read, min(chunk_size, length - sent))
            if not chunk:
                return
            yield chunk
            sent += len(chunk)


def recording_response(path: Path, range_header: str | None, pacer: Pacer) -> StreamingResponse:
    """The recording (or the range asked for), paced by its tenant's download bandwidth."""
    size = path.stat().st_size  # a live stream's file grows: serve what exists now
    selected = parse_range(range_header, size) if size else None
    headers = {"Accept-Ranges": "bytes"}
    if selected is None:
        start, length, status = 0, size, 200
    else:
        start, length, status = selected[0], selected[1] - selected[0] + 1, 206
        headers["Content-Range"] = f"bytes {selected[0]}-{selected[1]}/{size}"
    headers["Content-Length"] = str(length)
    return StreamingResponse(
        pacer.paced(_read(path, start, length, pacer.chunk_size)), status_code=status, media_type=MEDIA_TYPE, headers=headers
    )
