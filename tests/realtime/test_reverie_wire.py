"""The Reverie streaming endpoint (``/stream``) on the wire: what the official SDK cannot send.

Raw ``websockets`` clients, so every frame is exactly what the test says: one raw Opus packet per
message, Ogg Opus in arbitrary slices, 16-bit audio cut at odd byte boundaries, ``--EOF--`` as a
text frame, a stray text frame, chunks over the server's limit, and streams paced at real time
where real time is the point (``timeout``, a microphone's silence, continuous decoding).

The contract (module docstring of lectern/realtime/protocols/reverie.py, shared/spec/reverie-stream.md):
``ready`` first; every message has the seven keys; one final message (``EOF received``,
``silence detected``, ``timeout``, ``audio too short``, or an error with ``success: false`` and
the extra keys ``code`` and ``message``), then a close with code 1000.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect

from lectern.store.models import StreamSessionRow
from tests.conftest import LecternServer, load_speech, word_error_rate
from tests.realtime.reverie_wire import (
    EOF,
    MESSAGE_KEYS,
    PATH,
    api_get,
    check_error,
    check_stream,
    chunks,
    encode,
    ended_row,
    jsonish,
    key_for,
    ogg_opus,
    open_stream,
    query,
    read_all,
    recv_message,
    samples_at,
    send_paced,
    session_uuid,
    silence,
    stream,
    texts,
)

FOX = load_speech("fox")
WEATHER = load_speech("weather")
TWO = load_speech("two_sentences")
FIRST, SECOND = "the children are playing in the park", "we will have dinner at home tonight"
MAX_WER = 0.15
BYTES_PER_SECOND = 32000  # 16k_int16


# -- servers and their logs ---------------------------------------------------------------------

_watched: list[LecternServer] = []


def _log(srv: LecternServer) -> bytes:
    return (srv.data_dir / "server.log").read_bytes()


@pytest.fixture(autouse=True)
def no_tracebacks(request: pytest.FixtureRequest) -> Iterator[None]:
    """No server the test talked to logged a traceback (an unhandled error) during it."""
    for name in ("server", "limits_server", "busy_server"):
        if name in request.fixturenames:
            srv = request.getfixturevalue(name)
            if srv not in _watched:
                _watched.append(srv)
    before = {id(s): len(_log(s)) for s in _watched}
    yield
    for srv in _watched:
        new = _log(srv)[before.get(id(srv), 0):].decode(errors="replace")
        assert "Traceback" not in new and "Exception in ASGI application" not in new, new


def _module_server(backend: str, tmp_path_factory: pytest.TempPathFactory, **settings: Any) -> Iterator[LecternServer]:
    srv = LecternServer(tmp_path_factory.mktemp(f"reverie-{backend}"), backend, settings)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def limits_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    """Small server limits: 1 s without a message ends a stream, 2 s of audio per message at most,
    and the core commits a segment on its own every 1.5 s of speech without a pause."""
    yield from _module_server(
        backend, tmp_path_factory, idle_timeout_seconds=1, max_chunk_bytes=2 * BYTES_PER_SECOND, auto_commit_seconds=1.5
    )


@pytest.fixture(scope="module")
def busy_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    """Room for exactly one stream."""
    yield from _module_server(backend, tmp_path_factory, engine_workers=1, streams_per_worker=1)


def session_count(srv: LecternServer) -> int:
    with srv.db() as s:
        return s.scalar(select(func.count()).select_from(StreamSessionRow)) or 0


# -- 1. refusals: one error message, then the close; no session ----------------------------------


NO_DECODER = (400, "no decoder for given args")
REFUSALS: list[tuple[str, dict[str, Any], tuple[int, str]]] = [
    ("no-appname", {"appname": None}, (400, "no `appname` given")),
    ("no-apikey", {"apikey": None}, (400, "no `apikey` given")),
    ("no-appid", {"appid": None}, (400, "no `appid` given")),
    ("no-src_lang", {"src_lang": None}, (400, "no `src_lang` given")),
    ("no-domain", {"domain": None}, (400, "no `domain` given")),
    ("empty-domain", {"domain": ""}, (400, "no `domain` given")),
    # Presence is checked first, in the order of the docs' URL, before any value.
    ("no-apikey-and-bad-lang", {"apikey": None, "src_lang": "hi"}, (400, "no `apikey` given")),
    ("no-domain-and-bad-appname", {"domain": None, "appname": "stt_file"}, (400, "no `domain` given")),
    ("appname", {"appname": "stt_file"}, (403, "Forbidden")),
    ("appname-before-language", {"appname": "stt_batch", "src_lang": "hi"}, (403, "Forbidden")),
    ("bad-apikey", {"apikey": "kk-not-a-real-key"}, (403, "Forbidden")),
    ("appid-not-the-tenant", {"appid": "globex"}, (403, "Forbidden")),
    ("src_lang-hi", {"src_lang": "hi"}, NO_DECODER),
    ("src_lang-hi_en", {"src_lang": "hi_en"}, NO_DECODER),
    ("domain-bfsi", {"domain": "bfsi"}, NO_DECODER),
    ("format-mp3", {"format": "mp3"}, (200, "unsupported audio format")),
    ("format-alaw", {"format": "8k_alaw"}, (200, "unsupported audio format")),
    ("timeout-0", {"timeout": "0"}, (400, "invalid `timeout` value")),
    ("timeout-negative", {"timeout": "-1"}, (400, "invalid `timeout` value")),
    ("timeout-180.5", {"timeout": "180.5"}, (400, "invalid `timeout` value")),
    ("timeout-text", {"timeout": "soon"}, (400, "invalid `timeout` value")),
    ("timeout-nan", {"timeout": "nan"}, (400, "invalid `timeout` value")),
    ("timeout-inf", {"timeout": "inf"}, (400, "invalid `timeout` value")),
    ("silence-0", {"silence": "0"}, (400, "invalid `silence` value")),
    ("silence-30.5", {"silence": "30.5"}, (400, "invalid `silence` value")),
    ("silence-text", {"silence": "a while"}, (400, "invalid `silence` value")),
    ("logging", {"logging": "sometimes"}, (400, "invalid `logging` value")),
    ("punctuate", {"punctuate": "maybe"}, (400, "invalid parameter")),
    ("continuous", {"continuous": "2"}, (400, "invalid parameter")),
]


@pytest.mark.parametrize(("params", "expected"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
async def test_a_refused_stream_gets_one_error_then_the_close(server, params, expected):
    before = session_count(server)
    async with open_stream(server, **params) as ws:
        messages = await read_all(ws)
    assert len(messages) == 1, messages
    why = check_error(messages[0], *expected)
    if expected == NO_DECODER:
        assert "src_lang=en" in why and "domain=generic" in why, why  # says what is served
    if expected[1] == "invalid `timeout` value":
        assert "180" in why, why
    if expected[1] == "invalid `silence` value":
        assert "30" in why, why
    assert session_count(server) == before


async def test_a_repeated_parameter_with_two_values_is_refused(server):
    url = f"{server.ws_url}{PATH}?{query(server)}&format=16k_int16&format=8k_int16"
    async with connect(url, open_timeout=5) as ws:
        [message] = await read_all(ws)
    check_error(message, 400, "invalid parameter")
    assert "format" in message["message"], message


async def test_credentials_are_checked_against_the_key(server):
    read_only = server.create_key("acme", "reader", scopes=["speech:sessions:read"])
    async with open_stream(server, key=read_only) as ws:
        [message] = await read_all(ws)
    assert "speech:sessions:write" in check_error(message, 403, "Forbidden")
    other = server.create_key("globex", "carol")
    async with open_stream(server, key=other, appid="globex") as ws:  # its own tenant: fine
        await ws.send(EOF)
        check_stream(await read_all(ws), "audio too short")


async def test_a_full_server_refuses_with_server_busy(busy_server):
    async with open_stream(busy_server) as first:
        ready = await recv_message(first)
        assert ready["cause"] == "ready", ready
        async with open_stream(busy_server) as second:
            [refused] = await read_all(second)
        check_error(refused, 503, "server busy")
        await first.send(WEATHER.pcm)
        await first.send(EOF)
        final = check_stream([ready, *await read_all(first)], "EOF received")
    assert word_error_rate(WEATHER.text, final["text"]) <= MAX_WER, final
    assert session_count(busy_server) == 1


# -- 2. accepted parameters, at their edges -------------------------------------------------------


async def test_defaults_and_case_insensitive_language_and_domain(server):
    messages = await stream(server, [FOX.pcm, EOF], src_lang="EN", domain="Generic")
    final = check_stream(messages, "EOF received")
    assert word_error_rate(FOX.text, final["text"]) <= MAX_WER, final
    row = await ended_row(server, final["id"], ("FINISHED",))
    assert jsonish(row["config"]) == {
        "src_lang": "en", "domain": "generic", "format": "16k_int16", "timeout": 15.0, "silence": 1.0,
        "logging": "true", "punctuate": True, "continuous": False,
    }


@pytest.mark.parametrize(("timeout", "silence_seconds"), [("180", "30"), ("5", "0.001")])
async def test_timeout_and_silence_at_their_limits_are_accepted(server, timeout, silence_seconds):
    async with open_stream(server, timeout=timeout, silence=silence_seconds) as ws:
        ready = await recv_message(ws)
        await ws.send(EOF)
        check_stream([ready, *await read_all(ws)], "audio too short")
    config = jsonish((await ended_row(server, ready["id"]))["config"])
    assert (config["timeout"], config["silence"]) == (float(timeout), float(silence_seconds))


async def test_ready_comes_before_any_audio(server):
    async with open_stream(server) as ws:
        ready = await recv_message(ws)
        assert set(ready) == MESSAGE_KEYS and ready["cause"] == "ready" and ready["final"] is False, ready
        row = server.session_row(session_uuid(ready["id"]))
        assert row["state"] == "ACTIVE" and row["protocol"] == "reverie", row
        await ws.send(EOF)
        await read_all(ws)


# -- 3. the end of a stream ---------------------------------------------------------------------


async def test_eof_as_a_text_frame_ends_the_stream(server):
    final = check_stream(await stream(server, [*chunks(FOX.pcm, 3200), EOF.decode()]), "EOF received")
    assert word_error_rate(FOX.text, final["text"]) <= MAX_WER, final
    row = await ended_row(server, final["id"])
    assert row["state"] == "FINISHED", row
    assert row["duration_ms"] == len(FOX.pcm) // 32


@pytest.mark.parametrize(
    ("format_name", "nbytes", "cause"),
    [
        ("16k_int16", 0, "audio too short"),
        ("16k_int16", 9598, "audio too short"),  # 0.2999 s
        ("16k_int16", 9600, "EOF received"),  # 0.3 s
        ("8k_uint8", 2399, "audio too short"),
        ("8k_uint8", 2400, "EOF received"),
        ("8k_int16", 4798, "audio too short"),
        ("8k_int16", 4800, "EOF received"),
    ],
)
async def test_audio_too_short_is_less_than_three_tenths_of_a_second(server, format_name, nbytes, cause):
    audio = encode(format_name, FOX.pcm)
    assert isinstance(audio, bytes)
    final = check_stream(await stream(server, [audio[:nbytes], EOF] if nbytes else [EOF], format=format_name), cause)
    row = await ended_row(server, final["id"])
    assert row["state"] == "FINISHED", row


async def test_silence_detected_at_real_time_pace_closes_the_socket(server):
    # A microphone: speech, then silence, at 1x. One second into the silence the server ends the
    # stream with the utterance, closes, and nothing of the rest is processed.
    audio = FOX.pcm + silence(3.0)
    async with open_stream(server, silence="1") as ws:
        ready = await recv_message(ws)
        sender = asyncio.create_task(send_paced(ws, audio, BYTES_PER_SECOND))
        messages = [ready, *await read_all(ws)]  # read_all: the server closed the socket
        await sender
    final = check_stream(messages, "silence detected")
    assert word_error_rate(FOX.text, final["text"]) <= MAX_WER, final
    row = await ended_row(server, final["id"])
    assert row["state"] == "FINISHED", row
    # Processing stopped about a second into the silence, well before the audio ran out.
    assert len(FOX.pcm) // 32 < row["duration_ms"] < len(audio) // 32 - 1000, row


async def test_silence_detected_drops_the_next_utterance(server):
    # Sent as fast as possible, the whole second sentence is already on its way when the pause
    # after the first is heard: it is dropped, not transcribed and not stored.
    messages = await stream(server, [*chunks(TWO.pcm, 3200), EOF], silence="1")
    final = check_stream(messages, "silence detected")
    assert word_error_rate(FIRST, final["text"]) <= MAX_WER, final
    assert not {"dinner", "home", "tonight"} & set(texts(messages).split()), messages
    row = await ended_row(server, final["id"], ("FINISHED",))
    assert [s["transcript"] for s in server.segment_rows(session_uuid(final["id"]))] == [final["text"]]
    assert row["duration_ms"] < 63840 // 16, row  # the second sentence starts at 3.99 s


async def test_continuous_mode_at_real_time_pace(server):
    audio = TWO.pcm + silence(1.5)
    async with open_stream(server, silence="1", continuous="true") as ws:
        ready = await recv_message(ws)
        messages = [ready]
        sender = asyncio.create_task(send_paced(ws, audio, BYTES_PER_SECOND))
        while len([m for m in messages if m["cause"] == "silence detected"]) < 2:
            messages.append(await recv_message(ws))
            assert messages[-1]["final"] is False, messages
        assert await sender, "the server closed the socket in continuous mode"
        await ws.send(EOF)
        messages += await read_all(ws)
    final = check_stream(messages, "EOF received", continuous=True)
    first, second = [m for m in messages if m["cause"] == "silence detected"]
    assert word_error_rate(FIRST, first["text"]) <= MAX_WER, first
    assert word_error_rate(SECOND, second["text"]) <= MAX_WER, second
    assert second["display_text"] == second["text"][0].upper() + second["text"][1:] + ".", second
    assert (final["text"], final["display_text"]) == ("", ""), final  # nothing after the last utterance
    row = await ended_row(server, final["id"], ("FINISHED",))
    assert [s["transcript"] for s in server.segment_rows(session_uuid(final["id"]))] == [first["text"], second["text"]]
    assert row["duration_ms"] == len(audio) // 32


async def test_timeout_ends_a_stream_at_real_time_pace(server):
    # timeout=2: the connection may last 2 s. Silence is sent at 1x for up to 4 s.
    async with open_stream(server, timeout="2") as ws:
        ready = await recv_message(ws)
        sender = asyncio.create_task(send_paced(ws, silence(4.0), BYTES_PER_SECOND))
        messages = [ready, *await read_all(ws)]
        await sender
    final = check_stream(messages, "timeout")
    assert (final["text"], final["display_text"]) == ("", ""), final
    row = await ended_row(server, final["id"])
    # Reverie's timeout is the client's own limit: reaching it is a normal ending.
    assert row["state"] == "FINISHED" and row["failure_reason"] is None, row
    # Cut at the limit on the audio clock: 2 s of 1x audio (and a chunk in flight), not 4 s.
    assert 0 < row["duration_ms"] <= 2500, row


async def test_timeout_keeps_what_was_heard(server):
    audio = FOX.pcm + silence(2.0)
    async with open_stream(server, timeout="2.5", silence="5") as ws:
        ready = await recv_message(ws)
        sender = asyncio.create_task(send_paced(ws, audio, BYTES_PER_SECOND))
        messages = [ready, *await read_all(ws)]
        await sender
    final = check_stream(messages, "timeout")
    # 2.5 s into fox: its start was heard and is in the final message, its end ("lazy dog") was not.
    heard = set(final["text"].split())
    assert {"quick", "brown"} <= heard and "dog" not in heard, final
    assert [s["transcript"] for s in server.segment_rows(session_uuid(final["id"]))] == [final["text"]]


async def test_the_time_limit_holds_while_small_messages_keep_arriving(limits_server):
    # A client sending one-sample messages as fast as it can: a message is nearly always ready when
    # the 0.5 s limit falls due, and the limit must still end the stream (not the idle limit, 1 s
    # after the client stops, with everything sent processed).
    frames = [bytes(2)] * 60000  # 3.75 s of 16 kHz audio
    messages = await stream(limits_server, frames, timeout="0.5")
    final = check_stream(messages, "timeout")
    row = await ended_row(limits_server, final["id"])
    assert row["state"] == "FINISHED" and row["failure_reason"] is None, row
    assert row["duration_ms"] < 3750, row


async def test_no_data_ends_the_stream_with_timeout(limits_server):
    # The server's idle limit (1 s here) ends a stream that sends nothing: "timeout".
    async with open_stream(limits_server) as ws:
        messages = await read_all(ws)
    final = check_stream(messages, "timeout")
    row = await ended_row(limits_server, final["id"])
    assert row["state"] == "CANCELLED", row


async def test_segments_the_core_commits_on_its_own_keep_the_text_growing(limits_server):
    # fox has no pause of 1 s: the core's length bound (1.5 s here) cuts it into segments, and
    # Reverie's text keeps growing across them until the one final message.
    messages = await stream(limits_server, [*chunks(FOX.pcm, 3200), EOF])
    final = check_stream(messages, "EOF received")
    segments = [s["transcript"] for s in limits_server.segment_rows(session_uuid(final["id"]))]
    assert len(segments) >= 2, segments
    assert final["text"] == " ".join(segments), (final, segments)
    after_first = messages[next(i for i, m in enumerate(messages) if m["text"].startswith(segments[0] + " ")) :]
    assert all(m["text"].startswith(segments[0]) for m in after_first), messages
    # Cutting mid-word costs a word or two; the claim is that no segment is lost.
    assert word_error_rate(FOX.text, final["text"]) <= 0.4, final


# -- 4. errors during a stream --------------------------------------------------------------------


async def test_a_text_frame_other_than_eof_is_invalid_audio(server):
    messages = await stream(server, [*chunks(FOX.pcm, 3200), "hello", EOF])
    *before, error = messages
    assert before[0]["cause"] == "ready", messages
    assert all(set(m) == MESSAGE_KEYS and m["cause"] in ("ready", "partial") for m in before), messages
    check_error(error, 400, "invalid audio")
    assert error["id"] == before[0]["id"], "an error during a stream carries the stream's id"
    row = await ended_row(server, before[0]["id"])
    assert row["state"] == "FAILED" and row["failure_reason"].startswith("input"), row


async def test_a_chunk_over_the_limit_is_refused(limits_server):
    messages = await stream(limits_server, [silence(2.0) + b"\0\0", EOF])
    ready, error = messages
    assert ready["cause"] == "ready", messages
    check_error(error, 400, "audio chunk too large")
    row = await ended_row(limits_server, ready["id"])
    assert row["state"] == "FAILED", row


@pytest.mark.parametrize(
    ("format_name", "frames"),
    [
        ("opus_16k", [b"\xff" * 40]),
        ("ogg_opus", [b"RIFF" + bytes(100)]),
        ("ogg_opus", [ogg_opus(samples_at(FOX.pcm, 16000))[:-100]]),  # cut short in its last page
    ],
    ids=["opus-garbage", "ogg-not-ogg", "ogg-cut-short"],
)
async def test_undecodable_opus_is_invalid_audio(server, format_name, frames):
    messages = await stream(server, [*frames, EOF], format=format_name)
    assert messages[0]["cause"] == "ready", messages
    check_error(messages[-1], 400, "invalid audio")
    assert all(m["cause"] == "partial" for m in messages[1:-1]), messages
    row = await ended_row(server, messages[0]["id"])
    assert row["state"] == "FAILED" and row["failure_reason"].startswith("input"), row


# -- 5. exact frames: odd byte boundaries, Opus packets, Ogg slices -------------------------------


def _irregular(data: bytes, sizes: tuple[int, ...]) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(data):
        out.append(data[pos : pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    return out


@pytest.mark.parametrize(
    ("format_name", "sizes"),
    [("16k_int16", (1001,)), ("16k_int16", (1, 2, 3, 1024, 777)), ("8k_int16", (333, 1))],
)
async def test_int16_chunks_cut_between_the_bytes_of_a_sample_are_rejoined(server, format_name, sizes):
    audio = encode(format_name, FOX.pcm)
    assert isinstance(audio, bytes)
    frames = _irregular(audio, sizes)
    assert any(len(f) % 2 for f in frames)
    final = check_stream(await stream(server, [*frames, EOF], format=format_name), "EOF received")
    if format_name == "16k_int16":  # at 8 kHz the model is weaker; the recording shows the audio is whole
        assert word_error_rate(FOX.text, final["text"]) <= MAX_WER, final
    row = await ended_row(server, final["id"], ("FINISHED",))
    rate = 16000 if format_name == "16k_int16" else 8000
    assert row["duration_ms"] == len(audio) * 1000 // (2 * rate), row
    kept = api_get(server, key_for(server), f"/{final['id']}/recording")
    assert kept.status_code == 200, kept.text
    if format_name == "16k_int16":
        assert kept.content == audio  # byte for byte: not one sample lost or shifted
    else:
        reference = np.frombuffer(FOX.pcm, dtype="<i2").astype(np.float64)
        heard = np.frombuffer(kept.content, dtype="<i2").astype(np.float64)
        assert len(heard) == len(reference)
        assert np.corrcoef(reference, heard)[0, 1] > 0.95


OPUS_SPEECH = {"opus_16k": "library", "opus_8k": "directions"}


@pytest.mark.parametrize("format_name", ["opus_16k", "opus_8k"])
async def test_one_raw_opus_packet_per_message(server, format_name):
    speech = load_speech(OPUS_SPEECH[format_name])
    packets = encode(format_name, speech.pcm)
    assert isinstance(packets, list) and len(packets) > 100
    final = check_stream(await stream(server, [*packets, EOF], format=format_name), "EOF received")
    assert word_error_rate(speech.text, final["text"]) <= MAX_WER, final
    row = await ended_row(server, final["id"], ("FINISHED",))
    # Raw packets carry no pre-skip: the decoded audio is the speech plus at most one 20 ms frame
    # of padding and the encoder's 6.5 ms look-ahead.
    assert speech.seconds * 1000 <= row["duration_ms"] <= speech.seconds * 1000 + 30, row


@pytest.mark.parametrize("slice_size", [1, 7, 1000, None], ids=["1-byte", "7-bytes", "1000-bytes", "whole-file"])
async def test_ogg_opus_in_any_slicing(server, slice_size):
    speech = load_speech("kitchen")
    data = ogg_opus(samples_at(speech.pcm, 16000))
    frames = [data] if slice_size is None else chunks(data, slice_size)
    final = check_stream(await stream(server, [*frames, EOF], format="ogg_opus"), "EOF received")
    assert word_error_rate(speech.text, final["text"]) <= MAX_WER, final
    row = await ended_row(server, final["id"], ("FINISHED",))
    # The Ogg stream's pre-skip and final granule trim the audio to exactly what was encoded.
    assert row["duration_ms"] == len(speech.pcm) // 32, row
