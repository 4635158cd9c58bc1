"""Stream session rows as the streaming core writes them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lectern.store.models import ApiKey, StreamSegmentRow, StreamSessionRow, utcnow

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


async def commit_segments(
    db: Sessions,
    session_id: uuid.UUID,
    segments: list[dict[str, Any]],
    *,
    segment_count: int,
    words_count: int,
    duration_ms: int,
) -> None:
    """Store segments (in order) and the session's running totals in a single transaction.

    Segments already stored are skipped: a retry after a connection dropped during COMMIT
    (did it land?) stores each segment once."""
    async with db() as s, s.begin():
        if segments:
            indexes = [segment["segment_index"] for segment in segments]
            stored = set(await s.scalars(select(StreamSegmentRow.segment_index).where(
                StreamSegmentRow.session_id == session_id, StreamSegmentRow.segment_index.in_(indexes))))
            new = [segment for segment in segments if segment["segment_index"] not in stored]
            if new:
                await s.execute(insert(StreamSegmentRow), [{"session_id": session_id, **segment} for segment in new])
        await s.execute(
            update(StreamSessionRow)
            .where(StreamSessionRow.id == session_id)
            .values(segment_count=segment_count, words_count=words_count, duration_ms=duration_ms)
        )


async def renew_lease(
    db: Sessions, session_id: uuid.UUID, lease_seconds: float, duration_ms: int, api_key_id: uuid.UUID | None
) -> bool:
    """Extend the live session's lease; False when the API key it was opened with can no longer
    be used (revoked, expired or deleted), which ends the stream.

    A session the sweeper ended for a lapsed lease is taken back: its node is evidently alive
    (it renews), so the lapse was the database being unreachable, not a crash.
    """
    now = utcnow()
    row = StreamSessionRow
    async with db() as s, s.begin():
        await s.execute(
            update(row)
            .where(row.id == session_id,
                   or_(row.state.in_(LIVE_STATES), and_(row.state == FAILED, row.failure_reason == LEASE_LAPSED_REASON)))
            .values(state=ACTIVE, end_time=None, failure_reason=None,
                    lease_expires_at=now + timedelta(seconds=lease_seconds), duration_ms=duration_ms)
        )
        if api_key_id is None:  # a JWT-authenticated stream: its token was checked when it opened
            return True
        key = (await s.execute(select(ApiKey.revoked_at, ApiKey.expires_at).where(ApiKey.id == api_key_id))).first()
    return key is not None and key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


async def fail_lapsed(db: Sessions, now: datetime | None = None, lease_seconds: float | None = None) -> int:
    """End as FAILED every live session whose node stopped renewing its lease (a crash).

    The session ended when its node last renewed (``lease_seconds`` before the lease ran out,
    when the lease length is given; else at the lease's end), not when the sweep noticed: a
    server restarted hours after a crash must not bill those hours. The duration stays what
    the last renewal recorded, so quota accounting survives the crash.
    """
    now = now or utcnow()
    lease = timedelta(seconds=lease_seconds or 0)
    row = StreamSessionRow
    async with db() as s, s.begin():
        lapsed = (await s.execute(
            select(row.id, row.start_time, row.lease_expires_at)
            .where(row.state.in_(LIVE_STATES), row.lease_expires_at < now)
            .with_for_update(skip_locked=True)
        )).all()
        for session_id, start_time, lease_expires_at in lapsed:
            await s.execute(
                update(row)
                .where(row.id == session_id, row.state.in_(LIVE_STATES))
                .values(state=FAILED, end_time=max(start_time, lease_expires_at - lease),
                        failure_reason=LEASE_LAPSED_REASON, lease_expires_at=None)
            )
        return len(lapsed)
