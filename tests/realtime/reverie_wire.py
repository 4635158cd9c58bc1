"""Helpers for the Reverie streaming socket (``/stream``): audio in every format, exact message checks.

Audio conversions are written out here (numpy, PyAV), not taken from the server, so a test never
checks the server's converter against itself.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import urllib.parse
import uuid
from typing import Any

import av
import httpx
import numpy as np
import soxr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import LecternServer

PATH = "/stream"
TIMEOUT = 30.0  # waiting for one expected message or close
OPEN_TIMEOUT = 5.0
SESSIONS = "/api/v1/speech-services/streams"
EOF = b"--EOF--"

MESSAGE_KEYS = {"id", "success", "final", "cause", "text", "confidence", "display_text"}
ERROR_KEYS = MESSAGE_KEYS | {"code", "message"}
ENDED = ("FINISHED", "CANCELLED", "FAILED")

# format -> (sample rate, encoding); opus_* are one raw packet per message, ogg_opus any slicing.
FORMATS: dict[str, tuple[int, str]] = {
    "16k_int16": (16000, "int16"),
    "8k_int16": (8000, "int16"),
    "16k_uint8": (16000, "uint8"),
    "8k_uint8": (8000, "uint8"),
    "16k_ulaw": (16000, "ulaw"),
    "8k_ulaw": (8000, "ulaw"),
    "opus_16k": (16000, "opus"),
    "opus_8k": (8000, "opus"),
    "ogg_opus": (16000, "ogg"),
}
BYTE_STREAM_FORMATS = [name for name, (_, enc) in FORMATS.items() if enc != "opus"]  # any slicing works

# By data dir, not id(): a stopped server's object may be freed and its id() reused by the next.
_keys: dict[str, str] = {}


def key_for(srv: LecternServer) -> str:
    """One ``acme``/``alice`` key per server (default scopes)."""
    if str(srv.data_dir) not in _keys:
        _keys[str(srv.data_dir)] = srv.create_key("acme", "alice")
    return _keys[str(srv.data_dir)]


# -- audio ------------------------------------------------------------------------------------


def samples_at(pcm16k: bytes, rate: int) -> np.ndarray:
    samples = np.frombuffer(pcm16k, dtype="<i2")
    if rate == 16000:
        return samples
    return soxr.resample(samples, 16000, rate, quality="HQ").astype("<i2")


def to_uint8(samples: np.ndarray) -> bytes:
    """Unsigned 8-bit PCM: the top byte of each sample, offset by 128 (rounded, clipped)."""
    return np.clip(np.round(samples.astype(np.float64) / 256) + 128, 0, 255).astype(np.uint8).tobytes()


def to_ulaw(samples: np.ndarray) -> bytes:
    """G.711 mu-law, the standard segment encoder (bias 0x84, clip 32635, bits inverted)."""
    x = samples.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7  # 0..7 for 0x84..0x7FFF
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def _opus_encoder(codec: av.CodecContext, rate: int) -> av.CodecContext:
    codec.sample_rate, codec.layout, codec.format, codec.bit_rate = rate, "mono", "s16", 24000
    return codec


def _frame(samples: np.ndarray, rate: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate, frame.pts = rate, 0
    return frame


def opus_packets(samples: np.ndarray, rate: int) -> list[bytes]:
    """Raw libopus packets (20 ms each), as a client sends them for ``opus_16k``/``opus_8k``."""
    encoder = _opus_encoder(av.CodecContext.create("libopus", "w"), rate)
    return [bytes(p) for p in encoder.encode(_frame(samples, rate)) + encoder.encode(None)]


def ogg_opus(samples: np.ndarray, rate: int = 16000) -> bytes:
    """An Ogg Opus file of the samples."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=rate)
        _opus_encoder(stream.codec_context, rate)
        for packet in stream.encode(_frame(samples, rate)) + stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def encode(format_name: str, pcm16k: bytes) -> bytes | list[bytes]:
    """The 16 kHz fixture audio in ``format_name``: bytes, or a list of packets for opus_*."""
    rate, encoding = FORMATS[format_name]
    samples = samples_at(pcm16k, rate)
    if encoding == "int16":
        return samples.astype("<i2").tobytes()
    if encoding == "uint8":
        return to_uint8(samples)
    if encoding == "ulaw":
        return to_ulaw(samples)
    if encoding == "opus":
        return opus_packets(samples, rate)
    return ogg_opus(samples, rate)


def silence(seconds: float, rate: int = 16000) -> bytes:
    return bytes(int(seconds * rate) * 2)


# -- the socket -------------------------------------------------------------------------------


def query(srv: LecternServer, key: str | None = None, **params: Any) -> str:
    """The full query string: credentials and the required parameters, then ``params``.

    A parameter given as None is left out; every value is sent as given (str() of it).
    """
    base: dict[str, Any] = {
        "appname": "stt_stream",
        "apikey": key if key is not None else key_for(srv),
        "appid": "acme",
        "src_lang": "en",
        "domain": "generic",
    }
    base.update(params)
    return urllib.parse.urlencode({k: str(v) for k, v in base.items() if v is not None})


def open_stream(srv: LecternServer, key: str | None = None, **params: Any) -> Any:
    return connect(f"{srv.ws_url}{PATH}?{query(srv, key, **params)}", open_timeout=OPEN_TIMEOUT, max_size=None)


async def recv_message(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str), f"the server sent a binary frame: {raw!r}"
    message = json.loads(raw)
    assert isinstance(message, dict), message
    return message


async def read_all(ws: ClientConnection, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """Every message until the server closes the socket; the close must be a clean 1000."""
    messages: list[dict[str, Any]] = []
    while True:
        try:
            messages.append(await recv_message(ws, timeout))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, f"the connection dropped without a close frame: {closed!r} {messages}"
            assert closed.rcvd.code == 1000, (closed, messages)
            return messages


async def send_all(ws: ClientConnection, frames: list[bytes | str]) -> None:
    """Send frames as fast as possible; stop quietly when the server has closed (it may end first)."""
    for frame in frames:
        try:
            await ws.send(frame)
        except ConnectionClosed:
            return


async def send_paced(ws: ClientConnection, pcm: bytes, bytes_per_second: int, chunk_seconds: float = 0.1) -> bool:
    """Send ``pcm`` in chunks at real-time pace; False if the server closed the socket first."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    step = int(chunk_seconds * bytes_per_second) // 2 * 2
    for offset in range(0, len(pcm), step):
        await asyncio.sleep(max(0.0, start + offset / bytes_per_second - loop.time()))
        try:
            await ws.send(pcm[offset : offset + step])
        except ConnectionClosed:
            return False
    return True


async def stream(
    srv: LecternServer, frames: list[bytes | str], key: str | None = None, **params: Any
) -> list[dict[str, Any]]:
    """Open a stream, send ``frames`` while reading, and return every message up to the server's close."""
    async with open_stream(srv, key, **params) as ws:
        sender = asyncio.create_task(send_all(ws, frames))
        try:
            messages = await read_all(ws)
        finally:
            await sender
    return messages


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- checks -----------------------------------------------------------------------------------


def check_stream(messages: list[dict[str, Any]], ending: str, *, continuous: bool = False) -> dict[str, Any]:
    """A successful stream's messages, exactly: ``ready``, then partials (and, in continuous mode,
    utterance ends), then one final with cause ``ending``. Returns the final."""
    assert messages, "no message at all"
    for m in messages:
        assert set(m) == MESSAGE_KEYS, m
        assert m["success"] is True, m
        assert isinstance(m["confidence"], float) and 0.0 <= m["confidence"] <= 1.0, m
    ready, *middle, last = messages
    assert ready == {"id": ready["id"], "success": True, "final": False, "cause": "ready", "text": "",
                     "confidence": 1.0, "display_text": ""}, ready
    assert re.fullmatch(r"[0-9a-f]{32}", ready["id"]), ready
    assert {m["id"] for m in messages} == {ready["id"]}, "the id changed within one stream"
    for m in middle:
        assert m["final"] is False, (m, messages)
        if m["cause"] == "partial":
            assert m["display_text"] == "" and m["confidence"] == 1.0, m
        else:
            assert continuous and m["cause"] == "silence detected", (m, messages)
    assert last["cause"] == ending and last["final"] is True, (last, messages)
    return last


def check_error(message: dict[str, Any], code: int, cause: str) -> str:
    """An error message, exactly; returns its ``message`` (what to fix)."""
    assert set(message) == ERROR_KEYS, message
    assert message["success"] is False and message["final"] is True, message
    assert (message["code"], message["cause"]) == (code, cause), message
    assert message["text"] == "" and message["display_text"] == "" and message["confidence"] == 1.0, message
    assert re.fullmatch(r"[0-9a-f]{32}", message["id"]), message
    assert isinstance(message["message"], str) and message["message"].strip(), message
    return message["message"]


def texts(messages: list[dict[str, Any]]) -> str:
    """Everything the client was shown, as one string (for asserting what must not appear)."""
    return " ".join(m["text"] for m in messages)


def session_uuid(stream_id: str) -> str:
    return str(uuid.UUID(hex=stream_id))


async def ended_row(srv: LecternServer, stream_id: str, states: tuple[str, ...] = ENDED) -> dict[str, Any]:
    row = await asyncio.to_thread(srv.wait_session_state, session_uuid(stream_id), states, 15.0)
    assert row["state"] in states, row
    return row


def ended_row_sync(srv: LecternServer, stream_id: str, states: tuple[str, ...] = ENDED) -> dict[str, Any]:
    row = srv.wait_session_state(session_uuid(stream_id), states, 15.0)
    assert row["state"] in states, row
    return row


def api_get(srv: LecternServer, key: str, path: str) -> httpx.Response:
    return httpx.get(f"{srv.base_url}{SESSIONS}{path}", headers={"X-API-Key": key}, timeout=10)


def jsonish(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
