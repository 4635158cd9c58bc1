"""Session recordings: 16 kHz mono s16le appended as the stream is processed."""

from __future__ import annotations

import uuid
from pathlib import Path


class RecordingWriter:
    def __init__(self, root: Path, tenant_id: uuid.UUID, session_id: uuid.UUID) -> None:
        self.path = root / str(tenant_id) / f"{session_id}.pcm"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("wb", buffering=64 * 1024)

    def write(self, pcm: bytes) -> None:
        self._file.write(pcm)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
