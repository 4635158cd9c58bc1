"""What can end a stream, independent of any protocol's spelling of it."""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    AUTH = "auth"
    INVALID_REQUEST = "invalid_request"
    INPUT = "input"
    CHUNK_TOO_LARGE = "chunk_too_large"
    QUEUE_OVERFLOW = "queue_overflow"
    COMMIT_THROTTLED = "commit_throttled"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    TIME_LIMIT = "time_limit"
    IDLE_TIMEOUT = "idle_timeout"
    ENGINE = "engine"
    INTERNAL = "internal"


class StreamError(Exception):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __repr__(self) -> str:
        return f"StreamError({self.kind.value}, {self.message!r})"
