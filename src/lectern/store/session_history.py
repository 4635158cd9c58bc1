"""Reading and managing finished (and live) stream sessions: the sessions API's queries."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lectern.store.models import StreamSegmentRow, StreamSessionRow, StreamSessionTally, utcnow

SORT_COLUMNS = {
    "startTime": StreamSessionRow.start_time,
    "endTime": StreamSessionRow.end_time,
    "durationMilliseconds": StreamSessionRow.duration_ms,
    "wordsCount": StreamSessionRow.words_count,
    "segmentCount": StreamSessionRow.segment_count,
}
T = TypeVar("T")
SortField = Literal["startTime", "endTime", "durationMilliseconds", "wordsCount", "segmentCount"]


@dataclass(frozen=True, slots=True)
class SessionFilter:
    tenant_id: uuid.UUID
    user_id: uuid.UUID | None  # None: every user of the tenant (tenant admins)
    state: str | None = None
    model_alias: str | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None
    recording_requested: bool | None = None


def _owned_and_filtered(
    query: Select, table: type[StreamSessionRow] | type[StreamSessionTally], f: SessionFilter
) -> Select:
    """The owner, state and recordingRequested filters, on sessions or their tallies (same column names)."""
    query = query.where(table.tenant_id == f.tenant_id)
    if f.user_id is not None:
        query = query.where(table.user_id == f.user_id)
    if f.state is not None:
        query = query.where(table.state == f.state)
    if f.recording_requested is not None:
        query = query.where(table.recording_requested == f.recording_requested)
    return query


def _visible(query: Select, f: SessionFilter, aliases: list[str] | None) -> Select:
    """Visible sessions matching ``f``; a modelAlias filter arrives as the exact aliases it matches."""
    query = _owned_and_filtered(query, StreamSessionRow, f).where(StreamSessionRow.deleted_at.is_(None))
    if aliases is not None:
        query = query.where(StreamSessionRow.requested_model_alias.in_(aliases))
    if f.started_after is not None:
        query = query.where(StreamSessionRow.start_time >= f.started_after)
    if f.started_before is not None:
        query = query.where(StreamSessionRow.start_time <= f.started_before)
    return query


async def list_sessions(
    db: async_sessionmaker[AsyncSession], f: SessionFilter, sort: SortField, descending: bool, page: int, size: int
) -> tuple[list[StreamSessionRow], int]:
    """One page and the total.

    The tallies give the total (a sum over a few rows instead of a count over the sessions) and
    turn a modelAlias filter into the exact aliases it matches, which the listing indexes serve.
    Only a time window needs a count of the sessions: the tallies know no start times.
    """
    windowed = f.started_after is not None or f.started_before is not None
    tallied = bool(f.model_alias) or not windowed
    async with db() as s:  # one connection for the tally and the page: a checkout costs a round trip
        tally = await _tally(s, f) if tallied else {}
        if tallied and not tally:  # nothing matches: the sessions need not be read at all
            return [], 0
        aliases = list(tally) if f.model_alias else None
        if not windowed:
            return await _page(s, f, aliases, sort, descending, page, size), sum(tally.values())
    page_rows, total = await asyncio.gather(  # side by side, on two connections
        _on_own_session(db, _page, f, aliases, sort, descending, page, size),
        _on_own_session(db, _count, f, aliases),
    )
    return page_rows, total


async def _on_own_session(db: async_sessionmaker[AsyncSession], query: Callable[..., Awaitable[T]], *args: Any) -> T:
    async with db() as s:
        return await query(s, *args)


async def _tally(s: AsyncSession, f: SessionFilter) -> dict[str, int]:
    """Visible sessions per model alias matching every filter but the time window (none at 0)."""
    t = StreamSessionTally
    query = select(t.requested_model_alias, func.sum(t.visible)).group_by(t.requested_model_alias)
    query = _owned_and_filtered(query, t, f).having(func.sum(t.visible) > 0)
    if f.model_alias:  # partial and case-insensitive; % and _ in the filter are plain characters
        escaped = f.model_alias.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(func.lower(t.requested_model_alias).like(f"%{escaped}%", escape="\\"))
    return {alias: int(count) for alias, count in await s.execute(query)}


async def _count(s: AsyncSession, f: SessionFilter, aliases: list[str] | None) -> int:
    return await s.scalar(_visible(select(func.count()).select_from(StreamSessionRow), f, aliases)) or 0


async def _page(
    s: AsyncSession,
    f: SessionFilter,
    aliases: list[str] | None,
    sort: SortField,
    descending: bool,
    page: int,
    size: int,
) -> list[StreamSessionRow]:
    column = SORT_COLUMNS[sort]
    order = column.desc() if descending else column.asc()
    if column.nullable:  # a live session has not ended: it sorts as the latest end time
        order = order.nulls_first() if descending else order.nulls_last()
    tiebreak = StreamSessionRow.id.desc() if descending else StreamSessionRow.id.asc()
    # The page's ids first, from the listing index alone; then only those rows. Otherwise
    # PostgreSQL reads every row an OFFSET skips from the table (a deep page: thousands).
    ids = _visible(select(StreamSessionRow.id), f, aliases).order_by(order, tiebreak)
    ids = ids.offset(page * size).limit(size).subquery()
    rows = await s.scalars(
        select(StreamSessionRow).join(ids, StreamSessionRow.id == ids.c.id).order_by(order, tiebreak)
    )
    return list(rows)


async def get_session(db: AsyncSession, session_id: uuid.UUID, tenant_id: uuid.UUID) -> StreamSessionRow | None:
    """The tenant's session, unless deleted; other tenants' sessions do not exist here."""
    return await db.scalar(
        select(StreamSessionRow).where(
            StreamSessionRow.id == session_id,
            StreamSessionRow.tenant_id == tenant_id,
            StreamSessionRow.deleted_at.is_(None),
        )
    )


async def segments(db: AsyncSession, session_id: uuid.UUID) -> list[StreamSegmentRow]:
    result = await db.scalars(
        select(StreamSegmentRow).where(StreamSegmentRow.session_id == session_id).order_by(StreamSegmentRow.segment_index)
    )
    return list(result)


async def soft_delete(db: AsyncSession, session_id: uuid.UUID) -> None:
    await db.execute(update(StreamSessionRow).where(StreamSessionRow.id == session_id).values(deleted_at=utcnow()))
    await db.commit()


async def mark_recording_purged(db: AsyncSession, session_id: uuid.UUID) -> None:
    await db.execute(
        update(StreamSessionRow)
        .where(StreamSessionRow.id == session_id)
        .values(recording_purged=True, recording_purged_at=utcnow())
    )
    await db.commit()


async def purge_content(db: AsyncSession, session: StreamSessionRow) -> None:
    """Segments go for good; the row stays for audit and quota, its counters included."""
    now = utcnow()
    await db.execute(delete(StreamSegmentRow).where(StreamSegmentRow.session_id == session.id))
    values: dict[str, object] = {"purged_at": now}
    if session.recording_requested and not session.recording_purged:
        values.update(recording_purged=True, recording_purged_at=now)
    await db.execute(update(StreamSessionRow).where(StreamSessionRow.id == session.id).values(**values))
    await db.commit()
