"""RecognizerPool: worker processes that host the recognizers, seen from the event loop.

pocketsphinx holds the GIL while it decodes, so decoding in threads would serialize every
stream. Each worker is a process hosting up to ``streams_per_worker`` streams; the event loop
only pickles bytes into a pipe. A writer thread per worker keeps a busy worker's full pipe from
ever blocking the loop, and a reader thread resolves the futures.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import queue
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from lectern.speech.engines.base import Word
from lectern.speech.engines import worker as worker_module
from lectern.speech.pipeline import FeedResult, StreamSpec
from lectern.speech.segmenter import RawSegment

log = logging.getLogger(__name__)

DEFAULT_ENGINE = "pocketsphinx-en-us"


class PoolExhausted(Exception):
    """Every recognizer slot is taken."""


class EngineFailure(Exception):
    """The engine failed for this stream (an error in decoding, or its worker died)."""


@dataclass(eq=False)
class _Worker:
    index: int
    process: Any
    conn: Connection
    outbox: "queue.SimpleQueue[Any]" = field(default_factory=queue.SimpleQueue)
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    streams: int = 0
    alive: bool = True


class RecognizerPool:
    def __init__(self, workers: int, streams_per_worker: int, engine: str = DEFAULT_ENGINE) -> None:
        self.engine = engine
        self.capacity_per_worker = streams_per_worker
        self._size = workers
        self._workers: list[_Worker] = []
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context = multiprocessing.get_context("spawn")
        self._closing = False
        self.ready = False

    @property
    def capacity(self) -> int:
        return self._size * self.capacity_per_worker

    @property
    def active_streams(self) -> int:
        return sum(w.streams for w in self._workers)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._workers = await asyncio.gather(*(self._spawn(i) for i in range(self._size)))
        self.ready = True

    async def close(self) -> None:
        self._closing = True
        self.ready = False
        for w in self._workers:
            w.outbox.put(None)
        for w in self._workers:
            await asyncio.to_thread(w.process.join, 5)
            if w.process.is_alive():
                w.process.kill()

    def open(self, spec: StreamSpec) -> "StreamHandle":
        """Reserve a slot at once (admission control), or raise PoolExhausted."""
        candidates = [w for w in self._workers if w.alive and w.streams < self.capacity_per_worker]
        if not candidates:
            raise PoolExhausted(f"all {self.capacity} recognizer slots are in use")
        chosen = min(candidates, key=lambda w: w.streams)
        chosen.streams += 1
        return StreamHandle(self, chosen, next(self._ids), spec)

    async def _spawn(self, index: int) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=worker_module.serve,
            args=(child, self.engine, self.capacity_per_worker),
            name=f"lectern-engine-{index}",
            daemon=True,
        )
        process.start()
        child.close()
        hello = await asyncio.to_thread(parent.recv)  # the worker has loaded its engine and VAD
        assert hello[0] == "ready"
        w = _Worker(index, process, parent)
        threading.Thread(target=self._write_loop, args=(w,), daemon=True, name=f"pool-w{index}").start()
        threading.Thread(target=self._read_loop, args=(w,), daemon=True, name=f"pool-r{index}").start()
        return w

    def _write_loop(self, w: _Worker) -> None:
        while True:
            message = w.outbox.get()
            try:
                w.conn.send(message)
            except (OSError, ValueError):
                return
            if message is None:
                return

    def _read_loop(self, w: _Worker) -> None:
        assert self._loop is not None
        while True:
            try:
                request_id, ok, payload = w.conn.recv()
            except (EOFError, OSError):
                self._loop.call_soon_threadsafe(self._on_worker_died, w)
                return
            self._loop.call_soon_threadsafe(self._resolve, w, request_id, ok, payload)

    @staticmethod
    def _resolve(w: _Worker, request_id: int, ok: bool, payload: Any) -> None:
        future = w.pending.pop(request_id, None)
        if future is None or future.done():
            return
        if ok:
            future.set_result(payload)
        else:
            future.set_exception(EngineFailure(payload))

    def _on_worker_died(self, w: _Worker) -> None:
        w.alive = False
        for future in w.pending.values():
            if not future.done():
                future.set_exception(EngineFailure("the recognizer process stopped unexpectedly"))
        w.pending.clear()
        if self._closing:
            return
        log.error("engine worker %d (pid %s) died; starting a replacement", w.index, w.process.pid)
        asyncio.get_running_loop().create_task(self._replace(w))

    async def _replace(self, dead: _Worker) -> None:
        await asyncio.to_thread(dead.process.join, 5)  # reap it
        replacement = await self._spawn(dead.index)
        self._workers[self._workers.index(dead)] = replacement

    def _call(self, w: _Worker, op: str, stream_id: int, arg: Any = None) -> asyncio.Future[Any]:
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        if not w.alive:
            future.set_exception(EngineFailure("the recognizer process stopped unexpectedly"))
            return future
        request_id = next(self._ids)
        w.pending[request_id] = future
        w.outbox.put((request_id, op, stream_id, arg))
        return future


class StreamHandle:
    """One stream's recognizer slot in a worker; calls are answered in the order they are made."""

    def __init__(self, pool: RecognizerPool, worker: _Worker, stream_id: int, spec: StreamSpec) -> None:
        self._pool = pool
        self._worker = worker
        self._id = stream_id
        self._released = False
        self._opened = pool._call(worker, "open", stream_id, spec)

    async def ready(self) -> None:
        """The worker has opened the stream (an engine error surfaces here)."""
        await self._opened

    def segment(self, pcm: bytes) -> asyncio.Future[list[RawSegment]]:
        """A batch stream's next block of audio (after ``ready``): the segments it closed. Not a
        coroutine: the request is sent at once, so a job keeps several blocks in flight."""
        return self._pool._call(self._worker, "segment", self._id, pcm)

    def segment_end(self) -> asyncio.Future[list[RawSegment]]:
        return self._pool._call(self._worker, "segment_end", self._id)

    async def feed(self, data: bytes) -> FeedResult:
        await self._opened
        result: FeedResult = await self._pool._call(self._worker, "feed", self._id, data)
        return result

    async def drain(self) -> FeedResult:
        """The end of the stream's audio: flush what the resampler still holds."""
        await self._opened
        result: FeedResult = await self._pool._call(self._worker, "drain", self._id)
        return result

    async def finish(self) -> list[Word]:
        await self._opened
        words: list[Word] = await self._pool._call(self._worker, "finish", self._id)
        return words

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._worker.streams -= 1
        if self._worker.alive:
            self._pool._call(self._worker, "close", self._id).add_done_callback(ignore_result)


def ignore_result(future: asyncio.Future[Any]) -> None:
    """A done-callback for a future nobody awaits: its exception is taken, so asyncio does not log it."""
    if not future.cancelled():
        future.exception()
