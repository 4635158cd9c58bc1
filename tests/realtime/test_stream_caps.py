"""Caps on open streams, per tenant and per user, counted across nodes (issue G): a cap of N admits
N streams and refuses the next in each protocol's own shape, until one ends; two starts at once
cannot both take the last slot; a flood of starts whose connections drop does not hold the slots."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import LecternServer
from tests.realtime.stream_limits_wire import (
    CONCURRENCY_LIMIT,
    PROTOCOLS,
    Attempt,
    admin,
    cut,
    end,
    ended_row,
    new_tenant,
    start,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def srv(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    server = LecternServer(tmp_path_factory.mktemp(f"caps-{backend}"), backend, {})
    yield server
    server.stop()


async def _started(srv: LecternServer, protocol: str, key: str, tenant: str) -> Attempt:
    attempt = await start(srv, protocol, key, tenant)
    assert attempt.session_id is not None, (attempt.refusal, attempt.message)
    return attempt


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_tenant_cap_admits_n_streams_refuses_the_next_and_admits_again_after_one_ends(
    srv: LecternServer, protocol: str
) -> None:
    tenant, key = new_tenant(srv, "cap", max_concurrent_streams=2)
    held = [await _started(srv, protocol, key, tenant) for _ in range(2)]
    refused = await start(srv, protocol, key, tenant)
    assert refused.refusal == CONCURRENCY_LIMIT[protocol], refused.message
    assert "at most 2 streams open at once" in refused.message
    await end(held[0])
    await ended_row(srv, held[0].session_id or "")
    again = await _started(srv, protocol, key, tenant)
    for attempt in (held[1], again):
        await end(attempt)


async def test_a_users_own_cap_overrides_the_tenants(srv: LecternServer) -> None:
    tenant, alice = new_tenant(srv, "ucap", max_concurrent_streams=3)
    bob = srv.create_key(tenant, "bob")
    admin(srv, "users", "update", "--tenant", tenant, "--user", "bob", "--max-concurrent-streams", "1")
    bobs = await _started(srv, "elevenlabs", bob, tenant)
    refused = await start(srv, "elevenlabs", bob, tenant)
    assert refused.refusal == "rate_limited" and "this user may have at most 1" in refused.message
    alices = [await _started(srv, "elevenlabs", alice, tenant) for _ in range(2)]  # the tenant's 3, with bob's
    refused = await start(srv, "elevenlabs", alice, tenant)
    assert refused.refusal == "rate_limited" and "this tenant may have at most 3" in refused.message
    for attempt in (bobs, *alices):
        await end(attempt)


async def test_the_server_default_leaves_room_for_other_tenants(make_server: Any) -> None:
    """No cap set anywhere: a tenant gets three quarters of the node (one worker of 4 pocketsphinx
    streams: 3), and another tenant still gets in."""
    server = make_server(engine_workers=1, streams_per_worker=4)
    share = 3
    tenant, key = new_tenant(server, "big")
    held = [await _started(server, "native", key, tenant) for _ in range(share)]
    refused = await start(server, "native", key, tenant)
    assert refused.refusal == "RESOURCE_EXHAUSTED" and f"at most {share} streams" in refused.message
    other_tenant, other_key = new_tenant(server, "small")
    other = await _started(server, "native", other_key, other_tenant)
    for attempt in (*held, other):
        await end(attempt)


async def test_two_starts_at_once_cannot_both_take_the_last_slot(srv: LecternServer) -> None:
    tenant, key = new_tenant(srv, "race", max_concurrent_streams=1)
    attempts = await asyncio.gather(*(start(srv, "native", key, tenant) for _ in range(6)))
    started = [a for a in attempts if a.session_id is not None]
    assert len(started) == 1, [(a.refusal, a.message) for a in attempts]
    assert {a.refusal for a in attempts if a.session_id is None} == {"RESOURCE_EXHAUSTED"}
    await end(started[0])


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_starts_whose_connections_drop_free_their_slots_at_once(srv: LecternServer, protocol: str) -> None:
    """A flood of starts, each connection dropped right after: every row ends when its connection
    drops (well within the native protocol's 30 s resume grace and the 15 s lease), so the slots
    are free again for the tenant's real streams."""
    tenant, key = new_tenant(srv, "flood", max_concurrent_streams=2)
    for _ in range(3):
        pair = [await _started(srv, protocol, key, tenant) for _ in range(2)]
        for attempt in pair:
            cut(attempt)
        for attempt in pair:
            await ended_row(srv, attempt.session_id or "", timeout=10.0)
    held = [await _started(srv, protocol, key, tenant) for _ in range(2)]
    for attempt in held:
        await end(attempt)


async def test_two_nodes_sharing_a_database_count_together(srv: LecternServer, tmp_path_factory: Any) -> None:
    second = LecternServer(tmp_path_factory.mktemp("caps-second-node"), srv.backend, {},
                           database_url=srv.database_url)
    try:
        tenant, key = new_tenant(srv, "nodes", max_concurrent_streams=2)
        on_first = await _started(srv, "native", key, tenant)
        on_second = await _started(second, "reverie", key, tenant)
        for node, protocol in ((srv, "elevenlabs"), (second, "native")):
            refused = await start(node, protocol, key, tenant)
            assert refused.refusal == CONCURRENCY_LIMIT[protocol], refused.message
        await end(on_second)
        await ended_row(srv, on_second.session_id or "")
        again = await _started(srv, "elevenlabs", key, tenant)
        for attempt in (on_first, again):
            await end(attempt)
    finally:
        second.stop()
