"""Stream session rows as the streaming core writes them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lectern.store.models import StreamSegmentRow, StreamSessionRow, utcnow

CREATED, ACTIVE, FINISHED, CANCELLED, FAILED = "CREATED", "ACTIVE", "FINISHED", "CANCELLED", "FAILED"
LIVE_STATES = (CREATED, ACTIVE)
LEASE_LAPSED_REASON = "the server handling this stream stopped (lease expired)"

Sessions = async_sessionmaker[AsyncSession]


async def create(db: Sessions, values: dict[str, Any], lease_seconds: float) -> None:
    now = utcnow()
    async with db() as s, s.begin():
        await s.execute(
            insert(StreamSessionRow).values(
                state=CREATED, start_time=now, lease_expires_at=now + timedelta(seconds=lease_seconds), **values
            )
        )


async def update_session(db: Sessions, session_id: uuid.UUID, **values: Any) -> None:
    async with db() as s, s.begin():
        await s.execute(update(StreamSessionRow).where(StreamSessionRow.id == session_id).values(**values))


async def commit_segment(
    db: Sessions,
    session_id: uuid.UUID,
    segment: dict[str, Any] | None,
    *,
    segment_count: int,
    words_count: int,
    duration_ms: int,
) -> None:
    """Store one segment and the session's running totals in a single transaction."""
    async with db() as s, s.begin():
        if segment is not None:
            await s.execute(insert(StreamSegmentRow).values(session_id=session_id, **segment))
        await s.execute(
            update(StreamSessionRow)
            .where(StreamSessionRow.id == session_id)
            .values(segment_count=segment_count, words_count=words_count, duration_ms=duration_ms)
        )


async def renew_lease(db: Sessions, session_id: uuid.UUID, lease_seconds: float, duration_ms: int) -> None:
    await update_session(
        db, session_id, lease_expires_at=utcnow() + timedelta(seconds=lease_seconds), duration_ms=duration_ms
    )


async def fail_lapsed(db: Sessions, now: datetime | None = None) -> int:
    """End as FAILED every live session whose node stopped renewing its lease (a crash).

    The duration stays what the last renewal recorded, so quota accounting survives the crash.
    """
    now = now or utcnow()
    async with db() as s, s.begin():
        result = await s.execute(
            update(StreamSessionRow)
            .where(StreamSessionRow.state.in_(LIVE_STATES), StreamSessionRow.lease_expires_at < now)
            .values(state=FAILED, end_time=now, failure_reason=LEASE_LAPSED_REASON, lease_expires_at=None)
        )
        return result.rowcount or 0
