"""The engine worker process: hosts many streams' segmenters and serves requests over a pipe."""

from __future__ import annotations

import collections
import ctypes
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import onnxruntime

from lectern.speech.audio import AudioFormat
from lectern.speech.engines.base import Engine, RecognizerOptions
from lectern.speech.models import ModelConfig
from lectern.speech.segmenter import RawSegment, Segmenter, SegmentRules
from lectern.speech.vad import load_vad_model

IDLE_POLL_SECONDS = 0.5
# A worker whose oldest waiting request has waited this long is behind: it computes no partials
# until it has caught up (commits and segment ends are never skipped).
BEHIND_SECONDS = 0.3
# Speech a worker decodes with each engine that warms up, before it reports ready: Festival's
# voice as in tests/fixtures/speech/two_sentences.wav (a sentence, a 2 s pause, a sentence), as
# 16 kHz mu-law (half the bytes of PCM; a format the converter reads, so no decoder is loaded).
WARM_UP_SPEECH = Path(__file__).with_name("warm_up.ulaw")
WARM_UP_FORMAT = AudioFormat("ulaw", 16000)
WARM_UP_CHUNK_SECONDS = 1.0  # a partial a second, as a busy worker gives them
# glibc keeps what a decode frees in its arenas, and an arena only grows (fragmented by buffers of
# every utterance's size): a Whisper worker held ~45 MB free after a few minutes of speech, its
# RSS climbing meanwhile. At most this often, after a request is answered, the free pages go back
# to the system (malloc_trim: ~3 ms; in-process, 3 minutes of speech rose 40 MB instead of 50 and
# then stayed flat, for no CPU measurable).
TRIM_EVERY_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What one stream asks of its worker."""

    format: AudioFormat
    model: str
    recognizer: RecognizerOptions = field(default_factory=RecognizerOptions)
    rules: SegmentRules = field(default_factory=SegmentRules)
    partials: bool = True  # a batch job wants none
    return_pcm: bool = False  # the 16 kHz audio back, for a recording of a stream in another format


def create_engine(config: ModelConfig, preload: bool) -> Engine:
    if config.engine == "pocketsphinx":
        from lectern.speech.engines.pocketsphinx import PocketSphinxEngine

        return PocketSphinxEngine(ready_decoders=1 if preload else 0, max_spare_decoders=config.streams_per_worker)
    from lectern.speech.engines.whisper import WhisperEngine

    return WhisperEngine(config)


def serve(conn: Connection, models: dict[str, ModelConfig], default: str) -> None:
    """Request: (request_id, op, stream_id, argument); reply: (request_id, ok, result_or_error).

    The first message says whether the engines loaded: ("ready", languages per model) or
    ("failed", why)."""
    # The server process owns shutdown: a Ctrl-C reaching the whole process group is not ours.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        engines = {name: create_engine(config, preload=name == default) for name, config in models.items()}
        vad_model = load_vad_model()
        for engine in engines.values():
            if engine.warms_up:
                warm_up(engine, vad_model)
        HeapTrim(0).maybe()  # what the warm-up freed: the first client's decodes take it again
    except Exception as exc:  # reported to the server, which says why and exits
        conn.send(("failed", f"{type(exc).__name__}: {exc}", None))
        return
    conn.send(("ready", {name: engine.languages for name, engine in engines.items()}, None))
    streams: dict[int, tuple[Segmenter, StreamSpec]] = {}
    requests = RequestQueue()

    def handle(op: str, stream_id: int, arg: Any) -> Any:
        if op == "open":
            spec: StreamSpec = arg
            recognizer = engines[spec.model].recognizer(spec.recognizer)
            streams[stream_id] = (Segmenter(recognizer, vad_model, spec.format, spec.rules), spec)
            return None
        if op == "close":
            entry = streams.pop(stream_id, None)
            if entry is not None:
                entry[0].close()
            return None
        segmenter, spec = streams[stream_id]
        if op == "feed":
            partial = spec.partials and not requests.has_feed(stream_id) and not requests.behind()
            return segmenter.feed(arg, partial=partial, return_pcm=spec.return_pcm)
        if op == "commit":
            return segmenter.commit()
        if op == "finish":
            return segmenter.finish()
        if op == "context":
            segmenter.recognizer.set_context(arg)
            return None
        raise ValueError(f"unknown op {op!r}")

    trim = HeapTrim(TRIM_EVERY_SECONDS)
    while True:
        if not requests and not conn.poll(IDLE_POLL_SECONDS):
            for engine in engines.values():
                engine.idle()
            trim.maybe()
            continue
        try:
            while conn.poll(0):  # take everything waiting, so commits can go first
                message = conn.recv()
                if message is None:
                    return
                requests.add(message)
        except EOFError:
            return
        request_id, op, stream_id, arg = requests.next()
        try:
            result = handle(op, stream_id, arg)
        except Exception as exc:  # reported to the one stream that caused it, the worker lives on
            conn.send((request_id, False, f"{type(exc).__name__}: {exc}"))
        else:
            conn.send((request_id, True, result))
        trim.maybe()  # after the answer: a busy worker's queue is never empty, and its heap grows too


class HeapTrim:
    """malloc_trim(0), at most every ``seconds`` (glibc only; elsewhere nothing)."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._last = time.monotonic()
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            self._trim = None

    def maybe(self) -> None:
        if self._trim is not None and time.monotonic() - self._last >= self._seconds:
            self._trim(0)
            self._last = time.monotonic()


def warm_up(engine: Engine, vad_model: onnxruntime.InferenceSession) -> list[RawSegment]:
    """Decode a few seconds of speech as a stream would, before the worker reports ready: partials,
    a pause's decode with word times, speech resuming after it, a commit. The allocators take
    their working size here rather than during the first client's minutes, and the first client
    finds its decodes warm. (The loop guard's retry on the 30 s window is left out: 0.6 s of CPU
    more, for a path few streams take.)"""
    speech = WARM_UP_SPEECH.read_bytes()
    segmenter = Segmenter(engine.recognizer(RecognizerOptions()), vad_model, WARM_UP_FORMAT, SegmentRules())
    step = round(WARM_UP_CHUNK_SECONDS * WARM_UP_FORMAT.sample_rate * WARM_UP_FORMAT.bytes_per_sample)
    try:
        for start in range(0, len(speech), step):
            segmenter.feed(speech[start : start + step], partial=True)
        return segmenter.commit()  # what the model heard (a test's figure; any model may hear anything)
    finally:
        segmenter.close()


# Requests a client waits on for a transcript: they go ahead of other streams' audio.
_URGENT = frozenset({"commit", "finish"})


class RequestQueue:
    """Requests in arrival order, except that a stream waiting for a commit goes first.

    A commit's client is waiting for its transcript, while other streams' audio only updates
    partials; so the stream with the oldest pending commit (or end) is served first (its own
    requests still in order), and the rest follow in arrival order.
    """

    def __init__(self) -> None:
        self._pending: collections.deque[tuple[float, tuple[int, str, int, Any]]] = collections.deque()
        self._commits: collections.deque[int] = collections.deque()  # streams, oldest commit first
        self._feeds: collections.Counter[int] = collections.Counter()  # queued feeds per stream

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, message: tuple[int, str, int, Any]) -> None:
        self._pending.append((time.monotonic(), message))
        if message[1] in _URGENT:
            self._commits.append(message[2])
        elif message[1] == "feed":
            self._feeds[message[2]] += 1

    def has_feed(self, stream_id: int) -> bool:
        """More audio of this stream is waiting: a partial now would be stale at once."""
        return self._feeds[stream_id] > 0

    def behind(self) -> bool:
        return bool(self._pending) and time.monotonic() - self._pending[0][0] > BEHIND_SECONDS

    def next(self) -> tuple[int, str, int, Any]:
        index = 0
        if self._commits:
            stream_id = self._commits[0]
            index = next((i for i, (_, m) in enumerate(self._pending) if m[2] == stream_id), 0)
        _, message = self._pending[index]
        del self._pending[index]
        if message[1] in _URGENT and self._commits and self._commits[0] == message[2]:
            self._commits.popleft()
        elif message[1] == "feed":
            self._feeds[message[2]] -= 1
            if not self._feeds[message[2]]:
                del self._feeds[message[2]]
        return message
