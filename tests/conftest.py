"""Shared fixtures: real `lectern serve` processes on SQLite (and PostgreSQL when configured)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from lectern.store.db import create_sync_engine, driver_url

SPEECH = Path(__file__).parent / "fixtures" / "speech"
PG_URL = os.environ.get("LECTERN_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


@dataclass(frozen=True)
class Speech:
    name: str
    pcm: bytes  # 16 kHz mono s16le
    text: str

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 32000


def load_speech(name: str) -> Speech:
    with wave.open(str(SPEECH / f"{name}.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        pcm = w.readframes(w.getnframes())
    return Speech(name, pcm, (SPEECH / f"{name}.txt").read_text().strip())


def load_wav(name: str) -> tuple[bytes, int]:
    with wave.open(str(SPEECH / f"{name}.wav")) as w:
        return w.readframes(w.getnframes()), w.getframerate()


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = reference.split(), hypothesis.split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(len(ref), 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_database(backend: str) -> tuple[str, Any]:
    """A database URL for one server, and a function that drops it afterwards."""
    if backend == "sqlite":
        return "", lambda: None
    assert PG_URL
    name = f"lectern_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(driver_url(PG_URL, use_async=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


# No secret in any log (issue G): every key the fixtures create is recorded, and at the end of the
# run every server's log is searched for them and for anything shaped like a secret (log_secrets.py).
SECRETS: set[str] = set()
SERVER_LOGS: set[Path] = set()


def record_secret(secret: str) -> str:
    """Have the end-of-run check look for ``secret`` in every server log; returns it."""
    SECRETS.add(secret)
    return secret


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.log_secrets import report_leaks

    if report_leaks(session.config, SERVER_LOGS, SECRETS):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


class LecternServer:
    """One `lectern serve` process with its own data dir and database."""

    def __init__(
        self, tmp: Path, backend: str, settings: dict[str, Any], database_url: str | None = None
    ) -> None:
        """``database_url`` reuses another server's database (that server drops it); None makes a fresh one."""
        self.backend = backend
        self.data_dir = tmp
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        if database_url is None:
            database_url, self._drop_database = _fresh_database(backend)
        else:
            self._drop_database = lambda: None
        self.env = {**self.base_env(tmp), **{f"LECTERN_{k.upper()}": str(v) for k, v in settings.items()}}
        if database_url:
            self.env["LECTERN_DATABASE_URL"] = database_url
        self.database_url = database_url or f"sqlite:///{(tmp / 'lectern.db').resolve()}"
        self.log = open(tmp / "server.log", "ab")  # a restarted server appends to the log
        SERVER_LOGS.add(tmp / "server.log")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lectern", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()
        self._db = create_sync_engine(self.database_url)

    @staticmethod
    def base_env(data_dir: Path) -> dict[str, str]:
        return {
            **os.environ,
            "LECTERN_DATA_DIR": str(data_dir),
            "LECTERN_ENGINE_WORKERS": "2",
            "LECTERN_CREATE_DEV_KEY": "false",
            "LECTERN_LOG_LEVEL": "warning",
            # Tests whose point is not the engine run on the light one; Whisper's have their own.
            "LECTERN_DEFAULT_MODEL": "pocketsphinx-en-us",
            # Rate budgets no test reaches unless it sets its own: a test file makes hundreds of
            # requests a minute through one key (the limits' own tests set theirs explicitly).
            **{f"LECTERN_RATE_LIMIT_{name}": "100000/minute" for name in (
                "REQUESTS", "TENANT_REQUESTS", "STREAM_STARTS", "TENANT_STREAM_STARTS", "UPLOADS", "TOKEN_MINTS",
                "PURGES", "AUTH_FAILURES")},
        }

    def _wait_ready(self, timeout: float = 300.0) -> None:
        # Generous: a loaded 2-core machine has taken over 90 s to load every model in every worker.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {(self.data_dir / 'server.log').read_text()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.process.kill()  # not left running, parentless, once the test has failed
        self.process.wait()
        self.log.close()
        self._drop_database()
        raise RuntimeError(f"server did not become ready in {timeout:.0f} s")

    def create_key(self, tenant: str = "acme", user: str = "alice", scopes: list[str] | None = None) -> str:
        args = [sys.executable, "-m", "lectern", "admin", "create-key", "--tenant", tenant, "--user", user]
        if scopes is not None:
            args += ["--scopes", ",".join(scopes)]
        out = subprocess.run(args, env=self.env, check=True, capture_output=True, text=True).stdout
        return record_secret(out.strip().splitlines()[-1])

    def db(self) -> Session:
        return Session(self._db)

    def session_row(self, session_id: str) -> dict[str, Any]:
        with self.db() as s:
            row = s.execute(
                text("SELECT * FROM stream_sessions WHERE id = :id"), {"id": _db_uuid(self, session_id)}
            ).mappings().one()
            return dict(row)

    def segment_rows(self, session_id: str) -> list[dict[str, Any]]:
        with self.db() as s:
            rows = s.execute(
                text("SELECT * FROM stream_segments WHERE session_id = :id ORDER BY segment_index"),
                {"id": _db_uuid(self, session_id)},
            ).mappings().all()
        result = []
        for row in rows:
            row = dict(row)
            if isinstance(row["words"], str):
                row["words"] = json.loads(row["words"])
            result.append(row)
        return result

    def wait_session_state(self, session_id: str, states: tuple[str, ...], timeout: float = 10.0) -> dict[str, Any]:
        """The stream's row once it reaches one of ``states`` (the server ends it after the socket closes)."""
        deadline = time.monotonic() + timeout
        while True:
            row = self.session_row(session_id)
            if row["state"] in states or time.monotonic() > deadline:
                return row
            time.sleep(0.05)

    def worker_pids(self) -> list[int]:
        """The live engine worker processes (not multiprocessing's resource tracker, not zombies)."""
        import psutil

        pids = []
        for child in psutil.Process(self.process.pid).children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                    pids.append(child.pid)
            except psutil.NoSuchProcess:  # includes ZombieProcess
                pass
        return pids

    def stop(self) -> None:
        self._db.dispose()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        self._drop_database()


def _db_uuid(server: LecternServer, session_id: str) -> str:
    # SQLAlchemy's Uuid type stores 32 hex digits on SQLite and a native uuid on PostgreSQL.
    value = uuid.UUID(session_id)
    return value.hex if server.backend == "sqlite" else str(value)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    """The default server, shared by every test that needs no special settings."""
    # Every test file uploads through the one session key (api_key), ElevenLabs batch requests
    # included (they spend the uploads budget too): a whole run must not reach the per-key default
    # of 60 a minute. Rate limits are tested on servers of their own (test_*rate_limit*.py).
    srv = LecternServer(tmp_path_factory.mktemp(f"server-{backend}"), backend, {})
    yield srv
    srv.stop()


@pytest.fixture
def make_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server with its own settings (e.g. ``idle_timeout_seconds=1``), stopped after the test."""
    started: list[LecternServer] = []

    def start(**settings: Any) -> LecternServer:
        srv = LecternServer(tmp_path_factory.mktemp(f"server-{backend}"), backend, settings)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def api_key(server: LecternServer) -> str:
    return server.create_key("acme", "alice")
