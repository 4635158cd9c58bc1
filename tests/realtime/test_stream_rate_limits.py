"""Rate limits on the realtime sockets (issue G): stream starts per key (and per tenant), and failed
authentications per client address, refused in each protocol's own shape: ElevenLabs
``rate_limited``, Reverie its 429 error, native ``RATE_LIMITED``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import LecternServer
from tests.realtime.stream_limits_wire import AUTH_FAILED, PROTOCOLS, RATE_LIMITED, end, new_tenant, start

pytestmark = pytest.mark.asyncio

OTHER_ADDRESS = "127.0.0.2"  # loopback too: a second client address on the same machine


@pytest.fixture(scope="module")
def starts(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    server = LecternServer(tmp_path_factory.mktemp(f"starts-{backend}"), backend,
                           {"rate_limit_stream_starts": "2/minute", "rate_limit_tenant_stream_starts": "5/minute"})
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_key_past_its_stream_starts_is_refused(starts: LecternServer, protocol: str) -> None:
    tenant, key = new_tenant(starts, "starts")
    for _ in range(2):
        attempt = await start(starts, protocol, key, tenant)
        assert attempt.session_id is not None, attempt.message
        await end(attempt)
    refused = await start(starts, protocol, key, tenant)
    assert refused.refusal == RATE_LIMITED[protocol], refused.message
    assert "too many streams started: at most 2 a minute" in refused.message
    other_key = starts.create_key(tenant, "bob")  # another key of the tenant has its own budget
    attempt = await start(starts, protocol, other_key, tenant)
    assert attempt.session_id is not None, attempt.message
    await end(attempt)


async def test_a_tenant_shares_one_stream_start_budget_across_its_keys(starts: LecternServer) -> None:
    tenant, _ = new_tenant(starts, "tstarts")
    keys = [starts.create_key(tenant, f"user{i}") for i in range(3)]
    for key in (keys[0], keys[0], keys[1], keys[1], keys[2]):  # the tenant's 5
        attempt = await start(starts, "native", key, tenant)
        assert attempt.session_id is not None, attempt.message
        await end(attempt)
    refused = await start(starts, "native", keys[2], tenant)  # under its key's 2, over the tenant's 5
    assert refused.refusal == "RATE_LIMITED" and "at most 5 a minute" in refused.message


async def test_an_address_past_its_failed_authentications_is_refused_before_its_credentials_are_checked(
    make_server: Any,
) -> None:
    """Three failures (one per protocol) spend the address's budget of 3; after that even a valid
    key is refused, in every protocol; another address is not."""
    server = make_server(rate_limit_auth_failures="3/minute")
    tenant, key = new_tenant(server, "auth")
    for protocol in PROTOCOLS:
        failed = await start(server, protocol, "kk-not-a-key", tenant)
        assert failed.refusal == AUTH_FAILED[protocol], failed.message
    for protocol in PROTOCOLS:
        refused = await start(server, protocol, key, tenant)
        assert refused.refusal == RATE_LIMITED[protocol], refused.message
        assert "too many failed authentications: at most 3 a minute" in refused.message
    elsewhere = await start(server, "native", key, tenant, local_addr=(OTHER_ADDRESS, 0))
    assert elsewhere.session_id is not None, elsewhere.message
    await end(elsewhere)


async def test_a_reverie_appid_of_another_tenant_counts_as_a_failed_authentication(make_server: Any) -> None:
    server = make_server(rate_limit_auth_failures="1/minute")
    tenant, key = new_tenant(server, "appid")
    failed = await start(server, "reverie", key, "some-other-tenant")
    assert failed.refusal == "403 Forbidden" and "appid" in failed.message
    refused = await start(server, "reverie", key, tenant)
    assert refused.refusal == "429 too many requests", refused.message
