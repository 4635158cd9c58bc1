"""ElevenLabs Scribe realtime: every way a stream is refused or ended, on the wire and in the database.

Raw ``websockets`` clients, so every frame is exactly what the test says. The contract
(shared/spec/elevenlabs-realtime.md §1.2, §3.8, §3.9, §9): the upgrade is always accepted; an
error is one ``{"message_type": <type>, "error": <text>}`` message, then a close with code 1000
whose reason is the error type (empty for ``auth_error``); nothing follows the error.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import func, select, update
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import LecternServer, Speech, load_speech, word_error_rate
from tests.realtime.scribe_wire import (
    CHUNK,
    COMMIT,
    MODEL,
    RESULT_TYPES,
    assert_failed,
    expect_close,
    expect_error,
    expect_started,
    final_row,
    frame,
    key_for,
    next_committed,
    open_ws,
    q,
    recv_json,
    send_audio,
)
from lectern.store.models import ApiKey, StreamSessionRow, utcnow

SCOPE = "speech:sessions:write"

FOX = load_speech("fox")
WEATHER = load_speech("weather")
BYTES_PER_SECOND = 32000  # pcm_16000


# -- servers and their logs ---------------------------------------------------------------------

_watched: list[LecternServer] = []


def _watch(srv: LecternServer) -> LecternServer:
    if srv not in _watched:
        _watched.append(srv)
    return srv


def _log(srv: LecternServer) -> bytes:
    path = srv.data_dir / "server.log"
    return path.read_bytes() if path.exists() else b""


@pytest.fixture(autouse=True)
def no_tracebacks(request: pytest.FixtureRequest, make_server: Any) -> Iterator[None]:
    """No server a test talked to logged a traceback (an unhandled error, a 500) during it.

    Depends on ``make_server`` so that it runs before the servers a test started are stopped.
    """
    if getattr(request.function, "checks_log_itself", False):
        yield
        return
    if "server" in request.fixturenames:
        _watch(request.getfixturevalue("server"))
    before = {id(s): len(_log(s)) for s in _watched}
    yield
    for srv in _watched:
        new = _log(srv)[before.get(id(srv), 0):].decode(errors="replace")
        assert "Traceback" not in new and "Exception in ASGI application" not in new, new


@pytest.fixture
def fresh_server(make_server: Any) -> Callable[..., LecternServer]:
    """A server of its own for one test, with its log watched."""
    return lambda **settings: _watch(make_server(**settings))


def _module_server(backend: str, tmp_path_factory: pytest.TempPathFactory, **settings: Any) -> Iterator[LecternServer]:
    srv = _watch(LecternServer(tmp_path_factory.mktemp(f"server-{backend}"), backend, settings))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def chunk_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    yield from _module_server(backend, tmp_path_factory, max_chunk_bytes=32000)


@pytest.fixture(scope="module")
def buffer_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    yield from _module_server(backend, tmp_path_factory, max_buffered_audio_seconds=2)


@pytest.fixture(scope="module")
def idle_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    yield from _module_server(backend, tmp_path_factory, idle_timeout_seconds=1)


def assert_fox(text: str) -> None:
    assert word_error_rate(FOX.text, text) <= 0.2, text
    assert {"quick", "brown", "fox", "lazy", "dog"} <= set(text.split()), text


def metadata_of(size: int, filler: str = "x") -> str:
    """A JSON object of exactly ``size`` UTF-8 bytes."""
    head, tail = '{"note":"', '"}'
    room = size - len(head) - len(tail)
    width = len(filler.encode())
    value = head + filler * (room // width) + "y" * (room % width) + tail
    assert len(value.encode()) == size
    return value


def session_count(srv: LecternServer) -> int:
    with srv.db() as s:
        return s.scalar(select(func.count()).select_from(StreamSessionRow)) or 0


# -- 1. authentication --------------------------------------------------------------------------


def _revoke(srv: LecternServer, key: str, **values: Any) -> None:
    with srv.db() as s:
        s.execute(update(ApiKey).where(ApiKey.secret_hash == hashlib.sha256(key.encode()).hexdigest()).values(**values))
        s.commit()


def _auth_case(srv: LecternServer, case: str) -> tuple[str, str | None]:
    """(query, key) for one way of failing authentication."""
    if case == "missing key":
        return MODEL, None
    if case == "wrong key":
        return MODEL, "not-a-lectern-key"
    if case == "unknown kk- key":
        return MODEL, "kk-" + secrets.token_urlsafe(32)
    if case == "revoked key":
        key = srv.create_key("acme", "revoked")
        _revoke(srv, key, revoked_at=utcnow())
        return MODEL, key
    if case == "expired key":
        key = srv.create_key("acme", "expired")
        _revoke(srv, key, expires_at=utcnow())
        return MODEL, key
    if case == "key without speech:sessions:write":
        return MODEL, srv.create_key("acme", "bob", ["speech:sessions:read"])
    if case == "unknown token":
        return q(token="sutkn_" + secrets.token_urlsafe(24)), None
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "missing key",
        "wrong key",
        "unknown kk- key",
        "revoked key",
        "expired key",
        "key without speech:sessions:write",
        "unknown token",
    ],
)
async def test_auth_failure_is_auth_error_after_the_upgrade(server: LecternServer, case: str) -> None:
    query, key = _auth_case(server, case)
    sessions = session_count(server)
    async with open_ws(server, query, key=key) as ws:  # the upgrade itself succeeds
        error, _ = await expect_error(ws, "auth_error", results_first=False)
    if case == "key without speech:sessions:write":
        assert SCOPE in error
    assert session_count(server) == sessions  # a refused socket is no session


async def test_a_single_use_token_opens_one_socket_only(server: LecternServer, api_key: str) -> None:
    response = httpx.post(f"{server.base_url}/v1/single-use-token/realtime_scribe", headers={"xi-api-key": api_key})
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    async with open_ws(server, q(token=token), key=None) as ws:
        await expect_started(ws)
    async with open_ws(server, q(token=token), key=None) as ws:
        await expect_error(ws, "auth_error", results_first=False)


# -- 2. connection parameters -------------------------------------------------------------------

INVALID_REQUESTS = {
    "missing model_id": ("audio_format=pcm_16000", "model_id"),
    "empty model_id": ("model_id=", "model_id"),
    "audio_format=pcm_12345": (q(audio_format="pcm_12345"), "audio_format"),
    "commit_strategy=bogus": (q(commit_strategy="bogus"), "commit_strategy"),
    "vad_threshold=0.05": (q(vad_threshold="0.05"), "vad_threshold"),
    "vad_threshold=0.95": (q(vad_threshold="0.95"), "vad_threshold"),
    "vad_silence_threshold_secs=0.29": (q(vad_silence_threshold_secs="0.29"), "vad_silence_threshold_secs"),
    "vad_silence_threshold_secs=3.01": (q(vad_silence_threshold_secs="3.01"), "vad_silence_threshold_secs"),
    "min_speech_duration_ms=49": (q(min_speech_duration_ms=49), "min_speech_duration_ms"),
    "min_speech_duration_ms=2001": (q(min_speech_duration_ms=2001), "min_speech_duration_ms"),
    "min_silence_duration_ms=49": (q(min_silence_duration_ms=49), "min_silence_duration_ms"),
    "min_silence_duration_ms=2001": (q(min_silence_duration_ms=2001), "min_silence_duration_ms"),
    "keepalive_interval_ms=499": (q(keepalive_interval_ms=499), "keepalive_interval_ms"),
    "keepalive_interval_ms=10001": (q(keepalive_interval_ms=10001), "keepalive_interval_ms"),
    "include_timestamps=maybe": (q(include_timestamps="maybe"), "include_timestamps"),
    "51 keyterms": (q(keyterms=[f"term{i}" for i in range(51)]), "keyterm"),
    "keyterm of 21 chars": (q(keyterms=["a" * 21]), "keyterm"),
    "language_code=fr": (q(language_code="fr"), "English"),
    "language_code=e!": (q(language_code="e!"), "language_code"),
    "audio_format twice, different": (q(audio_format=["pcm_16000", "pcm_44100"]), "audio_format"),
    "metadata not JSON": (q(metadata="{not json"), "metadata"),
    "metadata a JSON array": (q(metadata="[1, 2]"), "metadata"),
    "metadata of 4097 bytes": (q(metadata=metadata_of(4097)), "metadata"),
    "metadata of 4097 bytes, fewer chars": (q(metadata=metadata_of(4097, "é")), "metadata"),
    "recording without logging": (q(recording="true", enable_logging="false"), "recording"),
}


@pytest.mark.parametrize("case", INVALID_REQUESTS)
async def test_invalid_parameters_are_invalid_request(server: LecternServer, case: str) -> None:
    query, mentions = INVALID_REQUESTS[case]
    sessions = session_count(server)
    async with open_ws(server, query) as ws:
        error, _ = await expect_error(ws, "invalid_request", results_first=False)
    assert mentions in error, error
    assert session_count(server) == sessions


KEYTERMS_50 = [f"term{i}" for i in range(50)]

ACCEPTED_REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "defaults": (MODEL, {
        "model_id": "scribe_v2_realtime", "audio_format": "pcm_16000", "sample_rate": 16000,
        "language_code": "en", "commit_strategy": "manual", "vad_commit_strategy": False,
        "vad_threshold": 0.4, "vad_silence_threshold_secs": 1.5, "min_speech_duration_ms": 100,
        "min_silence_duration_ms": 100, "include_timestamps": False, "enable_logging": True,
        "disable_logging": False, "keyterms": [], "keepalive_interval_ms": None,
    }),
    "vad_threshold=0.1": (q(vad_threshold="0.1"), {"vad_threshold": 0.1}),
    "vad_threshold=0.9": (q(vad_threshold="0.9"), {"vad_threshold": 0.9}),
    "vad_silence_threshold_secs=0.3": (q(vad_silence_threshold_secs="0.3"), {"vad_silence_threshold_secs": 0.3}),
    "vad_silence_threshold_secs=3.0": (q(vad_silence_threshold_secs="3.0"), {"vad_silence_threshold_secs": 3.0}),
    "min_speech_duration_ms=50": (q(min_speech_duration_ms=50), {"min_speech_duration_ms": 50}),
    "min_speech_duration_ms=2000": (q(min_speech_duration_ms=2000), {"min_speech_duration_ms": 2000}),
    "min_silence_duration_ms=50": (q(min_silence_duration_ms=50), {"min_silence_duration_ms": 50}),
    "min_silence_duration_ms=2000": (q(min_silence_duration_ms=2000), {"min_silence_duration_ms": 2000}),
    "keepalive_interval_ms=500": (q(keepalive_interval_ms=500), {"keepalive_interval_ms": 500}),
    "keepalive_interval_ms=10000": (q(keepalive_interval_ms=10000), {"keepalive_interval_ms": 10000}),
    "commit_strategy=vad": (q(commit_strategy="vad"), {"commit_strategy": "vad", "vad_commit_strategy": True}),
    "50 keyterms": (q(keyterms=KEYTERMS_50), {"keyterms": KEYTERMS_50}),
    "keyterm of 20 chars": (q(keyterms=["a" * 20]), {"keyterms": ["a" * 20]}),
    "repeated keyterms": ("&".join([MODEL, "keyterms=alpha", "keyterms=beta"]), {"keyterms": ["alpha", "beta"]}),
    "keyterms with %20 and +": (
        "&".join([MODEL, "keyterms=Eleven%20Labs", "keyterms=Scribe+Two"]),
        {"keyterms": ["Eleven Labs", "Scribe Two"]},
    ),
    "include_timestamps=True": (MODEL + "&include_timestamps=True", {"include_timestamps": True}),
    "include_timestamps=TRUE": (MODEL + "&include_timestamps=TRUE", {"include_timestamps": True}),
    "include_timestamps=False": (MODEL + "&include_timestamps=False", {"include_timestamps": False}),
    "audio_format twice, identical": (
        MODEL + "&audio_format=pcm_16000&commit_strategy=vad&audio_format=pcm_16000",
        {"audio_format": "pcm_16000", "sample_rate": 16000},
    ),
    "legacy encoding=pcm_16000&sample_rate=16000": (
        MODEL + "&encoding=pcm_16000&sample_rate=16000", {"audio_format": "pcm_16000", "sample_rate": 16000}
    ),
    "legacy encoding=pcm_44100&sample_rate=44100": (
        MODEL + "&encoding=pcm_44100&sample_rate=44100", {"audio_format": "pcm_44100", "sample_rate": 44100}
    ),
    "unknown params": (
        MODEL + "&foo=bar&transcript_edit=x&entity_redaction_mode=redacted&diarize=true", {"model_id": "scribe_v2_realtime"}
    ),
    "language_code=en": (q(language_code="en"), {"language_code": "en"}),
    "enable_logging=false": (q(enable_logging="false"), {"enable_logging": False, "disable_logging": True}),
    "metadata of 4096 bytes": (q(metadata=metadata_of(4096)), {}),
    "metadata of 4096 bytes, multibyte": (q(metadata=metadata_of(4096, "é")), {}),
}


@pytest.mark.parametrize("case", ACCEPTED_REQUESTS)
async def test_lenient_and_edge_parameters_are_accepted(server: LecternServer, case: str) -> None:
    query, echo = ACCEPTED_REQUESTS[case]
    async with open_ws(server, query) as ws:
        started = await expect_started(ws)
        config = started["config"]
        for name, value in echo.items():
            assert config[name] == value, (name, config)
    row = await final_row(server, started["session_id"], ("FINISHED",))
    if case.startswith("metadata"):
        stored = row["metadata"]
        stored = json.loads(stored) if isinstance(stored, str) else stored
        expected = metadata_of(4096, "é" if "multibyte" in case else "x")
        assert stored == json.loads(expected)


# -- 3. input_error -----------------------------------------------------------------------------

SECOND = FOX.pcm[CHUNK : 2 * CHUNK]
INPUT_ERRORS: dict[str, list[str | bytes]] = {
    "text frame that is not JSON": ["this is not json"],
    "JSON array": [json.dumps([{"message_type": "input_audio_chunk", "audio_base_64": ""}])],
    "unknown message_type": [json.dumps({"message_type": "commit"})],
    "no message_type": [json.dumps({"audio_base_64": "", "commit": True})],
    "binary frame": [FOX.pcm[:CHUNK]],
    "audio_base_64 not base64": [json.dumps({"message_type": "input_audio_chunk", "audio_base_64": "not base64!", "commit": False})],
    "audio_base_64 missing": [json.dumps({"message_type": "input_audio_chunk", "commit": False, "sample_rate": 16000})],
    "audio_base_64 not a string": [json.dumps({"message_type": "input_audio_chunk", "audio_base_64": 12, "commit": False})],
    "commit not a boolean": [frame(FOX.pcm[:CHUNK], commit="yes")],  # type: ignore[arg-type]
    "odd byte count for pcm_16000": [frame(FOX.pcm[:CHUNK]), frame(FOX.pcm[CHUNK : 2 * CHUNK + 1])],
    "chunk sample_rate mismatching audio_format": [frame(FOX.pcm[:CHUNK], sample_rate=44100)],
    "previous_text on the second chunk": [frame(FOX.pcm[:CHUNK]), frame(SECOND, previous_text="the fox")],
    "previous_text on the second chunk after an empty first": [frame(b""), frame(SECOND, previous_text="the fox")],
}


@pytest.mark.parametrize("case", INPUT_ERRORS)
async def test_bad_client_messages_are_input_error(server: LecternServer, case: str) -> None:
    async with open_ws(server) as ws:
        sid = (await expect_started(ws))["session_id"]
        for message in INPUT_ERRORS[case]:
            await ws.send(message)
        error, _ = await expect_error(ws, "input_error")
    await assert_failed(server, sid, error)


def _fox_frames(style: str) -> list[str]:
    chunks = [FOX.pcm[i : i + CHUNK] for i in range(0, len(FOX.pcm), CHUNK)]
    if style == "previous_text on the first chunk":
        return [frame(chunks[0], previous_text="a sentence about a fox")] + [frame(c) for c in chunks[1:]]
    if style == "previous_text null on every chunk":  # the Python SDK
        return [frame(c, previous_text=None) for c in chunks]
    if style == "empty first chunk carrying previous_text":  # livekit's priming chunk
        return [frame(b"", previous_text="a sentence about a fox")] + [frame(c, previous_text=None) for c in chunks]
    if style == "no sample_rate in chunks":  # the docs' schema omits it
        return [frame(c, sample_rate=None) for c in chunks]
    raise AssertionError(style)


@pytest.mark.parametrize(
    "style",
    [
        "previous_text on the first chunk",
        "previous_text null on every chunk",
        "empty first chunk carrying previous_text",
        "no sample_rate in chunks",
    ],
)
async def test_valid_chunk_variants_are_transcribed(server: LecternServer, style: str) -> None:
    async with open_ws(server) as ws:
        sid = (await expect_started(ws))["session_id"]
        for message in _fox_frames(style):
            await ws.send(message)
        await ws.send(COMMIT)
        assert_fox(await next_committed(ws))
    await final_row(server, sid, ("FINISHED",))


# -- 4. chunk_size_exceeded ---------------------------------------------------------------------


async def test_chunk_of_exactly_max_chunk_bytes_is_accepted(chunk_server: LecternServer) -> None:
    async with open_ws(chunk_server) as ws:
        sid = (await expect_started(ws))["session_id"]
        await ws.send(frame(FOX.pcm[:32000]))
        await ws.send(frame(FOX.pcm[32000:64000], commit=True))
        text = await next_committed(ws)
        assert text.split()[:2] == ["the", "quick"], text
    row = await final_row(chunk_server, sid, ("FINISHED",))
    assert row["duration_ms"] == 2000


async def test_chunk_over_max_chunk_bytes_is_chunk_size_exceeded(chunk_server: LecternServer) -> None:
    async with open_ws(chunk_server) as ws:
        sid = (await expect_started(ws))["session_id"]
        await ws.send(frame(FOX.pcm[:32002]))
        error, _ = await expect_error(ws, "chunk_size_exceeded")
    row = await assert_failed(chunk_server, sid, error)
    assert row["duration_ms"] == 0  # the oversized chunk was refused whole


# -- 5. commit_throttled ------------------------------------------------------------------------


async def test_commit_after_0_2s_is_commit_throttled(server: LecternServer) -> None:
    async with open_ws(server) as ws:
        sid = (await expect_started(ws))["session_id"]
        await send_audio(ws, FOX.pcm[:6400])
        await ws.send(COMMIT)
        error, _ = await expect_error(ws, "commit_throttled")
    assert "0.3s" in error and "0.20s" in error, error
    row = await assert_failed(server, sid, error)
    assert row["failure_reason"].startswith("commit_throttled"), row


async def test_commit_without_audio_is_commit_throttled(server: LecternServer) -> None:
    async with open_ws(server) as ws:
        sid = (await expect_started(ws))["session_id"]
        await ws.send(COMMIT)
        error, _ = await expect_error(ws, "commit_throttled")
    assert "0.3s" in error, error
    row = await assert_failed(server, sid, error)
    assert row["failure_reason"].startswith("commit_throttled"), row


@pytest.mark.parametrize(
    "chunk", [9600, 3200, 640, 320, 600], ids=lambda n: f"{9600 // n}x{n}B"
)
async def test_commit_after_exactly_0_3s_is_accepted(server: LecternServer, chunk: int) -> None:
    """0.3 s is 9600 bytes however it is chunked (600-byte chunks: 16 x 18.75 ms)."""
    async with open_ws(server) as ws:
        sid = (await expect_started(ws))["session_id"]
        await send_audio(ws, FOX.pcm[:9600], chunk)
        await ws.send(COMMIT)
        await next_committed(ws)
    await final_row(server, sid, ("FINISHED",))


async def test_commit_carrying_exactly_0_3s_of_audio_is_accepted(server: LecternServer) -> None:
    async with open_ws(server) as ws:
        sid = (await expect_started(ws))["session_id"]
        await ws.send(frame(FOX.pcm[:9600], commit=True))
        await next_committed(ws)
    await final_row(server, sid, ("FINISHED",))


async def test_commits_every_0_3s_of_100ms_chunks_are_accepted(server: LecternServer) -> None:
    """Each commit has exactly 0.3 s of uncommitted audio (three 100 ms chunks) behind it."""
    async with open_ws(server) as ws:
        sid = (await expect_started(ws))["session_id"]
        for n in range(4):
            await send_audio(ws, FOX.pcm[n * 9600 : (n + 1) * 9600], CHUNK)
            await ws.send(COMMIT)
            await next_committed(ws)
    await final_row(server, sid, ("FINISHED",))


async def test_commit_right_after_a_commit_is_commit_throttled(server: LecternServer) -> None:
    async with open_ws(server) as ws:
        sid = (await expect_started(ws))["session_id"]
        await send_audio(ws, FOX.pcm[: 2 * BYTES_PER_SECOND])
        await ws.send(COMMIT)
        await ws.send(COMMIT)
        error, results = await expect_error(ws, "commit_throttled")
    assert "0.3s" in error and "0.00s" in error, error
    committed = [m["text"] for m in results if m["message_type"] == "committed_transcript"]
    assert len(committed) == 1 and committed[0].split()[:2] == ["the", "quick"], results
    row = await assert_failed(server, sid, error)
    assert row["failure_reason"].startswith("commit_throttled"), row
    assert [s["transcript"] for s in server.segment_rows(sid)] == committed


# -- 6. queue_overflow --------------------------------------------------------------------------


async def test_exactly_max_buffered_audio_at_once_is_accepted(buffer_server: LecternServer) -> None:
    async with open_ws(buffer_server) as ws:
        sid = (await expect_started(ws))["session_id"]
        await ws.send(frame(FOX.pcm[: 2 * BYTES_PER_SECOND]))  # 2.0 s in one chunk: at the bound
        await ws.send(COMMIT)
        assert (await next_committed(ws)).split()[:2] == ["the", "quick"]
    await final_row(buffer_server, sid, ("FINISHED",))


async def test_more_than_max_buffered_audio_at_once_is_queue_overflow(buffer_server: LecternServer) -> None:
    async with open_ws(buffer_server) as ws:
        sid = (await expect_started(ws))["session_id"]
        await ws.send(frame(FOX.pcm[: 2 * BYTES_PER_SECOND + 2]))  # one sample over
        error, _ = await expect_error(ws, "queue_overflow")
    await assert_failed(buffer_server, sid, error)


async def _send_until_closed(ws: ClientConnection, pcm: bytes, chunk: int, pace: float = 0.0) -> int:
    """Send ``pcm`` in chunks until done or the server closes; returns the bytes sent."""
    sent = 0
    try:
        for i in range(0, len(pcm), chunk):
            await ws.send(frame(pcm[i : i + chunk]))
            sent += len(pcm[i : i + chunk])
            if pace:
                await asyncio.sleep(pace)
    except ConnectionClosed:
        pass
    return sent


async def test_flooding_audio_is_queue_overflow(buffer_server: LecternServer) -> None:
    twenty_seconds = (FOX.pcm * 6)[: 20 * BYTES_PER_SECOND]
    async with open_ws(buffer_server) as ws:
        sid = (await expect_started(ws))["session_id"]
        sender = asyncio.create_task(_send_until_closed(ws, twenty_seconds, 8192))  # the Python SDK's URL mode
        error, _ = await expect_error(ws, "queue_overflow")
        await sender
    row = await assert_failed(buffer_server, sid, error)
    assert row["duration_ms"] < 20000


# -- 7. idle timeout ----------------------------------------------------------------------------


async def test_idle_client_is_closed(idle_server: LecternServer) -> None:
    async with open_ws(idle_server) as ws:
        sid = (await expect_started(ws))["session_id"]
        await ws.send(frame(FOX.pcm[:CHUNK]))
        sent_at = time.monotonic()
        while True:  # transcripts may come; an error message may not (the real service sends none)
            try:
                message = await recv_json(ws, timeout=5)
            except ConnectionClosed:
                break
            assert message["message_type"] in RESULT_TYPES, message
        waited = time.monotonic() - sent_at
        await expect_close(ws, None)
    assert 1.0 <= waited < 5.0, waited
    await final_row(idle_server, sid, ("CANCELLED",))


async def test_client_sending_more_often_than_the_idle_timeout_is_kept(idle_server: LecternServer) -> None:
    async with open_ws(idle_server) as ws:
        sid = (await expect_started(ws))["session_id"]
        start = time.monotonic()
        offset = 0
        while time.monotonic() - start < 2.0:  # a 0.3 s chunk every 0.3 s
            await ws.send(frame(FOX.pcm[offset : offset + 9600]))
            offset += 9600
            await asyncio.sleep(0.3)
        await ws.send(frame(FOX.pcm[offset : offset + 9600], commit=True))
        assert (await next_committed(ws)).split()[:2] == ["the", "quick"]
    await final_row(idle_server, sid, ("FINISHED",))


# -- 8. session_time_limit_exceeded -------------------------------------------------------------


async def test_session_time_limit_ends_the_stream_and_keeps_what_was_heard(fresh_server: Any) -> None:
    srv = fresh_server(session_time_limit_seconds=2)
    key_for(srv)
    opened = time.monotonic()
    async with open_ws(srv) as ws:
        sid = (await expect_started(ws))["session_id"]
        sender = asyncio.create_task(_send_until_closed(ws, FOX.pcm, CHUNK, pace=0.1))  # real time
        error, results = await expect_error(ws, "session_time_limit_exceeded")
        ended = time.monotonic() - opened
        sent = await sender
    assert 2.0 <= ended < 4.0, ended
    assert sent < len(FOX.pcm)  # the limit, not the end of the audio, stopped the stream
    committed = [m["text"] for m in results if m["message_type"] == "committed_transcript"]
    assert len(committed) == 1 and committed[0].split()[:2] == ["the", "quick"], results
    row = await assert_failed(srv, sid, error)
    assert [s["transcript"] for s in srv.segment_rows(sid)] == committed
    assert 1500 <= row["duration_ms"] <= sent * 1000 // BYTES_PER_SECOND, (row["duration_ms"], sent)


# -- 9. resource_exhausted ----------------------------------------------------------------------


async def test_stream_beyond_capacity_is_resource_exhausted(fresh_server: Any) -> None:
    srv = fresh_server(engine_workers=1, streams_per_worker=1)
    key_for(srv)
    async with open_ws(srv) as first:
        first_id = (await expect_started(first))["session_id"]
        health = httpx.get(f"{srv.base_url}/healthz").json()
        assert (health["streams"], health["capacity"]) == (1, 1), health
        sessions = session_count(srv)
        async with open_ws(srv) as second:
            error, _ = await expect_error(second, "resource_exhausted", results_first=False)
        assert session_count(srv) == sessions
        # The admitted stream is unaffected.
        await send_audio(first, FOX.pcm)
        await first.send(COMMIT)
        assert_fox(await next_committed(first))
    await final_row(srv, first_id, ("FINISHED",))
    assert httpx.get(f"{srv.base_url}/healthz").json()["streams"] == 0
    async with open_ws(srv) as third:
        third_id = (await expect_started(third))["session_id"]
        await send_audio(third, FOX.pcm)
        await third.send(COMMIT)
        assert_fox(await next_committed(third))
    await final_row(srv, third_id, ("FINISHED",))


# -- 10. transcriber_error ----------------------------------------------------------------------


async def _open_when_admitted(srv: LecternServer, deadline: float) -> tuple[Any, ClientConnection, str]:
    """Open a stream, retrying while the pool (replacing its workers) answers resource_exhausted."""
    while True:
        manager = open_ws(srv)
        ws = await manager.__aenter__()
        message = await recv_json(ws)
        if message["message_type"] == "session_started":
            return manager, ws, message["session_id"]
        assert message["message_type"] == "resource_exhausted", message
        await expect_close(ws, "resource_exhausted")
        await manager.__aexit__(None, None, None)
        assert time.monotonic() < deadline, "the pool did not replace its dead workers"
        await asyncio.sleep(0.2)


async def test_dead_engine_worker_is_transcriber_error_and_is_replaced(fresh_server: Any) -> None:
    srv = fresh_server()
    key_for(srv)
    killed = srv.worker_pids()
    assert len(killed) == 2, killed
    async with open_ws(srv) as ws:
        sid = (await expect_started(ws))["session_id"]
        await send_audio(ws, FOX.pcm[:BYTES_PER_SECOND])
        await recv_json(ws)  # a partial: the worker is serving this stream
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        sender = asyncio.create_task(_send_until_closed(ws, FOX.pcm[BYTES_PER_SECOND:], CHUNK, pace=0.05))
        error, _ = await expect_error(ws, "transcriber_error")
        await sender
    row = await assert_failed(srv, sid, error)
    assert "engine" in row["failure_reason"].lower(), row

    manager, ws, sid = await _open_when_admitted(srv, time.monotonic() + 60)
    try:
        await send_audio(ws, FOX.pcm)
        await ws.send(COMMIT)
        assert_fox(await next_committed(ws))
    finally:
        await manager.__aexit__(None, None, None)
    await final_row(srv, sid, ("FINISHED",))
    replacements = srv.worker_pids()
    assert len(replacements) == 2 and not set(replacements) & set(killed), (killed, replacements)


# -- 11. crash accounting -----------------------------------------------------------------------

LEASE = {"lease_seconds": 2, "lease_renew_seconds": 0.5, "sweep_interval_seconds": 0.5}


async def test_stream_of_a_crashed_server_is_failed_by_the_lease_sweeper(
    fresh_server: Any, backend: str
) -> None:
    old = fresh_server(**LEASE)
    key_for(old)
    seconds = 2.8  # longer than lease_seconds (so the lease must be renewed), not a multiple of the renewal
    async with open_ws(old) as ws:
        sid = (await expect_started(ws))["session_id"]
        await send_audio(ws, FOX.pcm[: int(seconds * BYTES_PER_SECOND)], CHUNK, pace=0.1)
        assert old.session_row(sid)["state"] == "ACTIVE"
        processes = psutil.Process(old.process.pid).children(recursive=True)
        old.process.kill()
        for process in processes:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        old.process.wait(10)
        with pytest.raises(ConnectionClosed):  # the socket dropped: no error message, no close frame
            while True:
                assert (await recv_json(ws))["message_type"] in RESULT_TYPES
        assert ws.close_code is None or ws.close_code == 1006
    at_crash = old.session_row(sid)
    assert at_crash["state"] == "ACTIVE" and at_crash["lease_expires_at"] is not None, at_crash
    # The last renewal recorded the audio processed up to at most lease_renew_seconds before the
    # crash; allow two 100 ms chunks for the audio in flight between client and recognizer.
    sent_ms = int(seconds * 1000)
    renew_ms = int(LEASE["lease_renew_seconds"] * 1000)
    assert sent_ms - renew_ms - 2 * 100 <= at_crash["duration_ms"] <= sent_ms, at_crash

    new = LecternServer(old.data_dir, backend, LEASE, database_url=old.env.get("LECTERN_DATABASE_URL", ""))
    try:
        log_start = len(_log(new))
        row = await final_row(new, sid, ("FAILED",))
        assert "lease" in row["failure_reason"], row
        assert row["duration_ms"] == at_crash["duration_ms"] > 0, row
        assert row["end_time"] is not None and row["lease_expires_at"] is None, row
        async with open_ws(new, key=key_for(old)) as ws:  # the restarted server serves
            await expect_started(ws)
        new_log = _log(new)[log_start:].decode(errors="replace")
        assert "Traceback" not in new_log, new_log
    finally:
        new.stop()


# -- 12. concurrent streams ---------------------------------------------------------------------


async def test_concurrent_streams_do_not_mix(server: LecternServer) -> None:
    keys = [server.create_key("acme", "carol"), server.create_key("globex", "dave")]
    speeches = [FOX, WEATHER]
    barrier = asyncio.Barrier(2)

    async def run(key: str, speech: Speech) -> tuple[str, list[str]]:
        async with open_ws(server, key=key) as ws:
            sid = (await expect_started(ws))["session_id"]
            await barrier.wait()  # both streams are open before either sends
            texts = []
            for _ in range(2):  # two segments each, interleaved with the other stream's
                await send_audio(ws, speech.pcm, CHUNK, pace=0.02)
                await ws.send(COMMIT)
                texts.append(await next_committed(ws))
        return sid, texts

    results = await asyncio.gather(*(run(k, s) for k, s in zip(keys, speeches, strict=True)))
    words = [set(s.text.split()) for s in speeches]
    for (sid, texts), speech, own, other in zip(results, speeches, words, reversed(words), strict=True):
        for text in texts:
            assert word_error_rate(speech.text, text) <= 0.2, (speech.name, text)
            assert not set(text.split()) & (other - own), (speech.name, text)
        await final_row(server, sid, ("FINISHED",))
        assert [s["transcript"] for s in server.segment_rows(sid)] == texts
    rows = [server.session_row(sid) for sid, _ in results]
    assert rows[0]["tenant_id"] != rows[1]["tenant_id"]


# -- a client that hangs up as soon as it has read the error ------------------------------------


@pytest.mark.parametrize("case", ["auth_error", "invalid_request", "input_error", "commit_throttled"])
async def test_client_closing_as_soon_as_it_reads_the_error_is_no_server_error(
    server: LecternServer, case: str
) -> None:
    """Clients commonly close on an error frame, racing the server's own close."""
    log_start = len(_log(server))
    query = q(language_code="fr") if case == "invalid_request" else MODEL
    async with open_ws(server, query, key=None if case == "auth_error" else "default") as ws:
        sid = None
        if case in ("input_error", "commit_throttled"):
            sid = (await expect_started(ws))["session_id"]
            await ws.send("not json" if case == "input_error" else COMMIT)
        message = await recv_json(ws)
        assert message["message_type"] == case, message
        await ws.close()
    if sid is not None:
        await final_row(server, sid, ("FAILED",))
    deadline = time.monotonic() + 1.0  # the server logs an unhandled error as its handler ends
    while time.monotonic() < deadline:
        new = _log(server)[log_start:].decode(errors="replace")
        assert "Traceback" not in new, new
        await asyncio.sleep(0.05)


test_client_closing_as_soon_as_it_reads_the_error_is_no_server_error.checks_log_itself = True  # type: ignore[attr-defined]


# -- what was sent before an error is still committed --------------------------------------------


async def test_audio_sent_before_an_input_error_is_still_committed(server: LecternServer) -> None:
    """The salvage commit covers all audio the server accepted, not only what it had decoded."""
    async with open_ws(server) as ws:
        sid = (await expect_started(ws))["session_id"]
        await send_audio(ws, FOX.pcm)  # as fast as possible
        await ws.send("not json")
        error, results = await expect_error(ws, "input_error")
    committed = [m["text"] for m in results if m["message_type"] == "committed_transcript"]
    assert len(committed) == 1, results
    assert_fox(committed[0])
    row = await assert_failed(server, sid, error)
    assert row["duration_ms"] == len(FOX.pcm) * 1000 // BYTES_PER_SECOND, row
