"""Outbound messages of one stream, delivered in order by their own task.

A slow reader never stalls recognition: unsent partials are replaced by newer ones, committed
segments are always delivered, and a client that reads nothing at all hits a bound.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Protocol

from lectern.realtime.errors import ErrorKind, StreamError
from lectern.realtime.segment import Segment

MAX_PENDING = 256


class StreamEvents(Protocol):
    """Implemented by each protocol adapter: turns core events into the protocol's frames."""

    async def partial(self, text: str) -> None: ...

    async def committed(self, segment: Segment) -> None: ...

    async def error(self, error: StreamError) -> None: ...


class _Partial(str):
    pass


class Outbox:
    def __init__(self, events: StreamEvents) -> None:
        self._events = events
        self._items: collections.deque[_Partial | Segment | StreamError] = collections.deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._broken = False  # the client went away; nothing more can be delivered
        self._task = asyncio.create_task(self._deliver())

    def partial(self, text: str) -> None:
        if self._items and isinstance(self._items[-1], _Partial):
            self._items[-1] = _Partial(text)
        else:
            self._push(_Partial(text))

    def committed(self, segment: Segment) -> None:
        self._push(segment)

    def _push(self, item: "_Partial | Segment | StreamError") -> None:
        if len(self._items) >= MAX_PENDING and not self._broken:
            raise StreamError(ErrorKind.QUEUE_OVERFLOW, "the client is not reading the server's messages")
        self._items.append(item)
        self._wake.set()

    async def close(self, error: StreamError | None, timeout: float = 5.0) -> None:
        """Deliver what is pending, then the error if any, then stop."""
        if error is not None:
            self._items.append(error)
        self._closed = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            self._task.cancel()

    async def _deliver(self) -> None:
        while True:
            while self._items:
                item = self._items.popleft()
                if self._broken:
                    continue
                try:
                    if isinstance(item, _Partial):
                        await self._events.partial(str(item))
                    elif isinstance(item, Segment):
                        await self._events.committed(item)
                    else:
                        await self._events.error(item)
                except Exception:  # the socket is gone: keep draining so the stream can finish
                    self._broken = True
            if self._closed:
                return
            self._wake.clear()
            await self._wake.wait()
