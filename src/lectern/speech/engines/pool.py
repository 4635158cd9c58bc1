"""RecognizerPool: worker processes that host the recognizers, seen from the event loop.

pocketsphinx holds the GIL while it decodes, and Whisper is given one CPU thread per worker, so
recognition runs in worker processes, one per core by default, each hosting every configured
model. Admission is per model: a model admits ``streams_per_worker`` streams in one worker, and a
worker is full when its streams' shares (1 / that number each) add up to 1, so a Whisper stream
(3 a worker by default) takes the room of almost three pocketsphinx ones (8). The event loop only
pickles bytes into a pipe. A writer thread per worker keeps a busy worker's full pipe from ever
blocking the loop, and a reader thread resolves the futures.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import multiprocessing
import queue
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from lectern.speech.engines import worker as worker_module
from lectern.speech.engines.worker import StreamSpec
from lectern.speech.models import ModelRegistry
from lectern.speech.segmenter import FeedResult, RawSegment

log = logging.getLogger(__name__)

ADMISSION_POLL_SECONDS = 0.1  # how often wait_admissible looks again: a worker starts in seconds


class PoolExhausted(Exception):
    """Every recognizer slot is taken."""


class EngineFailure(Exception):
    """The engine failed for this stream (an error in decoding, or its worker died)."""


class WorkerDied(EngineFailure):
    """The worker process hosting the stream died (killed, out of memory): the same audio may
    well succeed on another worker, unlike an error in decoding it."""


WORKER_DIED = "the recognizer process stopped unexpectedly"


class EngineStartFailed(Exception):
    """A worker could not load its models: the server cannot serve."""


@dataclass(eq=False)
class _Worker:
    index: int
    process: Any
    conn: Connection
    outbox: "queue.SimpleQueue[Any]" = field(default_factory=queue.SimpleQueue)
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    streams: collections.Counter[str] = field(default_factory=collections.Counter)  # per model
    alive: bool = True


class RecognizerPool:
    def __init__(self, workers: int, models: ModelRegistry) -> None:
        self.models = models
        self._size = workers
        self._workers: list[_Worker] = []
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context = multiprocessing.get_context("spawn")
        self._closing = False
        self.ready = False

    def capacity(self, model: str) -> int:
        """Streams of this model the pool admits when it serves nothing else."""
        return self._size * self.models.models[model].streams_per_worker

    @property
    def active_streams(self) -> int:
        return sum(sum(w.streams.values()) for w in self._workers)

    async def start(self) -> None:
        """Start every worker; raises EngineStartFailed (with the worker's reason) if one cannot
        load its models."""
        self._loop = asyncio.get_running_loop()
        self._workers = list(await asyncio.gather(*(self._spawn(i) for i in range(self._size))))
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

    def can_admit(self, model: str) -> bool:
        return any(self._fits(w, model) for w in self._workers)

    async def wait_admissible(self, model: str, timeout: float) -> bool:
        """Wait (up to ``timeout`` seconds) until a worker has room for a stream of ``model``, as
        when a dead worker's replacement has started; False if none had by then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.can_admit(model):
            if self._closing or loop.time() >= deadline:
                return False
            await asyncio.sleep(ADMISSION_POLL_SECONDS)
        return True

    def open(self, spec: StreamSpec) -> "StreamHandle":
        """Reserve a slot at once (admission control), or raise PoolExhausted."""
        candidates = [w for w in self._workers if self._fits(w, spec.model)]
        if not candidates:
            raise PoolExhausted(f"all {self.capacity(spec.model)} recognizer slots for {spec.model} are in use")
        chosen = min(candidates, key=self._load)
        chosen.streams[spec.model] += 1
        return StreamHandle(self, chosen, next(self._ids), spec)

    def _fits(self, w: _Worker, model: str) -> bool:
        return w.alive and self._load(w) + self._share(model) <= 1 + 1e-9

    def _share(self, model: str) -> float:
        return 1 / self.models.models[model].streams_per_worker

    def _load(self, w: _Worker) -> float:
        return sum(count * self._share(model) for model, count in w.streams.items())

    async def _spawn(self, index: int) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=worker_module.serve,
            args=(child, self.models.models, self.models.default),
            name=f"lectern-engine-{index}",
            daemon=True,
        )
        process.start()
        child.close()
        try:  # the worker has loaded its engines and VAD, or says why not
            status, detail, _ = await asyncio.to_thread(parent.recv)
        except (EOFError, OSError):
            status, detail = "failed", f"the process exited with code {process.exitcode}"
        if status != "ready":
            await asyncio.to_thread(process.join, 5)
            raise EngineStartFailed(f"engine worker {index} could not start: {detail}")
        self.models.languages.update(detail)
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
                future.set_exception(WorkerDied(WORKER_DIED))
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
            future.set_exception(WorkerDied(WORKER_DIED))
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
        self._spec = spec
        self._released = False
        self._opened = pool._call(worker, "open", stream_id, spec)

    async def ready(self) -> None:
        """The worker has opened the stream (an engine error surfaces here)."""
        await self._opened

    def feed(self, data: bytes) -> asyncio.Future[FeedResult]:
        """The next audio (after ``ready``): the partial and the segments it closed. Not a
        coroutine: the request is sent at once, so a caller may keep several in flight."""
        return self._pool._call(self._worker, "feed", self._id, data)

    def set_context(self, text: str) -> None:
        """Text said before the stream's audio (previous_text): context for the recognizer."""
        self._pool._call(self._worker, "context", self._id, text).add_done_callback(ignore_result)

    async def commit(self) -> list[RawSegment]:
        """Close the current segment now (a manual commit); an empty one too."""
        await self._opened
        segments: list[RawSegment] = await self._pool._call(self._worker, "commit", self._id)
        return segments

    async def finish(self) -> tuple[list[RawSegment], bytes]:
        """The end of the audio: the last segment, and the resampler's tail (16 kHz s16le)."""
        await self._opened
        result: tuple[list[RawSegment], bytes] = await self._pool._call(self._worker, "finish", self._id)
        return result

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._worker.streams[self._spec.model] -= 1
        if self._worker.alive:
            self._pool._call(self._worker, "close", self._id).add_done_callback(ignore_result)


def ignore_result(future: asyncio.Future[Any]) -> None:
    """A done-callback for a future nobody awaits: its exception is taken, so asyncio does not log it."""
    if not future.cancelled():
        future.exception()
