"""Revoking a key ends its open streams: each live stream checks its key at every lease renewal
(so a revocation on any node, or straight in the database, reaches it), and ends with its
protocol's authentication error; the row records why."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from lectern.auth.keys import PREFIX_LENGTH
from lectern.store.models import ApiKey, utcnow
from tests.conftest import LecternServer, load_speech
from tests.realtime import native_wire, reverie_wire
from tests.realtime.scribe_wire import COMMIT, expect_error, expect_started, open_ws, recv_json, send_audio

SETTINGS = {"lease_renew_seconds": 0.2, "idle_timeout_seconds": 120, "engine_workers": 1}


@pytest.fixture(scope="module")
def srv(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = LecternServer(tmp_path_factory.mktemp(f"revocation-{backend}"), backend, SETTINGS)
    yield server
    server.stop()


def revoke(srv: LecternServer, key: str, **values: Any) -> None:
    """What the api-keys API does (or an operator, on any node): the row says the key is done."""
    with srv.db() as s, s.begin():
        s.execute(update(ApiKey).where(ApiKey.prefix == key[:PREFIX_LENGTH]).values(**values))


async def test_revoking_a_key_ends_its_elevenlabs_stream_with_auth_error(srv: LecternServer) -> None:
    key, other = srv.create_key("acme", "rita"), srv.create_key("acme", "olga")
    fox = load_speech("fox")
    query = "model_id=scribe_v2_realtime&commit_strategy=manual"
    async with open_ws(srv, query, key=key) as ws, open_ws(srv, query, key=other) as bystander:
        session_id = (await expect_started(ws))["session_id"]
        await expect_started(bystander)
        await send_audio(ws, fox.pcm)
        await ws.send(COMMIT)
        while (await recv_json(ws))["message_type"] != "committed_transcript":
            pass
        await asyncio.to_thread(revoke, srv, key, revoked_at=utcnow())
        error, _ = await expect_error(ws, "auth_error")
        assert "revoked" in error, error
        # Another key's stream carries on.
        await send_audio(bystander, fox.pcm)
        await bystander.send(COMMIT)
        while (message := await recv_json(bystander))["message_type"] != "committed_transcript":
            assert "error" not in message, message
    row = await asyncio.to_thread(srv.wait_session_state, session_id, ("FAILED",))
    assert row["state"] == "FAILED" and row["failure_reason"].startswith("auth: "), row
    assert row["segment_count"] == 1, row


async def test_an_expired_key_ends_its_native_stream_with_unauthenticated(srv: LecternServer) -> None:
    key = srv.create_key("acme", "rita")
    async with native_wire.open_native(srv) as ws:
        info = await native_wire.start_session(ws, key)
        reader = native_wire.Reader(ws)
        await native_wire.send_pcm(ws, load_speech("fox").pcm)
        await asyncio.to_thread(revoke, srv, key, expires_at=utcnow() - timedelta(seconds=1))
        closed = await reader.closed()
    errors = [m for m in closed.messages if m["type"] == "error"]
    assert len(errors) == 1 and closed.messages[-1] is errors[0], closed.messages
    assert "revoked or has expired" in native_wire.check_error(errors[0], "UNAUTHENTICATED")
    row = await asyncio.to_thread(srv.wait_session_state, info["sessionId"], ("FAILED",))
    assert row["failure_reason"].startswith("auth: "), row


async def test_revoking_a_key_ends_its_reverie_stream_with_forbidden(srv: LecternServer) -> None:
    key = srv.create_key("acme", "rita")
    async with reverie_wire.open_stream(srv, key, continuous=1) as ws:
        ready = await reverie_wire.recv_message(ws)
        assert ready["cause"] == "ready", ready
        await ws.send(reverie_wire.silence(0.5))
        await asyncio.to_thread(revoke, srv, key, revoked_at=utcnow())
        messages = await reverie_wire.read_all(ws)
    assert "revoked" in reverie_wire.check_error(messages[-1], 403, "Forbidden")
    row = await asyncio.to_thread(reverie_wire.ended_row_sync, srv, ready["id"], ("FAILED",))
    assert row["failure_reason"].startswith("auth: "), row
