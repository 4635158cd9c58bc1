"""A stream whose server crashed is ended by a sweeper elsewhere (or after the restart), and it
ended when its server last renewed its lease, not when the sweep noticed: a server restarted
long after a crash must not count the time it was down as the stream's."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import datetime, timedelta, timezone
from typing import Any

import psutil
import pytest

from tests.conftest import LecternServer, load_speech
from tests.realtime.scribe_wire import COMMIT, expect_started, open_ws, recv_json, send_audio

LEASE_SECONDS = 2


def crash(srv: LecternServer) -> None:
    """SIGKILL the server and its engine workers at once: nothing is cleaned up, no row written."""
    family = [srv.process.pid] + [c.pid for c in psutil.Process(srv.process.pid).children(recursive=True)]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    srv.process.wait(10)


def _utc(value: str | datetime) -> datetime:
    """A row's time as an aware datetime (SQLite hands raw SQL its text, PostgreSQL a datetime)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


async def test_a_crashed_servers_stream_ends_at_its_last_lease_renewal(
    make_server: Any, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = {"lease_seconds": LEASE_SECONDS, "lease_renew_seconds": 0.2, "engine_workers": 1}
    first: LecternServer = make_server(sweep_interval_seconds=60, **settings)
    key = first.create_key("acme", "alice")
    async with open_ws(first, "model_id=scribe_v2_realtime&commit_strategy=manual", key=key) as ws:
        session_id = (await expect_started(ws))["session_id"]
        await send_audio(ws, load_speech("fox").pcm)
        await ws.send(COMMIT)
        while (await recv_json(ws))["message_type"] != "committed_transcript":
            pass
        await asyncio.to_thread(crash, first)
    last_lease = _utc(first.session_row(session_id)["lease_expires_at"])  # nobody renews it any more
    assert first.session_row(session_id)["state"] == "ACTIVE"

    # The sweep runs much later than the crash: a whole server start later.
    second = await asyncio.to_thread(
        LecternServer, tmp_path_factory.mktemp(f"restarted-{backend}"), backend,
        {**settings, "sweep_interval_seconds": 0.2}, first.database_url,
    )
    try:
        row = await asyncio.to_thread(second.wait_session_state, session_id, ("FAILED",), 30.0)
    finally:
        await asyncio.to_thread(second.stop)
    assert row["state"] == "FAILED" and "lease expired" in row["failure_reason"], row
    assert _utc(row["end_time"]) == last_lease - timedelta(seconds=LEASE_SECONDS), row
    assert row["segment_count"] == 1 and row["duration_ms"] > 0, row
