"""Reading and managing finished (and live) stream sessions: the sessions API's queries."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lectern.store.models import StreamSegmentRow, StreamSessionRow, utcnow

SORT_COLUMNS = {
    "startTime": StreamSessionRow.start_time,
    "endTime": StreamSessionRow.end_time,
    "durationMilliseconds": StreamSessionRow.duration_ms,
    "wordsCount": StreamSessionRow.words_count,
    "segmentCount": StreamSessionRow.segment_count,
}
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


def _visible(query: Select, f: SessionFilter) -> Select:
    query = query.where(StreamSessionRow.tenant_id == f.tenant_id, StreamSessionRow.deleted_at.is_(None))
    if f.user_id is not None:
        query = query.where(StreamSessionRow.user_id == f.user_id)
    if f.state is not None:
        query = query.where(StreamSessionRow.state == f.state)
    if f.model_alias:
        pattern = "%" + f.model_alias.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(func.lower(StreamSessionRow.requested_model_alias).like(pattern, escape="\\"))
    if f.started_after is not None:
        query = query.where(StreamSessionRow.start_time >= f.started_after)
    if f.started_before is not None:
        query = query.where(StreamSessionRow.start_time <= f.started_before)
    if f.recording_requested is not None:
        query = query.where(StreamSessionRow.recording_requested == f.recording_requested)
    return query


async def list_sessions(
    db: async_sessionmaker[AsyncSession], f: SessionFilter, sort: SortField, descending: bool, page: int, size: int
) -> tuple[list[StreamSessionRow], int]:
    """One page and the total, queried side by side on two connections (the count dominates)."""
    page_rows, total = await asyncio.gather(_page(db, f, sort, descending, page, size), _count(db, f))
    return page_rows, total


async def _count(db: async_sessionmaker[AsyncSession], f: SessionFilter) -> int:
    async with db() as s:
        return await s.scalar(_visible(select(func.count()).select_from(StreamSessionRow), f)) or 0


async def _page(
    db: async_sessionmaker[AsyncSession], f: SessionFilter, sort: SortField, descending: bool, page: int, size: int
) -> list[StreamSessionRow]:
    column = SORT_COLUMNS[sort]
    order = column.desc() if descending else column.asc()
    if column.nullable:  # a live session has not ended: it sorts as the latest end time
        order = order.nulls_first() if descending else order.nulls_last()
    tiebreak = StreamSessionRow.id.desc() if descending else StreamSessionRow.id.asc()
    async with db() as s:
        rows = await s.scalars(
            _visible(select(StreamSessionRow), f).order_by(order, tiebreak).offset(page * size).limit(size)
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
