"""indexes for listing sessions in every sort order; a live-only lease index

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ORDERS = [("start", "start_time")] + [(c, c) for c in ("end_time", "duration_ms", "words_count", "segment_count")]
_FILTERS = ["state", "recording_requested", "requested_model_alias"]
_VISIBLE = sa.text("deleted_at IS NULL")


def _create(name: str, columns: list[str]) -> None:
    op.create_index(name, "stream_sessions", columns, sqlite_where=_VISIBLE, postgresql_where=_VISIBLE)


def upgrade() -> None:
    op.drop_index("ix_stream_sessions_live_lease", table_name="stream_sessions")
    leased = sa.text("lease_expires_at IS NOT NULL")
    op.create_index("ix_stream_sessions_lease", "stream_sessions", ["lease_expires_at"],
                    sqlite_where=leased, postgresql_where=leased)
    op.drop_index("ix_stream_sessions_owner_start", table_name="stream_sessions")
    op.drop_index("ix_stream_sessions_tenant_start", table_name="stream_sessions")
    for name, column in _ORDERS:
        _create(f"ix_sessions_owner_{name}", ["tenant_id", "user_id", column, "id", *_FILTERS])
        _create(f"ix_sessions_tenant_{name}", ["tenant_id", column, "id", *_FILTERS])
    if op.get_bind().dialect.name == "postgresql":
        # Without statistics on the expression, PostgreSQL guesses a `modelAlias` filter matches a
        # handful of rows and sorts the whole table instead of walking the listing index.
        op.execute("CREATE STATISTICS st_stream_sessions_lower_alias ON (lower(requested_model_alias)) "
                   "FROM stream_sessions")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP STATISTICS IF EXISTS st_stream_sessions_lower_alias")
    op.drop_index("ix_stream_sessions_lease", table_name="stream_sessions")
    op.create_index("ix_stream_sessions_live_lease", "stream_sessions", ["state", "lease_expires_at"])
    for name, _column in _ORDERS:
        op.drop_index(f"ix_sessions_owner_{name}", table_name="stream_sessions")
        op.drop_index(f"ix_sessions_tenant_{name}", table_name="stream_sessions")
    op.create_index("ix_stream_sessions_owner_start", "stream_sessions", ["tenant_id", "user_id", "start_time"])
    op.create_index("ix_stream_sessions_tenant_start", "stream_sessions", ["tenant_id", "start_time"])
