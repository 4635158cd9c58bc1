"""The engine worker process: hosts many streams' pipelines and serves requests over a pipe."""

from __future__ import annotations

import signal
from multiprocessing.connection import Connection
from typing import Any

from lectern.speech.engines.base import Engine
from lectern.speech.pipeline import StreamPipeline, StreamSpec
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
    pipelines: dict[int, StreamPipeline] = {}

    def handle(op: str, stream_id: int, arg: Any) -> Any:
        if op == "open":
            spec: StreamSpec = arg
            pipelines[stream_id] = StreamPipeline(
                spec, engine.recognizer(spec.keyterms, spec.format.sample_rate), vad_model
            )
            return None
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
    while True:
        if not conn.poll(IDLE_POLL_SECONDS):
            engine.idle()
            continue
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        request_id, op, stream_id, arg = message
        try:
            result = handle(op, stream_id, arg)
        except Exception as exc:  # reported to the one stream that caused it, the worker lives on
            conn.send((request_id, False, f"{type(exc).__name__}: {exc}"))
        else:
            conn.send((request_id, True, result))
