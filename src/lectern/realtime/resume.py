"""Streams that outlive their connection: a client whose connection drops may come back within a
grace period and carry on with the same session.

``ResumableClient`` stands between one ``StreamSession`` and whichever connection carries it
now. Each connection's reader puts its client events here; the session reads one continuous
sequence of them. Going the other way, committed segments are kept, so a returning client gets
every segment it missed, once, before anything newer.

The audio clock stays continuous because the client learns, on resuming, how many bytes of its
audio the server accepted (``received_bytes``) and sends the rest from there.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from lectern.realtime.config import StreamConfig
from lectern.realtime.errors import StreamError
from lectern.realtime.outbox import StreamEvents
from lectern.realtime.segment import Segment
from lectern.realtime.session import AudioIn, ClientAway, ClientBack, ClientClosed, ClientEvent

# A connection that cannot take one message in this long is treated as gone: a half-open TCP
# connection must not hold up the stream (or its takeover by a resumed connection) until the
# kernel gives up on it.
SEND_TIMEOUT_SECONDS = 10.0


class _Dropped:
    pass


class ResumableClient:
    def __init__(self, session_id: uuid.UUID, config: StreamConfig, grace_seconds: float) -> None:
        self.session_id = session_id
        self.config = config
        self.grace_seconds = grace_seconds
        self.token = secrets.token_urlsafe(24)
        self.received_bytes = 0  # audio bytes accepted from all connections, in order
        self.next_segment_index = 0
        self._queue: asyncio.Queue[ClientEvent | StreamError | _Dropped] = asyncio.Queue()
        self._link: StreamEvents | None = None
        self._attached = asyncio.Event()
        self._lock = asyncio.Lock()  # one sender at a time, so a replay is never overtaken
        self._segments: list[Segment] = []
        self._finished = False

    # -- connection side ---------------------------------------------------------------------

    def is_current(self, link: StreamEvents) -> bool:
        return link is self._link

    def token_matches(self, token: str) -> bool:
        return not self._finished and hmac.compare_digest(token.encode(), self.token.encode())

    async def attach(
        self, link: StreamEvents, greet: Callable[[], Awaitable[None]], after_index: int
    ) -> StreamEvents | None:
        """Make ``link`` the connection: greet it, replay the segments after ``after_index``; returns
        the connection it replaces, if any, for the caller to close."""
        async with self._lock:
            if self._finished:
                raise LookupError("the session has ended")
            replaced, self._link = self._link, link
            self.token = secrets.token_urlsafe(24)  # a resume token is good for one resume
            self._attached.set()
            await greet()
            for segment in self._segments:
                if segment.index is not None and segment.index > after_index:
                    await link.committed(segment)
        return replaced

    def put(self, link: StreamEvents, event: ClientEvent | StreamError) -> bool:
        """A client event from ``link``; False once another connection took over (stop reading)."""
        if link is not self._link:
            return False
        if isinstance(event, AudioIn):
            self.received_bytes += len(event.data)
        self._queue.put_nowait(event)
        return True

    def dropped(self, link: StreamEvents) -> None:
        """``link`` went away without ending the stream: the grace period starts."""
        if link is self._link:
            self._link = None
            self._attached.clear()
            self._queue.put_nowait(_Dropped())

    async def finish(self) -> StreamEvents | None:
        """The session has ended: no more resumes; returns the connection to tell."""
        async with self._lock:
            self._finished = True
            return self._link

    # -- session side ------------------------------------------------------------------------

    async def client_events(self) -> AsyncIterator[ClientEvent]:
        while True:
            event = await self._queue.get()
            if isinstance(event, StreamError):
                raise event
            if isinstance(event, _Dropped):
                if self._link is not None:  # resumed already
                    continue
                if self.received_bytes == 0:
                    # Gone before sending any audio: nothing to resume, and a flood of starts whose
                    # connections drop must not hold their tenant's stream slots for the grace period.
                    yield ClientClosed(normal=False)
                    return
                yield ClientAway()
                try:
                    await asyncio.wait_for(self._attached.wait(), self.grace_seconds)
                except TimeoutError:
                    yield ClientClosed(normal=False)
                    return
                yield ClientBack()
                continue
            yield event
            if isinstance(event, ClientClosed):
                return

    # -- StreamEvents: to the current connection, if any -------------------------------------

    async def partial(self, text: str) -> None:
        async with self._lock:
            await self._send(lambda link: link.partial(text))

    async def committed(self, segment: Segment) -> None:
        async with self._lock:
            if segment.index is not None:
                self._segments.append(segment)
                self.next_segment_index = segment.index + 1
            await self._send(lambda link: link.committed(segment))

    async def error(self, error: StreamError) -> None:
        async with self._lock:
            await self._send(lambda link: link.error(error))

    async def _send(self, deliver: Callable[[StreamEvents], Awaitable[None]]) -> None:
        link = self._link
        if link is None:
            return
        try:
            await asyncio.wait_for(deliver(link), SEND_TIMEOUT_SECONDS)
        except TimeoutError:
            self.dropped(link)
        except Exception:  # the connection broke; its reader reports the drop
            pass


class ResumableStreams:
    """The streams of this server process that a client may resume, each served by its own task
    (no connection's handler owns it)."""

    def __init__(self) -> None:
        self._clients: dict[uuid.UUID, ResumableClient] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def serve(self, client: ResumableClient, serving: Coroutine[Any, Any, None]) -> None:
        self._clients[client.session_id] = client
        task = asyncio.create_task(serving, name=f"stream-{client.session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def remove(self, client: ResumableClient) -> None:
        self._clients.pop(client.session_id, None)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def find(self, session_id: uuid.UUID, token: str) -> ResumableClient | None:
        client = self._clients.get(session_id)
        return client if client is not None and client.token_matches(token) else None
