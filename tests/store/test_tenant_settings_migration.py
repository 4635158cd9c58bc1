"""Migration 0006 on a database that already has tenants, users and keys (at 0005): the rows keep
working, existing tenants may still use zero retention, and every new cap, quota and period is
unset (null) until the operator sets it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.engine import Engine

from lectern.auth import keys
from lectern.store.db import create_db_engine, create_sync_engine, session_factory
from lectern.store.migrate import alembic_config
from lectern.store.models import ApiKey, Tenant, User, utcnow
from lectern.store.tenants import TENANT_SETTINGS, running_jobs_cap, stream_cap
from tests.conftest import _fresh_database

NEW_TENANT_COLUMNS = {s.column for s in TENANT_SETTINGS} - {"recording_allowed"}


@pytest.fixture
def engine(backend: str, tmp_path: Path) -> Iterator[Engine]:
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


def authenticate(engine: Engine, plaintext: str) -> str:
    async def run() -> str:
        db_engine = create_db_engine(engine.url.render_as_string(hide_password=False))
        try:
            async with session_factory(db_engine)() as db:
                return (await keys.authenticate_api_key(db, plaintext)).user_name
        finally:
            await db_engine.dispose()

    return asyncio.run(run())


def test_0006_upgrades_a_0005_database_with_its_tenants_users_and_keys(engine: Engine):
    migrate(engine, "0005")
    tenant_id, user_id = uuid.uuid4(), uuid.uuid4()
    plaintext = keys.API_KEY_PREFIX + "an-existing-key-made-before-0006-xxxxxxxxxxxx"
    with engine.begin() as db:  # rows as 0005 knows them: only the columns it has
        db.execute(text("INSERT INTO tenants (id, name, recording_allowed, created_at) VALUES (:id, 'old', false, :t)"),
                   {"id": tenant_id.hex if engine.dialect.name == "sqlite" else tenant_id, "t": utcnow()})
        db.execute(insert(User.__table__).values(id=user_id, tenant_id=tenant_id, external_id="olga",
                                                 created_at=utcnow()))
        db.execute(text("INSERT INTO api_keys (id, tenant_id, user_id, name, prefix, secret_hash, scopes, created_at) "
                        "VALUES (:id, :tenant, :user, 'old key', :prefix, :hash, '[]', :t)"),
                   {"id": uuid.uuid4().hex if engine.dialect.name == "sqlite" else uuid.uuid4(),
                    "tenant": tenant_id.hex if engine.dialect.name == "sqlite" else tenant_id,
                    "user": user_id.hex if engine.dialect.name == "sqlite" else user_id,
                    "prefix": plaintext[:10], "hash": keys._digest(plaintext), "t": utcnow()})

    migrate(engine, "head")

    columns = {c["name"] for c in inspect(engine).get_columns("tenants")}
    assert NEW_TENANT_COLUMNS <= columns
    with engine.connect() as db:
        tenant = db.execute(select(Tenant.__table__).where(Tenant.id == tenant_id)).mappings().one()
        user = db.execute(select(User.__table__).where(User.id == user_id)).mappings().one()
        key = db.execute(select(ApiKey.__table__).where(ApiKey.tenant_id == tenant_id)).mappings().one()
    assert tenant["recording_allowed"] is False  # kept
    assert tenant["zero_retention_allowed"] is True  # existing tenants could use it before
    assert {c: tenant[c] for c in NEW_TENANT_COLUMNS - {"zero_retention_allowed"}} == dict.fromkeys(
        NEW_TENANT_COLUMNS - {"zero_retention_allowed"})
    assert user["max_concurrent_streams"] is None
    assert (key["name"], key["description"]) == ("old key", None)
    assert authenticate(engine, plaintext) == "olga"  # the key made before 0006 still works

    # the ORM writes every new column
    with engine.begin() as db:
        db.execute(Tenant.__table__.update().where(Tenant.id == tenant_id).values(
            zero_retention_allowed=False, max_concurrent_streams=3, quota_storage_bytes=5 * 2**40,
            summary_retention_days=7))
    with engine.connect() as db:
        row = db.execute(select(Tenant.zero_retention_allowed, Tenant.max_concurrent_streams,
                                Tenant.quota_storage_bytes, Tenant.summary_retention_days)).one()
    assert tuple(row) == (False, 3, 5 * 2**40, 7)  # storage quotas beyond 32 bits

    migrate(engine, "0005", down=True)
    assert NEW_TENANT_COLUMNS.isdisjoint({c["name"] for c in inspect(engine).get_columns("tenants")})
    migrate(engine, "head")
    assert authenticate(engine, plaintext) == "olga"


def test_caps_resolve_user_then_tenant_then_server_then_a_share_of_the_node():
    assert stream_cap(2, 5, 8, 6) == 2  # the user's override
    assert stream_cap(None, 5, 8, 6) == 5  # the tenant's
    assert stream_cap(None, None, 8, 6) == 8  # LECTERN_TENANT_MAX_STREAMS
    assert stream_cap(None, None, None, 6) == 4  # three quarters of the node: room for other tenants
    assert stream_cap(None, None, None, 1) == 1  # never none at all
    assert stream_cap(0, 5, None, 6) == 0  # an explicit 0 is a cap (no streams), not "unset"
    assert running_jobs_cap(3, 1, 2) == 3
    assert running_jobs_cap(None, 1, 2) == 1
    assert running_jobs_cap(None, None, 8) == 6
