"""Tables of the batch side: files, transcription and summary jobs, prompt templates, webhook deliveries.

Jobs (transcriptions, summaries) are claimed by workers from their own table: ``worker_id`` and
``lease_expires_at`` say who works on one until when (see ``jobs/queue.py``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from lectern.store.models import Base, UTCDateTime, utcnow


class JobColumns:
    """What every job table has: its status and outcome, its webhook, the claim (``worker_id`` and
    ``lease_expires_at`` say who works on it until when; a lapsed lease lets another worker take it
    over), and its deletion and purge."""

    status: Mapped[str] = mapped_column(String(12))
    webhook: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims so far, takeovers included
    worker_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    purge_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


def job_indexes(table: str) -> tuple[Index, ...]:
    """The owner's listing; the claim query's (only jobs a worker may take are in it); the purge sweeper's."""
    claimable = text("status IN ('PENDING', 'IN_PROGRESS')")
    purgeable = text("purge_at IS NOT NULL AND purged_at IS NULL")
    return (
        Index(f"ix_{table}_owner_created", "tenant_id", "user_id", "created_at", "id"),
        Index(f"ix_{table}_claimable", "status", "created_at", sqlite_where=claimable, postgresql_where=claimable),
        Index(f"ix_{table}_purge_at", "purge_at", sqlite_where=purgeable, postgresql_where=purgeable),
    )


class FileRow(Base):
    """An uploaded audio file: its bytes are a blob (``blob_key``), everything known of it is here."""

    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_owner_created", "tenant_id", "user_id", "created_at", "id"),
        Index("ix_files_tenant_sha256", "tenant_id", "sha256"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(500))
    filename: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    path: Mapped[str] = mapped_column(String(1000), default="/")  # a virtual folder, for the user's own order
    content_type: Mapped[str | None] = mapped_column(String(200), nullable=True)  # as the client declared it
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    duration_seconds: Mapped[float] = mapped_column(Float)
    container: Mapped[str] = mapped_column(String(100))  # detected, e.g. "wav", "ogg", "mp3"
    codec: Mapped[str] = mapped_column(String(100))
    sample_rate: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON(none_as_null=True), nullable=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    blob_key: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TranscriptionRow(JobColumns, Base):
    """A transcription job, and once COMPLETED its result's summary (segments are their own rows)."""

    __tablename__ = "transcriptions"
    __table_args__ = (*job_indexes("transcriptions"), Index("ix_transcriptions_file", "file_id"))

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    file_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("files.id"), nullable=True)
    session_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("stream_sessions.id"), nullable=True)
    source: Mapped[str] = mapped_column(String(20))  # api | upload | session | elevenlabs
    requested_model: Mapped[str] = mapped_column(String(200))
    resolved_model_name: Mapped[str] = mapped_column(String(200))
    language_code: Mapped[str] = mapped_column(String(16), default="en")
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # of the audio
    processed_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # progress, and where a takeover resumes
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    segment_count: Mapped[int] = mapped_column(Integer, default=0)
    words_count: Mapped[int] = mapped_column(Integer, default=0)


class TranscriptionSegmentRow(Base):
    """One segment of a transcription's result, written as the job makes it (a takeover resumes after it)."""

    __tablename__ = "transcription_segments"
    __table_args__ = (UniqueConstraint("transcription_id", "segment_index"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    transcription_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("transcriptions.id"))
    segment_index: Mapped[int] = mapped_column(Integer)
    transcript: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    start_seconds: Mapped[float] = mapped_column(Float)
    end_seconds: Mapped[float] = mapped_column(Float)
    words: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class WebhookDeliveryRow(Base):
    """One event to deliver to one webhook URL; retried until it succeeds, gives up, or is refused.

    The body is stored as sent, so every attempt carries the same bytes, id and signature base.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            sqlite_where=text("status = 'PENDING'"),
            postgresql_where=text("status = 'PENDING'"),
        ),
        Index("ix_webhook_deliveries_resource", "resource_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)  # `webhook-id`, the receiver's idempotency key
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    resource_id: Mapped[uuid.UUID] = mapped_column(Uuid)  # the transcription or summary
    event_type: Mapped[str] = mapped_column(String(60))
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12))  # PENDING | DELIVERED | FAILED | DISABLED
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PromptTemplateRow(Base):
    """A summary prompt: the platform's (APPLICATION, no tenant), a tenant's (TENANT) or a user's (USER).

    Deleting one hides it (``deleted_at``); summaries that name it then fail with
    PROMPT_TEMPLATE_NOT_FOUND instead of losing their reference.
    """

    __tablename__ = "prompt_templates"
    __table_args__ = (Index("ix_prompt_templates_tenant", "tenant_id", "level"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenants.id"), nullable=True)
    owner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), nullable=True)  # USER level
    level: Mapped[str] = mapped_column(String(12))  # USER | TENANT | APPLICATION
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    kind: Mapped[str] = mapped_column(String(20))  # summary | minutes | action_items
    system_prompt: Mapped[str] = mapped_column(Text)
    user_prompt: Mapped[str] = mapped_column(Text)
    max_output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)
    is_global: Mapped[bool] = mapped_column(Boolean, default=False)
    is_global_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PromptTemplateAssignmentRow(Base):
    """A template assigned to a user (beside the tenant's global ones), perhaps as their default."""

    __tablename__ = "prompt_template_assignments"
    __table_args__ = (UniqueConstraint("template_id", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("prompt_templates.id"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SummaryRow(JobColumns, Base):
    """A summary job of a COMPLETED transcription through a prompt template; claimed like transcriptions."""

    __tablename__ = "summaries"
    __table_args__ = (
        *job_indexes("summaries"),
        Index("ix_summaries_transcription", "transcription_id"),
        Index("ix_summaries_file", "file_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    transcription_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("transcriptions.id"))
    file_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("files.id"), nullable=True)
    prompt_template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("prompt_templates.id"))
    summarizer: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the backend (and model) used
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    input_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
