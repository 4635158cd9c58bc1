"""stream_session_tallies: visible sessions per owner and filter values, kept exact by triggers

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The key of a tally: the owner and the columns the listing filters on besides the start time.
# requested_model_alias is NOT NULL on stream_sessions, so no key part is ever NULL (a NULL would
# make the primary key reject the trigger's insert rather than miscount).
KEY = ["tenant_id", "user_id", "state", "recording_requested", "requested_model_alias"]
_KEY = ", ".join(KEY)
_TRIGGERS = ["stream_sessions_tally_insert", "stream_sessions_tally_update", "stream_sessions_tally_delete"]


def _match(row: str) -> str:
    """`key = OLD.key AND ...`: the tally row of the old session row."""
    return " AND ".join(f"{c} = {row}.{c}" for c in KEY)


def _values(row: str) -> str:
    return ", ".join(f"{row}.{c}" for c in KEY)


# Only a change of an owner, a key column or visibility moves a session between tallies; the
# frequent updates (segment totals, lease renewals) touch none of these and fire nothing.
_WATCHED = ", ".join([*KEY, "deleted_at"])

_SQLITE_INCREMENT = (
    f"INSERT INTO stream_session_tallies ({_KEY}, visible) SELECT {_values('NEW')}, 1 WHERE NEW.deleted_at IS NULL "
    f"ON CONFLICT ({_KEY}) DO UPDATE SET visible = visible + 1;"
)
_SQLITE_DECREMENT = (
    f"UPDATE stream_session_tallies SET visible = visible - 1 WHERE OLD.deleted_at IS NULL AND {_match('OLD')};"
)
_SQLITE_CHANGED = " OR ".join(
    ["(OLD.deleted_at IS NULL) IS NOT (NEW.deleted_at IS NULL)", *(f"OLD.{c} IS NOT NEW.{c}" for c in KEY)]
)
SQLITE = [
    f"CREATE TRIGGER stream_sessions_tally_insert AFTER INSERT ON stream_sessions "
    f"BEGIN {_SQLITE_INCREMENT} END",
    f"CREATE TRIGGER stream_sessions_tally_update AFTER UPDATE OF {_WATCHED} ON stream_sessions "
    f"WHEN {_SQLITE_CHANGED} BEGIN {_SQLITE_DECREMENT} {_SQLITE_INCREMENT} END",
    f"CREATE TRIGGER stream_sessions_tally_delete AFTER DELETE ON stream_sessions "
    f"BEGIN {_SQLITE_DECREMENT} END",
]

# OLD is NULL for an INSERT and NEW for a DELETE, hence the TG_OP tests before either is read.
POSTGRESQL = [
    f"""CREATE FUNCTION stream_session_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    IF OLD.deleted_at IS NULL THEN
      UPDATE stream_session_tallies SET visible = visible - 1 WHERE {_match('OLD')};
    END IF;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    IF NEW.deleted_at IS NULL THEN
      INSERT INTO stream_session_tallies AS t ({_KEY}, visible) VALUES ({_values('NEW')}, 1)
      ON CONFLICT ({_KEY}) DO UPDATE SET visible = t.visible + 1;
    END IF;
  END IF;
  RETURN NULL;
END $$""",
    "CREATE TRIGGER stream_sessions_tally_insert AFTER INSERT ON stream_sessions "
    "FOR EACH ROW EXECUTE FUNCTION stream_session_tally()",
    f"CREATE TRIGGER stream_sessions_tally_update AFTER UPDATE OF {_WATCHED} ON stream_sessions FOR EACH ROW "
    f"WHEN ((OLD.deleted_at IS NULL) IS DISTINCT FROM (NEW.deleted_at IS NULL) "
    f"OR ({_values('OLD')}) IS DISTINCT FROM ({_values('NEW')})) EXECUTE FUNCTION stream_session_tally()",
    "CREATE TRIGGER stream_sessions_tally_delete AFTER DELETE ON stream_sessions "
    "FOR EACH ROW EXECUTE FUNCTION stream_session_tally()",
]

BACKFILL = [
    "DELETE FROM stream_session_tallies",
    f"INSERT INTO stream_session_tallies ({_KEY}, visible) "
    f"SELECT {_KEY}, count(*) FROM stream_sessions WHERE deleted_at IS NULL GROUP BY {_KEY}",
]


def upgrade() -> None:
    op.create_table(
        "stream_session_tallies",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("recording_requested", sa.Boolean(), nullable=False),
        sa.Column("requested_model_alias", sa.String(length=200), nullable=False),
        sa.Column("visible", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(*KEY),
    )
    # Triggers first, then the tallies are rebuilt from the sessions while writers are locked out
    # until commit, so no write is missed or counted twice. On PostgreSQL, CREATE TRIGGER takes
    # that lock. pysqlite runs DDL outside any transaction, so on SQLite the triggers may already
    # have counted a concurrent write: the DELETE drops that, and being the transaction's first
    # write it takes SQLite's write lock before the INSERT reads the sessions.
    for statement in POSTGRESQL if op.get_bind().dialect.name == "postgresql" else SQLITE:
        op.execute(statement)
    for statement in BACKFILL:
        op.execute(statement)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for trigger in _TRIGGERS:
        op.execute(f"DROP TRIGGER {trigger}" + (" ON stream_sessions" if postgresql else ""))
    if postgresql:
        op.execute("DROP FUNCTION stream_session_tally()")
    op.drop_table("stream_session_tallies")
