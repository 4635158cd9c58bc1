"""Raw-frame helpers for the ElevenLabs Scribe realtime socket (exact frames, exact checks)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.parse
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import LecternServer

PATH = "/v1/speech-to-text/realtime"
MODEL = "model_id=scribe_v2_realtime"
TIMEOUT = 15.0  # waiting for one expected message or close
OPEN_TIMEOUT = 5.0  # the opening handshake, on loopback
RESULT_TYPES = ("partial_transcript", "committed_transcript", "committed_transcript_with_timestamps")
CHUNK = 3200  # 100 ms of pcm_16000

# By data dir, not id(): a stopped server's object may be freed and its id() reused by the next.
_keys: dict[str, str] = {}


def key_for(srv: LecternServer) -> str:
    if str(srv.data_dir) not in _keys:
        _keys[str(srv.data_dir)] = srv.create_key("acme", "alice")
    return _keys[str(srv.data_dir)]


def open_ws(srv: LecternServer, query: str | None = MODEL, key: str | None = "default") -> Any:
    """``connect()`` to the realtime endpoint; ``key=None`` sends no ``xi-api-key`` header."""
    headers = {} if key is None else {"xi-api-key": key_for(srv) if key == "default" else key}
    url = f"{srv.ws_url}{PATH}" + (f"?{query}" if query else "")
    return connect(url, additional_headers=headers, open_timeout=OPEN_TIMEOUT, max_size=None)


def frame(pcm: bytes = b"", *, commit: bool = False, sample_rate: int | None = 16000, **extra: Any) -> str:
    message: dict[str, Any] = {
        "message_type": "input_audio_chunk",
        "audio_base_64": base64.b64encode(pcm).decode(),
        "commit": commit,
    }
    if sample_rate is not None:
        message["sample_rate"] = sample_rate
    message.update(extra)
    return json.dumps(message)


COMMIT = frame(commit=True)  # exactly what the SDKs send for commit()


async def recv_json(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str), f"the server sent a binary frame: {raw!r}"
    message = json.loads(raw)
    assert isinstance(message, dict) and isinstance(message.get("message_type"), str), message
    return message


async def expect_started(ws: ClientConnection) -> dict[str, Any]:
    message = await recv_json(ws)
    assert message["message_type"] == "session_started", message
    assert re.fullmatch(r"[0-9a-f]{32}", message["session_id"]), message
    return message


async def expect_close(ws: ClientConnection, reason: str | None, timeout: float = TIMEOUT) -> None:
    """The server closes with 1000 (and ``reason`` unless None) and sends nothing more first."""
    try:
        extra = await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, f"the connection dropped without a close frame: {closed!r}"
        assert closed.rcvd.code == 1000, closed
        if reason is not None:
            assert closed.rcvd.reason == reason, closed
        assert ws.close_code == 1000
        return
    pytest.fail(f"expected the server to close the socket, got {extra!r}")


async def expect_error(
    ws: ClientConnection, message_type: str, *, results_first: bool = True
) -> tuple[str, list[dict[str, Any]]]:
    """The error message (exact shape), then the close. Returns its text and the results before it.

    ``results_first``: transcripts may precede the error (an error during a stream still commits
    what was heard); False when the error must be the very first message.
    """
    results: list[dict[str, Any]] = []
    while True:
        message = await recv_json(ws)
        if results_first and message["message_type"] in RESULT_TYPES:
            results.append(message)
            continue
        break
    assert message["message_type"] == message_type, message
    assert set(message) == {"message_type", "error"}, message
    assert isinstance(message["error"], str) and message["error"].strip(), message
    await expect_close(ws, "" if message_type == "auth_error" else message_type)
    return message["error"], results


async def send_audio(ws: ClientConnection, pcm: bytes, chunk: int = CHUNK, pace: float = 0.0, **extra: Any) -> None:
    for i in range(0, len(pcm), chunk):
        await ws.send(frame(pcm[i : i + chunk], **extra))
        if pace:
            await asyncio.sleep(pace)


async def next_committed(ws: ClientConnection) -> str:
    """The text of the next committed_transcript; fails on any error message."""
    while True:
        message = await recv_json(ws)
        assert "error" not in message, message
        if message["message_type"] == "committed_transcript":
            return message["text"]


async def final_row(srv: LecternServer, session_id: str, states: tuple[str, ...]) -> dict[str, Any]:
    row = await asyncio.to_thread(srv.wait_session_state, session_id, states, 15.0)
    assert row["state"] in states, row
    return row


async def assert_failed(srv: LecternServer, session_id: str, error: str) -> dict[str, Any]:
    """The row ended FAILED, and its failure_reason records what the client was told."""
    row = await final_row(srv, session_id, ("FAILED",))
    assert row["failure_reason"] and error in row["failure_reason"], row
    assert row["end_time"] is not None and row["lease_expires_at"] is None, row
    return row


def q(**params: Any) -> str:
    return MODEL + "&" + urllib.parse.urlencode(params, doseq=True, quote_via=urllib.parse.quote)


