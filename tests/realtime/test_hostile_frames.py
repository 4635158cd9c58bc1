"""Hostile input on every streaming protocol: decompression bombs, JSON nested 2000 deep, numbers of
thousands of digits, NaN and NUL characters. Each gets the protocol's own error, never a dropped
socket (1006), a traceback, a database error or a frozen event loop.

Raw ``websockets`` clients against real servers, on SQLite and PostgreSQL: PostgreSQL refuses
NaN in JSON and NUL in text, where SQLite would have kept them.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.asyncio.client import connect

from tests.conftest import LecternServer
from tests.realtime import native_wire as native
from tests.realtime import reverie_wire as reverie
from tests.realtime import scribe_wire as scribe
from tests.speech.opus_bombs import bomb_page, ogg_bomb

DEEP = 2000
DEEP_ARRAY = "[" * DEEP + "]" * DEEP
DEEP_OBJECT = '{"a":' * DEEP + "1" + "}" * DEEP
HUGE_INTEGER = "1" + "0" * 4300  # past Python's int() limit of 4300 digits
POLICY_CLOSE = 1008  # the native protocol's close for a refused session.start


def peak_rss(srv: LecternServer) -> int:
    """The server process's high-water mark of resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{srv.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


# -- Reverie: Ogg Opus decompression bombs ------------------------------------------------------------


async def test_an_ogg_opus_bomb_is_refused_before_it_is_decoded(make_server):
    """161 KB of Ogg pages of one-byte 120 ms packets would decode to 294 MB (9180 s) of PCM: the
    stream gets Reverie's "audio chunk too large" without the server ever holding that PCM."""
    srv = make_server()
    bomb = ogg_bomb(300)
    assert len(bomb) < 165_000
    before = peak_rss(srv)
    with native.no_new_tracebacks([srv]):
        async with reverie.open_stream(srv, format="ogg_opus") as ws:
            assert (await reverie.recv_message(ws))["cause"] == "ready"
            await ws.send(bomb)
            messages = await reverie.read_all(ws)
    why = reverie.check_error(messages[-1], 400, "audio chunk too large")
    assert "9180" in why, why  # the decoded length it would have had, and the limit
    grown = peak_rss(srv) - before
    assert grown < 100_000_000, f"the server's peak memory grew {grown / 1e6:.0f} MB for a refused message"
    row = await reverie.ended_row(srv, messages[-1]["id"])
    assert row["state"] == "FAILED" and "9180" in row["failure_reason"], row


async def test_a_stream_may_not_decode_further_ahead_of_real_time_than_its_allowance(make_server):
    """Messages each within the per-message limit, sent at once, add up past the stream's allowance
    of audio ahead of real time: the one that would pass it is refused before it is decoded."""
    srv = make_server(max_buffered_audio_seconds=60)
    # The head and tags, then ten pages of 30.6 s each (within the 1 MiB, 32.8 s, of one message):
    # 306 s in all, sent faster than anything could decode them.
    pages = [ogg_bomb(0)] + [bomb_page(n) for n in range(10)]
    async with reverie.open_stream(srv, format="ogg_opus") as ws:
        assert (await reverie.recv_message(ws))["cause"] == "ready"
        await reverie.send_all(ws, pages)
        messages = await reverie.read_all(ws)
    why = reverie.check_error(messages[-1], 429, "audio arriving too fast")
    assert "60" in why, why


def cpu_seconds(server: psutil.Process) -> float:
    """CPU time the server process (its threads, not its engine workers) has used: work done."""
    times = server.cpu_times()
    return times.user + times.system


async def test_a_large_legitimate_opus_message_decodes_off_the_event_loop(make_server):
    """A message within the limits that costs seconds of CPU to decode: an HTTP request made while
    it decodes is answered before the server has done half of that work.

    The message holds 3060 s of audio and arrives when the stream is over a second old, so it is
    within the 3059 s a stream may be ahead of real time, and is decoded; decoded, it is 3060 s
    waiting and the core refuses it (so the test ends without 3060 s being recognized). Work, not
    time, is compared: the server's CPU time when the health check is answered against the CPU
    time the whole message cost it. Decoding on the event loop, the answer would come after it all.
    """
    # The idle timeout counts from the message's arrival: on a busy machine its decoding may take longer.
    srv = make_server(max_chunk_bytes=200 << 20, max_buffered_audio_seconds=3059, idle_timeout_seconds=600)
    server = psutil.Process(srv.process.pid)
    big = ogg_bomb(100)  # 3060 s: ~98 MB of 16 kHz PCM, seconds of CPU to decode
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=120) as http:
        assert (await http.get("/healthz")).status_code == 200  # connected before the message goes
        async with reverie.open_stream(srv, format="ogg_opus", timeout=180) as ws:
            assert (await reverie.recv_message(ws))["cause"] == "ready"
            await asyncio.sleep(1.5)  # stream time: the message is then at most 3058.5 s ahead of it
            before = cpu_seconds(server)
            await ws.send(big)
            await (await ws.ping())  # answered once the server has read the whole message
            assert (await http.get("/healthz")).status_code == 200
            at_health = cpu_seconds(server) - before
            messages = await reverie.read_all(ws, timeout=120)
            spent = cpu_seconds(server) - before
    why = reverie.check_error(messages[-1], 429, "audio arriving too fast")
    assert "3059" in why, why
    assert spent > 0.5, f"the message cost only {spent:.2f} s of CPU: too little to tell anything"
    assert at_health < spent / 2, f"the health check was answered after {at_health:.2f} of {spent:.2f} CPU seconds"


# -- ElevenLabs Scribe realtime -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        DEEP_ARRAY,
        '{"message_type": "input_audio_chunk", "audio_base_64": "", "x": ' + DEEP_ARRAY + "}",
        '{"message_type": "input_audio_chunk", "audio_base_64": "", "sample_rate": ' + HUGE_INTEGER + "}",
        '{"message_type": "input_audio_chunk", "audio_base_64": "", "commit": NaN}',
    ],
    ids=["nested-2000", "nested-field", "4301-digits", "nan"],
)
async def test_a_scribe_message_that_is_hostile_json_is_an_input_error(server, message):
    with native.no_new_tracebacks([server]):
        async with scribe.open_ws(server) as ws:
            started = await scribe.expect_started(ws)
            await ws.send(message)
            error, _ = await scribe.expect_error(ws, "input_error", results_first=False)
    assert "JSON" in error, error
    await scribe.assert_failed(server, started["session_id"], error)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"metadata": DEEP_OBJECT}, "metadata"),
        ({"metadata": '{"a": ' + DEEP_ARRAY + "}"}, "metadata"),
        ({"metadata": '{"n": ' + HUGE_INTEGER + "}"}, "metadata"),
        ({"metadata": '{"score": NaN}'}, "metadata"),
        ({"metadata": '{"score": 1e400}'}, "metadata"),  # Infinity, spelled as a number
        ({"metadata": '{"name": "a\\u0000b"}'}, "metadata"),
        ({"metadata": '{"a\\u0000": 1}'}, "metadata"),
        ({"model_id": "scribe_v2\x00"}, "model_id"),
        ({"model_id": "m" * 201}, "model_id"),
        ({"keyterms": "a\x00b"}, "keyterms"),
    ],
    ids=["nested-2000", "nested-array", "4301-digits", "nan", "infinity", "nul-value", "nul-key", "nul-model",
         "long-model", "nul-keyterm"],
)
async def test_a_hostile_scribe_parameter_is_an_invalid_request(server, params, named):
    query = urllib.parse.urlencode({"model_id": "scribe_v2_realtime", **params}, quote_via=urllib.parse.quote)
    with native.no_new_tracebacks([server]):
        async with scribe.open_ws(server, query) as ws:
            error, _ = await scribe.expect_error(ws, "invalid_request", results_first=False)
    assert named in error, error


async def test_scribe_metadata_within_bounds_is_still_kept(server):
    metadata = {"deep": json.loads('{"a":' * 20 + "1" + "}" * 20), "score": 0.5, "text": "caf\u00e9"}
    query = urllib.parse.urlencode({"model_id": "scribe_v2_realtime", "metadata": json.dumps(metadata)})
    async with scribe.open_ws(server, query) as ws:
        started = await scribe.expect_started(ws)
    row = await scribe.final_row(server, started["session_id"], reverie.ENDED)
    stored = row["metadata"] if isinstance(row["metadata"], dict) else json.loads(row["metadata"])
    assert stored == metadata


# -- the native protocol ------------------------------------------------------------------------------------


def _start(key: str, **fields: Any) -> str:
    return json.dumps(native.start_message(key, **fields))


@pytest.mark.parametrize(
    "first",
    [
        lambda key: DEEP_ARRAY,
        lambda key: _start(key)[:-1] + ', "metadata": ' + DEEP_OBJECT + "}",
        lambda key: _start(key)[:-1] + ', "metadata": {"n": ' + HUGE_INTEGER + "}}",
        lambda key: _start(key)[:-1] + ', "metadata": {"score": NaN}}',
        lambda key: _start(key)[:-1] + ', "metadata": {"score": -Infinity}}',
        lambda key: _start(key, metadata={"name": "a\x00b"}),
        lambda key: _start(key, model="whisper\x00"),
        lambda key: _start(key, model="m" * 201),
        lambda key: _start(key, language="en\x00"),
    ],
    ids=["nested-2000", "nested-metadata", "4301-digits", "nan", "infinity", "nul-metadata", "nul-model",
         "long-model", "nul-language"],
)
async def test_a_hostile_session_start_is_refused_with_invalid_argument(server, first):
    key = reverie.key_for(server)
    with native.no_new_tracebacks([server]):
        async with native.open_native(server) as ws:
            await ws.send(first(key))
            await native.expect_refusal(ws, "INVALID_ARGUMENT", POLICY_CLOSE)


@pytest.mark.parametrize("message", [DEEP_ARRAY, '{"type": "session.end", "n": ' + HUGE_INTEGER + "}"],
                         ids=["nested-2000", "4301-digits"])
async def test_hostile_json_during_a_native_session_is_an_error_frame(server, message):
    key = reverie.key_for(server)
    with native.no_new_tracebacks([server]):
        async with native.open_native(server) as ws:
            info = await native.start_session(ws, key)
            await ws.send(message)
            closed = await native.read_until_closed(ws)
    native.check_error(closed.messages[-1], "INVALID_ARGUMENT")
    assert closed.code == 1000, closed
    row = await native.ended_row(server, info["sessionId"])
    assert row["state"] == "FAILED", row


async def test_a_user_agent_longer_than_the_session_row_keeps_is_cut_not_fatal(server):
    url = f"{server.ws_url}{scribe.PATH}?{scribe.MODEL}"
    agent = "agent/" + "x" * 994
    async with connect(url, additional_headers={"xi-api-key": scribe.key_for(server)}, user_agent_header=agent,
                       open_timeout=scribe.OPEN_TIMEOUT) as ws:
        started = await scribe.expect_started(ws)
    row = await scribe.final_row(server, started["session_id"], reverie.ENDED)
    assert row["user_agent"] == agent[:500], row["user_agent"]
