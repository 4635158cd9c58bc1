"""The engine worker process: hosts many streams' pipelines and serves requests over a pipe."""

from __future__ import annotations

import collections
import signal
from multiprocessing.connection import Connection
from typing import Any

from lectern.speech.engines.base import Engine
from lectern.speech.pipeline import StreamPipeline, StreamSpec
from lectern.speech.segmenter import Segmenter
from lectern.speech.vad import load_vad_model

IDLE_POLL_SECONDS = 0.5


def create_engine(name: str, max_streams: int) -> Engine:
    if name == "pocketsphinx-en-us":
        from lectern.speech.engines.pocketsphinx import PocketSphinxEngine

        return PocketSphinxEngine(ready_decoders=1, max_spare_decoders=max_streams)
    raise ValueError(f"unknown engine {name!r}")


def serve(conn: Connection, engine_name: str, max_streams: int) -> None:
    """Request: (request_id, op, stream_id, argument); reply: (request_id, ok, result_or_error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server process owns shutdown
    engine = create_engine(engine_name, max_streams)
    vad_model = load_vad_model()
    pipelines: dict[int, StreamPipeline | Segmenter] = {}

    def handle(op: str, stream_id: int, arg: Any) -> Any:
        if op == "open":
            spec: StreamSpec = arg
            pipeline = StreamPipeline(spec, engine.recognizer(spec.keyterms, spec.format.sample_rate), vad_model)
            pipelines[stream_id] = Segmenter(pipeline, spec.segmenting) if spec.segmenting else pipeline
            return None
        if op == "segment":
            return pipelines[stream_id].feed(arg)
        if op == "segment_end":
            return pipelines[stream_id].finish()
        if op == "feed":
            return pipelines[stream_id].feed(arg)
        if op == "drain":
            return pipelines[stream_id].feed(b"", last=True)
        if op == "finish":
            return pipelines[stream_id].finish()
        if op == "close":
            pipeline = pipelines.pop(stream_id, None)
            if pipeline is not None:
                pipeline.close()
            return None
        raise ValueError(f"unknown op {op!r}")

    conn.send(("ready", None, None))
    requests = RequestQueue()
    while True:
        if not requests and not conn.poll(IDLE_POLL_SECONDS):
            engine.idle()
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


class RequestQueue:
    """Requests in arrival order, except that a stream waiting for a commit goes first.

    A commit's client is waiting for its transcript, while other streams' audio only updates
    partials; so the stream with the oldest pending ``finish`` is served first (its own requests
    still in order), and the rest follow in arrival order.
    """

    def __init__(self) -> None:
        self._pending: collections.deque[tuple[int, str, int, Any]] = collections.deque()
        self._commits: collections.deque[int] = collections.deque()  # streams, oldest commit first

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, message: tuple[int, str, int, Any]) -> None:
        self._pending.append(message)
        if message[1] == "finish":
            self._commits.append(message[2])

    def next(self) -> tuple[int, str, int, Any]:
        if self._commits:
            stream_id = self._commits[0]
            for index, message in enumerate(self._pending):
                if message[2] == stream_id:
                    del self._pending[index]
                    if message[1] == "finish":
                        self._commits.popleft()
                    return message
        return self._pending.popleft()
