"""The command-line contract: `lectern serve`, `lectern admin create-key` and `lectern admin keys|tenants|users`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from lectern.auth.scopes import ROLES
from lectern.store.models import ApiKey, Tenant, User

from tests.conftest import LecternServer


def _mint(server: LecternServer, key: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/single-use-token/realtime_scribe", headers={"xi-api-key": key})


def test_first_start_prints_a_working_development_key_once(make_server: Any) -> None:
    srv = make_server(create_dev_key="true")
    keys = re.findall(r"kk-[A-Za-z0-9_-]{40,}", (srv.data_dir / "server.log").read_text())
    assert len(keys) == 1
    assert _mint(srv, keys[0]).status_code == 200
    srv.process.terminate()
    srv.process.wait(15)
    again = LecternServer(srv.data_dir, srv.backend, {"create_dev_key": "true"}, database_url=srv.env.get("LECTERN_DATABASE_URL"))
    try:
        assert re.findall(r"kk-[A-Za-z0-9_-]{40,}", (srv.data_dir / "server.log").read_text()) == keys
    finally:
        again.stop()


def test_create_key_prints_the_key_last_with_the_scopes_asked_for(server: LecternServer) -> None:
    args = [sys.executable, "-m", "lectern", "admin", "create-key", "--tenant", "cli", "--user", "carol",
            "--scopes", "speech:sessions:read", "--name", "read only"]
    out = subprocess.run(args, env=server.env, check=True, capture_output=True, text=True).stdout
    key = out.strip().splitlines()[-1]
    assert re.fullmatch(r"kk-[A-Za-z0-9_-]{40,}", key)
    assert _mint(server, key).status_code == 403  # no speech:sessions:write
    full = server.create_key("cli", "carol")  # same tenant and user, default scopes
    assert _mint(server, full).status_code == 200


def _admin(server: LecternServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lectern", "admin", *args], env=server.env, capture_output=True,
                          text=True)


def _key_count(server: LecternServer) -> int:
    with server.db() as db:
        return db.scalar(select(func.count()).select_from(ApiKey)) or 0


def test_create_key_refuses_unknown_scopes_and_roles(server: LecternServer) -> None:
    before = _key_count(server)
    for command in ("create-key", "keys create"):
        bogus = _admin(server, *command.split(), "--tenant", "cli", "--user", "dora", "--scopes",
                       "speech:sessions:read,speech:bogus")
        assert bogus.returncode == 1
        assert "unknown scope speech:bogus" in bogus.stderr and "kk-" not in bogus.stdout
        role = _admin(server, *command.split(), "--tenant", "cli", "--user", "dora", "--role", "owner")
        assert role.returncode == 1 and "unknown role 'owner'" in role.stderr
    past = _admin(server, "keys", "create", "--tenant", "cli", "--user", "dora", "--expires", "2020-01-01")
    assert past.returncode == 1 and "in the past" in past.stderr
    assert _key_count(server) == before


def test_keys_create_list_and_revoke(server: LecternServer) -> None:
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    made = _admin(server, "keys", "create", "--tenant", tenant, "--user", "erin", "--role", "viewer", "--name",
                  "dash", "--expires", "2099-12-31T23:59:59Z")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    key_id = re.search(r"API key ([0-9a-f-]{36})", made.stdout).group(1)  # type: ignore[union-attr]
    assert _mint(server, key).status_code == 403  # a viewer opens no streams
    assert httpx.get(f"{server.base_url}/api/v1/speech-services/streams", headers={"X-API-Key": key}).status_code == 200

    listed = json.loads(_admin(server, "keys", "list", "--tenant", tenant, "--json").stdout)
    assert [(k["id"], k["user"], k["name"], k["prefix"], k["status"], k["expires"]) for k in listed] == [
        (key_id, "erin", "dash", key[:10], "ACTIVE", "2099-12-31T23:59:59.000000Z")]
    assert listed[0]["scopes"] == sorted(ROLES["viewer"])
    table = _admin(server, "keys", "list", "--tenant", tenant).stdout
    assert key_id in table and key[:10] in table and key not in table  # never the secret

    revoked = _admin(server, "keys", "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert _mint(server, key).status_code == 401
    again = _admin(server, "keys", "revoke", key_id)
    assert again.returncode == 0 and again.stdout == revoked.stdout  # the first revocation's time
    assert json.loads(_admin(server, "keys", "list", "--tenant", tenant, "--json").stdout)[0]["status"] == "REVOKED"
    missing = _admin(server, "keys", "revoke", str(uuid.uuid4()))
    assert missing.returncode == 1 and "no API key" in missing.stderr
    assert _admin(server, "keys", "list", "--tenant", "no-such-tenant").returncode == 1


def test_tenants_create_update_and_list(server: LecternServer) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = _admin(server, "tenants", "create", name, "--recording-allowed", "false", "--max-concurrent-streams",
                     "4", "--quota-transcription-minutes", "6000", "--transcript-retention-days", "90")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout) == {
        "name": name, "recording_allowed": False, "zero_retention_allowed": True, "max_concurrent_streams": 4,
        "max_running_jobs": None, "quota_transcription_minutes": 6000, "quota_summaries": None,
        "quota_summary_tokens": None, "quota_storage_bytes": None, "recording_retention_days": None,
        "transcript_retention_days": 90, "summary_retention_days": None}
    assert "already exists" in _admin(server, "tenants", "create", name).stderr

    updated = _admin(server, "tenants", "update", name, "--zero-retention-allowed", "no", "--max-concurrent-streams",
                     "none", "--max-running-jobs", "2", "--quota-storage-bytes", str(5 * 2**40),
                     "--quota-summaries", "100", "--quota-summary-tokens", "2000000", "--recording-retention-days", "7",
                     "--summary-retention-days", "30")
    assert updated.returncode == 0, updated.stderr
    listed = {t["name"]: t for t in json.loads(_admin(server, "tenants", "list", "--json").stdout)}
    assert listed[name] == {
        "name": name, "recording_allowed": False, "zero_retention_allowed": False, "max_concurrent_streams": None,
        "max_running_jobs": 2, "quota_transcription_minutes": 6000, "quota_summaries": 100,
        "quota_summary_tokens": 2000000, "quota_storage_bytes": 5 * 2**40, "recording_retention_days": 7,
        "transcript_retention_days": 90, "summary_retention_days": 30}
    assert name in _admin(server, "tenants", "list").stdout

    assert "nothing to change" in _admin(server, "tenants", "update", name).stderr
    assert "no tenant" in _admin(server, "tenants", "update", "no-such-tenant", "--max-running-jobs", "1").stderr
    negative = _admin(server, "tenants", "update", name, "--max-running-jobs", "-1")
    assert negative.returncode == 2 and "negative" in negative.stderr
    assert _admin(server, "tenants", "update", name, "--recording-allowed", "maybe").returncode == 2

    # a key made for an existing tenant leaves its settings as they are
    key = server.create_key(name, "fay")
    assert _mint(server, key).status_code == 200
    with server.db() as db:
        assert db.scalar(select(Tenant.recording_allowed).where(Tenant.name == name)) is False


def test_users_update_sets_a_users_own_stream_cap(server: LecternServer) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    server.create_key(name, "gus")
    done = _admin(server, "users", "update", "--tenant", name, "--user", "gus", "--max-concurrent-streams", "2")
    assert done.returncode == 0, done.stderr

    def cap() -> int | None:
        with server.db() as db:
            return db.scalar(select(User.max_concurrent_streams).join(Tenant, Tenant.id == User.tenant_id)
                             .where(Tenant.name == name, User.external_id == "gus"))

    assert cap() == 2
    assert _admin(server, "users", "update", "--tenant", name, "--user", "gus", "--max-concurrent-streams",
                  "none").returncode == 0
    assert cap() is None
    unknown = _admin(server, "users", "update", "--tenant", name, "--user", "nobody", "--max-concurrent-streams", "1")
    assert unknown.returncode == 1 and "no user 'nobody'" in unknown.stderr
