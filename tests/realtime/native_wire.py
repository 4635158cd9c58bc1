"""Helpers for Lectern's own streaming socket (``/api/v1/speech-services/stream``, docs/streaming-protocol.md).

Raw ``websockets`` clients, so every frame is exactly what the test says. The checks here are the
document's, written out: exact message shapes, partials that name the segment still to come,
finals whose indexes have no gaps, and the close code that ends each connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import LecternServer

PATH = "/api/v1/speech-services/stream"
SESSIONS = "/api/v1/speech-services/streams"
TIMEOUT = 30.0  # waiting for one expected message or close
OPEN_TIMEOUT = 5.0  # the opening handshake, on loopback
BYTES_PER_SECOND = 32000  # 16 kHz s16le mono
CHUNK = 3200  # 100 ms
ENDED = ("FINISHED", "CANCELLED", "FAILED")

INFO_KEYS = {
    "type", "sessionId", "resumeToken", "resumeGraceSeconds", "resumed", "audioReceivedBytes",
    "nextSegmentIndex", "config",
}
CONFIG_KEYS = {
    "model", "resolvedModel", "usedFallback", "language", "sampleRate", "encoding",
    "enableEndpointDetection", "endpointSilenceMs", "recordingRequested", "metadata",
}
PARTIAL_KEYS = {"type", "segmentIndex", "transcript"}
FINAL_KEYS = {"type", "segmentIndex", "transcript", "startSeconds", "endSeconds", "confidence", "words"}
WORD_KEYS = {"word", "startSeconds", "endSeconds", "confidence", "speakerTag"}
COMPLETED_KEYS = {"type", "sessionId", "segmentCount", "wordsCount", "durationMilliseconds"}
ERROR_KEYS = {"type", "code", "message"}


# -- audio ------------------------------------------------------------------------------------


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * 16000) * 2)


def ms_of(pcm: bytes | int) -> int:
    """The audio clock in whole milliseconds, as the server counts it."""
    n = pcm if isinstance(pcm, int) else len(pcm)
    return n * 1000 // BYTES_PER_SECOND


def frames_of(pcm: bytes, chunk: int = CHUNK) -> list[bytes]:
    return [pcm[i : i + chunk] for i in range(0, len(pcm), chunk)]


# -- the socket -------------------------------------------------------------------------------


def open_native(srv: LecternServer, **kwargs: Any) -> Any:
    return connect(f"{srv.ws_url}{PATH}", open_timeout=OPEN_TIMEOUT, max_size=None, **kwargs)


def start_message(key: str | None = None, token: str | None = None, **fields: Any) -> dict[str, Any]:
    """A ``session.start``; ``authentication`` given in ``fields`` replaces the one made from key/token."""
    credentials: dict[str, Any] = {}
    if key is not None:
        credentials["apiKey"] = key
    if token is not None:
        credentials["token"] = token
    message: dict[str, Any] = {"type": "session.start", "authentication": credentials}
    message.update(fields)
    return message


def resume_message(session_id: str, token: str | None, last_index: int | None) -> dict[str, Any]:
    return {"type": "session.resume", "sessionId": session_id, "resumeToken": token, "lastSegmentIndex": last_index}


async def send_json(ws: ClientConnection, message: Any) -> None:
    await ws.send(json.dumps(message))


async def recv_message(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str), f"the server sent a binary frame: {raw[:40]!r}"
    message = json.loads(raw)
    assert isinstance(message, dict) and isinstance(message.get("type"), str), message
    return message


def check_info(info: dict[str, Any], *, resumed: bool = False) -> dict[str, Any]:
    assert info["type"] == "session.info", info
    assert set(info) == INFO_KEYS, info
    assert str(uuid.UUID(info["sessionId"])) == info["sessionId"], info
    assert info["resumed"] is resumed, info
    assert isinstance(info["resumeGraceSeconds"], int | float) and info["resumeGraceSeconds"] >= 0, info
    if info["resumeGraceSeconds"] > 0:
        assert isinstance(info["resumeToken"], str) and len(info["resumeToken"]) >= 16, info
    else:
        assert info["resumeToken"] is None, info
    assert isinstance(info["audioReceivedBytes"], int) and info["audioReceivedBytes"] >= 0, info
    assert isinstance(info["nextSegmentIndex"], int) and info["nextSegmentIndex"] >= 0, info
    assert set(info["config"]) == CONFIG_KEYS, info
    if not resumed:
        assert (info["audioReceivedBytes"], info["nextSegmentIndex"]) == (0, 0), info
    return info


async def start_session(ws: ClientConnection, key: str | None = None, token: str | None = None, **fields: Any) -> dict[str, Any]:
    """Send ``session.start`` and return the ``session.info`` answering it."""
    await send_json(ws, start_message(key, token, **fields))
    return check_info(await recv_message(ws))


async def send_pcm(ws: ClientConnection, pcm: bytes, chunk: int = CHUNK, *, pace: bool = False) -> int:
    """Send ``pcm`` as binary frames of ``chunk`` bytes, at real-time pace if ``pace``; returns the
    bytes handed to the socket (fewer if it closed first)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    for offset in range(0, len(pcm), chunk):
        if pace:
            await asyncio.sleep(max(0.0, start + offset / BYTES_PER_SECOND - loop.time()))
        part = pcm[offset : offset + chunk]
        try:
            await ws.send(part)
        except ConnectionClosed:
            return sent
        sent += len(part)
    return sent


class AudioStream:
    """One client's audio, sent over one or more connections: where it has got to, and every frame
    boundary so far (the server accepts whole frames only, so it can only have stopped at one)."""

    def __init__(self, pcm: bytes, chunk: int = CHUNK) -> None:
        self.pcm = pcm
        self.chunk = chunk
        self.sent = 0  # bytes handed to a socket, from the start of the stream
        self.boundaries = {0}

    async def send(self, ws: ClientConnection, upto: int | None = None, *, pace: bool = False) -> None:
        """Send from ``sent`` up to byte ``upto`` (the end if None)."""
        end = len(self.pcm) if upto is None else upto
        loop = asyncio.get_running_loop()
        start_time, start_offset = loop.time(), self.sent
        while self.sent < end:
            if pace:
                await asyncio.sleep(max(0.0, start_time + (self.sent - start_offset) / BYTES_PER_SECOND - loop.time()))
            part = self.pcm[self.sent : min(self.sent + self.chunk, end)]
            await ws.send(part)
            self.sent += len(part)
            self.boundaries.add(self.sent)

    def resume_from(self, received: int) -> None:
        """Carry on from what the server says it accepted."""
        assert received <= self.sent, (received, self.sent)
        assert received in self.boundaries, (received, sorted(self.boundaries)[-5:])
        self.sent = received


async def confirm_received(ws: ClientConnection) -> None:
    """Return once the server has read every frame sent before: its pong answers a ping that
    follows them on the same ordered byte stream."""
    pong = await ws.ping()
    await asyncio.wait_for(pong, TIMEOUT)


def cut(ws: ClientConnection) -> None:
    """Drop the connection the way a network does: the TCP transport is aborted (RST), no close frame."""
    ws.transport.abort()


@dataclass
class Closed:
    messages: list[dict[str, Any]]
    code: int | None  # the close code the server sent; None if it sent no close frame
    reason: str | None


async def read_until_closed(ws: ClientConnection, timeout: float = TIMEOUT) -> Closed:
    """Every message until the connection closes, and the server's close code."""
    messages: list[dict[str, Any]] = []
    while True:
        try:
            messages.append(await recv_message(ws, timeout))
        except ConnectionClosed as closed:
            if closed.rcvd is None:
                return Closed(messages, None, None)
            return Closed(messages, closed.rcvd.code, closed.rcvd.reason)


class Reader:
    """Reads a connection in the background, keeping every message (so a sender never waits on us)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> Closed:
        while True:
            try:
                message = await recv_message(self.ws, 3600)
            except ConnectionClosed as closed:
                self._new.set()
                if closed.rcvd is None:
                    return Closed(self.messages, None, None)
                return Closed(self.messages, closed.rcvd.code, closed.rcvd.reason)
            self.messages.append(message)
            self._new.set()

    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "result.final"]

    async def wait_for(self, predicate: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The first message (seen so far or to come) matching ``predicate``."""
        async def scan() -> dict[str, Any]:
            seen = 0
            while True:
                for m in self.messages[seen:]:
                    if predicate(m):
                        return m
                seen = len(self.messages)
                if self.task.done():
                    pytest.fail(f"the connection closed first: {self.messages} {self.task.result()}")
                self._new.clear()
                await self._new.wait()

        return await asyncio.wait_for(scan(), timeout)

    async def wait_final(self, index: int, timeout: float = TIMEOUT) -> dict[str, Any]:
        return await self.wait_for(lambda m: m["type"] == "result.final" and m["segmentIndex"] == index, timeout)

    async def closed(self, timeout: float = TIMEOUT) -> Closed:
        return await asyncio.wait_for(asyncio.shield(self.task), timeout)


# -- checks -----------------------------------------------------------------------------------


def check_final(final: dict[str, Any]) -> dict[str, Any]:
    assert set(final) == FINAL_KEYS, final
    assert isinstance(final["segmentIndex"], int) and final["segmentIndex"] >= 0, final
    assert isinstance(final["transcript"], str) and final["transcript"].strip(), final
    assert 0.0 <= final["startSeconds"] < final["endSeconds"], final
    assert final["confidence"] is None or 0.0 <= final["confidence"] <= 1.0, final
    words = final["words"]
    assert words, final
    assert " ".join(w["word"] for w in words) == final["transcript"], final
    previous_end = final["startSeconds"]
    for w in words:
        assert set(w) == WORD_KEYS, w
        assert isinstance(w["word"], str) and w["word"] and " " not in w["word"], w
        assert previous_end - 0.01 <= w["startSeconds"] <= w["endSeconds"] <= final["endSeconds"] + 0.01, (w, final)
        assert w["confidence"] is None or 0.0 <= w["confidence"] <= 1.0, w
        assert w["speakerTag"] is None or isinstance(w["speakerTag"], int), w
        previous_end = w["endSeconds"]
    return final


def check_results(messages: list[dict[str, Any]], next_index: int = 0) -> list[dict[str, Any]]:
    """The result messages of one connection, in order: each partial names the segment still to
    come, finals count up from ``next_index`` with no gap. Returns the finals."""
    finals = []
    for m in messages:
        if m["type"] == "result.partial":
            assert set(m) == PARTIAL_KEYS and isinstance(m["transcript"], str), m
            assert m["segmentIndex"] == next_index, (m, next_index, messages)
        elif m["type"] == "result.final":
            check_final(m)
            assert m["segmentIndex"] == next_index, (m, next_index, messages)
            finals.append(m)
            next_index += 1
    return finals


def check_completed(closed: Closed, session_id: str) -> dict[str, Any]:
    """A clean end: results, then ``session.completed`` last, then close 1000."""
    assert closed.messages, "no message at all"
    *results, completed = closed.messages
    assert completed["type"] == "session.completed", closed.messages
    assert set(completed) == COMPLETED_KEYS, completed
    assert completed["sessionId"] == session_id, completed
    assert {m["type"] for m in results} <= {"result.partial", "result.final"}, closed.messages
    assert closed.code == 1000, (closed.code, closed.reason, closed.messages)
    return completed


def check_error(message: dict[str, Any], code: str) -> str:
    assert message["type"] == "error", message
    assert set(message) == ERROR_KEYS, message
    assert message["code"] == code, message
    assert isinstance(message["message"], str) and message["message"].strip(), message
    return message["message"]


async def expect_refusal(ws: ClientConnection, code: str, close_code: int) -> str:
    """The very first message is the error (exact shape), nothing follows, then ``close_code``.
    Returns the error's text."""
    closed = await read_until_closed(ws)
    assert len(closed.messages) == 1, closed.messages
    text = check_error(closed.messages[0], code)
    assert closed.code == close_code, (closed.code, closed.reason, closed.messages)
    return text


def transcript(finals: list[dict[str, Any]]) -> str:
    return " ".join(f["transcript"] for f in finals)


def final_without_type(final: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in final.items() if k != "type"}


# -- a whole session --------------------------------------------------------------------------


@dataclass
class Run:
    info: dict[str, Any]
    closed: Closed
    finals: list[dict[str, Any]] = field(default_factory=list)
    completed: dict[str, Any] = field(default_factory=dict)

    @property
    def session_id(self) -> str:
        return self.info["sessionId"]

    @property
    def text(self) -> str:
        return transcript(self.finals)


async def run_session(
    srv: LecternServer, pcm: bytes, key: str | None = None, token: str | None = None, *,
    pace: bool = False, chunk: int = CHUNK, **fields: Any,
) -> Run:
    """One clean session: start, send ``pcm`` while reading, ``session.end``, read to the close."""
    async with open_native(srv) as ws:
        info = await start_session(ws, key, token, **fields)
        reader = Reader(ws)
        await send_pcm(ws, pcm, chunk, pace=pace)
        await send_json(ws, {"type": "session.end"})
        closed = await reader.closed()
    completed = check_completed(closed, info["sessionId"])
    finals = check_results(closed.messages)
    return Run(info, closed, finals, completed)


# -- the database and the REST API ------------------------------------------------------------


async def ended_row(srv: LecternServer, session_id: str, states: tuple[str, ...] = ENDED, timeout: float = 20.0) -> dict[str, Any]:
    row = await asyncio.to_thread(srv.wait_session_state, session_id, states, timeout)
    assert row["state"] in states, row
    return row


def api_get(srv: LecternServer, key: str, path: str) -> httpx.Response:
    return httpx.get(f"{srv.base_url}{SESSIONS}{path}", headers={"X-API-Key": key}, timeout=10)


def api_segments(srv: LecternServer, key: str, session_id: str) -> list[dict[str, Any]]:
    response = api_get(srv, key, f"/{session_id}/segments")
    assert response.status_code == 200, response.text
    return response.json()


def check_segments_match(segments: list[dict[str, Any]], finals: list[dict[str, Any]]) -> None:
    """The segments API holds exactly the finals the client received (same fields, same values)."""
    assert [s["segmentIndex"] for s in segments] == [f["segmentIndex"] for f in finals], (segments, finals)
    for segment, final in zip(segments, finals, strict=True):
        stored = {k: v for k, v in segment.items() if k not in ("id", "createdAt")}
        assert stored == final_without_type(final), (stored, final)


def segment_count(srv: LecternServer, session_id: str) -> int:
    return len(srv.segment_rows(session_id))


def is_token(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_\-]{16,}", value) is not None


# -- server logs ------------------------------------------------------------------------------


def server_log(srv: LecternServer) -> str:
    path = srv.data_dir / "server.log"
    return path.read_bytes().decode(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def no_new_tracebacks(servers: list[LecternServer]) -> Iterator[None]:
    """None of ``servers`` logs a traceback (an unhandled error) within the block."""
    before = {id(s): len(server_log(s)) for s in servers}
    yield
    for srv in servers:
        new = server_log(srv)[before.get(id(srv), 0):]
        assert "Traceback" not in new and "Exception in ASGI application" not in new, new


async def record(srv: LecternServer, key: str, pcm: bytes) -> str:
    """Stream ``pcm`` as one recorded native session, end it, and return its id once closed."""
    async with open_native(srv) as ws:
        info = await start_session(ws, key, recordingRequested=True)
        reader = Reader(ws)
        await send_pcm(ws, pcm)
        await send_json(ws, {"type": "session.end"})
        await reader.closed()
    return info["sessionId"]
