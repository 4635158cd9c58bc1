"""``/api/v1/api-keys`` against a real server: the secret once, scopes never wider than the
creator's, unknown scopes refused, roles, revocation and expiry, and whose keys a caller sees."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
from sqlalchemy import update

from lectern.auth.scopes import APIKEYS_ADMIN, NORMAL_USER_SCOPES, ROLES, SESSIONS_READ, SESSIONS_WRITE
from lectern.store.models import ApiKey
from tests.conftest import LecternServer

KEYS = "/api/v1/api-keys"
STREAMS = "/api/v1/speech-services/streams"
PROBLEM_JSON = "application/problem+json"
FIELDS = {"id", "name", "description", "prefix", "scopes", "userId", "status", "creationDate", "expirationDate",
          "revocationDate"}


def tenant() -> str:
    """A tenant of the test's own on the shared server."""
    return f"keys-{uuid.uuid4().hex[:8]}"


def cli_key(server: LecternServer, tenant: str, user: str, *options: str) -> str:
    args = [sys.executable, "-m", "lectern", "admin", "keys", "create", "--tenant", tenant, "--user", user, *options]
    return subprocess.run(args, env=server.env, check=True, capture_output=True, text=True).stdout.splitlines()[-1]


def call(server: LecternServer, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{server.base_url}{path}", headers={"X-API-Key": key}, timeout=30, **kwargs)


def create(server: LecternServer, key: str, **body: Any) -> httpx.Response:
    return call(server, key, "POST", KEYS, json={"name": "a key", **body})


def assert_problem(response: httpx.Response, status: int, *words: str, parameter: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    assert all(word in body["detail"] for word in words), body
    if parameter is not None:
        assert body.get("parameter") == parameter, body


def test_the_secret_is_shown_once_and_the_key_has_the_scopes_asked_for(server: LecternServer) -> None:
    alice = server.create_key(tenant(), "alice")
    expires = (datetime.now(timezone.utc) + timedelta(days=30)).replace(microsecond=0)
    created = create(server, alice, name="Dashboard Read-Only", description="Used by monitoring dashboard",
                     scopes=[SESSIONS_READ], expirationDate=expires.isoformat().replace("+00:00", "Z"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == FIELDS | {"key"}
    secret = body["key"]
    assert secret.startswith("kk-") and len(secret) > 40
    assert body["prefix"] == secret[:10]
    assert (body["name"], body["description"], body["scopes"], body["userId"], body["status"]) == (
        "Dashboard Read-Only", "Used by monitoring dashboard", [SESSIONS_READ], "alice", "ACTIVE")
    assert datetime.fromisoformat(body["expirationDate"]) == expires
    assert body["revocationDate"] is None
    assert created.headers["location"] == f"{KEYS}/{body['id']}"

    assert call(server, secret, "GET", STREAMS).status_code == 200  # it works, with what it was given
    mint = httpx.post(f"{server.base_url}/v1/single-use-token/realtime_scribe", headers={"xi-api-key": secret})
    assert mint.status_code == 403  # and nothing more: no speech:sessions:write

    listed = call(server, alice, "GET", KEYS)
    got = call(server, alice, "GET", f"{KEYS}/{body['id']}")
    for response in (listed, got):
        assert response.status_code == 200
        assert secret not in response.text and secret[10:] not in response.text
    assert got.json() == {k: v for k, v in body.items() if k != "key"}
    assert [k["id"] for k in listed.json()["apiKeys"]][0] == body["id"]  # newest first
    assert listed.json()["total"] == 2  # the key made by the CLI, and this one


def test_unknown_scopes_and_roles_are_refused_with_a_clear_problem(server: LecternServer) -> None:
    alice = server.create_key(tenant(), "alice")
    assert_problem(create(server, alice, scopes=[SESSIONS_READ, "speech:bogus"]), 400, "speech:bogus",
                   parameter="scopes")
    assert_problem(create(server, alice, role="owner"), 400, "owner", "admin, member, viewer", parameter="role")
    assert_problem(create(server, alice, role="viewer", scopes=[SESSIONS_READ]), 400, "role or scopes",
                   parameter="role")
    assert_problem(create(server, alice, expirationDate="2020-01-01T00:00:00Z"), 400, "expired",
                   parameter="expirationDate")
    assert_problem(create(server, alice, expirationDate="tomorrow"), 400, parameter="expirationDate")
    assert_problem(call(server, alice, "POST", KEYS, json={"scopes": [SESSIONS_READ]}), 400, parameter="name")
    assert_problem(create(server, alice, secret="mine"), 400)  # no field beyond the contract's
    assert call(server, alice, "GET", KEYS).json()["total"] == 1  # nothing was created


def test_a_key_never_gets_more_than_its_creator_holds(server: LecternServer) -> None:
    name = tenant()
    viewer = cli_key(server, name, "vera", "--role", "viewer")
    assert_problem(create(server, viewer, scopes=[SESSIONS_READ, SESSIONS_WRITE]), 403, SESSIONS_WRITE,
                   parameter="scopes")
    assert_problem(create(server, viewer, role="member"), 403, "speech:sessions:write", parameter="role")
    member = server.create_key(name, "alice")
    assert_problem(create(server, member, role="admin"), 403, APIKEYS_ADMIN, parameter="role")
    # a viewer manages their own keys (the platform's viewer "can create and manage own API keys")
    made = create(server, viewer, role="viewer")
    assert made.status_code == 201 and made.json()["scopes"] == sorted(ROLES["viewer"])
    reader = server.create_key(name, "alice", [SESSIONS_READ])  # holds no user:apikeys:write
    assert_problem(create(server, reader, scopes=[SESSIONS_READ]), 403, "user:apikeys:write")
    assert_problem(call(server, reader, "GET", KEYS), 403, "user:apikeys:read")


def test_roles_name_scope_sets_and_no_scopes_makes_an_identity_only_key(server: LecternServer) -> None:
    admin = cli_key(server, tenant(), "root", "--role", "admin")
    for role in ("admin", "member", "viewer"):
        made = create(server, admin, role=role)
        assert made.status_code == 201 and made.json()["scopes"] == sorted(ROLES[role])
    assert sorted(ROLES["member"]) == sorted(NORMAL_USER_SCOPES)
    identity = create(server, admin).json()
    assert identity["scopes"] == []
    assert_problem(call(server, identity["key"], "GET", STREAMS), 403, "speech:sessions:read")  # known, not allowed


def test_a_revoked_or_expired_key_is_refused_and_revoking_again_changes_nothing(server: LecternServer) -> None:
    alice = server.create_key(tenant(), "alice")
    made = create(server, alice, scopes=[SESSIONS_READ]).json()
    assert call(server, made["key"], "GET", STREAMS).status_code == 200
    assert call(server, alice, "DELETE", f"{KEYS}/{made['id']}").status_code == 204
    assert_problem(call(server, made["key"], "GET", STREAMS), 401, "revoked")
    first = call(server, alice, "GET", f"{KEYS}/{made['id']}").json()
    assert first["status"] == "REVOKED" and first["revocationDate"] is not None
    assert call(server, alice, "DELETE", f"{KEYS}/{made['id']}").status_code == 204
    assert call(server, alice, "GET", f"{KEYS}/{made['id']}").json() == first  # the first revocation's time

    soon = create(server, alice, scopes=[SESSIONS_READ]).json()
    with server.db() as db, db.begin():  # its expiration date passes
        db.execute(update(ApiKey).where(ApiKey.id == uuid.UUID(soon["id"]))
                   .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert_problem(call(server, soon["key"], "GET", STREAMS), 401, "expired")
    assert call(server, alice, "GET", f"{KEYS}/{soon['id']}").json()["status"] == "EXPIRED"

    # a key may revoke itself; then it is refused
    own = create(server, alice, role="member").json()
    assert call(server, own["key"], "DELETE", f"{KEYS}/{own['id']}").status_code == 204
    assert call(server, own["key"], "GET", KEYS).status_code == 401


def test_other_users_keys_need_the_admin_scope_and_other_tenants_keys_do_not_exist(server: LecternServer) -> None:
    name = tenant()
    alice, bob = server.create_key(name, "alice"), server.create_key(name, "bob")
    bobs = create(server, bob, name="bob's", scopes=[SESSIONS_READ]).json()
    stranger = server.create_key(tenant(), "alice")  # same user name, another tenant
    strangers = create(server, stranger, scopes=[SESSIONS_READ]).json()

    assert_problem(call(server, alice, "GET", KEYS, params={"userId": "bob"}), 403, APIKEYS_ADMIN, parameter="userId")
    assert_problem(call(server, alice, "GET", f"{KEYS}/{bobs['id']}"), 403, "another user")
    assert_problem(call(server, alice, "DELETE", f"{KEYS}/{bobs['id']}"), 403, "another user")
    assert_problem(create(server, alice, userId="bob", scopes=[SESSIONS_READ]), 403, APIKEYS_ADMIN)
    assert_problem(call(server, alice, "GET", f"{KEYS}/{strangers['id']}"), 404)
    assert_problem(call(server, alice, "DELETE", f"{KEYS}/{strangers['id']}"), 404)
    assert_problem(call(server, alice, "GET", f"{KEYS}/not-a-uuid"), 404)
    assert {k["userId"] for k in call(server, alice, "GET", KEYS).json()["apiKeys"]} == {"alice"}

    admin = cli_key(server, name, "root", "--role", "admin")
    everyone = call(server, admin, "GET", KEYS, params={"size": 100}).json()
    assert {k["userId"] for k in everyone["apiKeys"]} == {"alice", "bob", "root"}
    assert strangers["id"] not in {k["id"] for k in everyone["apiKeys"]}
    only_bob = call(server, admin, "GET", KEYS, params={"userId": "bob"}).json()
    assert {k["userId"] for k in only_bob["apiKeys"]} == {"bob"} and only_bob["total"] == 2
    for_bob = create(server, admin, userId="bob", scopes=[SESSIONS_READ])
    assert for_bob.status_code == 201 and for_bob.json()["userId"] == "bob"
    assert_problem(create(server, admin, userId="nobody", scopes=[SESSIONS_READ]), 404, "nobody", parameter="userId")
    assert call(server, admin, "DELETE", f"{KEYS}/{bobs['id']}").status_code == 204
    assert call(server, bobs["key"], "GET", STREAMS).status_code == 401
    assert_problem(call(server, admin, "DELETE", f"{KEYS}/{strangers['id']}"), 404)
    assert call(server, strangers["key"], "GET", STREAMS).status_code == 200  # another tenant's: untouched
