"""summaries, prompt templates (with the platform's three built-in templates) and their assignments

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa
import lectern.store.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The APPLICATION templates every tenant sees. Their ids are fixed, so clients may name them.
_BUILT_IN = [
    {
        "id": "00000000-0000-4000-8000-00000000a001",
        "name": "Concise summary",
        "description": "A short paragraph: what the conversation was about and what came of it.",
        "kind": "summary",
        "system_prompt": "You write concise, faithful summaries of meeting and call transcripts. Use only what "
                         "the transcript says; do not invent names, numbers or decisions.",
        "user_prompt": "Summarize this transcript from {{date}} in {{language}}, in one paragraph of at most five "
                       "sentences: the topic, the main points and the outcome.\n\nTranscript:\n{{transcript}}",
        "max_output_tokens": 300,
    },
    {
        "id": "00000000-0000-4000-8000-00000000a002",
        "name": "Meeting minutes",
        "description": "Minutes with sections: summary, discussion, decisions and action items.",
        "kind": "minutes",
        "system_prompt": "You take minutes of meetings from their transcripts. Be factual and brief; use only "
                         "what the transcript says.",
        "user_prompt": "Write the minutes of this meeting of {{date}} in {{language}}, in Markdown, with the "
                       "sections Summary, Discussion (bullets), Decisions (bullets) and Action items (bullets: "
                       "owner, task, due date when said).\n\nTranscript:\n{{transcript}}",
        "max_output_tokens": 800,
    },
    {
        "id": "00000000-0000-4000-8000-00000000a003",
        "name": "Action items",
        "description": "The tasks people committed to, with owners and due dates.",
        "kind": "action_items",
        "system_prompt": "You extract action items from meeting transcripts: tasks someone committed to or was "
                         "asked to do. Use only what the transcript says.",
        "user_prompt": "List the action items of this meeting of {{date}} in {{language}}, one bullet each as "
                       "'Owner: task (due date)'; omit the due date when none was said. If there are none, say "
                       "so.\n\nTranscript:\n{{transcript}}",
        "max_output_tokens": 500,
    },
]


def upgrade() -> None:
    op.create_table('prompt_templates',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=True),
    sa.Column('owner_id', sa.Uuid(), nullable=True),
    sa.Column('level', sa.String(length=12), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('system_prompt', sa.Text(), nullable=False),
    sa.Column('user_prompt', sa.Text(), nullable=False),
    sa.Column('max_output_tokens', sa.Integer(), nullable=True),
    sa.Column('temperature', sa.Float(), nullable=True),
    sa.Column('is_global', sa.Boolean(), nullable=False),
    sa.Column('is_global_default', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('created_at', lectern.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', lectern.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', lectern.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], ),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_prompt_templates_tenant', 'prompt_templates', ['tenant_id', 'level'], unique=False)
    op.create_table('prompt_template_assignments',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('template_id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('created_at', lectern.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['template_id'], ['prompt_templates.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('template_id', 'user_id')
    )
    op.create_table('summaries',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('transcription_id', sa.Uuid(), nullable=False),
    sa.Column('file_id', sa.Uuid(), nullable=True),
    sa.Column('prompt_template_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('summarizer', sa.String(length=200), nullable=True),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('input_tokens', sa.Integer(), nullable=True),
    sa.Column('output_tokens', sa.Integer(), nullable=True),
    sa.Column('error_code', sa.String(length=40), nullable=True),
    sa.Column('errors', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('webhook', sa.JSON(none_as_null=True), nullable=True),
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
    sa.ForeignKeyConstraint(['prompt_template_id'], ['prompt_templates.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.ForeignKeyConstraint(['transcription_id'], ['transcriptions.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_summaries_claimable', 'summaries', ['status', 'created_at'], unique=False, sqlite_where=sa.text("status IN ('PENDING', 'IN_PROGRESS')"), postgresql_where=sa.text("status IN ('PENDING', 'IN_PROGRESS')"))
    op.create_index('ix_summaries_file', 'summaries', ['file_id'], unique=False)
    op.create_index('ix_summaries_owner_created', 'summaries', ['tenant_id', 'user_id', 'created_at', 'id'], unique=False)
    op.create_index('ix_summaries_purge_at', 'summaries', ['purge_at'], unique=False, sqlite_where=sa.text('purge_at IS NOT NULL AND purged_at IS NULL'), postgresql_where=sa.text('purge_at IS NOT NULL AND purged_at IS NULL'))
    op.create_index('ix_summaries_transcription', 'summaries', ['transcription_id'], unique=False)

    templates = sa.table(
        "prompt_templates",
        sa.column("id", sa.Uuid()), sa.column("level", sa.String()), sa.column("name", sa.String()),
        sa.column("description", sa.Text()), sa.column("kind", sa.String()), sa.column("system_prompt", sa.Text()),
        sa.column("user_prompt", sa.Text()), sa.column("max_output_tokens", sa.Integer()),
        sa.column("is_global", sa.Boolean()), sa.column("is_global_default", sa.Boolean()),
        sa.column("created_at", lectern.store.models.UTCDateTime()),
        sa.column("updated_at", lectern.store.models.UTCDateTime()),
    )
    now = datetime.now(timezone.utc)
    op.bulk_insert(templates, [
        {**t, "id": uuid.UUID(t["id"]), "level": "APPLICATION", "is_global": True, "is_global_default": False,
         "created_at": now, "updated_at": now}
        for t in _BUILT_IN
    ])


def downgrade() -> None:
    op.drop_index('ix_summaries_transcription', table_name='summaries')
    op.drop_index('ix_summaries_purge_at', table_name='summaries', sqlite_where=sa.text('purge_at IS NOT NULL AND purged_at IS NULL'), postgresql_where=sa.text('purge_at IS NOT NULL AND purged_at IS NULL'))
    op.drop_index('ix_summaries_owner_created', table_name='summaries')
    op.drop_index('ix_summaries_file', table_name='summaries')
    op.drop_index('ix_summaries_claimable', table_name='summaries', sqlite_where=sa.text("status IN ('PENDING', 'IN_PROGRESS')"), postgresql_where=sa.text("status IN ('PENDING', 'IN_PROGRESS')"))
    op.drop_table('summaries')
    op.drop_table('prompt_template_assignments')
    op.drop_index('ix_prompt_templates_tenant', table_name='prompt_templates')
    op.drop_table('prompt_templates')
