"""tenant policies, caps, quotas and retention periods; per-user stream caps; API key descriptions

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


# Every new tenant column is nullable (null: the server's default cap, no quota, content kept) but
# zero_retention_allowed, which existing tenants get as true: they could already use it.
def _tenant_columns() -> list[sa.Column]:
    return [
        sa.Column("zero_retention_allowed", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("max_concurrent_streams", sa.Integer(), nullable=True),
        sa.Column("max_running_jobs", sa.Integer(), nullable=True),
        sa.Column("quota_transcription_minutes", sa.Integer(), nullable=True),
        sa.Column("quota_summaries", sa.Integer(), nullable=True),
        sa.Column("quota_summary_tokens", sa.BigInteger(), nullable=True),
        sa.Column("quota_storage_bytes", sa.BigInteger(), nullable=True),
        sa.Column("recording_retention_days", sa.Integer(), nullable=True),
        sa.Column("transcript_retention_days", sa.Integer(), nullable=True),
        sa.Column("summary_retention_days", sa.Integer(), nullable=True),
    ]


def upgrade() -> None:
    # Plain ALTER TABLE ... ADD COLUMN, never a batch copy: copying `tenants` drops the table that
    # users, keys and sessions reference, which SQLite's foreign keys refuse once rows exist.
    for column in _tenant_columns():
        op.add_column("tenants", column)
    op.add_column("users", sa.Column("max_concurrent_streams", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("description", sa.Text(), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), for the same reason.
    for table, column in (("api_keys", "description"), ("users", "max_concurrent_streams"),
                          *(("tenants", c.name) for c in reversed(_tenant_columns()))):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
