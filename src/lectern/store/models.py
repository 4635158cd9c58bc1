"""Tables. The database is the source of truth: tenants, users, keys, tokens, stream sessions and
their segments are rows here; files, jobs and webhook deliveries in ``batch_models``."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    BigInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(moment: datetime) -> str:
    """A UTC instant as the APIs and webhooks write it: ``2026-11-21T04:09:01.390694Z``."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite returns naive datetimes otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    """A customer, and what it may do: its policies, caps, quotas and retention periods.

    A null cap or quota is "the server's default" for caps (settings) and "no limit" for quotas;
    a null retention period keeps content until someone deletes it.
    """

    __tablename__ = "tenants"
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    recording_allowed: Mapped[bool] = mapped_column(Boolean, default=True)
    # A server default (fetched back on insert), so that inserts written for older schemas still work.
    zero_retention_allowed: Mapped[bool] = mapped_column(Boolean, server_default=true())  # enable_logging=false
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Caps on what runs at once (null: LECTERN_TENANT_MAX_STREAMS / LECTERN_TENANT_MAX_RUNNING_JOBS).
    max_concurrent_streams: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_running_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Monthly quotas (calendar month, UTC) and storage; null: unlimited.
    quota_transcription_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)  # realtime + batch
    quota_summaries: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_summary_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    quota_storage_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Retention in days, enforced by the sweeper (store/retention.py); null: kept.
    recording_retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transcript_retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    summary_retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)


class User(Base):
    """A user is known by its external name within its tenant (API-key owner or JWT ``sub``)."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "external_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    external_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    max_concurrent_streams: Mapped[int | None] = mapped_column(Integer, nullable=True)  # null: the tenant's cap


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SingleUseToken(Base):
    __tablename__ = "single_use_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_type: Mapped[str] = mapped_column(String(40))
    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# The sessions API lists one user's (or, for tenant admins, one tenant's) visible sessions in
# one of five orders, with a total. Each order has an index that serves both the owner filter
# and the order (tie-broken by id), partial on deleted_at IS NULL, and carries the other filter
# columns, so that whichever index the planner picks, a filtered count reads the index alone.
_SORTED_BY = ("end_time", "duration_ms", "words_count", "segment_count")
_FILTERS = ("state", "recording_requested", "requested_model_alias")


def _listing_indexes() -> list[Index]:
    visible = text("deleted_at IS NULL")
    where = {"sqlite_where": visible, "postgresql_where": visible}
    indexes = []
    for name, column in (("start", "start_time"), *((c, c) for c in _SORTED_BY)):
        indexes.append(Index(f"ix_sessions_owner_{name}", "tenant_id", "user_id", column, "id", *_FILTERS, **where))
        indexes.append(Index(f"ix_sessions_tenant_{name}", "tenant_id", column, "id", *_FILTERS, **where))
    return indexes


class StreamSessionRow(Base):
    """One realtime stream, whatever protocol opened it."""

    __tablename__ = "stream_sessions"
    __table_args__ = (
        # Only live sessions hold a lease; keeping ended ones out keeps the sweeper's index tiny
        # and keeps the planner from taking it for a `state = FINISHED` listing filter.
        Index(
            "ix_stream_sessions_lease",
            "lease_expires_at",
            sqlite_where=text("lease_expires_at IS NOT NULL"),
            postgresql_where=text("lease_expires_at IS NOT NULL"),
        ),
        *_listing_indexes(),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    protocol: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(12))
    requested_model_alias: Mapped[str] = mapped_column(String(200))
    resolved_model_name: Mapped[str] = mapped_column(String(200))
    used_fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    language_code: Mapped[str] = mapped_column(String(16), default="en")
    start_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    duration_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    words_count: Mapped[int] = mapped_column(Integer, default=0)
    segment_count: Mapped[int] = mapped_column(Integer, default=0)
    recording_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    recording_path: Mapped[str | None] = mapped_column(String(500), nullable=True)
    recording_purged: Mapped[bool] = mapped_column(Boolean, default=False)
    recording_purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    keep_transcript: Mapped[bool] = mapped_column(Boolean, default=True)
    client_address: Mapped[str] = mapped_column(String(100), default="")
    user_agent: Mapped[str | None] = mapped_column(String(500), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON(none_as_null=True), nullable=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StreamSessionTally(Base):
    """How many visible (not deleted) sessions share one owner and one value of each list filter.

    Kept exact by database triggers on ``stream_sessions`` (migration 0003), so every writer counts,
    whatever its code path. A listing's total is a sum over a few of these rows instead of a count
    over the tenant's sessions, and a ``modelAlias`` filter is resolved here to exact aliases.
    Rows whose count falls to 0 stay (the table holds one row per key ever seen).
    """

    __tablename__ = "stream_session_tallies"

    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    state: Mapped[str] = mapped_column(String(12), primary_key=True)
    recording_requested: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    requested_model_alias: Mapped[str] = mapped_column(String(200), primary_key=True)  # NOT NULL on sessions too
    visible: Mapped[int] = mapped_column(Integer)


class StreamSegmentRow(Base):
    """A committed transcript segment; its words are kept inline as JSON (read together, never alone)."""

    __tablename__ = "stream_segments"
    __table_args__ = (UniqueConstraint("session_id", "segment_index"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("stream_sessions.id"))
    segment_index: Mapped[int] = mapped_column(Integer)
    transcript: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    start_seconds: Mapped[float] = mapped_column(Float)
    end_seconds: Mapped[float] = mapped_column(Float)
    words: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

