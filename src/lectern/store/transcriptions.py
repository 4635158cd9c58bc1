"""Transcription jobs as the API reads and makes them; cancel, delete, purge and webhooks are
``job_lifecycle``'s, with ``KIND`` saying what a transcription's content is."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.jobs.queue import COMPLETED, PENDING
from lectern.store import job_lifecycle
from lectern.store.job_lifecycle import JobKind
from lectern.store.batch_models import TranscriptionRow, TranscriptionSegmentRow
from lectern.store.models import StreamSegmentRow, utcnow


def event_data(row: TranscriptionRow) -> dict[str, Any]:
    """A webhook's ``data``: enough to act on; the result itself is fetched with the API."""
    return {
        "id": str(row.id),
        "status": row.status,
        "fileId": str(row.file_id) if row.file_id else None,
        "sessionId": str(row.session_id) if row.session_id else None,
        "completionDate": row.completed_at,
        "errorCode": row.error_code,
        "errors": row.errors,
    }


async def _purge_content(s: AsyncSession, job_id: uuid.UUID) -> None:
    await s.execute(delete(TranscriptionSegmentRow).where(TranscriptionSegmentRow.transcription_id == job_id))
    await s.execute(update(TranscriptionRow).where(TranscriptionRow.id == job_id).values(text=None)
                    .execution_options(synchronize_session=False))


KIND = JobKind(table=TranscriptionRow, noun="transcription", event_data=event_data, purge_content=_purge_content)


def queue_event(s: AsyncSession, row: TranscriptionRow) -> None:
    job_lifecycle.queue_event(s, KIND, row)


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
    row = TranscriptionRow(status=COMPLETED, session_id=session_id, created_at=now, started_at=now, completed_at=now,
                           **values)
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


async def segments(s: AsyncSession, job_id: uuid.UUID) -> Sequence[TranscriptionSegmentRow]:
    return (await s.scalars(select(TranscriptionSegmentRow).where(TranscriptionSegmentRow.transcription_id == job_id)
                            .order_by(TranscriptionSegmentRow.segment_index))).all()


