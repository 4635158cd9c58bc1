"""Migration 0003: tallies backfilled from the sessions that exist before it, then kept by triggers.

The truth is always the database's own GROUP BY over the visible sessions; the tallies (zero rows
aside) must equal it after the backfill, after any write, from several writers at once, and after
a downgrade and upgrade.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from lectern.store.db import create_sync_engine
from lectern.store.migrate import alembic_config
from lectern.store.models import StreamSessionRow, StreamSessionTally, Tenant, User
from tests.conftest import _fresh_database

STATES = ("CREATED", "ACTIVE", "FINISHED", "CANCELLED", "FAILED")
ALIASES = ("scribe_v2_realtime", "Scribe_V2_Realtime", "odd%alias_x", "odd_alias%x", "nova-2", "")
T0 = datetime(2026, 2, 1, tzinfo=timezone.utc)
S = StreamSessionRow


@pytest.fixture
def engine(backend: str, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of its own (nothing migrated yet)."""
    if backend == "sqlite":
        url, drop = f"sqlite:///{tmp_path / 'lectern.db'}", lambda: None
    else:
        url, drop = _fresh_database(backend)
    engine = create_sync_engine(url)
    yield engine
    engine.dispose()
    drop()


def migrate(engine: Engine, revision: str, *, down: bool = False) -> None:
    with engine.begin() as connection:
        config = alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def owners(engine: Engine) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Two tenants, three users: (tenant_id, user_id) pairs."""
    tenants = [uuid.uuid4(), uuid.uuid4()]
    users = [(tenants[0], uuid.uuid4()), (tenants[0], uuid.uuid4()), (tenants[1], uuid.uuid4())]
    with engine.begin() as db:
        db.execute(insert(Tenant), [{"id": t, "name": f"t-{t.hex[:8]}"} for t in tenants])
        db.execute(insert(User), [{"id": u, "tenant_id": t, "external_id": f"u-{u.hex[:8]}"} for t, u in users])
    return users


def session_values(rng: random.Random, owner: tuple[uuid.UUID, uuid.UUID], **values: Any) -> dict[str, Any]:
    tenant_id, user_id = owner
    return {"id": uuid.uuid4(), "tenant_id": tenant_id, "user_id": user_id, "protocol": "elevenlabs",
            "state": rng.choice(STATES), "requested_model_alias": rng.choice(ALIASES),
            "resolved_model_name": "pocketsphinx-en-us", "recording_requested": rng.random() < 0.4,
            "start_time": T0 + timedelta(seconds=rng.randrange(10**6)),
            "deleted_at": T0 if rng.random() < 0.15 else None, **values}


def assert_exact(db: Connection | Engine) -> int:
    """The tallies equal the GROUP BY over visible sessions; returns how many sessions are visible."""
    if isinstance(db, Engine):
        with db.connect() as connection:
            return assert_exact(connection)
    key = (S.tenant_id, S.user_id, S.state, S.recording_requested, S.requested_model_alias)
    t = StreamSessionTally
    truth = {tuple(r[:5]): r[5] for r in db.execute(select(*key, func.count()).where(S.deleted_at.is_(None))
                                                     .group_by(*key))}
    kept = db.execute(select(t.tenant_id, t.user_id, t.state, t.recording_requested, t.requested_model_alias,
                             t.visible)).all()
    assert all(r[5] >= 0 for r in kept), kept
    assert {tuple(r[:5]): r[5] for r in kept if r[5]} == truth
    return sum(truth.values())


def test_the_backfill_counts_the_sessions_that_exist_before_0003(engine):
    migrate(engine, "0002")
    rng, users = random.Random(3), owners(engine)
    with engine.begin() as db:
        db.execute(insert(S), [session_values(rng, rng.choice(users)) for _ in range(400)])
    migrate(engine, "head")
    visible = assert_exact(engine)
    assert 300 < visible < 400  # some of each: counted and deleted
    with engine.connect() as db:
        assert db.scalar(select(func.count()).select_from(StreamSessionTally)) > 30  # many keys, not one
    migrate(engine, "0002", down=True)  # a downgrade drops table and triggers; upgrading backfills again
    with engine.begin() as db:
        db.execute(insert(S), [session_values(rng, rng.choice(users)) for _ in range(50)])
    migrate(engine, "head")
    assert assert_exact(engine) > visible


def test_the_triggers_follow_every_kind_of_write(engine):
    migrate(engine, "head")
    rng, users = random.Random(5), owners(engine)
    with engine.begin() as db:
        db.execute(insert(S), [session_values(rng, rng.choice(users)) for _ in range(100)])
    assert_exact(engine)
    changes = {  # one key column, visibility, or a column the tallies ignore
        "state": lambda: rng.choice(STATES), "recording_requested": lambda: rng.random() < 0.5,
        "requested_model_alias": lambda: rng.choice(ALIASES), "words_count": lambda: rng.randrange(100),
        "deleted_at": lambda: rng.choice([None, T0, T0 + timedelta(days=1)]),
    }
    for step in range(300):
        with engine.begin() as db:
            ids = db.scalars(select(S.id).order_by(S.id)).all()
            op = rng.randrange(6)
            if op == 0:
                db.execute(insert(S).values(session_values(rng, rng.choice(users))))
            elif op == 1:
                db.execute(delete(S).where(S.id == rng.choice(ids)))
            elif op == 2:  # several columns of one row at once, the owner included
                values = {c: changes[c]() for c in rng.sample(list(changes), rng.randint(1, 3))}
                if rng.random() < 0.3:
                    values["tenant_id"], values["user_id"] = rng.choice(users)
                db.execute(update(S).where(S.id == rng.choice(ids)).values(**values))
            elif op == 3:  # many rows in one statement, as the lease sweeper does
                db.execute(update(S).where(S.state.in_(("CREATED", "ACTIVE")), S.start_time < T0 + timedelta(
                    seconds=rng.randrange(10**6))).values(state="FAILED"))
            elif op == 4:  # the same values again: nothing moves
                row = db.execute(select(S.id, S.state, S.deleted_at).where(S.id == rng.choice(ids))).one()
                db.execute(update(S).where(S.id == row.id).values(state=row.state, deleted_at=row.deleted_at))
            else:
                column = rng.choice(list(changes))
                db.execute(update(S).where(S.id == rng.choice(ids)).values({column: changes[column]()}))
            if step % 25 == 0:
                assert_exact(db)  # inside the writing transaction, too
        if step % 10 == 0:
            assert_exact(engine)
    assert assert_exact(engine) > 0


def test_concurrent_writers_keep_the_tallies_exact(engine):
    """Streams of one user starting, going active and ending at once, on their own connections:
    every write hits the same few tally rows, and keys appear for the first time concurrently."""
    migrate(engine, "head")
    owner = owners(engine)[0]
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            start.wait()
            for n in range(25):
                values = session_values(rng, owner, state="CREATED", deleted_at=None,
                                        requested_model_alias=ALIASES[n % 2], recording_requested=n % 3 == 0)
                with engine.begin() as db:
                    db.execute(insert(S).values(values))
                for step in ({"state": "ACTIVE"}, {"state": rng.choice(STATES[2:])}, {"deleted_at": T0} if n % 4
                             else {"words_count": 3}):
                    with engine.begin() as db:
                        db.execute(update(S).where(S.id == values["id"]).values(**step))
        except BaseException as error:  # noqa: BLE001 -- reported by the test below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert assert_exact(engine) == 6 * sum(1 for n in range(25) if n % 4 == 0)
