"""What a tenant has used of its quotas: transcription minutes and summaries this calendar month
(UTC), and the bytes it stores now.

Usage is counted from the rows themselves, deleted ones included (seed 000: a deleted session
"remains in the database for auditing and quota purposes"), so it survives crashes and needs no
counter of its own: a stream's duration is what its last lease renewal or commit recorded, a batch
job's what it processed.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.store.batch_models import FileRow, SummaryRow, TranscriptionRow
from lectern.store.models import StreamSessionRow, Tenant, utcnow

RECORDING_BYTES_PER_MS = 32  # recordings are 16 kHz mono s16le (realtime/recording.py)


@dataclass(frozen=True, slots=True)
class QuotaEntry:
    limit: int | None  # None: no limit
    used: int

    @property
    def available(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used)

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.used >= self.limit


@dataclass(frozen=True, slots=True)
class Usage:
    transcription_seconds: float  # realtime and batch, this month
    summaries: int  # created this month
    summary_tokens: int  # this month
    storage_bytes: int  # files and recordings kept now


@dataclass(frozen=True, slots=True)
class Quotas:
    transcription_minutes: QuotaEntry
    summaries: QuotaEntry
    summary_tokens: QuotaEntry
    storage_bytes: QuotaEntry
    transcription_seconds_left: float | None  # exact, for enforcement; None: no limit


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def usage(s: AsyncSession, tenant_id: uuid.UUID, now: datetime | None = None) -> Usage:
    since = month_start(now or utcnow())
    sessions = StreamSessionRow
    stream_ms = await s.scalar(select(func.coalesce(func.sum(sessions.duration_ms), 0)).where(
        sessions.tenant_id == tenant_id, sessions.start_time >= since))
    batch_seconds = await s.scalar(select(func.coalesce(func.sum(TranscriptionRow.processed_seconds), 0.0)).where(
        TranscriptionRow.tenant_id == tenant_id, TranscriptionRow.created_at >= since))
    summaries, summary_tokens = (await s.execute(select(
        func.count(SummaryRow.id),
        func.coalesce(func.sum(func.coalesce(SummaryRow.input_tokens, 0) + func.coalesce(SummaryRow.output_tokens, 0)),
                      0),
    ).where(SummaryRow.tenant_id == tenant_id, SummaryRow.created_at >= since))).one()
    file_bytes = await s.scalar(select(func.coalesce(func.sum(FileRow.size_bytes), 0)).where(
        FileRow.tenant_id == tenant_id, FileRow.deleted_at.is_(None)))
    recorded_ms = await s.scalar(select(func.coalesce(func.sum(sessions.duration_ms), 0)).where(
        sessions.tenant_id == tenant_id, sessions.recording_path.is_not(None),
        sessions.recording_purged.is_(False), sessions.purged_at.is_(None)))
    return Usage(
        transcription_seconds=int(stream_ms) / 1000 + float(batch_seconds),
        summaries=int(summaries),
        summary_tokens=int(summary_tokens),
        storage_bytes=int(file_bytes) + int(recorded_ms) * RECORDING_BYTES_PER_MS,
    )


async def quotas(s: AsyncSession, tenant_id: uuid.UUID, now: datetime | None = None) -> Quotas:
    tenant = await s.get(Tenant, tenant_id)
    if tenant is None:
        raise LookupError(f"no tenant {tenant_id}")
    used = await usage(s, tenant_id, now)
    minutes_limit = tenant.quota_transcription_minutes
    return Quotas(
        transcription_minutes=QuotaEntry(minutes_limit, math.ceil(used.transcription_seconds / 60)),
        summaries=QuotaEntry(tenant.quota_summaries, used.summaries),
        summary_tokens=QuotaEntry(tenant.quota_summary_tokens, used.summary_tokens),
        storage_bytes=QuotaEntry(tenant.quota_storage_bytes, used.storage_bytes),
        transcription_seconds_left=(None if minutes_limit is None
                                    else max(0.0, minutes_limit * 60 - used.transcription_seconds)),
    )


# -- enforcement: what a request may still spend (the routes and jobs render the refusal) -----------


class QuotaExceeded(Exception):
    """A tenant's quota does not allow what was asked; the message is for the client."""


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def check_transcription(q: Quotas, seconds: float | None) -> None:
    """QuotaExceeded when the month's transcription minutes are spent, or ``seconds`` of audio
    (None: not known yet) would pass what is left of them."""
    entry, left = q.transcription_minutes, q.transcription_seconds_left
    if entry.limit is None or left is None:
        return
    if left <= 0:  # exact seconds: ``used`` is rounded up to whole minutes
        raise QuotaExceeded(f"monthly transcription quota exhausted: {entry.used} of {entry.limit} minutes used")
    if seconds is not None and seconds > left:
        raise QuotaExceeded(f"the audio's {_minutes(seconds)} minutes pass the {_minutes(left)} minutes left of "
                            f"the monthly transcription quota ({entry.used} of {entry.limit} minutes used)")


def check_summary(q: Quotas) -> None:
    """QuotaExceeded when the month's summaries or summary tokens are spent."""
    if q.summaries.exhausted:
        raise QuotaExceeded(f"monthly summary quota exhausted: {q.summaries.used} of {q.summaries.limit} "
                            "summaries used")
    if q.summary_tokens.exhausted:
        raise QuotaExceeded(f"monthly summary token quota exhausted: {q.summary_tokens.used} of "
                            f"{q.summary_tokens.limit} tokens used")


def storage_refusal(q: Quotas) -> str:
    """The message for an upload that passes the storage quota."""
    entry = q.storage_bytes
    return (f"storage quota exceeded: the upload is larger than the {entry.available} bytes left "
            f"({entry.used} of {entry.limit} bytes stored)")
