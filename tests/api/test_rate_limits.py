"""REST rate limits at their edges: per key, per tenant, the stricter routes, failed authentications,
and one budget shared by two nodes through Redis."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import LecternServer

STREAMS = "/api/v1/speech-services/streams"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _purge(server: LecternServer, key: str) -> httpx.Response:
    return httpx.delete(f"{server.base_url}{STREAMS}/{uuid.uuid4()}/recording", headers={"X-API-Key": key},
                        timeout=30)


def _list(server: LecternServer, key: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}{STREAMS}", headers={"X-API-Key": key}, timeout=30)


def _assert_refused(response: httpx.Response, limit: int, what: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert f"too many {what}: at most {limit} a minute" in response.json()["detail"]
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["ratelimit-limit"] == str(limit)
    assert response.headers["ratelimit-remaining"] == "0"


def test_a_stricter_route_refuses_past_its_budget_per_key(make_server: Any) -> None:
    server = make_server(rate_limit_purges="2/minute")
    alice, bob = server.create_key("acme", "alice"), server.create_key("acme", "bob")

    assert [_purge(server, alice).status_code for _ in range(2)] == [404, 404]  # spent even when not found
    _assert_refused(_purge(server, alice), 2, "purges")
    assert _list(server, alice).status_code == 200, "other routes spend only the general budget"
    assert _purge(server, bob).status_code == 404, "another key has its own budget"


def test_responses_carry_the_tightest_budget(make_server: Any) -> None:
    server = make_server(rate_limit_requests="5/minute", rate_limit_tenant_requests="100/minute")
    key = server.create_key("acme", "alice")
    first, second = _list(server, key), _list(server, key)
    assert (first.headers["ratelimit-limit"], first.headers["ratelimit-remaining"]) == ("5", "4")
    assert second.headers["ratelimit-remaining"] == "3"
    assert 0 <= int(second.headers["ratelimit-reset"]) <= 60


def test_a_tenant_shares_one_budget_across_its_keys(make_server: Any) -> None:
    server = make_server(rate_limit_requests="100/minute", rate_limit_tenant_requests="3/minute")
    alice, bob = server.create_key("acme", "alice"), server.create_key("acme", "bob")
    carol = server.create_key("globex", "carol")

    assert [_list(server, k).status_code for k in (alice, alice, bob)] == [200, 200, 200]
    _assert_refused(_list(server, bob), 3, "requests")
    assert _list(server, carol).status_code == 200, "another tenant's budget is its own"


def test_failed_authentications_lock_out_the_address(make_server: Any) -> None:
    server = make_server(rate_limit_auth_failures="3/minute")
    key = server.create_key("acme", "alice")
    assert _list(server, key).status_code == 200, "successes are not failures"
    assert [_list(server, f"kk-wrong-{i}").status_code for i in range(3)] == [401, 401, 401]
    _assert_refused(_list(server, key), 3, "failed authentications")


@pytest.fixture
def shared_redis_prefix() -> str:
    try:  # the machine's Redis is part of the environment: fail loudly without it, never skip
        with socket.create_connection(("127.0.0.1", 6379), timeout=5) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(16).startswith(b"+PONG")
    except OSError as exc:
        pytest.fail(f"Redis at {REDIS_URL} is not answering: {exc}")
    return f"lectern-test-{uuid.uuid4().hex[:8]}"


def test_two_nodes_spend_one_budget_through_redis(
    make_server: Any, backend: str, tmp_path_factory: pytest.TempPathFactory, shared_redis_prefix: str,
) -> None:
    settings = {"redis_url": REDIS_URL, "redis_key_prefix": shared_redis_prefix, "rate_limit_purges": "3/minute"}
    first = make_server(**settings)
    second = LecternServer(tmp_path_factory.mktemp("second-node"), backend, settings,
                           database_url=first.database_url)
    try:
        key = first.create_key("acme", "alice")
        assert [_purge(node, key).status_code for node in (first, second, first)] == [404, 404, 404]
        _assert_refused(_purge(second, key), 3, "purges")
        _assert_refused(_purge(first, key), 3, "purges")
    finally:
        second.stop()
