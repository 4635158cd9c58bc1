"""Resuming a dropped connection on Lectern's own streaming protocol (docs/streaming-protocol.md,
"Resuming a dropped connection"), on real servers.

Connections are cut the way networks cut them: the client's TCP transport is aborted (an RST, no
close frame), often in the middle of an utterance. The client then does what the document tells
it to: reconnect, send ``session.resume`` with the newest token and the highest final it read,
and send its audio again from byte ``audioReceivedBytes``. Whatever happened in between, every
committed segment reaches the client exactly once, the stored segments are exactly those, and
the audio clock (segment times, duration, the recording) runs on as if nothing had happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import LecternServer, load_speech, word_error_rate
from tests.realtime.native_wire import (
    BYTES_PER_SECOND,
    CHUNK,
    AudioStream,
    Reader,
    api_get,
    api_segments,
    check_completed,
    check_error,
    check_info,
    check_results,
    check_segments_match,
    confirm_received,
    cut,
    ended_row,
    expect_refusal,
    final_without_type,
    ms_of,
    no_new_tracebacks,
    open_native,
    read_until_closed,
    recv_message,
    resume_message,
    run_session,
    send_json,
    silence,
    start_session,
)

GRACE = 20  # the module server's LECTERN_RESUME_GRACE_SECONDS

FOX = load_speech("fox")
WEATHER = load_speech("weather")
TRAIN = load_speech("train")
COFFEE = load_speech("coffee")
KITCHEN = load_speech("kitchen")
LIBRARY = load_speech("library")
PAUSE = silence(2.0)  # longer than the default 1.5 s endpoint: the VAD commits in it


# -- servers and their logs -------------------------------------------------------------------

_watched: list[LecternServer] = []


@pytest.fixture(autouse=True)
def no_tracebacks(make_server: Any) -> Iterator[None]:
    """No server a test talked to logged a traceback during it (runs before make_server's stop)."""
    with no_new_tracebacks(_watched):
        yield


@pytest.fixture(scope="module")
def srv(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    server = LecternServer(tmp_path_factory.mktemp(f"resume-{backend}"), backend, {"resume_grace_seconds": GRACE})
    _watched.append(server)
    yield server
    _watched.remove(server)
    server.stop()


@pytest.fixture(scope="module")
def key(srv: LecternServer) -> str:
    return srv.create_key("acme", "alice")


@pytest.fixture
def own_server(make_server: Any) -> Iterator[Any]:
    """A server with its own settings for one test, its log watched."""
    started: list[LecternServer] = []

    def start(**settings: Any) -> LecternServer:
        server = make_server(**settings)
        started.append(server)
        _watched.append(server)
        return server

    yield start
    for server in started:
        _watched.remove(server)


# -- helpers ----------------------------------------------------------------------------------


def assert_words(reference: str, text: str, limit: float = 0.15) -> None:
    assert word_error_rate(reference, text) <= limit, (reference, text)


def max_index(finals: list[dict[str, Any]]) -> int:
    return max((f["segmentIndex"] for f in finals), default=-1)


async def wait_segments(srv: LecternServer, session_id: str, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The stored segments once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await asyncio.to_thread(srv.segment_rows, session_id)
        if len(rows) >= count or time.monotonic() > deadline:
            assert len(rows) == count, rows
            return rows
        await asyncio.sleep(0.05)


def stored_as_final(row: dict[str, Any]) -> dict[str, Any]:
    """A stored segment row in the shape of a result.final (without its type)."""
    return {
        "segmentIndex": row["segment_index"],
        "transcript": row["transcript"],
        "startSeconds": row["start_seconds"],
        "endSeconds": row["end_seconds"],
        "confidence": row["confidence"],
        "words": row["words"],
    }


async def resume(ws: Any, session_id: str, token: str | None, last_index: int | None) -> dict[str, Any]:
    await send_json(ws, resume_message(session_id, token, last_index))
    message = await recv_message(ws)
    assert message["type"] == "session.info", message
    return check_info(message, resumed=True)


def check_resumed_info(info: dict[str, Any], first: dict[str, Any], *, next_index: int, tokens: set[str]) -> None:
    """A resume's session.info: same session and config, a token never seen before."""
    assert info["sessionId"] == first["sessionId"], info
    assert info["config"] == first["config"], info
    assert info["resumeGraceSeconds"] == first["resumeGraceSeconds"], info
    assert info["nextSegmentIndex"] == next_index, (info, next_index)
    assert info["resumeToken"] not in tokens, info
    tokens.add(info["resumeToken"])


async def finish_clean(
    srv: LecternServer, key: str, session_id: str, received: list[dict[str, Any]], completed: dict[str, Any], pcm: bytes,
) -> dict[str, Any]:
    """Everything the client received across its connections, against what the server stored:
    each index once, no gap, the stored segments exactly those, totals and duration exact."""
    indexes = [f["segmentIndex"] for f in received]
    assert indexes == list(range(len(received))), indexes
    row = await ended_row(srv, session_id, ("FINISHED",))
    assert row["failure_reason"] is None and row["protocol"] == "native", row
    assert completed["segmentCount"] == row["segment_count"] == len(received), (completed, row)
    assert completed["wordsCount"] == row["words_count"] == sum(len(f["words"]) for f in received), (completed, row)
    assert completed["durationMilliseconds"] == row["duration_ms"] == ms_of(pcm), (completed, row)
    check_segments_match(api_segments(srv, key, session_id), received)
    return row


def word_span(final: dict[str, Any]) -> tuple[float, float]:
    return final["words"][0]["startSeconds"], final["words"][-1]["endSeconds"]


# -- resuming after a cut ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["paced", "burst"])
async def test_a_cut_mid_utterance_resumes_the_same_session_whole(srv: LecternServer, key: str, how: str) -> None:
    """Weather, a pause, then the fox cut in the middle of a word. ``paced``: the fox's first half
    at real time; ``burst``: all the rest at once, cut at once (frames may die in flight)."""
    before_fox = len(WEATHER.pcm) + len(PAUSE)
    stream = AudioStream(WEATHER.pcm + PAUSE + FOX.pcm + silence(1.0))
    cut_at = before_fox + (len(FOX.pcm) // 2) // CHUNK * CHUNK + 1600  # 50 ms into a 100 ms frame of "fox"
    tokens: set[str] = set()

    async with open_native(srv) as a:
        first = await start_session(a, key, recordingRequested=True)
        assert first["resumeGraceSeconds"] == GRACE
        tokens.add(first["resumeToken"])
        reader_a = Reader(a)
        await stream.send(a, before_fox)
        await reader_a.wait_final(0)
        if how == "paced":
            await stream.send(a, cut_at, pace=True)
            await reader_a.wait_for(lambda m: m["type"] == "result.partial" and m["segmentIndex"] == 1 and m["transcript"])
        else:
            await stream.send(a, cut_at)
            await stream.send(a)
        cut(a)
        closed_a = await reader_a.closed()
    assert closed_a.code is None  # no close frame: the connection just died
    got_a = check_results(closed_a.messages)
    assert [f["segmentIndex"] for f in got_a] == [0], got_a  # the fox was never committed on A
    assert_words(WEATHER.text, got_a[0]["transcript"])

    async with open_native(srv) as b:
        info = await resume(b, first["sessionId"], first["resumeToken"], 0)
        check_resumed_info(info, first, next_index=1, tokens=tokens)
        received = info["audioReceivedBytes"]
        assert received >= int(got_a[0]["endSeconds"] * BYTES_PER_SECOND) - CHUNK, (received, got_a)
        stream.resume_from(received)  # <= what was sent, at a frame boundary
        reader_b = Reader(b)
        await stream.send(b)
        await send_json(b, {"type": "session.end"})
        closed_b = await reader_b.closed()
    completed = check_completed(closed_b, first["sessionId"])
    got_b = check_results(closed_b.messages, 1)
    assert [f["segmentIndex"] for f in got_b] == [1], got_b

    # The fox, cut in two connections, is one whole segment, where the fox is on the audio clock.
    fox = got_b[0]
    assert_words(FOX.text, fox["transcript"])
    start, end = word_span(fox)
    assert before_fox / BYTES_PER_SECOND - 0.05 <= start and end <= (before_fox + len(FOX.pcm)) / BYTES_PER_SECOND + 0.05, fox
    await finish_clean(srv, key, first["sessionId"], got_a + got_b, completed, stream.pcm)
    response = api_get(srv, key, f"/{first['sessionId']}/recording")
    assert response.status_code == 200, response.text
    assert response.content == stream.pcm  # no byte lost, none twice


@pytest.mark.parametrize("last_index", [None, -1, 0])
async def test_finals_the_client_missed_in_the_drop_are_replayed_once(srv: LecternServer, key: str, last_index: int | None) -> None:
    """Two segments committed and sent on A, which died before the client read (some of) them."""
    stream = AudioStream(FOX.pcm + PAUSE + WEATHER.pcm + PAUSE + TRAIN.pcm)
    two = len(FOX.pcm + PAUSE + WEATHER.pcm + PAUSE)
    tokens: set[str] = set()
    async with open_native(srv) as a:
        first = await start_session(a, key)
        tokens.add(first["resumeToken"])
        await stream.send(a, two)
        rows = await wait_segments(srv, first["sessionId"], 2)  # stored, hence sent (or being sent)
        cut(a)
    read = [stored_as_final(r) for r in rows if last_index is not None and r["segment_index"] <= last_index]

    async with open_native(srv) as b:
        info = await resume(b, first["sessionId"], first["resumeToken"], last_index)
        check_resumed_info(info, first, next_index=2, tokens=tokens)
        stream.resume_from(info["audioReceivedBytes"])
        reader = Reader(b)
        await stream.send(b)
        await send_json(b, {"type": "session.end"})
        closed = await reader.closed()
    completed = check_completed(closed, first["sessionId"])
    skip = -1 if last_index is None else last_index
    got = check_results(closed.messages, skip + 1)
    # The missed finals come first, before any live result, exactly as stored.
    replayed = [r for r in rows if r["segment_index"] > skip]
    head = closed.messages[: len(replayed)]
    assert [final_without_type(m) for m in head] == [stored_as_final(r) for r in replayed], (head, replayed)
    assert [f["segmentIndex"] for f in got] == list(range(skip + 1, 3)), got
    assert_words(TRAIN.text, got[-1]["transcript"])
    await finish_clean(srv, key, first["sessionId"], read + got, completed, stream.pcm)


async def test_segments_committed_while_the_client_is_away_are_delivered_on_resume(srv: LecternServer, key: str) -> None:
    utterances = [FOX, WEATHER, TRAIN, COFFEE, KITCHEN, LIBRARY]
    stream = AudioStream(b"".join(u.pcm + PAUSE for u in utterances))
    tokens: set[str] = set()
    async with open_native(srv) as a:
        first = await start_session(a, key)
        tokens.add(first["resumeToken"])
        reader_a = Reader(a)
        await stream.send(a)
        await confirm_received(a)  # the server has every frame: none dies in flight
        cut(a)
        at_cut = len(await asyncio.to_thread(srv.segment_rows, first["sessionId"]))
        closed_a = await reader_a.closed()
    got_a = check_results(closed_a.messages)
    # The server goes on recognizing what it received: all six utterances get committed.
    rows = await wait_segments(srv, first["sessionId"], len(utterances))
    assert at_cut < len(utterances), "every segment was committed before the cut: nothing was left for the gap"
    assert (await asyncio.to_thread(srv.session_row, first["sessionId"]))["state"] == "ACTIVE"

    async with open_native(srv) as b:
        info = await resume(b, first["sessionId"], first["resumeToken"], max_index(got_a))
        check_resumed_info(info, first, next_index=len(utterances), tokens=tokens)
        assert info["audioReceivedBytes"] == len(stream.pcm)
        reader_b = Reader(b)
        await send_json(b, {"type": "session.end"})
        closed_b = await reader_b.closed()
    completed = check_completed(closed_b, first["sessionId"])
    got_b = check_results(closed_b.messages, max_index(got_a) + 1)
    assert [final_without_type(f) for f in got_b] == [stored_as_final(r) for r in rows[max_index(got_a) + 1 :]]
    received = got_a + got_b
    for final, utterance in zip(received, utterances, strict=True):
        assert_words(utterance.text, final["transcript"])
    await finish_clean(srv, key, first["sessionId"], received, completed, stream.pcm)


async def test_a_resume_token_is_good_for_one_resume(srv: LecternServer, key: str) -> None:
    stream = AudioStream(FOX.pcm + PAUSE + WEATHER.pcm)
    tokens: set[str] = set()
    async with open_native(srv) as a:
        first = await start_session(a, key)
        tokens.add(first["resumeToken"])
        await stream.send(a, len(FOX.pcm) // 2)
        cut(a)
    async with open_native(srv) as b:
        second = await resume(b, first["sessionId"], first["resumeToken"], None)
        check_resumed_info(second, first, next_index=0, tokens=tokens)
        stream.resume_from(second["audioReceivedBytes"])
        reader_b = Reader(b)
        # The spent token, while B carries the session: refused, and B is undisturbed.
        async with open_native(srv) as c:
            await send_json(c, resume_message(first["sessionId"], first["resumeToken"], None))
            await expect_refusal(c, "NOT_FOUND", 1008)
        await stream.send(b, len(FOX.pcm + PAUSE))
        await reader_b.wait_final(0)
        cut(b)
        got_b = check_results((await reader_b.closed()).messages)
    async with open_native(srv) as d:  # the spent token, after B died
        await send_json(d, resume_message(first["sessionId"], first["resumeToken"], 0))
        await expect_refusal(d, "NOT_FOUND", 1008)
    async with open_native(srv) as e:  # the newest token works
        third = await resume(e, first["sessionId"], second["resumeToken"], 0)
        check_resumed_info(third, first, next_index=1, tokens=tokens)
        stream.resume_from(third["audioReceivedBytes"])
        reader_e = Reader(e)
        await stream.send(e)
        await send_json(e, {"type": "session.end"})
        closed_e = await reader_e.closed()
    completed = check_completed(closed_e, first["sessionId"])
    got_e = check_results(closed_e.messages, 1)
    assert_words(FOX.text, got_b[0]["transcript"])
    assert_words(WEATHER.text, got_e[0]["transcript"])
    await finish_clean(srv, key, first["sessionId"], got_b + got_e, completed, stream.pcm)


async def test_refused_resumes_are_not_found_and_spend_nothing(srv: LecternServer, key: str) -> None:
    """Wrong tokens, unknown ids, another session's token, an ended session: NOT_FOUND, close 1008;
    the real token still works afterwards."""
    ended = await run_session(srv, FOX.pcm, key)  # a FINISHED session and its (never spent) token
    async with open_native(srv) as other:
        other_info = await start_session(other, key)
        stream = AudioStream(WEATHER.pcm)
        async with open_native(srv) as a:
            first = await start_session(a, key)
            await stream.send(a, len(WEATHER.pcm) // 2)
            cut(a)
        sid, good = first["sessionId"], first["resumeToken"]
        refused = [
            resume_message(sid, good[:-1] + ("A" if good[-1] != "A" else "B"), None),  # one character off
            resume_message(sid, "", None),
            resume_message(sid, None, None),
            resume_message(str(uuid.uuid4()), good, None),
            resume_message("not-a-uuid", good, None),
            resume_message(sid, other_info["resumeToken"], None),  # another live session's token
            resume_message(other_info["sessionId"], good, None),
            resume_message(ended.session_id, ended.info["resumeToken"], None),  # ended: not resumable
            {"type": "session.resume", "resumeToken": good},
            {"type": "session.resume", "sessionId": sid},
        ]
        for message in refused:
            async with open_native(srv) as ws:
                await send_json(ws, message)
                await expect_refusal(ws, "NOT_FOUND", 1008)
        await send_json(other, {"type": "session.end"})
        check_completed(await read_until_closed(other), other_info["sessionId"])
        async with open_native(srv) as ws:  # a malformed lastSegmentIndex is an argument error
            await send_json(ws, {**resume_message(sid, good, None), "lastSegmentIndex": "3"})
            await expect_refusal(ws, "INVALID_ARGUMENT", 1008)
        async with open_native(srv) as b:
            info = await resume(b, sid, good, -1)
            assert info["nextSegmentIndex"] == 0 and info["sessionId"] == sid
            stream.resume_from(info["audioReceivedBytes"])
            reader = Reader(b)
            await stream.send(b)
            await send_json(b, {"type": "session.end"})
            closed = await reader.closed()
        completed = check_completed(closed, sid)
        got = check_results(closed.messages)
        assert_words(WEATHER.text, " ".join(f["transcript"] for f in got))
    await finish_clean(srv, key, sid, got, completed, WEATHER.pcm)


async def test_a_resume_while_the_old_connection_is_open_takes_over(srv: LecternServer, key: str) -> None:
    stream = AudioStream(WEATHER.pcm + PAUSE + FOX.pcm)
    before_fox = len(WEATHER.pcm + PAUSE)
    tokens: set[str] = set()
    async with open_native(srv) as a:
        first = await start_session(a, key)
        tokens.add(first["resumeToken"])
        reader_a = Reader(a)
        await stream.send(a, before_fox)
        await reader_a.wait_final(0)
        await stream.send(a, before_fox + len(FOX.pcm) // 2, pace=True)
        async with open_native(srv) as b:  # A looks open to both ends: a half-open connection
            info = await resume(b, first["sessionId"], first["resumeToken"], 0)
            check_resumed_info(info, first, next_index=1, tokens=tokens)
            # Whatever A still sends now is ignored (or cannot be sent: A is being closed).
            with contextlib.suppress(ConnectionClosed):  # the server may have closed A already
                for _ in range(10):
                    await a.send(TRAIN.pcm[:CHUNK])
            closed_a = await reader_a.closed()
            assert closed_a.code == 4000, (closed_a.code, closed_a.reason)
            got_a = check_results(closed_a.messages)
            assert [f["segmentIndex"] for f in got_a] == [0], got_a
            stream.resume_from(info["audioReceivedBytes"])
            reader_b = Reader(b)
            await stream.send(b)
            await send_json(b, {"type": "session.end"})
            closed_b = await reader_b.closed()
    completed = check_completed(closed_b, first["sessionId"])
    got_b = check_results(closed_b.messages, 1)
    assert [f["segmentIndex"] for f in got_b] == [1], got_b
    assert_words(WEATHER.text, got_a[0]["transcript"])
    assert_words(FOX.text, got_b[0]["transcript"])
    await finish_clean(srv, key, first["sessionId"], got_a + got_b, completed, stream.pcm)


# -- when nobody comes back -------------------------------------------------------------------


async def test_no_resume_within_the_grace_period_cancels_keeping_the_segments(own_server: Any) -> None:
    short = own_server(resume_grace_seconds=2)
    k = short.create_key("acme", "alice")
    stream = AudioStream(FOX.pcm + PAUSE + WEATHER.pcm)
    async with open_native(short) as a:
        first = await start_session(a, k)
        assert first["resumeGraceSeconds"] == 2
        reader_a = Reader(a)
        await stream.send(a, len(FOX.pcm + PAUSE))
        await reader_a.wait_final(0)
        cut(a)
        got_a = check_results((await reader_a.closed()).messages)
    async with open_native(short) as b:  # the session waited for the client: it resumes
        second = await resume(b, first["sessionId"], first["resumeToken"], 0)
        assert second["nextSegmentIndex"] == 1
        stream.resume_from(second["audioReceivedBytes"])
        await stream.send(b)  # the weather, without its pause: no commit yet
        await confirm_received(b)
        cut(b)
    row = await ended_row(short, first["sessionId"], ("CANCELLED",), timeout=30)
    assert row["failure_reason"] is None and row["end_time"] is not None and row["lease_expires_at"] is None, row
    assert row["duration_ms"] == ms_of(stream.pcm), row  # everything received was recognized
    rows = await asyncio.to_thread(short.segment_rows, first["sessionId"])
    assert stored_as_final(rows[0]) == final_without_type(got_a[0])  # the final the client got, kept
    assert [r["segment_index"] for r in rows] == [0, 1], rows
    assert_words(WEATHER.text, rows[1]["transcript"])  # committed at the end, never delivered
    assert row["segment_count"] == 2
    async with open_native(short) as c:  # too late
        await send_json(c, resume_message(first["sessionId"], second["resumeToken"], 0))
        await expect_refusal(c, "NOT_FOUND", 1008)


async def test_resuming_disabled_a_drop_ends_the_session(own_server: Any) -> None:
    none = own_server(resume_grace_seconds=0)
    k = none.create_key("acme", "alice")
    stream = AudioStream(FOX.pcm + PAUSE + WEATHER.pcm)
    async with open_native(none) as a:
        first = await start_session(a, k)
        assert first["resumeToken"] is None and first["resumeGraceSeconds"] == 0, first
        reader_a = Reader(a)
        await stream.send(a, len(FOX.pcm + PAUSE))
        await reader_a.wait_final(0)
        await stream.send(a)
        await confirm_received(a)
        cut(a)
        got_a = check_results((await reader_a.closed()).messages)
    row = await ended_row(none, first["sessionId"], ("CANCELLED",))
    assert row["failure_reason"] is None and row["duration_ms"] == ms_of(stream.pcm), row
    rows = await asyncio.to_thread(none.segment_rows, first["sessionId"])
    assert stored_as_final(rows[0]) == final_without_type(got_a[0])
    assert [r["segment_index"] for r in rows] == [0, 1], rows
    async with open_native(none) as b:
        await send_json(b, resume_message(first["sessionId"], None, 0))
        await expect_refusal(b, "NOT_FOUND", 1008)


async def test_a_resumed_connection_that_sends_nothing_is_idle(own_server: Any) -> None:
    """The idle timeout is suspended only while nobody is connected: the session outlives an
    absence longer than the idle timeout, but once resumed, a silent client ends with
    DEADLINE_EXCEEDED like any other ("A stream with no message for LECTERN_IDLE_TIMEOUT_SECONDS
    ends with DEADLINE_EXCEEDED")."""
    idle = own_server(idle_timeout_seconds=1, resume_grace_seconds=20)
    k = idle.create_key("acme", "alice")
    async with open_native(idle) as a:
        first = await start_session(a, k)
        await a.send(FOX.pcm[: 4 * CHUNK])
        await confirm_received(a)
        cut(a)
    # Away for three idle timeouts: no idle timeout while nobody is connected (the grace bounds it).
    await asyncio.sleep(3)
    async with open_native(idle) as b:
        info = await resume(b, first["sessionId"], first["resumeToken"], -1)
        assert info["audioReceivedBytes"] == 4 * CHUNK
        try:
            closed = await read_until_closed(b, timeout=15)  # 15 idle timeouts
        except TimeoutError:
            pytest.fail("a resumed session with a silent client was not ended after 15 x its idle timeout")
    assert closed.messages and check_error(closed.messages[-1], "DEADLINE_EXCEEDED")
    assert closed.code == 1000, closed
    await ended_row(idle, first["sessionId"], ("CANCELLED",))
