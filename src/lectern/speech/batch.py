"""Recognizing a whole audio file through the engine pool: decode, send ahead, collect segments.

The file is decoded (PyAV, in a thread) block by block as the worker asks for more, so memory
stays a few blocks whatever the file's length; several blocks are in flight at once, so the
worker never waits for the next one to be decoded and pickled.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

from lectern.speech.audio import ENGINE_RATE, AudioFormat
from lectern.speech.decode import decode_pcm
from lectern.speech.engines.base import RecognizerOptions
from lectern.speech.engines.pool import RecognizerPool, ignore_result
from lectern.speech.engines.worker import StreamSpec
from lectern.speech.segmenter import BATCH_RULES, FeedResult, RawSegment, SegmentRules

BLOCK_BYTES = 2 * ENGINE_RATE  # one second of audio per request
# Enough to cover a request's round trip; few enough that a realtime stream sharing the worker
# waits behind at most this much batch audio (its commits still go first: see worker.RequestQueue).
IN_FLIGHT = 3


class FileTranscription:
    """One file's recognition; ``position`` is how far (seconds into the file) it has got."""

    def __init__(self, pool: RecognizerPool, path: Path, start_seconds: float = 0.0,
                 rules: SegmentRules = BATCH_RULES, model: str | None = None,
                 recognizer: RecognizerOptions = RecognizerOptions()) -> None:
        self._pool = pool
        self._path = path
        self.model = model if model in pool.models.models else pool.models.default
        self._recognizer = recognizer
        self._rules = replace(rules, offset_seconds=start_seconds)
        self.position = start_seconds

    async def segments(self) -> AsyncIterator[RawSegment]:
        """The file's segments with words, in order. Raises PoolExhausted when no recognizer is
        free, UnsupportedAudio when the file cannot be decoded, EngineFailure when recognition fails."""
        spec = StreamSpec(format=AudioFormat("pcm_s16le", ENGINE_RATE), model=self.model,
                          recognizer=self._recognizer, rules=self._rules, partials=False)
        handle = self._pool.open(spec)
        blocks = _blocks(decode_pcm(self._path, self._rules.offset_seconds))
        in_flight: collections.deque[tuple[asyncio.Future[FeedResult], int]] = collections.deque()
        try:
            await handle.ready()
            while (block := await asyncio.to_thread(next, blocks, None)) is not None:
                in_flight.append((handle.feed(block), len(block)))
                if len(in_flight) >= IN_FLIGHT:
                    for segment in await self._collect(in_flight.popleft()):
                        yield segment
            while in_flight:
                for segment in await self._collect(in_flight.popleft()):
                    yield segment
            last, _ = await handle.finish()
            for segment in last:
                if segment.words:
                    yield segment
        finally:
            for future, _ in in_flight:  # abandoned (cancelled or failed): nobody will read these
                future.add_done_callback(ignore_result)
            try:
                blocks.close()
            except ValueError:  # cancelled while a thread decodes the next block: it ends with the thread
                pass
            handle.release()

    async def _collect(self, request: tuple[asyncio.Future[FeedResult], int]) -> list[RawSegment]:
        future, size = request
        result = await future
        self.position += size / (2 * ENGINE_RATE)
        return [segment for segment in result.segments if segment.words]


def _blocks(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Codec-frame-sized chunks regrouped into requests of BLOCK_BYTES (the last may be shorter)."""
    pending: list[bytes] = []
    size = 0
    for chunk in chunks:
        pending.append(chunk)
        size += len(chunk)
        if size >= BLOCK_BYTES:
            data = b"".join(pending)
            for start in range(0, len(data) - BLOCK_BYTES + 1, BLOCK_BYTES):
                yield data[start : start + BLOCK_BYTES]
            rest = data[len(data) - len(data) % BLOCK_BYTES :]
            pending, size = ([rest], len(rest)) if rest else ([], 0)
    if size:
        yield b"".join(pending)

