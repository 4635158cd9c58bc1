"""``lectern serve``, ``lectern worker``, ``lectern transcribe`` and ``lectern admin ...``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from lectern import admin_cli
from lectern.auth import keys
from lectern.auth.scopes import NORMAL_USER_SCOPES
from lectern.settings import Settings
from lectern.store import migrate
from lectern.store.db import create_sync_engine
from sqlalchemy.orm import Session


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        name: getattr(args, name) for name in ("host", "port", "data_dir") if getattr(args, name, None) is not None
    }
    return Settings(**overrides)


def _prepare_database(settings: Settings) -> None:
    migrate.upgrade(settings.resolved_database_url)


def _ensure_dev_key(settings: Settings) -> None:
    engine = create_sync_engine(settings.resolved_database_url)
    try:
        with Session(engine) as db, db.begin():
            if keys.count_api_keys(db):
                return
            key = keys.create_api_key(db, "dev", "dev", list(NORMAL_USER_SCOPES), name="development key")
    finally:
        engine.dispose()
    print(
        "No API key existed, so a development key was created for tenant 'dev', user 'dev'.\n"
        f"It is shown only this once:\n\n    {key.plaintext}\n",
        flush=True,
    )


def serve(args: argparse.Namespace) -> None:
    # The websockets library reads this when imported. Its 8 KiB default would make a handshake
    # whose URL carries a full-size `metadata` parameter (4 KiB, percent-encoded) hang unanswered.
    os.environ.setdefault("WEBSOCKETS_MAX_LINE_LENGTH", "32768")
    import uvicorn

    from lectern import log_redaction
    from lectern.app import create_app

    log_redaction.install()  # before uvicorn logs its first request line, with its query string
    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _prepare_database(settings)
    if settings.create_dev_key:
        _ensure_dev_key(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Leave room above the chunk limit so an oversize chunk gets chunk_size_exceeded, not a 1009 close.
        ws_max_size=2 * settings.max_chunk_bytes + (1 << 16),
        # h11, not httptools: httptools buffers a request's headers without any bound (a client
        # sending one endless header grows the server by its size), h11 refuses past this.
        http="h11",
        h11_max_incomplete_event_size=settings.max_request_head_bytes,
        # Each open connection counts, WebSockets included; past the cap a request gets 503. With the
        # body read timeout (api/body_limits.py) this bounds what trickling clients can hold.
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
    )


def worker(args: argparse.Namespace) -> None:
    """Background work only (transcription jobs, webhooks, sweeps): no HTTP. Any number of these,
    on any number of machines, share one PostgreSQL database and blob store."""
    import asyncio

    from lectern import log_redaction
    from lectern.jobs.runner import run_worker

    settings = _settings(args)
    if settings.resolved_job_workers == 0 and settings.summary_workers == 0:
        sys.exit("lectern worker: LECTERN_JOB_WORKERS and LECTERN_SUMMARY_WORKERS are 0: this worker would run no job")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_redaction.install()
    asyncio.run(run_worker(settings))


def transcribe(args: argparse.Namespace) -> None:
    import asyncio
    from pathlib import Path

    from lectern.transcribe_cli import run

    settings = Settings()
    workers = args.workers or settings.engine_workers
    output_dir = Path(args.output_dir) if args.output_dir else None
    show_progress = not args.quiet and sys.stderr.isatty()
    status = asyncio.run(run([Path(p) for p in args.files], args.format, output_dir, args.server,
                             args.api_key or os.environ.get("LECTERN_API_KEY"), workers, show_progress))
    sys.exit(status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lectern", description="Self-hosted speech services.")
    commands = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", dest="data_dir", help="data directory (LECTERN_DATA_DIR)")

    serve_parser = commands.add_parser("serve", help="run the server")
    serve_parser.add_argument("--host", help="bind address (LECTERN_HOST, default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port (LECTERN_PORT, default 8000)")
    common(serve_parser)
    serve_parser.set_defaults(handler=serve)

    worker_parser = commands.add_parser("worker", help="run transcription jobs and webhook deliveries, no HTTP")
    common(worker_parser)
    worker_parser.set_defaults(handler=worker)

    t = commands.add_parser("transcribe", help="transcribe audio files, locally or through a server")
    t.add_argument("files", nargs="+", metavar="FILE", help="audio files (WAV, FLAC, MP3, Ogg, M4A, WebM...)")
    t.add_argument("-f", "--format", choices=("text", "srt", "vtt", "json"), default="text",
                   help="text (default: printed), or srt / vtt / json files")
    t.add_argument("-o", "--output-dir", help="write FILE's transcript here as <name>.<format> "
                   "(default: beside FILE for srt/vtt/json; stdout for text)")
    t.add_argument("--server", help="a Lectern server's base URL: transcribe there as jobs (default: locally)")
    t.add_argument("--api-key", help="the server's API key (or LECTERN_API_KEY)")
    t.add_argument("-j", "--workers", type=int, help="files at a time (default: one per core)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(handler=transcribe)

    admin_cli.register(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main(sys.argv[1:])
