"""Transcription jobs as the API manages them: create, list, cancel, delete, purge, webhooks.

State changes are conditional UPDATEs, so a request racing a worker (a cancel while the job
completes) changes the row once, and the loser is told (a 409), never silently overruled. Every
terminal change queues its webhook event in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.jobs.queue import CANCELLED, COMPLETED, IN_PROGRESS, PENDING, TERMINAL
from lectern.store.models import StreamSegmentRow, TranscriptionRow, TranscriptionSegmentRow, utcnow
from lectern.webhooks import enqueue

SORT_COLUMNS = {
    "creationDate": TranscriptionRow.created_at,
    "completionDate": TranscriptionRow.completed_at,
    "status": TranscriptionRow.status,
}
SortField = Literal["creationDate", "completionDate", "status"]


class Conflict(Exception):
    """The job is not in a state that allows the change; the message says why (a 409)."""


@dataclass(frozen=True, slots=True)
class TranscriptionFilter:
    tenant_id: uuid.UUID
    user_id: uuid.UUID | None  # None: every user's (all transcriptions of a file the caller may read)
    statuses: tuple[str, ...] = ()
    file_id: uuid.UUID | None = None
    is_deleted: bool = False
    is_purged: bool | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    completed_after: datetime | None = None
    completed_before: datetime | None = None


def event_data(row: TranscriptionRow) -> dict[str, Any]:
    """A webhook's ``data``: enough to act on; the result itself is fetched with the API."""
    return {
        "id": str(row.id),
        "status": row.status,
        "fileId": str(row.file_id) if row.file_id else None,
        "sessionId": str(row.session_id) if row.session_id else None,
        "completionDate": row.completed_at.isoformat() if row.completed_at else None,
        "errorCode": row.error_code,
        "errors": row.errors,
    }


def queue_event(s: AsyncSession, row: TranscriptionRow) -> None:
    """The terminal event of ``row`` (already in its final state), when it has a webhook."""
    if row.webhook:
        enqueue(s, tenant_id=row.tenant_id, resource_id=row.id, event_type=f"transcription.{row.status.lower()}",
                data=event_data(row), webhook=row.webhook)


async def create(s: AsyncSession, values: dict[str, Any]) -> TranscriptionRow:
    """A PENDING job, for the workers to claim."""
    row = TranscriptionRow(status=PENDING, **values)
    s.add(row)
    await s.commit()
    return row


async def create_from_session(s: AsyncSession, values: dict[str, Any], session_id: uuid.UUID,
                              text_of: Any) -> TranscriptionRow:
    """A COMPLETED job at once: the session's committed segments are its result."""
    now = utcnow()
    segments = list(await s.scalars(
        select(StreamSegmentRow).where(StreamSegmentRow.session_id == session_id)
        .order_by(StreamSegmentRow.segment_index)
    ))
    row = TranscriptionRow(status=COMPLETED, session_id=session_id, started_at=now, completed_at=now, **values)
    row.segment_count = len(segments)
    row.words_count = sum(len(seg.words) for seg in segments)
    row.processed_seconds = row.duration_seconds or 0.0
    texts = [text_of(seg.transcript) for seg in segments]
    row.text = " ".join(t for t in texts if t)
    s.add(row)
    await s.flush()
    if segments:
        await s.execute(insert(TranscriptionSegmentRow), [
            {"transcription_id": row.id, "segment_index": i, "transcript": text, "confidence": seg.confidence,
             "start_seconds": seg.start_seconds, "end_seconds": seg.end_seconds,
             "words": [{k: w[k] for k in ("word", "startSeconds", "endSeconds", "confidence")} for w in seg.words]}
            for i, (seg, text) in enumerate(zip(segments, texts))
        ])
    queue_event(s, row)
    await s.commit()
    return row


async def get(s: AsyncSession, job_id: uuid.UUID, tenant_id: uuid.UUID) -> TranscriptionRow | None:
    """The tenant's job, deleted or not (a deleted job is still shown, as deleted)."""
    return await s.scalar(select(TranscriptionRow).where(TranscriptionRow.id == job_id,
                                                         TranscriptionRow.tenant_id == tenant_id))


def _filtered(query: Select, f: TranscriptionFilter) -> Select:
    t = TranscriptionRow
    query = query.where(t.tenant_id == f.tenant_id)
    if f.user_id is not None:
        query = query.where(t.user_id == f.user_id)
    query = query.where(t.deleted_at.is_not(None) if f.is_deleted else t.deleted_at.is_(None))
    if f.is_purged is not None:
        query = query.where(t.purged_at.is_not(None) if f.is_purged else t.purged_at.is_(None))
    if f.statuses:
        query = query.where(t.status.in_(f.statuses))
    if f.file_id is not None:
        query = query.where(t.file_id == f.file_id)
    for column, after, before in ((t.created_at, f.created_after, f.created_before),
                                  (t.completed_at, f.completed_after, f.completed_before)):
        if after is not None:
            query = query.where(column >= after)
        if before is not None:
            query = query.where(column <= before)
    return query


async def list_page(s: AsyncSession, f: TranscriptionFilter, sort: SortField, descending: bool, page: int,
                    size: int) -> tuple[list[TranscriptionRow], int]:
    column = SORT_COLUMNS[sort]
    order = column.desc() if descending else column.asc()
    if column.nullable:  # not completed yet: after every completed one, either way
        order = order.nulls_last()
    tiebreak = TranscriptionRow.id.desc() if descending else TranscriptionRow.id.asc()
    rows = await s.scalars(_filtered(select(TranscriptionRow), f).order_by(order, tiebreak)
                           .offset(page * size).limit(size))
    total = await s.scalar(_filtered(select(func.count()).select_from(TranscriptionRow), f)) or 0
    return list(rows), total


async def segments(s: AsyncSession, job_id: uuid.UUID) -> Sequence[TranscriptionSegmentRow]:
    return (await s.scalars(select(TranscriptionSegmentRow).where(TranscriptionSegmentRow.transcription_id == job_id)
                            .order_by(TranscriptionSegmentRow.segment_index))).all()


async def _change(s: AsyncSession, row: TranscriptionRow, allowed: Sequence[str], conflict: str,
                  **values: Any) -> None:
    """Update ``row`` if it is still in one of the ``allowed`` statuses (it may have moved since it was read)."""
    t = TranscriptionRow
    result = await s.execute(update(t).where(t.id == row.id, t.status.in_(allowed)).values(**values)
                             .execution_options(synchronize_session=False))
    if not result.rowcount:
        await s.rollback()
        raise Conflict(conflict)
    await s.refresh(row)


async def cancel(s: AsyncSession, row: TranscriptionRow) -> None:
    await _change(s, row, (PENDING, IN_PROGRESS), "the transcription has already ended and cannot be cancelled",
                  status=CANCELLED, completed_at=utcnow(), worker_id=None, lease_expires_at=None)
    queue_event(s, row)
    await s.commit()


async def set_webhook(s: AsyncSession, row: TranscriptionRow, webhook: dict[str, Any] | None) -> None:
    await _change(s, row, (PENDING, IN_PROGRESS),
                  "the transcription has ended: its webhook has been sent (or there was none) and cannot change",
                  webhook=webhook)
    await s.commit()


async def soft_delete(s: AsyncSession, row: TranscriptionRow, retention: timedelta, purge_now: bool) -> None:
    if row.status not in TERMINAL:
        raise Conflict("the transcription is still running: cancel it first")
    if row.deleted_at is not None:
        raise Conflict("the transcription is already deleted")
    now = utcnow()
    t = TranscriptionRow
    result = await s.execute(update(t).where(t.id == row.id, t.deleted_at.is_(None))
                             .values(deleted_at=now, purge_at=now + retention)
                             .execution_options(synchronize_session=False))
    if not result.rowcount:
        await s.rollback()
        raise Conflict("the transcription is already deleted")
    if purge_now:
        await _purge_content(s, row.id, now)
    await s.commit()
    await s.refresh(row)


async def purge(s: AsyncSession, row: TranscriptionRow) -> None:
    if row.deleted_at is None:
        raise Conflict("only a deleted transcription can be purged: delete it first")
    if row.purged_at is not None:
        raise Conflict("the transcription has already been purged")
    await _purge_content(s, row.id, utcnow())
    await s.commit()
    await s.refresh(row)


async def _purge_content(s: AsyncSession, job_id: uuid.UUID, now: datetime) -> None:
    """The result and the errors go for good; the row stays (status, times, counts) for audit and quota."""
    await s.execute(delete(TranscriptionSegmentRow).where(TranscriptionSegmentRow.transcription_id == job_id))
    t = TranscriptionRow
    await s.execute(update(t).where(t.id == job_id).values(purged_at=now, purge_at=None, text=None, errors=None)
                    .execution_options(synchronize_session=False))


async def purge_due(s: AsyncSession, limit: int = 100) -> int:
    """Purge deleted jobs whose retention has run out (the sweeper's part)."""
    t = TranscriptionRow
    ids = list(await s.scalars(select(t.id).where(t.purge_at <= utcnow(), t.purged_at.is_(None)).limit(limit)
                               .with_for_update(skip_locked=True)))
    for job_id in ids:
        await _purge_content(s, job_id, utcnow())
    await s.commit()
    return len(ids)

