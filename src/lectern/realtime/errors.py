"""What can end a stream, independent of any protocol's spelling of it."""

from __future__ import annotations

import enum
from types import TracebackType

from lectern.store.db import is_unavailable


class ErrorKind(enum.Enum):
    AUTH = "auth"
    INVALID_REQUEST = "invalid_request"
    INPUT = "input"
    CHUNK_TOO_LARGE = "chunk_too_large"
    QUEUE_OVERFLOW = "queue_overflow"
    COMMIT_THROTTLED = "commit_throttled"
    RESOURCE_EXHAUSTED = "resource_exhausted"  # this node has no recognizer free
    CONCURRENCY_LIMIT = "concurrency_limit"  # the tenant or user has its cap of streams open
    QUOTA_EXCEEDED = "quota_exceeded"  # the tenant's monthly transcription minutes are used up
    RATE_LIMITED = "rate_limited"  # too many stream starts, or failed authentications from the address
    TIME_LIMIT = "time_limit"
    IDLE_TIMEOUT = "idle_timeout"
    ENGINE = "engine"
    UNAVAILABLE = "unavailable"  # the database cannot be reached: try again later
    INTERNAL = "internal"


class StreamError(Exception):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __repr__(self) -> str:
        return f"StreamError({self.kind.value}, {self.message!r})"


DATABASE_UNAVAILABLE = "The service's database is unreachable; try again shortly."
KEY_NO_LONGER_VALID = "The API key this stream was opened with has been revoked or has expired."


class database_required:  # noqa: N801 - used as a context manager, named like one
    """A database that cannot be reached, as the stream's UNAVAILABLE error (which each protocol
    renders as its own), instead of an exception that drops the socket without a word.

    Sync or async: ``async with services.db() as db, database_required():``."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, _type: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None) -> None:
        if exc is not None and isinstance(exc, Exception) and is_unavailable(exc):
            raise StreamError(ErrorKind.UNAVAILABLE, DATABASE_UNAVAILABLE) from None

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, _type: type[BaseException] | None, exc: BaseException | None,
                        _tb: TracebackType | None) -> None:
        self.__exit__(_type, exc, _tb)
