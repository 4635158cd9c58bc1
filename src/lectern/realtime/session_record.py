"""SessionRecord: a live stream's row and segments in the database, carried through an outage.

While the database answers, a committed segment is stored before the client is sent it. When it
does not, the stream carries on: segments wait in memory, in order, each lease renewal tries
again to write them (with the running totals) and, once it can, renews the lease; the row's
final state is retried in the background after the stream ends. More than ``max_unsaved``
waiting segments end the stream (UNAVAILABLE): the waiting ones are still written when the
database returns, but the service does not keep promising a transcript it cannot store.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from lectern.realtime.errors import DATABASE_UNAVAILABLE, ErrorKind, StreamError
from lectern.store import sessions as rows
from lectern.store.db import database_status, is_unavailable

log = logging.getLogger(__name__)

# Final writes still waiting for the database after their stream ended: held here so that
# they are not garbage-collected mid-retry.
_final_writes: set[asyncio.Task[None]] = set()


class SessionRecord:
    def __init__(self, db: rows.Sessions, session_id: uuid.UUID, *, lease_seconds: float,
                 retry_seconds: float, max_unsaved: int, api_key_id: uuid.UUID | None) -> None:
        self._db = db
        self._id = session_id
        self._lease_seconds = lease_seconds
        self._retry_seconds = retry_seconds
        self._max_unsaved = max_unsaved
        self._api_key_id = api_key_id
        self._status = database_status(db)
        self._unsaved: list[dict[str, Any]] = []  # segment rows, in order
        self._totals: dict[str, int] = {}  # the newest running totals
        self._commits = 0  # commits so far, and how many of them are stored
        self._stored_commits = 0
        self._behind = False  # a write failed and none has succeeded since
        self._lock = asyncio.Lock()  # one write at a time, so segments land in order, once

    @property
    def unsaved_segments(self) -> int:
        return len(self._unsaved)

    async def commit(self, segment: dict[str, Any] | None, totals: dict[str, int]) -> None:
        """Store a committed segment (None: a commit without words) and the running totals now,
        or keep them for later when the database is away; StreamError past the bound."""
        if segment is not None:
            self._unsaved.append(segment)
        self._totals = totals
        self._commits += 1
        if not self._behind:
            await self._flush()  # not while behind: the renewals retry, the stream does not wait
        if len(self._unsaved) > self._max_unsaved:
            raise StreamError(
                ErrorKind.UNAVAILABLE,
                f"{DATABASE_UNAVAILABLE} {len(self._unsaved)} committed segments are waiting to be stored.",
            )

    async def renew(self, duration_ms: int) -> bool | None:
        """Write what waits, then extend the lease. None while the database is unreachable (the
        next renewal tries again); else whether the stream's API key is still usable."""
        if not await self._flush():
            return None
        try:
            return await rows.renew_lease(self._db, self._id, self._lease_seconds, duration_ms, self._api_key_id)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self._status.failed(exc)
            return None

    async def end(self, **values: Any) -> None:
        """Write what waits and the row's final ``values``; while the database is unreachable,
        keep trying in the background (the stream itself is over)."""
        if await self._try_end(values):
            return
        log.warning("stream %s ended while the database is unreachable: %d segment(s) and its final state "
                    "will be stored when it returns", self._id, len(self._unsaved))
        task = asyncio.create_task(self._end_later(values), name=f"final-write-{self._id}")
        _final_writes.add(task)
        task.add_done_callback(_final_writes.discard)

    async def _end_later(self, values: dict[str, Any]) -> None:
        while not await self._try_end(values):
            await asyncio.sleep(self._retry_seconds)

    async def _try_end(self, values: dict[str, Any]) -> bool:
        if not await self._flush():
            return False
        try:
            await rows.update_session(self._db, self._id, **values)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self._status.failed(exc)
            return False
        return True

    async def _flush(self) -> bool:
        """Store the waiting segments and totals in one transaction; False if the database is away."""
        async with self._lock:
            if self._stored_commits == self._commits:
                return True
            segments, totals, commits = list(self._unsaved), self._totals, self._commits
            try:
                await rows.commit_segments(self._db, self._id, segments, **totals)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                self._status.failed(exc)
                self._behind = True
                return False
            del self._unsaved[: len(segments)]
            self._stored_commits = commits
            self._behind = False
            return True
