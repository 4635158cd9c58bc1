"""Jobs are rows: claimed atomically, held by a renewed lease, taken over when the lease lapses.

One set of statements for every job table (transcriptions now, summaries later): a job table has
``status``, ``worker_id``, ``lease_expires_at``, ``attempts``, ``created_at``, ``started_at``.
On PostgreSQL the claim skips rows another worker is claiming (``FOR UPDATE SKIP LOCKED``), so
workers never queue behind each other; SQLite runs one writer at a time, which makes the same
single UPDATE atomic there.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from lectern.store.models import Tenant, utcnow

PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "PENDING", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"
STATUSES = (PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED)
TERMINAL = (COMPLETED, FAILED, CANCELLED)

Job = TypeVar("Job")


class JobLost(Exception):
    """This worker no longer holds the job: it was cancelled, or taken over after its lease lapsed."""


@dataclass(frozen=True, slots=True)
class Fairness:
    """How claims are shared between tenants: each tenant runs at most its cap of jobs at once
    (``tenants.max_running_jobs``, else ``default_cap``), counted over every table in ``running_in``
    (transcriptions and summaries share one cap); among tenants under their cap, the one running the
    fewest jobs goes first, then the one whose last job started longest ago (round robin)."""

    default_cap: int
    running_in: tuple[type, ...]


async def claim(
    s: AsyncSession, table: type[Job], worker_id: str, lease_seconds: float, max_attempts: int,
    fairness: Fairness | None = None,
) -> Job | None:
    """Take a job that is waiting, or whose worker went silent, and still has attempts left: the
    oldest one, or with ``fairness`` the oldest of the tenant whose turn it is."""
    t: Any = table
    now = utcnow()
    candidate = select(t.id).where(
        or_(t.status == PENDING, (t.status == IN_PROGRESS) & (t.lease_expires_at < now)),
        t.attempts < max_attempts,
    )
    if fairness is None:
        candidate = candidate.order_by(t.created_at, t.id)
    else:
        if s.bind.dialect.name == "postgresql":
            # One claim at a time, so that two workers never both see a tenant one job under its cap.
            await s.execute(select(func.pg_advisory_xact_lock(_CLAIM_LOCK)))
        running = _running_jobs(fairness.running_in, t.tenant_id, now)
        cap = func.coalesce(
            select(Tenant.max_running_jobs).where(Tenant.id == t.tenant_id).scalar_subquery(), fairness.default_cap)
        mine = aliased(t)
        last_start = select(func.max(mine.started_at)).where(mine.tenant_id == t.tenant_id).scalar_subquery()
        candidate = candidate.where(running < cap).order_by(
            running, last_start.is_not(None), last_start, t.created_at, t.id)
    candidate_id = candidate.limit(1).with_for_update(skip_locked=True).scalar_subquery()
    row = await s.scalar(
        update(t)
        .where(t.id == candidate_id)
        .values(
            status=IN_PROGRESS,
            worker_id=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=t.attempts + 1,
            started_at=func.coalesce(t.started_at, now),
        )
        .returning(t)
        .execution_options(synchronize_session=False)
    )
    await s.commit()
    return row


_CLAIM_LOCK = 0x6C6563746E  # "lectn": the advisory lock fair claims take on PostgreSQL


def _running_jobs(tables: tuple[type, ...], tenant_id: Any, now: Any) -> Any:
    """The number of jobs of ``tenant_id`` running now (a live lease) in all of ``tables``."""
    counts = []
    for table in tables:
        r: Any = aliased(table)
        counts.append(select(func.count()).select_from(r).where(
            r.tenant_id == tenant_id, r.status == IN_PROGRESS, r.lease_expires_at >= now).scalar_subquery())
    total = counts[0]
    for count in counts[1:]:
        total = total + count
    return total


def held(table: type[Job], job_id: uuid.UUID, worker_id: str) -> Any:
    """The condition under which ``worker_id`` may still write the job's progress or outcome."""
    t: Any = table
    return (t.id == job_id) & (t.worker_id == worker_id) & (t.status == IN_PROGRESS)


async def renew(s: AsyncSession, table: type[Job], job_id: uuid.UUID, worker_id: str, lease_seconds: float,
                **progress: Any) -> None:
    """Extend the lease (and record progress) in the caller's transaction; JobLost if no longer held."""
    t: Any = table
    result = await s.execute(
        update(t)
        .where(held(table, job_id, worker_id))
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds), **progress)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:
        raise JobLost(job_id)


async def settle(s: AsyncSession, table: type[Job], job_id: uuid.UUID, worker_id: str, status: str,
                 **values: Any) -> None:
    """End a held job as ``status`` in the caller's transaction; JobLost if no longer held."""
    t: Any = table
    result = await s.execute(
        update(t)
        .where(held(table, job_id, worker_id))
        .values(status=status, completed_at=utcnow(), worker_id=None, lease_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:
        raise JobLost(job_id)


async def abandoned(s: AsyncSession, table: type[Job], max_attempts: int, limit: int = 100) -> list[Job]:
    """Jobs whose worker went silent on the last allowed attempt: nobody may claim them any more.
    Locked for the caller, who fails them in the same transaction."""
    t: Any = table
    rows = await s.scalars(
        select(t)
        .where(t.status == IN_PROGRESS, t.lease_expires_at < utcnow(), t.attempts >= max_attempts)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows)


async def release(s: AsyncSession, table: type[Job], job_id: uuid.UUID, worker_id: str) -> None:
    """Give a held job back (its worker is shutting down): claimable at once, the attempt not counted,
    its progress kept for whoever takes it."""
    t: Any = table
    await s.execute(
        update(t)
        .where(held(table, job_id, worker_id))
        .values(status=PENDING, worker_id=None, lease_expires_at=None, attempts=t.attempts - 1)
        .execution_options(synchronize_session=False)
    )
    await s.commit()
