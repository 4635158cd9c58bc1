"""Sessions REST API benchmark: list/get/segments latency of a real server over a large history.

* For each backend (SQLite; PostgreSQL when reachable at ``--pg-url``, in a throwaway database
  ``lectern_bench_<random>`` dropped afterwards) a real ``lectern serve`` runs as a subprocess
  (free port, temp data dir); its start runs the migrations, so only their schema is measured.
  Keys come from ``lectern admin create-key``: the main user ``u0`` (~80% of the tenant's rows),
  a small user ``u1``, and ``u9`` holding ``speech:sessions:admin`` (lists the whole tenant).
* ``--sessions`` rows are bulk inserted into ``stream_sessions`` with SQLAlchemy Core: 95% in
  tenant ``bench`` (80% u0, the rest over u1..u9), 5% in a second tenant; start times over a
  year; mostly FINISHED, some CANCELLED/FAILED/ACTIVE; a few model aliases; ~10% recording
  requested; ~2% soft deleted. 2,000 of u0's sessions get 5 segments each (words JSON as the
  streaming core writes it). Then ANALYZE (VACUUM ANALYZE on PostgreSQL) and a server restart,
  so every connection plans with the statistics.
* Each case: ``--requests`` sequential GETs (after 10 warm-ups) on one keep-alive httpx client,
  with rotating parameters (pages, windows, aliases, ids) so no two requests are alike. Times
  are client-side: HTTP, authentication, the page query and the count query.
* Target: list p50 <= 20 ms at 100k sessions. The query plans of the slowest list cases
  (EXPLAIN QUERY PLAN / EXPLAIN ANALYZE, page query and count query, as
  ``lectern.store.session_history`` issues them) are printed and saved.

Usage: .venv/bin/python bench/sessions_api.py [--sessions 100000] [--requests 200] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import event, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realtime import Server as _RealtimeServer  # (same directory)
from realtime import fmt, pct

from lectern.store import session_history as history
from lectern.store.db import create_db_engine, create_sync_engine, session_factory
from lectern.store.models import StreamSegmentRow, StreamSessionRow, Tenant, User

ROOT = Path(__file__).resolve().parent.parent
TARGET_LIST_P50_MS = 20.0
BASE = "/api/v1/speech-services/streams"
ALIASES = [("scribe_v2_realtime", 0.45), ("pocketsphinx-en-us", 0.25), ("whisper-large-v3", 0.15),
           ("nova-2-general", 0.10), ("default", 0.05)]
STATES = [("FINISHED", 0.88), ("CANCELLED", 0.06), ("FAILED", 0.04), ("ACTIVE", 0.02)]
SORTS = ["startTime", "endTime", "durationMilliseconds", "wordsCount", "segmentCount"]
VOCAB = ["the", "a", "meeting", "budget", "train", "coffee", "left", "right", "north", "seven", "report", "call"]
NOW = datetime.now(UTC).replace(microsecond=0)


class Server(_RealtimeServer):
    """``lectern serve`` on a temp data dir (and database URL); restartable on the same data."""

    def __init__(self, database_url: str | None) -> None:  # not super().__init__: that one starts at once
        self.dir = tempfile.TemporaryDirectory(prefix="lectern-bench-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.env = {**os.environ, "LECTERN_DATA_DIR": self.dir.name, "LECTERN_CREATE_DEV_KEY": "false",
                    "LECTERN_LOG_LEVEL": "warning", "LECTERN_ENGINE_WORKERS": "1"}
        if database_url:
            self.env["LECTERN_DATABASE_URL"] = database_url
        self.url = database_url or f"sqlite:///{Path(self.dir.name, 'lectern.db').resolve()}"
        self.log_path = Path(self.dir.name) / "server.log"
        self.start()

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "lectern", "serve", "--port", str(self.port)],
                                         env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not come up:\n" + self.log_path.read_text()[-3000:])
            time.sleep(0.2)

    def halt(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)

    def create_key(self, user: str, scopes: str | None = None) -> str:
        cmd = [sys.executable, "-m", "lectern", "admin", "create-key", "--tenant", "bench", "--user", user]
        done = subprocess.run(cmd + (["--scopes", scopes] if scopes else []), env=self.env, cwd=ROOT,
                              capture_output=True, text=True, check=True)
        return done.stdout.strip().splitlines()[-1]


def pick(rng: random.Random, weighted: list[tuple[str, float]]) -> str:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def seed(url: str, n: int, rng: random.Random) -> dict:
    """Bulk insert ``n`` sessions (and segments); returns the ids the cases need."""
    engine = create_sync_engine(url)
    with engine.begin() as db:
        tenant = db.scalar(select(Tenant.id).where(Tenant.name == "bench"))
        users = dict(db.execute(select(User.external_id, User.id).where(User.tenant_id == tenant)).all())
        new = [{"id": uuid.uuid4(), "tenant_id": tenant, "external_id": f"u{i}"}
               for i in range(10) if f"u{i}" not in users]
        other = uuid.uuid4()
        db.execute(insert(Tenant), [{"id": other, "name": "bench-other"}])
        new += [{"id": uuid.uuid4(), "tenant_id": other, "external_id": f"o{i}"} for i in range(3)]
        db.execute(insert(User), new)
        users |= {u["external_id"]: u["id"] for u in new}
    minor = [users[f"u{i}"] for i in range(1, 10)]
    main, owned, with_segments, batch = users["u0"], [], [], []
    for i in range(n):
        r = rng.random()
        tenant_id, user_id = ((other, users[f"o{i % 3}"]) if r < 0.05 else (tenant, main) if r < 0.81
                              else (tenant, rng.choice(minor)))
        state, alias = pick(rng, STATES), pick(rng, ALIASES)
        start = NOW - timedelta(seconds=rng.uniform(60, 365 * 86400))
        duration = int(rng.lognormvariate(11.5, 1.0))  # ms; median ~100 s
        deleted = rng.random() < 0.02
        recording = rng.random() < 0.10
        row = {"id": uuid.uuid4(), "tenant_id": tenant_id, "user_id": user_id, "protocol": "elevenlabs",
               "state": state, "requested_model_alias": alias, "resolved_model_name": "pocketsphinx-en-us",
               "used_fallback": alias not in ("pocketsphinx-en-us", "default"), "language_code": "en",
               "start_time": start, "end_time": None if state == "ACTIVE" else start + timedelta(milliseconds=duration),
               "duration_ms": duration, "words_count": duration * rng.randint(100, 180) // 60000,
               "segment_count": max(1, duration // rng.randint(4000, 12000)), "recording_requested": recording,
               "recording_path": f"/recordings/{i}.pcm" if recording else None, "recording_purged": False,
               "keep_transcript": True, "client_address": f"10.0.{i % 256}.{rng.randint(1, 254)}",
               "user_agent": "bench/1.0", "failure_reason": "engine error" if state == "FAILED" else None,
               "metadata_": {"call": i} if rng.random() < 0.3 else None, "config": {"commit_strategy": "vad"},
               "lease_expires_at": NOW + timedelta(days=30) if state == "ACTIVE" else None,
               "deleted_at": NOW if deleted else None}
        if user_id == main and not deleted:
            owned.append(row["id"])
            if len(with_segments) < 2000 and state == "FINISHED":
                with_segments.append(row["id"])
                row["segment_count"] = 5
        batch.append(row)
        if len(batch) == 5000 or i == n - 1:
            with engine.begin() as db:
                db.execute(insert(StreamSessionRow), batch)
            batch = []
    segments = []
    for sid in with_segments:
        for k in range(5):
            words, t = [], 3.0 * k
            for _ in range(rng.randint(6, 18)):
                words.append({"word": rng.choice(VOCAB), "startSeconds": round(t, 2),
                              "endSeconds": round(t + 0.2, 2), "confidence": round(rng.uniform(0.6, 1), 4),
                              "speakerTag": None})
                t += 0.25
            segments.append({"id": uuid.uuid4(), "session_id": sid, "segment_index": k, "words": words,
                             "transcript": " ".join(w["word"] for w in words), "confidence": 0.9,
                             "start_seconds": 3.0 * k, "end_seconds": t, "created_at": NOW})
    with engine.begin() as db:
        for first in range(0, len(segments), 5000):
            db.execute(insert(StreamSegmentRow), segments[first : first + 5000])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as db:
        db.exec_driver_sql("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE")
    engine.dispose()
    return {"tenant": tenant, "main": main, "admin": users["u9"], "owned": owned, "with_segments": with_segments}


def window(rng: random.Random) -> dict:
    start = NOW - timedelta(days=rng.uniform(30, 365))
    return {"startedAfter": start.isoformat(), "startedBefore": (start + timedelta(days=30)).isoformat()}


def cases(ids: dict) -> list[tuple[str, str, object]]:
    """(name, key, request(rng) -> (path, params)). Keys: main user, small user, tenant admin."""
    lst = lambda f: lambda rng: (BASE, f(rng))
    deep = min(400, len(ids["owned"]) // 25)  # ~400 at 100k sessions, still inside the history when smaller
    out = [
        ("list default (page 0)", "main", lst(lambda rng: {})),
        ("list small user (page 0)", "small", lst(lambda rng: {})),
        ("list deep page (~400)", "main", lst(lambda rng: {"page": rng.randint(deep - deep // 20, deep)})),
        ("list size=100", "main", lst(lambda rng: {"size": 100, "page": rng.randint(0, 5)})),
        ("list state=FINISHED", "main", lst(lambda rng: {"state": "FINISHED", "page": rng.randint(0, 5)})),
        ("list modelAlias partial", "main",
         lst(lambda rng: {"modelAlias": rng.choice(["whisper", "SCRIBE", "nova", "sphinx", "v2_"])})),
        ("list 30-day window", "main", lst(window)),
        ("list recordingRequested=true", "main", lst(lambda rng: {"recordingRequested": "true"})),
    ]
    for field in SORTS:
        for direction in ("asc", "desc"):
            out.append((f"list sort {field},{direction}", "main",
                        lst(lambda rng, s=f"{field},{direction}": {"sort": s, "page": rng.randint(0, 5)})))
    out += [
        ("list admin (whole tenant)", "admin", lst(lambda rng: {"page": rng.randint(0, 5)})),
        ("list admin sort wordsCount,desc", "admin", lst(lambda rng: {"sort": "wordsCount,desc"})),
        ("list admin state=FINISHED", "admin", lst(lambda rng: {"state": "FINISHED", "page": rng.randint(0, 5)})),
        ("list admin modelAlias partial", "admin", lst(lambda rng: {"modelAlias": rng.choice(["whisper", "nova"])})),
        ("get session", "main", lambda rng: (f"{BASE}/{rng.choice(ids['owned'])}", {})),
        ("segments (5)", "main", lambda rng: (f"{BASE}/{rng.choice(ids['with_segments'])}/segments", {})),
    ]
    return out


def measure(port: int, key: str, request, n: int, rng: random.Random) -> dict:
    times, errors = [], []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=30) as client:
        for i in range(n + 10):
            path, params = request(rng)
            t0 = time.perf_counter()
            r = client.get(path, params=params)
            elapsed = 1000 * (time.perf_counter() - t0)
            if r.status_code != 200:
                errors.append(f"{r.status_code} {path}?{params}: {r.text[:200]}")
            elif i >= 10:
                times.append(elapsed)
    return {"p50_ms": pct(times, 50), "p95_ms": pct(times, 95), "n": len(times), "errors": len(errors),
            "error_samples": errors[:3]}


def to_filter(ids: dict, key: str, params: dict) -> tuple[history.SessionFilter, str, bool, int, int]:
    """The endpoint's mapping of query parameters to ``session_history.list_sessions`` arguments."""
    when = lambda k: datetime.fromisoformat(params[k]) if k in params else None
    rec = params.get("recordingRequested")
    f = history.SessionFilter(tenant_id=ids["tenant"], user_id=None if key == "admin" else ids["main"],
                              state=params.get("state"), model_alias=params.get("modelAlias"),
                              started_after=when("startedAfter"), started_before=when("startedBefore"),
                              recording_requested=None if rec is None else rec == "true")
    field, _, direction = params.get("sort", "startTime,desc").partition(",")
    return f, field, direction != "asc", int(params.get("page", 0)), int(params.get("size", 20))


def explain(url: str, ids: dict, key: str, params: dict) -> list[str]:
    """Plans of the statements ``list_sessions`` issues for these parameters (page, then count)."""
    if key == "small":
        return ["(small user: not explained)"]
    statements: list[tuple[str, object]] = []

    async def capture() -> None:
        engine = create_db_engine(url)
        event.listen(engine.sync_engine, "before_cursor_execute",
                     lambda conn, cur, stmt, p, ctx, many: statements.append((stmt, p)))
        factory, (f, field, desc, page, size) = session_factory(engine), to_filter(ids, key, params)
        try:  # list_sessions takes a session factory (page and count side by side) ...
            await history.list_sessions(factory, f, field, desc, page, size)  # type: ignore[arg-type]
        except (AttributeError, TypeError):  # ... or, in older versions, one session
            async with factory() as db:
                await history.list_sessions(db, f, field, desc, page, size)  # type: ignore[arg-type]
        await engine.dispose()

    asyncio.run(capture())
    engine, out = create_sync_engine(url), []
    pg = engine.dialect.name == "postgresql"
    with engine.connect() as db:
        for stmt, p in statements:
            if not stmt.lstrip().upper().startswith("SELECT"):
                continue
            rows = db.exec_driver_sql(("EXPLAIN (ANALYZE, BUFFERS) " if pg else "EXPLAIN QUERY PLAN ") + stmt, p)
            flat = " ".join(stmt.split())
            shown = re.sub(r"^SELECT stream_sessions\.id, .*? FROM", "SELECT stream_sessions.* FROM", flat)
            out += [shown] + ["  " + (r[0] if pg else r[-1]) for r in rows] + [""]
    engine.dispose()
    return out


def run_backend(name: str, url: str | None, args: argparse.Namespace) -> dict:
    print(f"[{name}] starting server (migrations) ...")
    server, rng = Server(url), random.Random(args.seed)
    try:
        keys = {"main": server.create_key("u0"), "small": server.create_key("u1"),
                "admin": server.create_key("u9", "speech:sessions:read,speech:sessions:admin")}
        t0 = time.monotonic()
        ids = seed(server.url, args.sessions, rng)
        print(f"[{name}] seeded {args.sessions} sessions in {time.monotonic() - t0:.1f} s; restarting server")
        server.halt()
        server.start()
        results, specs = {}, cases(ids)
        for case, key, request in specs:
            results[case] = r = measure(server.port, keys[key], request, args.requests, rng)
            print(f"[{name}] {case:<36} p50 {fmt(r['p50_ms'], '.1f'):>6}  p95 {fmt(r['p95_ms'], '.1f'):>6} ms"
                  + (f"  ERRORS {r['errors']}: {r['error_samples'][0]}" if r["errors"] else ""))
        listed = sorted((c for c in specs if c[0].startswith("list") and results[c[0]]["p50_ms"] is not None),
                        key=lambda c: -results[c[0]]["p50_ms"])
        plans = {}
        for case, key, request in listed[: args.explain]:
            plans[case] = explain(server.url, ids, key, request(random.Random(args.seed))[1])
            print(f"\n[{name}] plan of '{case}' (p50 {results[case]['p50_ms']:.1f} ms):\n  "
                  + "\n  ".join(plans[case]))
        return {"cases": results, "plans": plans}
    finally:
        server.stop()


def report(backends: dict[str, dict]) -> str:
    names = list(backends)
    head = ["case"] + [f"{b} {q}" for b in names for q in ("p50", "p95")] + ["target"]
    rows = [head]
    for case in backends[names[0]]["cases"]:
        cells = [backends[b]["cases"][case] for b in names]
        over = [b for b, c in zip(names, cells) if case.startswith("list") and (c["p50_ms"] or 0) > TARGET_LIST_P50_MS]
        bad = [b for b, c in zip(names, cells) if c["errors"]]
        rows.append([case] + [fmt(c[q], ".1f") for c in cells for q in ("p50_ms", "p95_ms")]
                    + [" ".join([f"OVER({','.join(over)})"] * bool(over) + [f"ERRORS({','.join(bad)})"] * bool(bad))
                       or ("ok" if case.startswith("list") else "")])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines[1:1] = ["-" * len(lines[0])]
    return "\n".join(lines + [f"(ms, client-side; target: list p50 <= {TARGET_LIST_P50_MS:g} ms)"])


def postgres_database(admin_url: str) -> tuple[str, object] | None:
    """A throwaway database on the server at ``admin_url`` and its dropper; None if unreachable."""
    try:
        engine = create_sync_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
        name = f"lectern_bench_{secrets.token_hex(4)}"
        with engine.connect() as db:
            db.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 -- any failure means: no PostgreSQL here
        print(f"PostgreSQL not reachable at {admin_url} ({type(exc).__name__}); SQLite only")
        return None

    def drop() -> None:
        with engine.connect() as db:
            db.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    return admin_url.rsplit("/", 1)[0] + "/" + name, drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions to seed")
    parser.add_argument("--requests", type=int, default=200, help="measured requests per case")
    parser.add_argument("--explain", type=int, default=3, help="query plans of the N slowest list cases")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sessions_api.json")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI: 2,000 sessions, 20 requests, SQLite")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    if args.smoke:
        args.sessions, args.requests, args.no_pg, args.explain = 2000, 20, True, 1
    backends = {"sqlite": run_backend("sqlite", None, args)}
    pg = None if args.no_pg else postgres_database(args.pg_url)
    if pg:
        try:
            backends["postgresql"] = run_backend("postgresql", pg[0], args)
        finally:
            pg[1]()
    print("\n" + report(backends))
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                                    "machine": machine, "settings": {**vars(args), "out": str(args.out)},
                                    "target_list_p50_ms": TARGET_LIST_P50_MS, "backends": backends}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    # Errors (non-200 answers) fail the run; latencies are judged by a reader (CI boxes vary).
    return 1 if any(c["errors"] for b in backends.values() for c in b["cases"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
