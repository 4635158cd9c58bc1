"""Lectern's own streaming protocol (``/api/v1/speech-services/stream``) on real servers.

The contract is docs/streaming-protocol.md: credentials in the first JSON message, binary 16 kHz
s16le frames, ``result.partial``/``result.final`` with segment indexes, ``session.completed`` with
the totals, and one ``{"type": "error", "code", "message"}`` with the close code of the doc's table.
Resuming a dropped connection is tested in test_native_resume.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select, update

from lectern.store.models import ApiKey, StreamSessionRow, Tenant, User, utcnow
from tests.conftest import SPEECH, LecternServer, load_speech, word_error_rate
from tests.realtime.native_wire import (
    BYTES_PER_SECOND,
    SESSIONS,
    Reader,
    Run,
    api_get,
    api_segments,
    check_completed,
    check_error,
    check_results,
    check_segments_match,
    ended_row,
    expect_refusal,
    ms_of,
    no_new_tracebacks,
    open_native,
    read_until_closed,
    recv_message,
    run_session,
    send_json,
    send_pcm,
    silence,
    start_message,
    start_session,
    transcript,
)

SECRET = "native-protocol-tests-hs256-secret-0123456789"
WRITE = "speech:sessions:write"
READ = "speech:sessions:read"

FOX = load_speech("fox")
WEATHER = load_speech("weather")
TWO = load_speech("two_sentences")
TWO_PARTS = json.loads((SPEECH / "two_sentences.json").read_text())["segments"]
SILENCE_AFTER = silence(2.0)  # longer than the default 1.5 s endpoint: the VAD commits in it

DEFAULT_CONFIG = {
    "model": "default",
    "resolvedModel": "pocketsphinx-en-us",
    "usedFallback": False,
    "language": "en",
    "sampleRate": 16000,
    "encoding": "pcm_s16le",
    "enableEndpointDetection": True,
    "endpointSilenceMs": 1500,
    "recordingRequested": False,
    "metadata": None,
}


# -- servers and their logs -------------------------------------------------------------------

_watched: list[LecternServer] = []


@pytest.fixture(autouse=True)
def no_tracebacks(make_server: Any) -> Iterator[None]:
    """No server a test talked to logged a traceback (an unhandled error) during it. Depends on
    ``make_server`` so that it runs before the servers a test started are stopped."""
    with no_new_tracebacks(_watched):
        yield


def _module_server(backend: str, tmp_path_factory: pytest.TempPathFactory, **settings: Any) -> Iterator[LecternServer]:
    srv = LecternServer(tmp_path_factory.mktemp(f"native-{backend}"), backend, settings)
    _watched.append(srv)
    try:
        yield srv
    finally:
        _watched.remove(srv)
        srv.stop()


@pytest.fixture(scope="module")
def srv(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    """This module's server: API keys and HS256 bearer tokens."""
    yield from _module_server(backend, tmp_path_factory, jwt_secret=SECRET)


@pytest.fixture(scope="module")
def idle_srv(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    """Short limits: 1 s to send anything, 2 s of audio ahead of recognition at most."""
    yield from _module_server(backend, tmp_path_factory, idle_timeout_seconds=1, max_buffered_audio_seconds=2)


@pytest.fixture(scope="module")
def key(srv: LecternServer) -> str:
    return srv.create_key("acme", "alice")


# -- helpers ----------------------------------------------------------------------------------


def token(sub: str = "alice", tenant: str = "acme", scope: str = WRITE, *, secret: str = SECRET, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": sub, "tenant": tenant, "scope": scope, "exp": int(time.time()) + 300}
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def owner(srv: LecternServer, session_id: str) -> tuple[str, str]:
    """(tenant name, user name) of a session."""
    with srv.db() as s:
        row = s.get(StreamSessionRow, uuid.UUID(session_id))
        assert row is not None
        tenant = s.get(Tenant, row.tenant_id)
        user = s.get(User, row.user_id)
        assert tenant is not None and user is not None
        return tenant.name, user.external_id


def session_count(srv: LecternServer) -> int:
    with srv.db() as s:
        return s.scalar(select(func.count()).select_from(StreamSessionRow)) or 0


def _set_key(srv: LecternServer, key: str, **values: Any) -> None:
    with srv.db() as s:
        s.execute(update(ApiKey).where(ApiKey.secret_hash == hashlib.sha256(key.encode()).hexdigest()).values(**values))
        s.commit()


def forbid_recording(srv: LecternServer, tenant: str) -> None:
    with srv.db() as s:
        s.execute(update(Tenant).where(Tenant.name == tenant).values(recording_allowed=False))
        s.commit()


def metadata_of(size: int, filler: str = "x") -> dict[str, Any]:
    """A metadata object whose compact JSON (``JSON.stringify``) is exactly ``size`` UTF-8 bytes."""
    head, tail = '{"note":"', '"}'
    room = size - len(head) - len(tail)
    width = len(filler.encode())
    raw = head + filler * (room // width) + "y" * (room % width) + tail
    assert len(raw.encode()) == size
    return json.loads(raw)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def assert_words(reference: str, text: str, limit: float = 0.15) -> None:
    assert word_error_rate(reference, text) <= limit, (reference, text)


async def finish(srv: LecternServer, run: Any, key: str) -> dict[str, Any]:
    """The common checks of a clean session: the row, the totals, the segments API."""
    row = await ended_row(srv, run.session_id, ("FINISHED",))
    assert row["protocol"] == "native", row
    assert row["failure_reason"] is None, row
    assert run.completed["segmentCount"] == row["segment_count"] == len(run.finals), (run.completed, row)
    assert run.completed["wordsCount"] == row["words_count"] == sum(len(f["words"]) for f in run.finals), row
    assert run.completed["durationMilliseconds"] == row["duration_ms"], (run.completed, row)
    assert [f["segmentIndex"] for f in run.finals] == list(range(len(run.finals)))
    check_segments_match(api_segments(srv, key, run.session_id), run.finals)
    return row


# -- happy paths ------------------------------------------------------------------------------


async def test_api_key_session_end_to_end(srv: LecternServer, key: str) -> None:
    run = await run_session(srv, TWO.pcm, key)
    assert run.info["config"] == DEFAULT_CONFIG, run.info
    assert run.info["resumeGraceSeconds"] == 30, run.info
    assert any(m["type"] == "result.partial" and m["transcript"] for m in run.closed.messages), run.closed.messages
    # Two sentences 2 s apart: the VAD ends the first in the pause, session.end the second.
    assert len(run.finals) == 2, run.finals
    for final, part in zip(run.finals, TWO_PARTS, strict=True):
        assert_words(part["text"], final["transcript"], 0.2)
        # Times are on the stream's audio clock: the words lie where the fixture has them.
        words = final["words"]
        assert part["start_sample"] / 16000 - 0.35 <= words[0]["startSeconds"], (final, part)
        assert words[-1]["endSeconds"] <= part["end_sample"] / 16000 + 0.35, (final, part)
    assert run.finals[0]["endSeconds"] <= TWO_PARTS[1]["start_sample"] / 16000 <= run.finals[1]["startSeconds"] + 0.35
    assert run.finals[1]["endSeconds"] <= TWO.seconds
    assert_words(TWO.text, run.text)
    row = await finish(srv, run, key)
    assert row["duration_ms"] == ms_of(TWO.pcm), row
    assert owner(srv, run.session_id) == ("acme", "alice")
    response = api_get(srv, key, f"/{run.session_id}")
    assert response.status_code == 200, response.text
    session = response.json()
    assert session["state"] == "FINISHED"
    assert (session["segmentCount"], session["wordsCount"], session["durationMilliseconds"]) == (
        run.completed["segmentCount"], run.completed["wordsCount"], run.completed["durationMilliseconds"],
    )
    assert (session["requestedModelAlias"], session["resolvedModelName"], session["usedFallback"]) == (
        "default", "pocketsphinx-en-us", False,
    )
    assert session["recordingRequested"] is False and session["metadata"] is None


async def test_jwt_session_belongs_to_the_tokens_tenant_and_user(srv: LecternServer) -> None:
    run = await run_session(srv, FOX.pcm + SILENCE_AFTER + WEATHER.pcm, token=token("jwt-carol", "jwt-initech"))
    assert [f["segmentIndex"] for f in run.finals] == [0, 1]
    assert_words(FOX.text, run.finals[0]["transcript"])
    assert_words(WEATHER.text, run.finals[1]["transcript"])
    assert owner(srv, run.session_id) == ("jwt-initech", "jwt-carol")
    # The same user reads it back over REST with a read-scoped token; another tenant's user cannot.
    reader = {"Authorization": f"Bearer {token('jwt-carol', 'jwt-initech', READ)}"}
    response = await asyncio.to_thread(httpx.get, f"{srv.base_url}{SESSIONS}/{run.session_id}", headers=reader)
    assert response.status_code == 200, response.text
    assert response.json()["segmentCount"] == 2
    stranger = {"Authorization": f"Bearer {token('jwt-carol', 'jwt-other', READ)}"}
    response = await asyncio.to_thread(httpx.get, f"{srv.base_url}{SESSIONS}/{run.session_id}", headers=stranger)
    assert response.status_code == 404, response.text
    key = srv.create_key("jwt-initech", "jwt-carol")  # the same user, by API key
    await finish(srv, run, key)
    assert run.completed["durationMilliseconds"] == ms_of(FOX.pcm + SILENCE_AFTER + WEATHER.pcm)


async def test_the_api_key_wins_when_both_credentials_are_given(srv: LecternServer) -> None:
    bob = srv.create_key("acme", "bob")
    async with open_native(srv) as ws:
        info = await start_session(ws, bob, token("mallory", "evil"))
        await send_json(ws, {"type": "session.end"})
        closed = await read_until_closed(ws)
    completed = check_completed(closed, info["sessionId"])
    assert (completed["segmentCount"], completed["wordsCount"], completed["durationMilliseconds"]) == (0, 0, 0)
    assert owner(srv, info["sessionId"]) == ("acme", "bob")
    assert (await ended_row(srv, info["sessionId"], ("FINISHED",)))["segment_count"] == 0


async def test_model_language_metadata_and_unknown_fields(srv: LecternServer, key: str) -> None:
    metadata = {"call_id": "c-42", "agent": {"name": "Zoë", "team": 7}, "tags": ["a", "b"], "vip": True, "note": None}
    run = await run_session(
        srv, FOX.pcm, key, model="nova-3", language="en-US", metadata=metadata, sampleRate=16000,
        enableEndpointDetection=True, someFutureField={"ignored": True},
    )
    assert run.info["config"] == {
        **DEFAULT_CONFIG, "model": "nova-3", "usedFallback": True, "metadata": metadata,
    }, run.info
    assert len(run.finals) == 1
    assert_words(FOX.text, run.text)
    await finish(srv, run, key)
    session = api_get(srv, key, f"/{run.session_id}").json()
    assert session["metadata"] == metadata
    assert (session["requestedModelAlias"], session["usedFallback"]) == ("nova-3", True)


async def test_recording_is_the_pcm_that_was_sent_in_frames_of_any_whole_number_of_samples(srv: LecternServer, key: str) -> None:
    pcm = WEATHER.pcm + silence(0.7) + FOX.pcm[:-1234]
    sizes = [2, 0, 6, 3202, 9998, 4000, 31998]  # bytes, cycled: one sample, none, ..., about 1 s
    frames, offset, i = [], 0, 0
    while offset < len(pcm):
        size = sizes[i % len(sizes)]
        frames.append(pcm[offset : offset + size])
        offset += size
        i += 1
    assert b"".join(frames) == pcm and all(len(f) % 2 == 0 for f in frames)
    async with open_native(srv) as ws:
        info = await start_session(ws, key, recordingRequested=True)
        assert info["config"]["recordingRequested"] is True
        reader = Reader(ws)
        for frame in frames:
            await ws.send(frame)
        await send_json(ws, {"type": "session.end"})
        closed = await reader.closed()
    run = Run(info, closed, check_results(closed.messages), check_completed(closed, info["sessionId"]))
    assert_words(WEATHER.text + " " + FOX.text, run.text, 0.2)
    await finish(srv, run, key)
    response = api_get(srv, key, f"/{run.session_id}/recording")
    assert response.status_code == 200, response.text
    assert response.content == pcm
    session = api_get(srv, key, f"/{run.session_id}").json()
    assert session["recordingRequested"] is True and session["durationMilliseconds"] == ms_of(pcm)


async def test_endpoint_detection_off_commits_only_at_session_end(srv: LecternServer, key: str) -> None:
    async with open_native(srv) as ws:
        info = await start_session(ws, key, enableEndpointDetection=False)
        assert info["config"] == {**DEFAULT_CONFIG, "enableEndpointDetection": False}
        reader = Reader(ws)
        await send_pcm(ws, TWO.pcm)
        # Once a partial holds words of the second sentence, the 2 s pause has been processed:
        # with endpoint detection on, the first sentence would have been committed by now.
        second = set(TWO_PARTS[1]["text"].split()) - set(TWO_PARTS[0]["text"].split())
        await reader.wait_for(lambda m: m["type"] == "result.partial" and bool(second & set(m["transcript"].split())))
        assert reader.finals() == [], reader.messages
        await send_json(ws, {"type": "session.end"})
        closed = await reader.closed()
    completed = check_completed(closed, info["sessionId"])
    finals = check_results(closed.messages)
    assert len(finals) == 1, finals
    assert closed.messages.index(finals[0]) == len(closed.messages) - 2  # the last result, after session.end
    assert_words(TWO.text, finals[0]["transcript"])
    assert completed["segmentCount"] == 1 and completed["durationMilliseconds"] == ms_of(TWO.pcm)


@pytest.mark.parametrize("silence_ms", [300, 3000])
async def test_endpoint_silence_at_its_edges(srv: LecternServer, key: str, silence_ms: int) -> None:
    run = await run_session(srv, TWO.pcm, key, endpointSilenceMs=silence_ms)
    assert run.info["config"] == {**DEFAULT_CONFIG, "endpointSilenceMs": silence_ms}
    if silence_ms == 3000:  # the 2 s pause is shorter than the endpoint: one segment
        assert len(run.finals) == 1, run.finals
    else:  # the 2 s pause is far longer: the sentences are apart
        assert len(run.finals) >= 2, run.finals
        first = set(TWO_PARTS[0]["text"].split())
        assert not first & set(run.finals[-1]["transcript"].split()), run.finals
    assert_words(TWO.text, run.text)
    await finish(srv, run, key)


async def test_a_session_without_audio_completes_empty(srv: LecternServer, key: str) -> None:
    async with open_native(srv) as ws:
        info = await start_session(ws, key)
        await send_json(ws, {"type": "session.end", "extra": "ignored"})
        closed = await read_until_closed(ws)
    completed = check_completed(closed, info["sessionId"])
    assert closed.messages == [completed]
    assert (completed["segmentCount"], completed["wordsCount"], completed["durationMilliseconds"]) == (0, 0, 0)
    row = await ended_row(srv, info["sessionId"], ("FINISHED",))
    assert (row["segment_count"], row["words_count"], row["duration_ms"]) == (0, 0, 0)


async def test_silence_commits_nothing(srv: LecternServer, key: str) -> None:
    run = await run_session(srv, silence(3.0), key)
    assert run.finals == [], run.closed.messages
    assert run.completed["segmentCount"] == 0 and run.completed["durationMilliseconds"] == 3000
    await finish(srv, run, key)


# -- metadata size ----------------------------------------------------------------------------


@pytest.mark.parametrize("filler", ["x", "é", "水"])
async def test_metadata_of_exactly_the_limit_is_accepted(srv: LecternServer, key: str, filler: str) -> None:
    """4096 bytes as JSON: the compact UTF-8 JSON a browser's ``JSON.stringify`` sends."""
    metadata = metadata_of(4096, filler)
    assert len(compact(metadata).encode()) == 4096
    async with open_native(srv) as ws:
        await send_json(ws, start_message(key, metadata=metadata))
        first = await recv_message(ws)
        assert first["type"] == "session.info", first
        assert first["config"]["metadata"] == metadata
        await send_json(ws, {"type": "session.end"})
        check_completed(await read_until_closed(ws), first["sessionId"])
    assert api_get(srv, key, f"/{first['sessionId']}").json()["metadata"] == metadata


@pytest.mark.parametrize("filler", ["x", "é"])
async def test_metadata_over_the_limit_is_refused(srv: LecternServer, key: str, filler: str) -> None:
    before = session_count(srv)
    async with open_native(srv) as ws:
        await send_json(ws, start_message(key, metadata=metadata_of(4097, filler)))
        text = await expect_refusal(ws, "INVALID_ARGUMENT", 1008)
    assert "metadata" in text
    assert session_count(srv) == before


# -- refusals before a session exists ---------------------------------------------------------


def _revoked(srv: LecternServer) -> str:
    k = srv.create_key("acme", "revoked")
    _set_key(srv, k, revoked_at=utcnow())
    return k


def _expired(srv: LecternServer) -> str:
    k = srv.create_key("acme", "expired")
    _set_key(srv, k, expires_at=utcnow())
    return k


MISSING = object()

# name -> (the session.start fields given a server and a good key, code, a word the message names)
REFUSED_STARTS: dict[str, tuple[Any, str, str | None]] = {
    "no authentication": (lambda s, k: {"authentication": MISSING}, "UNAUTHENTICATED", None),
    "authentication null": (lambda s, k: {"authentication": None}, "UNAUTHENTICATED", None),
    "empty authentication": (lambda s, k: {"authentication": {}}, "UNAUTHENTICATED", None),
    "empty apiKey": (lambda s, k: {"authentication": {"apiKey": ""}}, "UNAUTHENTICATED", None),
    "not a key": (lambda s, k: {"authentication": {"apiKey": "not-a-lectern-key"}}, "UNAUTHENTICATED", None),
    "unknown kk- key": (
        lambda s, k: {"authentication": {"apiKey": "kk-" + secrets.token_urlsafe(32)}}, "UNAUTHENTICATED", None,
    ),
    "revoked key": (lambda s, k: {"authentication": {"apiKey": _revoked(s)}}, "UNAUTHENTICATED", None),
    "expired key": (lambda s, k: {"authentication": {"apiKey": _expired(s)}}, "UNAUTHENTICATED", None),
    "token of another secret": (
        lambda s, k: {"authentication": {"token": token(secret="another-secret-that-is-long-enough-for-it!")}},
        "UNAUTHENTICATED", None,
    ),
    "expired token": (
        lambda s, k: {"authentication": {"token": token(exp=int(time.time()) - 3600)}}, "UNAUTHENTICATED", None,
    ),
    "garbage token": (lambda s, k: {"authentication": {"token": "not.a.jwt"}}, "UNAUTHENTICATED", None),
    "a bad apiKey beside a good token (the key wins)": (
        lambda s, k: {"authentication": {"apiKey": "kk-" + secrets.token_urlsafe(32), "token": token()}},
        "UNAUTHENTICATED", None,
    ),
    "key without speech:sessions:write": (
        lambda s, k: {"authentication": {"apiKey": s.create_key("acme", "reader", [READ])}},
        "PERMISSION_DENIED", WRITE,
    ),
    "token without speech:sessions:write": (
        lambda s, k: {"authentication": {"token": token(scope=READ)}}, "PERMISSION_DENIED", WRITE,
    ),
    "language fr": (lambda s, k: {"language": "fr"}, "INVALID_ARGUMENT", "language"),
    "language de-DE": (lambda s, k: {"language": "de-DE"}, "INVALID_ARGUMENT", "language"),
    "sampleRate 8000": (lambda s, k: {"sampleRate": 8000}, "INVALID_ARGUMENT", "sampleRate"),
    "sampleRate 16001": (lambda s, k: {"sampleRate": 16001}, "INVALID_ARGUMENT", "sampleRate"),
    "sampleRate as a string": (lambda s, k: {"sampleRate": "16000"}, "INVALID_ARGUMENT", "sampleRate"),
    "model not a string": (lambda s, k: {"model": 5}, "INVALID_ARGUMENT", "model"),
    "language not a string": (lambda s, k: {"language": ["en"]}, "INVALID_ARGUMENT", "language"),
    "enableEndpointDetection a string": (
        lambda s, k: {"enableEndpointDetection": "true"}, "INVALID_ARGUMENT", "enableEndpointDetection",
    ),
    "enableEndpointDetection 1": (lambda s, k: {"enableEndpointDetection": 1}, "INVALID_ARGUMENT", "enableEndpointDetection"),
    "endpointSilenceMs 299": (lambda s, k: {"endpointSilenceMs": 299}, "INVALID_ARGUMENT", "endpointSilenceMs"),
    "endpointSilenceMs 3001": (lambda s, k: {"endpointSilenceMs": 3001}, "INVALID_ARGUMENT", "endpointSilenceMs"),
    "endpointSilenceMs a string": (lambda s, k: {"endpointSilenceMs": "1500"}, "INVALID_ARGUMENT", "endpointSilenceMs"),
    "endpointSilenceMs a fraction": (lambda s, k: {"endpointSilenceMs": 1500.5}, "INVALID_ARGUMENT", "endpointSilenceMs"),
    "endpointSilenceMs true": (lambda s, k: {"endpointSilenceMs": True}, "INVALID_ARGUMENT", "endpointSilenceMs"),
    "recordingRequested a string": (lambda s, k: {"recordingRequested": "yes"}, "INVALID_ARGUMENT", "recordingRequested"),
    "metadata an array": (lambda s, k: {"metadata": [1, 2]}, "INVALID_ARGUMENT", "metadata"),
    "metadata a string": (lambda s, k: {"metadata": "{}"}, "INVALID_ARGUMENT", "metadata"),
}


@pytest.mark.parametrize("case", list(REFUSED_STARTS))
async def test_a_refused_session_start(srv: LecternServer, key: str, case: str) -> None:
    fields, code, named = REFUSED_STARTS[case]
    message = {"type": "session.start", "authentication": {"apiKey": key}, **fields(srv, key)}
    message = {name: value for name, value in message.items() if value is not MISSING}
    before = session_count(srv)
    async with open_native(srv) as ws:
        await send_json(ws, message)
        text = await expect_refusal(ws, code, 1008)
    if named:
        assert named in text, text
    assert session_count(srv) == before  # a refused start is no session


async def test_recording_refused_where_the_tenant_disallows_it(srv: LecternServer) -> None:
    k = srv.create_key("norec", "dana")
    forbid_recording(srv, "norec")
    before = session_count(srv)
    async with open_native(srv) as ws:
        await send_json(ws, start_message(k, recordingRequested=True))
        text = await expect_refusal(ws, "PERMISSION_DENIED", 1008)
    assert "recording" in text.lower()
    assert session_count(srv) == before
    # The tenant still streams without a recording.
    run = await run_session(srv, FOX.pcm, k, recordingRequested=False)
    assert_words(FOX.text, run.text)
    await finish(srv, run, k)


FIRST_MESSAGES: dict[str, str | bytes] = {
    "binary audio": b"\x00\x01" * 1600,
    "not JSON": "{not json",
    "a JSON array": '["session.start"]',
    "a JSON string": '"session.start"',
    "an object without a type": '{"authentication": {"apiKey": "x"}}',
    "a type that is not a string": '{"type": 5}',
    "an unknown type": '{"type": "session.begin"}',
    "session.end first": '{"type": "session.end"}',
    "an empty text frame": "",
}


@pytest.mark.parametrize("case", list(FIRST_MESSAGES))
async def test_a_bad_first_message(srv: LecternServer, case: str) -> None:
    before = session_count(srv)
    async with open_native(srv) as ws:
        await ws.send(FIRST_MESSAGES[case])
        await expect_refusal(ws, "INVALID_ARGUMENT", 1008)
    assert session_count(srv) == before


async def test_no_first_message_within_the_idle_timeout(idle_srv: LecternServer) -> None:
    before = session_count(idle_srv)
    async with open_native(idle_srv) as ws:
        await expect_refusal(ws, "DEADLINE_EXCEEDED", 1000)
    assert session_count(idle_srv) == before


# -- errors during a session ------------------------------------------------------------------


async def expect_session_error(
    reader: Reader, code: str, close_code: int, next_index: int = 0
) -> tuple[list[dict[str, Any]], str]:
    """Results, then the error (last), then ``close_code``. Returns the finals and the error text."""
    closed = await reader.closed()
    assert closed.messages, "no message at all"
    *results, error = closed.messages
    text = check_error(error, code)
    assert {m["type"] for m in results} <= {"result.partial", "result.final"}, closed.messages
    assert closed.code == close_code, (closed.code, closed.reason, closed.messages)
    return check_results(results, next_index), text


async def assert_failed_keeping(srv: LecternServer, session_id: str, key: str, text: str, finals: list[dict[str, Any]]) -> None:
    row = await ended_row(srv, session_id, ("FAILED",))
    assert row["failure_reason"] and text in row["failure_reason"], row
    assert row["end_time"] is not None and row["lease_expires_at"] is None, row
    assert row["segment_count"] == len(finals), row
    check_segments_match(api_segments(srv, key, session_id), finals)


MID_SESSION: dict[str, str | bytes] = {
    "a second session.start": "start",
    "session.resume": '{"type": "session.resume", "sessionId": "x", "resumeToken": "y"}',
    "an unknown type": '{"type": "session.pause"}',
    "not JSON": "not json at all",
    "an object without a type": "{}",
    "an odd-length audio frame": b"\x01\x02\x03",
}


@pytest.mark.parametrize("case", list(MID_SESSION))
async def test_a_bad_message_mid_session_fails_it_keeping_its_segments(srv: LecternServer, key: str, case: str) -> None:
    async with open_native(srv) as ws:
        info = await start_session(ws, key)
        reader = Reader(ws)
        await send_pcm(ws, FOX.pcm + SILENCE_AFTER)
        await reader.wait_final(0)  # committed by the VAD, before the bad message
        await send_pcm(ws, WEATHER.pcm)  # accepted, not yet committed
        bad = MID_SESSION[case]
        await ws.send(json.dumps(start_message(key)) if bad == "start" else bad)
        finals, text = await expect_session_error(reader, "INVALID_ARGUMENT", 1000)
    # Audio accepted before the error is still recognized first: the weather is committed too.
    assert [f["segmentIndex"] for f in finals] == [0, 1], finals
    assert_words(FOX.text, finals[0]["transcript"])
    assert_words(WEATHER.text, finals[1]["transcript"])
    await assert_failed_keeping(srv, info["sessionId"], key, text, finals)


async def test_an_audio_frame_of_the_maximum_size_is_accepted_one_byte_pair_more_is_not(srv: LecternServer, key: str) -> None:
    limit = 1 << 20  # LECTERN_MAX_CHUNK_BYTES
    async with open_native(srv) as ws:
        info = await start_session(ws, key)
        reader = Reader(ws)
        await ws.send(bytes(limit))
        await ws.send(bytes(limit + 2))
        finals, text = await expect_session_error(reader, "INVALID_ARGUMENT", 1000)
    assert finals == []
    assert str(limit) in text
    row = await ended_row(srv, info["sessionId"], ("FAILED",))
    assert row["duration_ms"] == ms_of(limit), row  # the first frame was accepted and processed
    assert text in row["failure_reason"]


async def test_an_idle_session_ends_deadline_exceeded_and_cancelled(idle_srv: LecternServer) -> None:
    k = idle_srv.create_key("acme", "idler")
    async with open_native(idle_srv) as ws:
        info = await start_session(ws, k)
        reader = Reader(ws)
        await send_pcm(ws, FOX.pcm + SILENCE_AFTER, pace=True)  # real time: within the 2 s buffer bound
        finals, _ = await expect_session_error(reader, "DEADLINE_EXCEEDED", 1000)
    assert len(finals) == 1
    assert_words(FOX.text, finals[0]["transcript"])
    row = await ended_row(idle_srv, info["sessionId"], ("CANCELLED",))
    assert row["segment_count"] == 1 and row["duration_ms"] == ms_of(FOX.pcm + SILENCE_AFTER), row
    check_segments_match(api_segments(idle_srv, k, info["sessionId"]), finals)


async def test_the_session_time_limit_ends_it_deadline_exceeded_and_failed(make_server: Any) -> None:
    limited = make_server(session_time_limit_seconds=2)
    _watched.append(limited)
    try:
        k = limited.create_key("acme", "alice")
        async with open_native(limited) as ws:
            info = await start_session(ws, k)
            reader = Reader(ws)
            await send_pcm(ws, FOX.pcm + SILENCE_AFTER, pace=True)  # 5.7 s at real time: past the limit
            finals, text = await expect_session_error(reader, "DEADLINE_EXCEEDED", 1000)
        row = await ended_row(limited, info["sessionId"], ("FAILED",))
        assert text in row["failure_reason"], row
        # What was heard before the limit is committed and kept.
        assert len(finals) == 1 and finals[0]["transcript"].split()[:2] == ["the", "quick"], finals
        check_segments_match(api_segments(limited, k, info["sessionId"]), finals)
    finally:
        _watched.remove(limited)


async def test_a_dead_recognizer_is_unavailable(make_server: Any) -> None:
    one = make_server(engine_workers=1)
    _watched.append(one)
    try:
        k = one.create_key("acme", "alice")
        [worker] = one.worker_pids()
        stream = FOX.pcm + SILENCE_AFTER + WEATHER.pcm
        async with open_native(one) as ws:
            info = await start_session(ws, k)
            reader = Reader(ws)
            await send_pcm(ws, stream[: len(FOX.pcm + SILENCE_AFTER)])
            await reader.wait_final(0)  # the worker is serving this stream
            os.kill(worker, signal.SIGKILL)
            sender = asyncio.create_task(send_pcm(ws, stream[len(FOX.pcm + SILENCE_AFTER) :], pace=True))
            finals, text = await expect_session_error(reader, "UNAVAILABLE", 1011)
            await sender
        assert [f["segmentIndex"] for f in finals] == [0]
        await assert_failed_keeping(one, info["sessionId"], k, text, finals)
    finally:
        _watched.remove(one)


async def test_resource_exhausted_when_every_recognizer_is_taken(make_server: Any) -> None:
    small = make_server(engine_workers=1, streams_per_worker=1)
    _watched.append(small)
    try:
        k = small.create_key("acme", "alice")
        async with open_native(small) as first:
            info = await start_session(first, k)
            before = session_count(small)
            async with open_native(small) as second:
                await send_json(second, start_message(k))
                refused = await read_until_closed(second)
            assert len(refused.messages) == 1, refused.messages
            assert "capacity" in check_error(refused.messages[0], "RESOURCE_EXHAUSTED")
            assert session_count(small) == before  # no row for the refused stream
            # The first session is unaffected.
            reader = Reader(first)
            await send_pcm(first, FOX.pcm)
            await send_json(first, {"type": "session.end"})
            closed = await reader.closed()
        check_completed(closed, info["sessionId"])
        assert_words(FOX.text, transcript(check_results(closed.messages)))
        await ended_row(small, info["sessionId"], ("FINISHED",))
        # Its recognizer is free again.
        run = await run_session(small, WEATHER.pcm, k)
        assert_words(WEATHER.text, run.text)
        # The doc's table: RESOURCE_EXHAUSTED closes with 1013 (try again later).
        assert refused.code == 1013, (refused.code, refused.reason)
    finally:
        _watched.remove(small)


async def test_audio_exactly_the_buffer_bound_ahead_is_accepted(idle_srv: LecternServer) -> None:
    k = idle_srv.create_key("acme", "buffered")
    run = await run_session(idle_srv, FOX.pcm[: 2 * BYTES_PER_SECOND], k, chunk=2 * BYTES_PER_SECOND)
    assert run.text.split()[:2] == ["the", "quick"], run.finals
    assert run.completed["durationMilliseconds"] == 2000


async def test_audio_too_far_ahead_of_recognition_is_resource_exhausted(idle_srv: LecternServer) -> None:
    k = idle_srv.create_key("acme", "flooder")
    async with open_native(idle_srv) as ws:
        info = await start_session(ws, k)
        reader = Reader(ws)
        await ws.send(FOX.pcm[: 2 * BYTES_PER_SECOND + 2])  # one sample over the 2 s bound, in one frame
        finals, text = await expect_session_error(reader, "RESOURCE_EXHAUSTED", 1013)
    assert finals == []
    row = await ended_row(idle_srv, info["sessionId"], ("FAILED",))
    assert text in row["failure_reason"] and row["duration_ms"] == 0, row
