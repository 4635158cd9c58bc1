"""What every job resource (transcriptions, summaries) lets its owner do: cancel, change the
webhook, delete, purge; and the sweeper's purge when a deleted job's retention ends.

State changes are conditional UPDATEs, so a request racing a worker (a cancel while the job
completes) changes the row once, and the loser is told (a Conflict: 409), never silently
overruled. Every terminal change queues its webhook event in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.jobs.queue import CANCELLED, IN_PROGRESS, PENDING, TERMINAL
from lectern.store.models import utcnow
from lectern.webhooks import enqueue


class Conflict(Exception):
    """The job is not in a state that allows the change; the message says why (a 409)."""


@dataclass(frozen=True, slots=True)
class JobKind:
    table: Any  # the ORM class: id, tenant_id, status, webhook, completed_at, deleted_at, purge_at, purged_at...
    noun: str  # "transcription": in messages and event types (`transcription.completed`)
    event_data: Callable[[Any], dict[str, Any]]  # a webhook's ``data``: enough to act on
    purge_content: Callable[[AsyncSession, uuid.UUID], Awaitable[None]]  # remove the result and errors


def queue_event(s: AsyncSession, kind: JobKind, row: Any) -> None:
    """The terminal event of ``row`` (already in its final state), when it has a webhook."""
    if row.webhook:
        enqueue(s, tenant_id=row.tenant_id, resource_id=row.id, event_type=f"{kind.noun}.{row.status.lower()}",
                data=kind.event_data(row), webhook=row.webhook)


async def _change(s: AsyncSession, kind: JobKind, row: Any, allowed: Sequence[str], conflict: str,
                  **values: Any) -> None:
    """Update ``row`` if it is still in one of the ``allowed`` statuses (it may have moved since it was read)."""
    t = kind.table
    result = await s.execute(update(t).where(t.id == row.id, t.status.in_(allowed)).values(**values)
                             .execution_options(synchronize_session=False))
    if not result.rowcount:
        await s.rollback()
        raise Conflict(conflict)
    await s.refresh(row)


async def cancel(s: AsyncSession, kind: JobKind, row: Any) -> None:
    await _change(s, kind, row, (PENDING, IN_PROGRESS),
                  f"the {kind.noun} is already in a terminal state and cannot be cancelled",
                  status=CANCELLED, completed_at=utcnow(), worker_id=None, lease_expires_at=None)
    queue_event(s, kind, row)
    await s.commit()


async def set_webhook(s: AsyncSession, kind: JobKind, row: Any, webhook: dict[str, Any] | None) -> None:
    await _change(s, kind, row, (PENDING, IN_PROGRESS),
                  f"the {kind.noun} is in a terminal state: its webhook can no longer change", webhook=webhook)
    await s.commit()


async def soft_delete(s: AsyncSession, kind: JobKind, row: Any, retention: timedelta, purge_now: bool) -> None:
    """Hide the job; its result is purged when ``retention`` has passed (or now)."""
    if row.status not in TERMINAL:
        raise Conflict(f"the {kind.noun} is not in a terminal state: cancel it first")
    if row.deleted_at is not None:
        raise Conflict(f"the {kind.noun} is already deleted")
    now = utcnow()
    t = kind.table
    result = await s.execute(update(t).where(t.id == row.id, t.deleted_at.is_(None))
                             .values(deleted_at=now, purge_at=now + retention)
                             .execution_options(synchronize_session=False))
    if not result.rowcount:
        await s.rollback()
        raise Conflict(f"the {kind.noun} is already deleted")
    if purge_now:
        await _purge(s, kind, row.id, now)
    await s.commit()
    await s.refresh(row)


async def purge(s: AsyncSession, kind: JobKind, row: Any) -> None:
    """Remove a deleted job's result and errors for good, now."""
    if row.deleted_at is None:
        raise Conflict(f"the {kind.noun} is not deleted: delete it first")
    if row.purged_at is not None:
        raise Conflict(f"the {kind.noun} has already been permanently deleted")
    await _purge(s, kind, row.id, utcnow())
    await s.commit()
    await s.refresh(row)


async def _purge(s: AsyncSession, kind: JobKind, job_id: uuid.UUID, now: datetime) -> None:
    """The row stays (status, times, counts) for audit and quota; its content goes."""
    await kind.purge_content(s, job_id)
    t = kind.table
    await s.execute(update(t).where(t.id == job_id).values(purged_at=now, purge_at=None, errors=None)
                    .execution_options(synchronize_session=False))


async def purge_due(s: AsyncSession, kind: JobKind, limit: int = 100) -> int:
    """Purge deleted jobs whose retention has run out (the sweeper's part)."""
    t = kind.table
    ids = list(await s.scalars(select(t.id).where(t.purge_at <= utcnow(), t.purged_at.is_(None)).limit(limit)
                               .with_for_update(skip_locked=True)))
    for job_id in ids:
        await _purge(s, kind, job_id, utcnow())
    await s.commit()
    return len(ids)


@dataclass(frozen=True, slots=True)
class JobFilter:
    """A job listing's filters; ``parents`` are exact matches on the resource's own parent columns
    (``file_id``, ``transcription_id``...)."""

    tenant_id: uuid.UUID
    user_id: uuid.UUID | None  # None: every user's (the jobs of a parent the caller may read)
    statuses: tuple[str, ...] = ()
    parents: tuple[tuple[str, uuid.UUID], ...] = ()
    is_deleted: bool = False
    is_purged: bool | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    completed_after: datetime | None = None
    completed_before: datetime | None = None


SORT_FIELDS = {"creationDate": "created_at", "completionDate": "completed_at", "status": "status"}


def _filtered(query: Select, t: Any, f: JobFilter) -> Select:
    query = query.where(t.tenant_id == f.tenant_id)
    if f.user_id is not None:
        query = query.where(t.user_id == f.user_id)
    query = query.where(t.deleted_at.is_not(None) if f.is_deleted else t.deleted_at.is_(None))
    if f.is_purged is not None:
        query = query.where(t.purged_at.is_not(None) if f.is_purged else t.purged_at.is_(None))
    if f.statuses:
        query = query.where(t.status.in_(f.statuses))
    for column, value in f.parents:
        query = query.where(getattr(t, column) == value)
    for column, after, before in ((t.created_at, f.created_after, f.created_before),
                                  (t.completed_at, f.completed_after, f.completed_before)):
        if after is not None:
            query = query.where(column >= after)
        if before is not None:
            query = query.where(column <= before)
    return query


async def list_page(s: AsyncSession, kind: JobKind, f: JobFilter, sort: str, descending: bool, page: int,
                    size: int) -> tuple[list[Any], int]:
    """One page of jobs (``sort``: a key of SORT_FIELDS) and the total."""
    t = kind.table
    column = getattr(t, SORT_FIELDS[sort])
    order = column.desc() if descending else column.asc()
    if sort == "completionDate":  # not completed yet: after every completed one, either way
        order = order.nulls_last()
    tiebreak = t.id.desc() if descending else t.id.asc()
    rows = await s.scalars(_filtered(select(t), t, f).order_by(order, tiebreak).offset(page * size).limit(size))
    total = await s.scalar(_filtered(select(func.count()).select_from(t), t, f)) or 0
    return list(rows), total
