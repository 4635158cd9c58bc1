"""The command-line contract: `lectern serve` and `lectern admin create-key`."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import httpx

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
