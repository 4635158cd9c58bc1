"""A tenant not allowed zero retention (`lectern admin tenants update --zero-retention-allowed false`)
has streams that ask to keep no transcript refused, in each protocol's shape; other streams go on."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from tests.realtime import reverie_wire
from tests.realtime.scribe_wire import MODEL, expect_error, expect_started, open_ws, q


def _forbid_zero_retention(srv: Any, tenant: str) -> None:
    subprocess.run([sys.executable, "-m", "lectern", "admin", "tenants", "update", tenant,
                    "--zero-retention-allowed", "false"], env=srv.env, check=True, capture_output=True)


async def test_a_tenant_not_allowed_zero_retention_has_it_refused(make_server: Any) -> None:
    srv = make_server()
    key = srv.create_key("keepco", "alice")
    _forbid_zero_retention(srv, "keepco")

    async with open_ws(srv, q(enable_logging="false"), key=key) as ws:
        error, _ = await expect_error(ws, "invalid_request", results_first=False)
    assert "zero retention" in error.lower(), error
    async with open_ws(srv, MODEL, key=key) as ws:  # streams that keep their transcript still start
        await expect_started(ws)

    async with reverie_wire.open_stream(srv, key, appid="keepco", logging="no_transcript") as ws:
        [message] = await reverie_wire.read_all(ws)
    assert "not allowed" in reverie_wire.check_error(message, 400, "invalid `logging` value")
    async with reverie_wire.open_stream(srv, key, appid="keepco", logging="no_audio") as ws:  # keeps the transcript
        first = await reverie_wire.recv_message(ws)
    assert first.get("success") is not False, first
