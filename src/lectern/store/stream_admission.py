"""A new stream's row, created only within its tenant's and user's caps on open streams.

Open streams are counted across every node from the rows themselves: a live state (CREATED or
ACTIVE) and a lease that has not lapsed, so a crashed node's streams stop counting once their
lease runs out, and a stream waiting for its client to resume (still ACTIVE, lease renewed)
counts. The count and the insert share one transaction that holds a per-tenant lock (an advisory
lock on PostgreSQL; on SQLite the tenant row is written first, which takes the single writer's
lock), so two starts at the same moment cannot both take the last slot.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lectern.store.models import StreamSessionRow, Tenant, User, utcnow
from lectern.store.quotas import quotas
from lectern.store.sessions import CREATED, LIVE_STATES
from lectern.store.tenants import stream_cap

# The first key of the advisory locks stream admission takes on PostgreSQL ("ls"); the second is
# the tenant's hash, so tenants do not wait for each other.
_ADMISSION_LOCK_CLASS = 0x6C73


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a stream may not open: ``limit`` is the cap reached (None for the quota)."""

    reason: str  # "tenant_streams", "user_streams" or "quota"
    limit: int | None


@dataclass(frozen=True, slots=True)
class Admitted:
    seconds_left: float | None  # the tenant's transcription quota left when the stream opened; None: unlimited


async def create_within_caps(
    db: async_sessionmaker[AsyncSession], values: dict[str, Any], lease_seconds: float,
    server_default: int | None, node_capacity: int,
) -> Admitted | Refusal:
    """Insert the stream's row (state CREATED) if its tenant and user are under their caps on open
    streams and the tenant has transcription minutes left; else insert nothing and say why."""
    tenant_id: uuid.UUID = values["tenant_id"]
    user_id: uuid.UUID = values["user_id"]
    now = utcnow()
    async with db() as s, s.begin():
        await _lock_tenant(s, tenant_id)
        tenant_cap = await s.scalar(select(Tenant.max_concurrent_streams).where(Tenant.id == tenant_id))
        user_cap = await s.scalar(select(User.max_concurrent_streams).where(User.id == user_id))
        row = StreamSessionRow
        live = (row.tenant_id == tenant_id, row.state.in_(LIVE_STATES), row.lease_expires_at > now)
        tenant_open = await s.scalar(select(func.count()).select_from(row).where(*live)) or 0
        tenant_limit = stream_cap(None, tenant_cap, server_default, node_capacity)
        if tenant_open >= tenant_limit:
            return Refusal("tenant_streams", tenant_limit)
        if user_cap is not None:
            user_open = await s.scalar(select(func.count()).select_from(row).where(*live, row.user_id == user_id)) or 0
            if user_open >= user_cap:
                return Refusal("user_streams", user_cap)
        left = (await quotas(s, tenant_id, now)).transcription_seconds_left
        if left is not None and left <= 0:
            return Refusal("quota", None)
        await s.execute(insert(row).values(
            state=CREATED, start_time=now, lease_expires_at=now + timedelta(seconds=lease_seconds), **values))
        return Admitted(left)


async def stream_quota(
    db: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID, session_id: uuid.UUID
) -> tuple[int, float | None]:
    """A live stream's duration as its row records it, and its tenant's transcription quota left
    (every node's streams and jobs spend from it; None: unlimited), read from one snapshot so that
    a commit landing between the two reads is not counted in one and missing from the other."""
    async with db() as s:
        if s.bind.dialect.name == "postgresql":
            await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        recorded_ms = await s.scalar(select(StreamSessionRow.duration_ms).where(StreamSessionRow.id == session_id))
        left = (await quotas(s, tenant_id)).transcription_seconds_left
    return int(recorded_ms or 0), left


async def _lock_tenant(s: AsyncSession, tenant_id: uuid.UUID) -> None:
    if s.bind.dialect.name == "postgresql":
        await s.execute(select(func.pg_advisory_xact_lock(_ADMISSION_LOCK_CLASS, func.hashtext(str(tenant_id)))))
    else:
        # SQLite: a write first takes the database's one writer lock for the whole transaction; a
        # deferred transaction that read first would fail (not wait) when it then tried to write.
        await s.execute(update(Tenant).where(Tenant.id == tenant_id)
                        .values(max_concurrent_streams=Tenant.max_concurrent_streams))
