"""The tenant's monthly transcription minutes on realtime streams (issue G): a stream that runs out
mid-way gets the protocol's quota error and is closed with its duration counted (exactly what was
processed, up to the quota); a tenant with no minutes left is refused at start; streams of one
tenant spend from one quota, re-read at each lease renewal."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.conftest import LecternServer, load_speech
from tests.realtime.stream_limits_wire import (
    BYTES_PER_SECOND,
    PROTOCOLS,
    QUOTA_EXCEEDED,
    end,
    ended_row,
    new_tenant,
    read_until_error,
    send_audio,
    start,
)

pytestmark = pytest.mark.asyncio

RENEW_SECONDS = 0.5


@pytest.fixture(scope="module")
def srv(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    # Audio is sent faster than real time: the server recognizes it as fast as it comes, up to
    # max_buffered_audio_seconds ahead (120 s by default, more than any stream here sends).
    server = LecternServer(tmp_path_factory.mktemp(f"quotas-{backend}"), backend,
                           {"lease_renew_seconds": RENEW_SECONDS, "max_buffered_audio_seconds": 120,
                            "idle_timeout_seconds": 120})
    yield server
    server.stop()


def speech(seconds: float) -> bytes:
    """Real speech, repeated to ``seconds``."""
    pcm = b"".join(load_speech(name).pcm for name in ("fox", "weather", "train", "coffee", "kitchen"))
    size = int(seconds * BYTES_PER_SECOND)
    return (pcm * (size // len(pcm) + 1))[:size]


def _quota_text(protocol: str, message: str) -> None:
    if protocol == "reverie":  # Reverie's own words first
        assert message.startswith("The provided credit limit is exhausted."), message
    assert "transcription minutes quota is used up" in message, message


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_stream_that_runs_out_of_minutes_gets_the_quota_error_with_its_duration_counted(
    srv: LecternServer, protocol: str
) -> None:
    tenant, key = new_tenant(srv, "quota", quota_transcription_minutes=1)
    attempt = await start(srv, protocol, key, tenant)
    assert attempt.session_id is not None, attempt.message
    sender = asyncio.create_task(send_audio(attempt, speech(75)))
    await read_until_error(attempt)
    await sender
    assert attempt.refusal == QUOTA_EXCEEDED[protocol], attempt.message
    _quota_text(protocol, attempt.message)
    row = await ended_row(srv, attempt.session_id)
    assert row["state"] == "FAILED" and row["failure_reason"].startswith("quota_exceeded:"), row
    assert row["duration_ms"] == 60_000, row  # recognized up to the quota's end, and counted
    # Now nothing is left: refused at start, in the same words.
    refused = await start(srv, protocol, key, tenant)
    assert refused.session_id is None and refused.refusal == QUOTA_EXCEEDED[protocol], refused.message
    _quota_text(protocol, refused.message)


async def test_streams_of_one_tenant_spend_from_one_quota_reread_at_each_renewal(srv: LecternServer) -> None:
    """B opens with the whole minute left; A then spends 40 s and ends; at B's next renewals B
    learns that only 20 s are left, and ends there."""
    tenant, key = new_tenant(srv, "shared", quota_transcription_minutes=1)
    b = await start(srv, "native", key, tenant)
    a = await start(srv, "native", key, tenant)
    assert a.session_id and b.session_id, (a.message, b.message)
    assert await send_audio(a, speech(40)) == 40 * BYTES_PER_SECOND
    await end(a)
    assert (await ended_row(srv, a.session_id))["duration_ms"] == 40_000
    # Two renewals of B after A's row ended: the quota read after the first is done by the second.
    leases = [srv.session_row(b.session_id)["lease_expires_at"]]
    while len(leases) < 3:
        lease = await asyncio.to_thread(_next_lease, srv, b.session_id, leases[-1])
        leases.append(lease)
    sender = asyncio.create_task(send_audio(b, speech(30)))
    await read_until_error(b)
    await sender
    assert b.refusal == "QUOTA_EXCEEDED", b.message
    row = await ended_row(srv, b.session_id)
    assert row["duration_ms"] == 20_000, row


def _next_lease(srv: LecternServer, session_id: str, previous: object) -> object:
    """The row's lease once a renewal has moved it past ``previous`` (bounded: renewals come every
    RENEW_SECONDS)."""
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = srv.session_row(session_id)
        assert row["state"] == "ACTIVE", row
        if row["lease_expires_at"] != previous:
            return row["lease_expires_at"]
        time.sleep(0.05)
    raise AssertionError("the stream's lease was not renewed")
