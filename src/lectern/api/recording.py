"""Recording downloads: HTTP byte ranges and a per-download bandwidth limit."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi.responses import StreamingResponse

from lectern.api.errors import ApiError

MEDIA_TYPE = "audio/x-pcm"
CHUNK = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


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
        length = int(last)
        if length == 0:
            raise ApiError(416, f"the range {header!r} selects no bytes", headers={"Content-Range": f"bytes */{size}"})
        return max(size - length, 0), size - 1
    start = int(first)
    if last and int(last) < start:  # an invalid range-spec: the header is ignored (RFC 9110 14.1.1)
        return None
    if start >= size:
        raise ApiError(416, f"the range {header!r} is outside the recording's {size} bytes",
                       headers={"Content-Range": f"bytes */{size}"})
    return start, min(int(last), size - 1) if last else size - 1


async def _paced_read(path: Path, start: int, length: int, bytes_per_second: int) -> AsyncIterator[bytes]:
    # Chunks of a tenth of a second's allowance, each sent only once the limit allows it, so no
    # download (a small range included) is ever faster than the limit.
    chunk_size = CHUNK if bytes_per_second <= 0 else max(1024, min(CHUNK, bytes_per_second // 10))
    began = time.monotonic()
    sent = 0
    with path.open("rb") as f:
        f.seek(start)
        while sent < length:
            chunk = await asyncio.to_thread(f.read, min(chunk_size, length - sent))
            if not chunk:
                return
            if bytes_per_second > 0:
                early = (sent + len(chunk)) / bytes_per_second - (time.monotonic() - began)
                if early > 0:
                    await asyncio.sleep(early)
            yield chunk
            sent += len(chunk)


def recording_response(path: Path, range_header: str | None, bytes_per_second: int) -> StreamingResponse:
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
        _paced_read(path, start, length, bytes_per_second), status_code=status, media_type=MEDIA_TYPE, headers=headers
    )
