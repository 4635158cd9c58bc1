"""Database engines for the server (async) and for migrations and admin commands (sync), and
whether the database can be reached now (``DatabaseStatus``)."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger(__name__)

_DRIVERS = {
    # backend -> (sync driver, async driver)
    "sqlite": ("pysqlite", "aiosqlite"),
    "postgresql": ("psycopg", "psycopg"),
}
# A server that does not answer (a dropped network, not a refused port) fails a connection
# attempt after this long instead of holding the request, the stream's write or /healthz.
CONNECT_TIMEOUT_SECONDS = 5
PROBE_TIMEOUT_SECONDS = 3.0


def driver_url(url: str, *, use_async: bool) -> str:
    """Pick Lectern's driver for a plain ``sqlite://`` or ``postgresql://`` URL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _DRIVERS:
        raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
    driver = _DRIVERS[backend][1 if use_async else 0]
    return parsed.set(drivername=f"{backend}+{driver}").render_as_string(hide_password=False)


def is_unavailable(exc: BaseException) -> bool:
    """The database could not be used at all (unreachable, dropped connection, read-only or full
    disk, locked too long), as opposed to a statement that is wrong: worth retrying later."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def describe(exc: BaseException) -> str:
    """One line on why the database failed (the driver's first line: no statement, no parameters)."""
    original = getattr(exc, "orig", None) or exc
    first_line = (str(original).strip().splitlines() or [""])[0][:200]
    return f"{type(original).__name__}: {first_line}" if first_line else type(original).__name__


class DatabaseStatus:
    """Whether the database answered the last time it was used. Every failure and recovery of
    any connection reports here, so an outage is logged once when it begins and once when it
    ends, not once per request, poll or stream."""

    def __init__(self) -> None:
        self.down_since: float | None = None  # time.monotonic() of the outage's first failure
        self.detail: str | None = None

    @property
    def up(self) -> bool:
        return self.down_since is None

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since, self.detail = time.monotonic(), describe(exc)
            log.warning("database unreachable (%s); retrying until it returns", self.detail)

    def succeeded(self) -> None:
        if self.down_since is not None:
            seconds = time.monotonic() - self.down_since
            self.down_since, self.detail = None, None
            log.warning("database reachable again after %.1f s", seconds)


_statuses: "weakref.WeakKeyDictionary[Engine, DatabaseStatus]" = weakref.WeakKeyDictionary()


def database_status(db: async_sessionmaker[AsyncSession] | AsyncEngine | Engine) -> DatabaseStatus:
    """The status of the engine behind ``db`` (a session factory or an engine)."""
    bind: Any = db.kw["bind"] if isinstance(db, async_sessionmaker) else db
    engine: Engine = bind.sync_engine if isinstance(bind, AsyncEngine) else bind
    return _statuses.setdefault(engine, DatabaseStatus())


def _track_status(engine: Engine) -> None:
    status = database_status(engine)

    @event.listens_for(engine, "handle_error")
    def _on_error(context: Any) -> None:
        # A failed pre-ping is a stale pooled connection, replaced at once; only if the
        # replacement fails too is the database away (that failure comes here as well).
        if not context.is_pre_ping and is_unavailable(context.sqlalchemy_exception or context.original_exception):
            status.failed(context.sqlalchemy_exception or context.original_exception)

    @event.listens_for(engine, "connect")
    def _on_connect(_dbapi_connection: Any, _record: Any) -> None:
        status.succeeded()

    @event.listens_for(engine, "after_cursor_execute")
    def _on_write(_conn: Any, _cursor: Any, _statement: Any, _params: Any, context: Any, _many: Any) -> None:
        # A write that went through: the database (an SQLite file made read-only, say) is usable
        # again even though no connection had to be made anew. Reads prove less on SQLite.
        if status.down_since is not None and (context.isinsert or context.isupdate or context.isdelete):
            status.succeeded()


async def probe(db: async_sessionmaker[AsyncSession]) -> str | None:
    """None when the database answers a query now (and no write has failed since the last one
    that succeeded), else why not."""
    status = database_status(db)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS), db() as s:
            await s.execute(text("SELECT 1"))
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT_SECONDS:g} s"
    except Exception as exc:  # noqa: BLE001 - any failure to answer is the report
        if is_unavailable(exc):
            status.failed(exc)
        return describe(exc)
    return status.detail  # a write failing (a read-only SQLite file) while reads still work


def _tune_sqlite(engine: Any) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers (the REST API) proceed while a stream commits a segment.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Never read the database file through a memory map: a mapped page that cannot be read
        # (the file truncated, its disk gone) is a SIGBUS that kills the server without a word,
        # where read() gives SQLite an I/O error it reports.
        cursor.execute("PRAGMA mmap_size=0")
        cursor.close()


def _ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _connect_args(url: str) -> dict[str, Any]:
    return {"connect_timeout": CONNECT_TIMEOUT_SECONDS} if make_url(url).get_backend_name() == "postgresql" else {}


def create_sync_engine(url: str) -> Engine:
    _ensure_sqlite_dir(url)
    engine = create_engine(driver_url(url, use_async=False), connect_args=_connect_args(url))
    if engine.dialect.name == "sqlite":
        _tune_sqlite(engine)
    return engine


def create_db_engine(url: str) -> AsyncEngine:
    _ensure_sqlite_dir(url)
    # pre-ping: after an outage, pooled connections are dead; each is found so at checkout and
    # replaced, instead of failing the request that drew it.
    engine = create_async_engine(driver_url(url, use_async=True), pool_pre_ping=True,
                                 connect_args=_connect_args(url))
    if engine.dialect.name == "sqlite":
        _tune_sqlite(engine.sync_engine)
    _track_status(engine.sync_engine)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def log_failure(db: async_sessionmaker[AsyncSession], exc: BaseException, logger: logging.Logger, what: str) -> None:
    """For background loops: an outage is reported once (DatabaseStatus), anything else with its
    traceback; the loop carries on either way and retries at its next turn."""
    if is_unavailable(exc):
        database_status(db).failed(exc)
    else:
        logger.exception("%s failed", what)
