"""Retrying a request to a model server: exponential backoff with jitter, or the wait the server
asked for (``Retry-After``), a bounded number of times."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from lectern.summarize.interface import SummarizationError

T = TypeVar("T")


class Transient(Exception):
    """A failure worth another attempt (a timeout, a refused connection, 429, 5xx). The message is
    for the user, as the final error says it if no attempt succeeds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass
class RetryPolicy:
    """``retries`` further attempts after the first. The wait before retry k (0-based) is drawn
    from [d/2, d] with d = min(cap, base * 2**k) ("equal jitter": never much shorter than the
    schedule, yet concurrent clients spread out): by default 0.5-1 s, 1-2 s, 2-4 s, 4-8 s...
    A server's Retry-After replaces the draw, up to ``max_retry_after_seconds``; a longer one
    ends the attempts at once (the server said it will not answer in time)."""

    retries: int = 3
    base_seconds: float = 1.0
    cap_seconds: float = 30.0
    max_retry_after_seconds: float = 120.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    jitter: Callable[[], float] = field(default=random.random)

    def backoff(self, retry: int) -> float:
        ceiling = min(self.cap_seconds, self.base_seconds * 2**retry)
        return ceiling / 2 + self.jitter() * ceiling / 2

    async def run(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it returns, raises anything but Transient, or the retries are
        spent (SummarizationError with the last failure's message). Cancellation passes through
        at once, also during a wait."""
        for retry in range(self.retries + 1):
            try:
                return await attempt()
            except Transient as failure:
                attempts = retry + 1
                if retry == self.retries:
                    raise SummarizationError(f"{failure.message} Gave up after {_attempts(attempts)}.") from None
                wait = failure.retry_after if failure.retry_after is not None else self.backoff(retry)
                if wait > self.max_retry_after_seconds:
                    raise SummarizationError(f"{failure.message} The server asked to wait {wait:.0f} s, "
                                             f"longer than Lectern waits.") from None
                await self.sleep(wait)
        raise AssertionError("unreachable")


def _attempts(n: int) -> str:
    return "1 attempt" if n == 1 else f"{n} attempts"


def retry_after(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """Seconds a response asks to wait: ``retry-after-ms`` (OpenAI's), else ``Retry-After`` as
    seconds or as an HTTP date; None when absent or unreadable."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
        if name == "retry-after":
            try:
                moment = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            return max(0.0, moment.timestamp() - now())
    return None
