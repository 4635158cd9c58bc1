"""Tenant retention periods, enforced by the sweeper: content older than its tenant's period goes.

- recordings (``recording_retention_days``): the audio file of an ended stream, counted from its end;
  the session is marked ``recordingPurged`` as ``DELETE .../recording`` does.
- transcripts (``transcript_retention_days``): an ended stream's segments (its row and counters stay,
  as ``POST .../purge`` leaves them, but its recording follows its own period), and the result of a
  transcription job, counted from its completion.
- summaries (``summary_retention_days``): a summary's text, counted from its completion.

A job whose result expires is deleted and purged (a purged job is a deleted one, as for
``DELETE ...?purge=true``): this marks it due and lets ``job_lifecycle.purge_due`` purge it, so the
purge is the API's own. A null period keeps content until someone deletes it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lectern.store import job_lifecycle
from lectern.store import summaries as summary_rows
from lectern.store import transcriptions as transcription_rows
from lectern.store.job_lifecycle import JobKind
from lectern.store.models import StreamSegmentRow, StreamSessionRow, Tenant, utcnow
from lectern.store.sessions import LIVE_STATES

BATCH = 500  # rows per statement, so that one sweep of a large backlog never holds a huge transaction
S = StreamSessionRow


@dataclass(frozen=True, slots=True)
class Purged:
    """What one sweep removed."""

    recordings: int = 0
    session_transcripts: int = 0
    transcriptions: int = 0
    summaries: int = 0

    def __add__(self, other: Purged) -> Purged:
        return Purged(self.recordings + other.recordings, self.session_transcripts + other.session_transcripts,
                      self.transcriptions + other.transcriptions, self.summaries + other.summaries)

    def __bool__(self) -> bool:
        return any((self.recordings, self.session_transcripts, self.transcriptions, self.summaries))


def _ended_before(tenant_id: uuid.UUID, cutoff: datetime) -> Select:
    """Ended streams of the tenant (deleted ones included: deleting hides, it does not purge)."""
    return select(S.id).where(S.tenant_id == tenant_id, S.state.not_in(LIVE_STATES),
                              func.coalesce(S.end_time, S.start_time) < cutoff)


async def _purge_recordings(db: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID, cutoff: datetime,
                            now: datetime) -> int:
    purged = 0
    while True:
        async with db() as s, s.begin():
            rows = (await s.execute(
                select(S.id, S.recording_path).where(
                    S.id.in_(_ended_before(tenant_id, cutoff)), S.recording_requested.is_(True),
                    S.recording_purged.is_(False)).limit(BATCH))).all()
            if not rows:
                return purged
            # The file goes first: a crash in between leaves a row to purge again, never a kept file
            # that the API says is gone.
            await asyncio.to_thread(_remove_files, [path for _, path in rows])
            await s.execute(update(S).where(S.id.in_([session_id for session_id, _ in rows]))
                            .values(recording_purged=True, recording_purged_at=now)
                            .execution_options(synchronize_session=False))
        purged += len(rows)


def _remove_files(paths: list[str | None]) -> None:
    for path in paths:
        if path:
            Path(path).unlink(missing_ok=True)


async def _purge_session_transcripts(db: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID,
                                     cutoff: datetime, now: datetime) -> int:
    purged = 0
    while True:
        async with db() as s, s.begin():
            ids = list(await s.scalars(
                select(S.id).where(S.id.in_(_ended_before(tenant_id, cutoff)), S.purged_at.is_(None)).limit(BATCH)))
            if not ids:
                return purged
            await s.execute(delete(StreamSegmentRow).where(StreamSegmentRow.session_id.in_(ids)))
            await s.execute(update(S).where(S.id.in_(ids)).values(purged_at=now)
                            .execution_options(synchronize_session=False))
        purged += len(ids)


async def _purge_jobs(db: async_sessionmaker[AsyncSession], kind: JobKind, tenant_id: uuid.UUID,
                      cutoff: datetime, now: datetime) -> int:
    """Mark the tenant's expired results due (deleted now if they were not), then purge what is due."""
    t = kind.table
    async with db() as s, s.begin():
        marked = await s.execute(
            update(t).where(t.tenant_id == tenant_id, t.completed_at < cutoff, t.purged_at.is_(None))
            .values(deleted_at=func.coalesce(t.deleted_at, now), purge_at=now)
            .execution_options(synchronize_session=False))
    expired = marked.rowcount or 0
    if expired:
        while True:
            async with db() as s:
                if await job_lifecycle.purge_due(s, kind, limit=BATCH) < BATCH:
                    break
    return expired


async def purge_expired(db: async_sessionmaker[AsyncSession], now: datetime | None = None) -> Purged:
    """One sweep: for every tenant with a retention period, remove what has outlived it."""
    now = now or utcnow()
    async with db() as s:
        tenants = (await s.execute(
            select(Tenant.id, Tenant.recording_retention_days, Tenant.transcript_retention_days,
                   Tenant.summary_retention_days).where(or_(
                       Tenant.recording_retention_days.is_not(None), Tenant.transcript_retention_days.is_not(None),
                       Tenant.summary_retention_days.is_not(None))))).all()
    total = Purged()
    for tenant_id, recording_days, transcript_days, summary_days in tenants:
        recordings = session_transcripts = transcriptions = summaries = 0
        if recording_days is not None:
            recordings = await _purge_recordings(db, tenant_id, now - timedelta(days=recording_days), now)
        if transcript_days is not None:
            cutoff = now - timedelta(days=transcript_days)
            session_transcripts = await _purge_session_transcripts(db, tenant_id, cutoff, now)
            transcriptions = await _purge_jobs(db, transcription_rows.KIND, tenant_id, cutoff, now)
        if summary_days is not None:
            summaries = await _purge_jobs(db, summary_rows.KIND, tenant_id, now - timedelta(days=summary_days), now)
        total += Purged(recordings, session_transcripts, transcriptions, summaries)
    return total
