"""`GET /api/v1/quotas`: limits as the operator set them, usage counted from what was really done."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import uuid
from typing import Any

import httpx

from tests.api.test_summary_rate_limit import _completed_transcription
from tests.conftest import SPEECH, LecternServer, load_speech
from tests.realtime.native_wire import record
from tests.realtime.scribe_wire import COMMIT, expect_started, next_committed, open_ws, send_audio

QUOTAS = "/api/v1/quotas"
FOX_WAV = SPEECH / "fox.wav"
FOX = load_speech("fox")


def _quotas(server: LecternServer, key: str) -> dict[str, Any]:
    response = httpx.get(f"{server.base_url}{QUOTAS}", headers={"X-API-Key": key}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["speech-service"]


def _set_quotas(server: LecternServer, tenant: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "lectern", "admin", "tenants", "update", tenant, *args],
                   env=server.env, check=True, capture_output=True, text=True)


async def _stream_fox(server: LecternServer, key: str) -> str:
    async with open_ws(server, key=key) as ws:
        session_id = (await expect_started(ws))["session_id"]
        await send_audio(ws, FOX.pcm)
        await ws.send(COMMIT)
        await next_committed(ws)
    server.wait_session_state(session_id, ("FINISHED",))
    return session_id


def test_an_unlimited_tenant_has_null_limits_and_nothing_used(server: LecternServer) -> None:
    key = server.create_key(f"fresh-{uuid.uuid4().hex[:8]}", "alice")
    assert _quotas(server, key) == {
        name: {"limit": None, "used": 0, "available": None}
        for name in ("storage", "transcription", "summaries", "summaryTokens")
    }


def test_usage_counts_streams_batch_and_stored_bytes_against_the_limits(server: LecternServer) -> None:
    tenant = f"metered-{uuid.uuid4().hex[:8]}"
    key = server.create_key(tenant, "alice")
    other = server.create_key(f"other-{uuid.uuid4().hex[:8]}", "bob")
    _set_quotas(server, tenant, "--quota-transcription-minutes", "10", "--quota-storage-bytes", "10000000",
                "--quota-summaries", "5", "--quota-summary-tokens", "1000")

    _completed_transcription(server, key)
    file_bytes = FOX_WAV.stat().st_size
    session_id = asyncio.run(_stream_fox(server, key))
    streamed_seconds = server.session_row(session_id)["duration_ms"] / 1000
    assert streamed_seconds > 0

    quotas = _quotas(server, key)
    assert quotas["storage"] == {"limit": 10_000_000, "used": file_bytes, "available": 10_000_000 - file_bytes}
    used_minutes = math.ceil((FOX.seconds + streamed_seconds) / 60)
    assert quotas["transcription"] == {"limit": 10, "used": used_minutes, "available": 10 - used_minutes}
    assert quotas["summaries"] == {"limit": 5, "used": 0, "available": 5}
    assert quotas["summaryTokens"] == {"limit": 1000, "used": 0, "available": 1000}
    assert _quotas(server, other)["storage"]["used"] == 0, "another tenant's usage is its own"


def test_a_kept_recording_is_stored_bytes_until_it_is_purged(server: LecternServer) -> None:
    key = server.create_key(f"recorder-{uuid.uuid4().hex[:8]}", "alice")

    session_id = asyncio.run(record(server, key, FOX.pcm))
    row = server.wait_session_state(session_id, ("FINISHED",))
    assert row["recording_path"], row
    recorded = row["duration_ms"] * 32  # 16 kHz mono s16le
    assert _quotas(server, key)["storage"]["used"] == recorded

    purged = httpx.delete(f"{server.base_url}/api/v1/speech-services/streams/{session_id}/recording",
                          headers={"X-API-Key": key}, timeout=30)
    assert purged.status_code == 204, purged.text
    assert _quotas(server, key)["storage"]["used"] == 0
