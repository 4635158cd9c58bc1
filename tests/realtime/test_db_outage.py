"""A database outage, made real: a TCP proxy between the server and PostgreSQL is cut and restored.

During the outage REST answers 503 problem+json with Retry-After and ``/healthz`` says the
database is down; a new stream gets its protocol's own error; a live stream keeps transcribing
and its segments are stored, in order, when the database returns; a sweeper on another node that
saw the lease lapse does not end it for good; and the server recovers without a restart, having
logged the outage once, not once a request.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from lectern.store.db import create_sync_engine
from tests.conftest import PG_URL, LecternServer, _fresh_database, load_speech
from tests.db_proxy import DatabaseProxy
from tests.realtime import native_wire, reverie_wire
from tests.realtime.scribe_wire import COMMIT, expect_close, expect_started, open_ws, recv_json, send_audio

SESSIONS = "/api/v1/speech-services/streams"
WAIT = 30.0  # for one observable change (a health status, a row's state)


class ProxiedServer:
    """A server whose database connection runs through ``proxy``; ``direct`` reads the same
    database around it (as an operator, or another node, would)."""

    def __init__(self, server: LecternServer, proxy: DatabaseProxy, direct: Engine) -> None:
        self.server = server
        self.proxy = proxy
        self.direct = direct

    def session_row(self, session_id: str) -> dict[str, Any]:
        with self.direct.connect() as c:
            return dict(c.execute(text("SELECT * FROM stream_sessions WHERE id = :id"),
                                  {"id": str(uuid.UUID(session_id))}).mappings().one())

    def segments(self, session_id: str) -> list[dict[str, Any]]:
        with self.direct.connect() as c:
            return [dict(r) for r in c.execute(
                text("SELECT * FROM stream_segments WHERE session_id = :id ORDER BY segment_index"),
                {"id": str(uuid.UUID(session_id))}).mappings()]

    async def wait_row(self, session_id: str, predicate: Any, timeout: float = WAIT) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                row = await asyncio.to_thread(self.session_row, session_id)
                if predicate(row):
                    return row
                await asyncio.sleep(0.05)

    async def wait_health(self, status: int, timeout: float = WAIT) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.server.base_url, timeout=5) as http, asyncio.timeout(timeout):
            while True:
                response = await http.get("/healthz")
                if response.status_code == status:
                    return response.json()
                await asyncio.sleep(0.05)

    def log(self) -> str:
        return (self.server.data_dir / "server.log").read_text(errors="replace")


@pytest.fixture
async def proxied(backend: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """Start servers on one fresh PostgreSQL database, each behind its own proxy (or directly)."""
    if backend != "postgresql":
        pytest.skip("the outage is a cut TCP connection to PostgreSQL; SQLite has no connection to cut")
    assert PG_URL
    url, drop = _fresh_database("postgresql")
    direct = create_sync_engine(url)
    started: list[tuple[LecternServer, DatabaseProxy | None]] = []

    async def start(through_proxy: bool = True, **settings: Any) -> ProxiedServer:
        proxy = DatabaseProxy.to(url)
        await proxy.start()
        tmp = tmp_path_factory.mktemp("outage")
        settings = {"engine_workers": 1, **settings}  # a quicker start on a busy machine
        server = await asyncio.to_thread(
            LecternServer, tmp, "postgresql", settings, proxy.url_for(url) if through_proxy else url
        )
        started.append((server, proxy))
        return ProxiedServer(server, proxy, direct)

    yield start
    for server, proxy in started:
        if proxy is not None and not proxy.up:
            await proxy.start()  # let the server shut down cleanly
        await asyncio.to_thread(server.stop)
        if proxy is not None:
            await proxy.cut()
    direct.dispose()
    drop()


def _auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def test_rest_answers_503_during_an_outage_and_recovers_without_a_restart(proxied: Any) -> None:
    node: ProxiedServer = await proxied(job_poll_seconds=0.05, sweep_interval_seconds=0.05)
    key = await asyncio.to_thread(node.server.create_key)
    async with httpx.AsyncClient(base_url=node.server.base_url, timeout=10) as http:
        assert (await http.get(SESSIONS, headers=_auth(key))).status_code == 200
        health = (await http.get("/healthz")).json()
        assert health["status"] == "ok" and health["database"] == {"status": "ok"}, health

        await node.proxy.cut()
        health = await node.wait_health(503)
        assert health["status"] == "unavailable", health
        assert health["database"]["status"] == "down" and health["database"]["detail"], health
        assert {"engine", "streams", "capacity", "models"} <= set(health), health  # the existing fields stay
        for _ in range(20):
            response = await http.get(SESSIONS, headers=_auth(key))
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert int(response.headers["retry-after"]) >= 1
            body = response.json()
            assert body["status"] == 503 and body["title"] == "Service Unavailable", body
            assert "database" in body["detail"], body

        await node.proxy.start()
        health = await node.wait_health(200)
        assert health["database"] == {"status": "ok"}, health
        response = await http.get(SESSIONS, headers=_auth(key))
        assert response.status_code == 200, response.text

    log = node.log()
    # Once per outage, not a traceback per request.
    assert "unhandled error" not in log, log[-5000:]
    assert log.count("database unreachable") == 1, log[-5000:]
    assert log.count("database reachable again") == 1, log[-5000:]


async def _commit_speech(ws: Any, pcm: bytes) -> str:
    """Send ``pcm``, commit, and return the committed text (partials and other results skipped)."""
    await send_audio(ws, pcm)
    await ws.send(COMMIT)
    while True:
        message = await recv_json(ws)
        assert "error" not in message, message
        if message["message_type"] == "committed_transcript":
            return message["text"]


async def test_a_live_stream_keeps_transcribing_through_an_outage_and_is_stored_when_it_ends(proxied: Any) -> None:
    node: ProxiedServer = await proxied(lease_seconds=1, lease_renew_seconds=0.1, sweep_interval_seconds=0.1)
    fox, coffee, numbers = load_speech("fox"), load_speech("coffee"), load_speech("numbers")
    key = await asyncio.to_thread(node.server.create_key)
    async with open_ws(node.server, "model_id=scribe_v2_realtime&commit_strategy=manual", key=key) as ws:
        session_id = (await expect_started(ws))["session_id"]
        texts = [await _commit_speech(ws, fox.pcm)]
        await node.proxy.cut()
        await node.wait_health(503)
        # Committed while the database is away: answered now, stored later, in order.
        texts.append(await _commit_speech(ws, coffee.pcm))
        texts.append(await _commit_speech(ws, numbers.pcm))
        # The node's lease lapses meanwhile; its own sweeper cannot reach the database either.
        await node.proxy.start()
        await node.wait_health(200)
        texts.append(await _commit_speech(ws, fox.pcm))
        await ws.close()
    row = await node.wait_row(session_id, lambda r: r["state"] not in ("CREATED", "ACTIVE"))
    assert row["state"] == "CANCELLED" or row["state"] == "FINISHED", row  # the client closed: not FAILED
    assert row["failure_reason"] is None, row
    segments = node.segments(session_id)
    assert [s["segment_index"] for s in segments] == [0, 1, 2, 3], segments
    assert [s["transcript"] for s in segments] == texts
    assert row["segment_count"] == 4, row
    log = node.log()
    assert "lease renewal failed" not in log and f"stream {uuid.UUID(session_id)} failed" not in log, log[-5000:]


async def test_a_sweeper_elsewhere_does_not_end_for_good_a_stream_whose_node_only_lost_the_database(
    proxied: Any,
) -> None:
    node: ProxiedServer = await proxied(lease_seconds=1, lease_renew_seconds=0.1, sweep_interval_seconds=30)
    sweeper: ProxiedServer = await proxied(through_proxy=False, sweep_interval_seconds=0.1, engine_workers=1)
    fox, coffee = load_speech("fox"), load_speech("coffee")
    key = await asyncio.to_thread(node.server.create_key)
    async with open_ws(node.server, "model_id=scribe_v2_realtime&commit_strategy=manual", key=key) as ws:
        session_id = (await expect_started(ws))["session_id"]
        texts = [await _commit_speech(ws, fox.pcm)]
        await node.proxy.cut()
        # The other node sees the lease lapse and ends the stream as its rule says...
        swept = await sweeper.wait_row(session_id, lambda r: r["state"] == "FAILED")
        assert "lease expired" in swept["failure_reason"], swept
        texts.append(await _commit_speech(ws, coffee.pcm))
        # ...but the stream's node is alive: when it reaches the database again, it takes it back.
        await node.proxy.start()
        back = await sweeper.wait_row(session_id, lambda r: r["state"] == "ACTIVE")
        assert back["end_time"] is None and back["failure_reason"] is None, back
        texts.append(await _commit_speech(ws, fox.pcm))
        await ws.close()
    row = await node.wait_row(session_id, lambda r: r["state"] not in ("CREATED", "ACTIVE"))
    assert row["state"] in ("CANCELLED", "FINISHED") and row["failure_reason"] is None, row
    assert [s["transcript"] for s in node.segments(session_id)] == texts


async def test_new_streams_during_an_outage_get_their_protocols_error(proxied: Any) -> None:
    node: ProxiedServer = await proxied()
    key = await asyncio.to_thread(node.server.create_key)
    await node.proxy.cut()
    await node.wait_health(503)

    async with open_ws(node.server, key=key) as ws:  # ElevenLabs: an error message, then close 1000
        message = await recv_json(ws)
        assert set(message) == {"message_type", "error"}, message
        assert message["message_type"] == "error" and "database" in message["error"], message
        await expect_close(ws, "error")

    async with native_wire.open_native(node.server) as ws:  # native: its error frame
        await native_wire.send_json(ws, native_wire.start_message(key))
        closed = await native_wire.read_until_closed(ws)
        assert len(closed.messages) == 1, closed.messages
        assert "database" in native_wire.check_error(closed.messages[0], "UNAVAILABLE")

    async with reverie_wire.open_stream(node.server, key) as ws:  # Reverie: its error message
        detail = reverie_wire.check_error(await reverie_wire.recv_message(ws), 503, "service unavailable")
        assert "database" in detail

    await node.proxy.start()
    await node.wait_health(200)
    async with open_ws(node.server, key=key) as ws:
        await expect_started(ws)
