"""``file_format=pcm_s16le_16``: raw 16 kHz mono 16-bit PCM made a WAV file before it is stored.

The raw samples go behind a WAV header, so the decoder (and whoever downloads the file from the
files API) knows what they are.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import struct
import tempfile
from pathlib import Path

from lectern.api.scribe_errors import ScribeError, invalid
from lectern.api.uploads import Upload

PCM_RATE = 16000


def _wav_header(data_bytes: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, PCM_RATE, PCM_RATE * 2, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))


async def as_wav(upload: Upload, spool_dir: Path) -> Upload:
    """The upload's raw samples behind a WAV header, as a new spooled upload."""
    if upload.size % 2:
        raise invalid(f"file_format=pcm_s16le_16 needs whole 16-bit samples (an even number of bytes), "
                      f"not {upload.size} bytes", "file")
    if upload.size > 0xFFFFFFFF - 36:
        raise ScribeError(413, "pcm_s16le_16 audio is limited to 4 GiB (a WAV file's size)", param="file",
                          type="invalid_request", code="file_too_large")
    path, sha256 = await asyncio.to_thread(_write_wav, upload.path, upload.size, spool_dir)
    name = upload.filename or "audio.pcm"
    return dataclasses.replace(upload, path=path, filename=name, content_type="audio/wav", size=upload.size + 44,
                               sha256=sha256)


def _write_wav(source: Path, size: int, spool_dir: Path) -> tuple[Path, str]:
    descriptor, name = tempfile.mkstemp(dir=spool_dir, prefix="upload-", suffix=".wav")
    hasher = hashlib.sha256()
    try:
        with os.fdopen(descriptor, "wb") as out, open(source, "rb") as pcm:
            header = _wav_header(size)
            out.write(header)
            hasher.update(header)
            while chunk := pcm.read(1 << 20):
                out.write(chunk)
                hasher.update(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name), hasher.hexdigest()
