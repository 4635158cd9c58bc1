"""One client for the three realtime protocols, for tests of the limits every protocol shares
(stream caps, quotas, rate limits): start a stream, send audio, end it, and read a refusal in the
protocol's own shape (exact frames and close codes, as each protocol's wire helpers check them).
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import LecternServer

PROTOCOLS = ("elevenlabs", "reverie", "native")
TIMEOUT = 30.0
OPEN_TIMEOUT = 5.0
CHUNK = 3200  # 100 ms of 16 kHz s16le
BYTES_PER_SECOND = 32000
ENDED = ("FINISHED", "CANCELLED", "FAILED")

_PATHS = {"elevenlabs": "/v1/speech-to-text/realtime", "reverie": "/stream", "native": "/api/v1/speech-services/stream"}

# What each protocol says for each refusal: ElevenLabs its message_type, Reverie "code cause",
# native its error code.
CONCURRENCY_LIMIT = {"elevenlabs": "rate_limited", "reverie": "429 too many streams", "native": "RESOURCE_EXHAUSTED"}
QUOTA_EXCEEDED = {"elevenlabs": "quota_exceeded", "reverie": "403 Forbidden", "native": "QUOTA_EXCEEDED"}
RATE_LIMITED = {"elevenlabs": "rate_limited", "reverie": "429 too many requests", "native": "RATE_LIMITED"}
AUTH_FAILED = {"elevenlabs": "auth_error", "reverie": "403 Forbidden", "native": "UNAUTHENTICATED"}
# Native close codes (docs/streaming-protocol.md); the others close with 1000.
NATIVE_CLOSE = {"RESOURCE_EXHAUSTED": 1013, "RATE_LIMITED": 1013, "QUOTA_EXCEEDED": 1008, "UNAUTHENTICATED": 1008}


def admin(srv: LecternServer, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "lectern", "admin", *args], env=srv.env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


def new_tenant(srv: LecternServer, prefix: str, user: str = "alice", **settings: int) -> tuple[str, str]:
    """A fresh tenant with ``settings`` (tenant columns, set by the admin CLI) and a key of ``user``."""
    tenant = f"{prefix}-{uuid.uuid4().hex[:8]}"
    key = srv.create_key(tenant, user)
    if settings:
        flags = [arg for column, value in settings.items() for arg in ("--" + column.replace("_", "-"), str(value))]
        admin(srv, "tenants", "update", tenant, *flags)
    return tenant, key


@dataclass
class Attempt:
    protocol: str
    ws: ClientConnection
    session_id: str | None = None  # the stream's row id (a UUID string) when it started
    refusal: str | None = None  # the protocol's name for the error, when refused
    message: str = ""  # the error's text
    messages: list[dict[str, Any]] = field(default_factory=list)


async def start(srv: LecternServer, protocol: str, key: str, tenant: str, **connect_args: Any) -> Attempt:
    """Connect and ask for a stream; the Attempt is either started or refused (then closed, its
    close code checked)."""
    url = f"{srv.ws_url}{_PATHS[protocol]}"
    headers: dict[str, str] = {}
    if protocol == "elevenlabs":
        url += "?model_id=scribe_v2_realtime&audio_format=pcm_16000"
        headers["xi-api-key"] = key
    elif protocol == "reverie":
        url += "?" + urllib.parse.urlencode({"appname": "stt_stream", "apikey": key, "appid": tenant, "src_lang": "en",
                                             "domain": "generic", "continuous": "true", "timeout": "180"})
    ws = await connect(url, additional_headers=headers, open_timeout=OPEN_TIMEOUT, max_size=None, **connect_args)
    attempt = Attempt(protocol, ws)
    if protocol == "native":
        await ws.send(json.dumps({"type": "session.start", "authentication": {"apiKey": key}}))
    first = await recv(ws)
    if protocol == "elevenlabs" and first["message_type"] == "session_started":
        attempt.session_id = str(uuid.UUID(hex=first["session_id"]))
    elif protocol == "reverie" and first["success"] and first["cause"] == "ready":
        attempt.session_id = str(uuid.UUID(hex=first["id"]))
    elif protocol == "native" and first["type"] == "session.info":
        attempt.session_id = first["sessionId"]
    else:
        await _refused(attempt, first)
    return attempt


async def recv(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str), raw[:40]
    message = json.loads(raw)
    assert isinstance(message, dict), message
    return message


async def _refused(attempt: Attempt, message: dict[str, Any]) -> None:
    """``message`` is an error in the protocol's exact shape, and the server closes next."""
    if attempt.protocol == "elevenlabs":
        assert set(message) == {"message_type", "error"}, message
        attempt.refusal, attempt.message = message["message_type"], message["error"]
        reason = "" if attempt.refusal == "auth_error" else attempt.refusal
        await _expect_close(attempt.ws, 1000, reason)
    elif attempt.protocol == "reverie":
        assert set(message) == {"id", "success", "final", "cause", "text", "confidence", "display_text", "code",
                                "message"}, message
        assert message["success"] is False and message["final"] is True, message
        attempt.refusal, attempt.message = f"{message['code']} {message['cause']}", message["message"]
        await _expect_close(attempt.ws, 1000, None)
    else:
        assert set(message) == {"type", "code", "message"} and message["type"] == "error", message
        attempt.refusal, attempt.message = message["code"], message["message"]
        await _expect_close(attempt.ws, NATIVE_CLOSE.get(message["code"], 1000), message["code"])
    assert attempt.message.strip(), message


async def _expect_close(ws: ClientConnection, code: int, reason: str | None) -> None:
    try:
        extra = await asyncio.wait_for(ws.recv(), TIMEOUT)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, f"no close frame: {closed!r}"
        assert closed.rcvd.code == code, closed
        if reason is not None:
            assert closed.rcvd.reason == reason, closed
        return
    raise AssertionError(f"expected a close, got {extra!r}")


def audio_frame(protocol: str, pcm: bytes) -> str | bytes:
    if protocol == "elevenlabs":
        return json.dumps({"message_type": "input_audio_chunk", "audio_base_64": base64.b64encode(pcm).decode(),
                           "commit": False, "sample_rate": 16000})
    return pcm


async def send_audio(attempt: Attempt, pcm: bytes) -> int:
    """Send ``pcm`` as fast as the socket takes it; returns the bytes sent before the server closed."""
    sent = 0
    for offset in range(0, len(pcm), CHUNK):
        part = pcm[offset : offset + CHUNK]
        try:
            await attempt.ws.send(audio_frame(attempt.protocol, part))
        except ConnectionClosed:
            break
        sent += len(part)
    return sent


async def read_until_error(attempt: Attempt, timeout: float = 120.0) -> None:
    """Read results until the stream's error (kept in ``refusal``), then the close."""
    while True:
        message = await recv(attempt.ws, timeout)
        attempt.messages.append(message)
        if _is_error(attempt.protocol, message):
            await _refused(attempt, message)
            return


def _is_error(protocol: str, message: dict[str, Any]) -> bool:
    if protocol == "elevenlabs":
        return "error" in message
    if protocol == "reverie":
        return message["success"] is False
    return message["type"] == "error"


async def end(attempt: Attempt) -> None:
    """End the stream the protocol's normal way and wait for the server's close."""
    ws = attempt.ws
    if attempt.protocol == "reverie":
        await ws.send(b"--EOF--")
    elif attempt.protocol == "native":
        await ws.send(json.dumps({"type": "session.end"}))
    else:
        await ws.close()
        return
    try:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    except ConnectionClosed:
        return


def cut(attempt: Attempt) -> None:
    """Drop the connection the way a network does (TCP reset, no close frame)."""
    attempt.ws.transport.abort()


async def ended_row(srv: LecternServer, session_id: str, timeout: float = 15.0) -> dict[str, Any]:
    row = await asyncio.to_thread(srv.wait_session_state, session_id, ENDED, timeout)
    assert row["state"] in ENDED, row
    return row
