"""Tenant retention periods: one sweep purges what is older than its tenant's period, keeps what is
newer, what is still live, and every other tenant's content (store/retention.py on a real database)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from lectern.store import migrate
from lectern.store.batch_models import SummaryRow, TranscriptionRow, TranscriptionSegmentRow
from lectern.store.db import create_db_engine, create_sync_engine, session_factory
from lectern.store.models import StreamSegmentRow, StreamSessionRow, Tenant, User, utcnow
from lectern.store.retention import Purged, purge_expired
from tests.conftest import _fresh_database

BUILT_IN_TEMPLATE = uuid.UUID("00000000-0000-4000-8000-00000000a001")
NOW = utcnow()


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


@pytest.fixture
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A migrated database of its own; yields its URL."""
    if backend == "sqlite":
        url, drop = f"sqlite:///{tmp_path / 'lectern.db'}", lambda: None
    else:
        url, drop = _fresh_database(backend)
    migrate.upgrade(url)
    yield url
    drop()


@dataclass
class Tenancy:
    """One tenant's rows, named by what the test expects of them."""

    tenant_id: uuid.UUID
    user_id: uuid.UUID
    sessions: dict[str, uuid.UUID] = field(default_factory=dict)
    recordings: dict[str, Path] = field(default_factory=dict)
    transcriptions: dict[str, uuid.UUID] = field(default_factory=dict)
    summaries: dict[str, uuid.UUID] = field(default_factory=dict)


def populate(engine: Engine, recordings_dir: Path, name: str, **retention: Any) -> Tenancy:
    """Streams ended 40, 20 and 5 days ago (with recording and segments) and one live since 40 days;
    transcriptions completed 20 and 2 days ago and one pending since 40; summaries completed 20
    and 1 day ago."""
    t = Tenancy(uuid.uuid4(), uuid.uuid4())
    owner = {"tenant_id": t.tenant_id, "user_id": t.user_id}
    with engine.begin() as db:
        db.execute(insert(Tenant).values(id=t.tenant_id, name=name, recording_allowed=True, created_at=NOW,
                                         **retention))
        db.execute(insert(User).values(id=t.user_id, tenant_id=t.tenant_id, external_id="alice", created_at=NOW))
        for label, state, start, end in (("ended_40", "FINISHED", 40.1, 40), ("ended_20", "CANCELLED", 20.1, 20),
                                         ("ended_5", "FAILED", 5.1, 5), ("live", "ACTIVE", 40, None)):
            session_id = uuid.uuid4()
            path = recordings_dir / f"{name}-{label}.pcm"
            path.write_bytes(b"\x00\x01" * 1600)
            db.execute(insert(StreamSessionRow).values(
                id=session_id, protocol="native", state=state, requested_model_alias="m", resolved_model_name="m",
                start_time=days_ago(start), end_time=days_ago(end) if end is not None else None,
                recording_requested=True, recording_path=str(path), segment_count=2, **owner))
            db.execute(insert(StreamSegmentRow), [
                {"id": uuid.uuid4(), "session_id": session_id, "segment_index": i, "transcript": f"words {i}",
                 "start_seconds": i, "end_seconds": i + 1, "words": [], "created_at": days_ago(start)}
                for i in range(2)])
            t.sessions[label], t.recordings[label] = session_id, path
        for label, status, completed in (("done_20", "COMPLETED", 20), ("done_2", "COMPLETED", 2),
                                         ("pending", "PENDING", None)):
            job_id = uuid.uuid4()
            db.execute(insert(TranscriptionRow).values(
                id=job_id, status=status, source="api", requested_model="m", resolved_model_name="m",
                text="the result" if completed else None, created_at=days_ago(40),
                completed_at=days_ago(completed) if completed is not None else None, **owner))
            db.execute(insert(TranscriptionSegmentRow).values(
                id=uuid.uuid4(), transcription_id=job_id, segment_index=0, transcript="the result", start_seconds=0,
                end_seconds=1, words=[]))
            t.transcriptions[label] = job_id
        for label, completed in (("done_20", 20), ("done_1", 1)):
            summary_id = uuid.uuid4()
            db.execute(insert(SummaryRow).values(
                id=summary_id, status="COMPLETED", transcription_id=t.transcriptions["done_2"],
                prompt_template_id=BUILT_IN_TEMPLATE, text="a summary", created_at=days_ago(completed),
                completed_at=days_ago(completed), **owner))
            t.summaries[label] = summary_id
    return t


def sweep(url: str) -> Purged:
    async def run() -> Purged:
        engine = create_db_engine(url)
        try:
            return await purge_expired(session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def session_state(engine: Engine, session_id: uuid.UUID) -> tuple[bool, bool, int]:
    """(recording purged, content purged, segments left)."""
    with engine.connect() as db:
        row = db.execute(select(StreamSessionRow.recording_purged, StreamSessionRow.purged_at)
                         .where(StreamSessionRow.id == session_id)).one()
        left = db.scalar(select(func.count()).select_from(StreamSegmentRow)
                         .where(StreamSegmentRow.session_id == session_id))
    return row.recording_purged, row.purged_at is not None, left


def job_state(engine: Engine, table: Any, job_id: uuid.UUID) -> tuple[bool, bool, str | None]:
    """(deleted, purged, text)."""
    with engine.connect() as db:
        row = db.execute(select(table.deleted_at, table.purged_at, table.text).where(table.id == job_id)).one()
    return row.deleted_at is not None, row.purged_at is not None, row.text


def test_one_sweep_purges_what_outlived_its_tenants_periods_and_nothing_else(database: str, tmp_path: Path):
    engine = create_sync_engine(database)
    try:
        kept = populate(engine, tmp_path, "keeper", recording_retention_days=30, transcript_retention_days=10,
                        summary_retention_days=5)
        other = populate(engine, tmp_path, "forever")  # no periods: everything stays
        shorter = populate(engine, tmp_path, "shorter", transcript_retention_days=3)  # recordings stay

        purged = sweep(database)

        # keeper: recordings past 30 days, transcripts past 10, summaries past 5
        assert session_state(engine, kept.sessions["ended_40"]) == (True, True, 0)
        assert not kept.recordings["ended_40"].exists()
        assert session_state(engine, kept.sessions["ended_20"]) == (False, True, 0)
        assert kept.recordings["ended_20"].exists()
        assert session_state(engine, kept.sessions["ended_5"]) == (False, False, 2)
        assert session_state(engine, kept.sessions["live"]) == (False, False, 2)  # a live stream is never touched
        assert kept.recordings["live"].exists()
        assert job_state(engine, TranscriptionRow, kept.transcriptions["done_20"]) == (True, True, None)
        assert job_state(engine, TranscriptionRow, kept.transcriptions["done_2"]) == (False, False, "the result")
        assert job_state(engine, TranscriptionRow, kept.transcriptions["pending"]) == (False, False, None)
        with engine.connect() as db:
            segments = dict(db.execute(select(TranscriptionSegmentRow.transcription_id, func.count())
                                       .group_by(TranscriptionSegmentRow.transcription_id)).all())
        assert kept.transcriptions["done_20"] not in segments
        assert segments[kept.transcriptions["done_2"]] == 1
        assert job_state(engine, SummaryRow, kept.summaries["done_20"]) == (True, True, None)
        assert job_state(engine, SummaryRow, kept.summaries["done_1"]) == (False, False, "a summary")

        # another tenant without periods: untouched
        for label in other.sessions:
            assert session_state(engine, other.sessions[label]) == (False, False, 2)
            assert other.recordings[label].exists()
        for label in ("done_20", "done_2"):
            assert job_state(engine, TranscriptionRow, other.transcriptions[label]) == (False, False, "the result")
        for label in other.summaries:
            assert job_state(engine, SummaryRow, other.summaries[label]) == (False, False, "a summary")
        assert all(segments[job_id] == 1 for job_id in other.transcriptions.values())

        # a transcript period alone leaves the recordings (each resource has its own period)
        assert session_state(engine, shorter.sessions["ended_5"]) == (False, True, 0)
        assert all(path.exists() for path in shorter.recordings.values())
        assert job_state(engine, SummaryRow, shorter.summaries["done_20"]) == (False, False, "a summary")

        assert purged == Purged(recordings=1, session_transcripts=2 + 3, transcriptions=1 + 1, summaries=1)
        assert not sweep(database)  # nothing is purged twice
    finally:
        engine.dispose()


def test_a_deleted_job_past_its_period_is_purged_and_keeps_its_deletion_time(database: str, tmp_path: Path):
    engine = create_sync_engine(database)
    try:
        kept = populate(engine, tmp_path, "keeper", transcript_retention_days=10)
        deleted_at = days_ago(15)
        with engine.begin() as db:
            db.execute(TranscriptionRow.__table__.update().where(TranscriptionRow.id == kept.transcriptions["done_20"])
                       .values(deleted_at=deleted_at, purge_at=NOW + timedelta(days=15)))
        sweep(database)
        with engine.connect() as db:
            t = TranscriptionRow
            row = db.execute(select(t.deleted_at, t.text, t.purge_at, t.purged_at)
                             .where(t.id == kept.transcriptions["done_20"])).one()
        assert (row.deleted_at, row.text, row.purge_at) == (deleted_at, None, None)
        assert row.purged_at is not None
    finally:
        engine.dispose()
