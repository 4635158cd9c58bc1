"""files, transcription jobs and their segments, webhook deliveries

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import lectern.store.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('resource_id', sa.Uuid(), nullable=False),
    sa.Column('event_type', sa.String(length=60), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('secret', sa.Text(), nullable=True),
    sa.Column('headers', sa.JSON(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', lectern.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_attempt_at', lectern.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', lectern.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', lectern.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('message_id')
    )
    op.create_index('ix_webhook_deliveries_due', 'webhook_deliveries', ['next_attempt_at'], unique=False, sqlite_where=sa.text("status = 'PENDING'"), postgresql_where=sa.text("status = 'PENDING'"))
    op.create_index('ix_webhook_deliveries_resource', 'webhook_deliveries', ['resource_id'], unique=False)
    op.create_table('files',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=500), nullable=False),
    sa.Column('filename', sa.String(length=500), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('path', sa.String(length=1000), nullable=False),
    sa.Column('content_type', sa.String(length=200), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('duration_seconds', sa.Float(), nullable=False),
    sa.Column('container', sa.String(length=100), nullable=False),
    sa.Column('codec', sa.String(length=100), nullable=False),
    sa.Column('sample_rate', sa.Integer(), nullable=False),
    sa.Column('channels', sa.Integer(), nullable=False),
    sa.Column('metadata', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('blob_key', sa.String(length=300), nullable=False),
    sa.Column('created_at', lectern.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', lectern.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', lectern.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_files_owner_created', 'files', ['tenant_id', 'user_id', 'created_at', 'id'], unique=False)
    op.create_index('ix_files_tenant_sha256', 'files', ['tenant_id', 'sha256'], unique=False)
    op.create_table('transcriptions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('file_id', sa.Uuid(), nullable=True),
    sa.Column('session_id', sa.Uuid(), nullable=True),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('requested_model', sa.String(length=200), nullable=False),
    sa.Column('resolved_model_name', sa.String(length=200), nullable=False),
    sa.Column('language_code', sa.String(length=16), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('webhook', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('duration_seconds', sa.Float(), nullable=True),
    sa.Column('processed_seconds', sa.Float(), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('segment_count', sa.Integer(), nullable=False),
    sa.Column('words_count', sa.Integer(), nullable=False),
    sa.Column('error_code', sa.String(length=40), nullable=True),
    sa.Column('errors', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('worker_id', sa.String(length=100), nullable=True),
    sa.Column('lease_expires_at', lectern.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', lectern.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('started_at', lectern.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('completed_at', lectern.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', lectern.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('purge_at', lectern.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('purged_at', lectern.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['file_id'], ['files.id'], ),
    sa.ForeignKeyConstraint(['session_id'], ['stream_sessions.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_transcriptions_claimable', 'transcriptions', ['status', 'created_at'], unique=False, sqlite_where=sa.text("status IN ('PENDING', 'IN_PROGRESS')"), postgresql_where=sa.text("status IN ('PENDING', 'IN_PROGRESS')"))
    op.create_index('ix_transcriptions_file', 'transcriptions', ['file_id'], unique=False)
    op.create_index('ix_transcriptions_owner_created', 'transcriptions', ['tenant_id', 'user_id', 'created_at', 'id'], unique=False)
    op.create_index('ix_transcriptions_purge_at', 'transcriptions', ['purge_at'], unique=False, sqlite_where=sa.text('purge_at IS NOT NULL AND purged_at IS NULL'), postgresql_where=sa.text('purge_at IS NOT NULL AND purged_at IS NULL'))
    op.create_table('transcription_segments',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('transcription_id', sa.Uuid(), nullable=False),
    sa.Column('segment_index', sa.Integer(), nullable=False),
    sa.Column('transcript', sa.Text(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('start_seconds', sa.Float(), nullable=False),
    sa.Column('end_seconds', sa.Float(), nullable=False),
    sa.Column('words', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['transcription_id'], ['transcriptions.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('transcription_id', 'segment_index')
    )


def downgrade() -> None:
    op.drop_table('transcription_segments')
    op.drop_index('ix_transcriptions_purge_at', table_name='transcriptions', sqlite_where=sa.text('purge_at IS NOT NULL AND purged_at IS NULL'), postgresql_where=sa.text('purge_at IS NOT NULL AND purged_at IS NULL'))
    op.drop_index('ix_transcriptions_owner_created', table_name='transcriptions')
    op.drop_index('ix_transcriptions_file', table_name='transcriptions')
    op.drop_index('ix_transcriptions_claimable', table_name='transcriptions', sqlite_where=sa.text("status IN ('PENDING', 'IN_PROGRESS')"), postgresql_where=sa.text("status IN ('PENDING', 'IN_PROGRESS')"))
    op.drop_table('transcriptions')
    op.drop_index('ix_files_tenant_sha256', table_name='files')
    op.drop_index('ix_files_owner_created', table_name='files')
    op.drop_table('files')
    op.drop_index('ix_webhook_deliveries_resource', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_due', table_name='webhook_deliveries', sqlite_where=sa.text("status = 'PENDING'"), postgresql_where=sa.text("status = 'PENDING'"))
    op.drop_table('webhook_deliveries')
