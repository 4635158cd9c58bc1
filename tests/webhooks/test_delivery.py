"""Deliveries against a real receiver on 127.0.0.1, on SQLite and (when configured) PostgreSQL:
what arrives and how it verifies, and every outcome of an attempt (down, 5xx, 3xx, 410, timeout,
refused, schedule spent), and that concurrent claimers never deliver one event twice."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select, update
from standardwebhooks.webhooks import Webhook

from lectern.settings import Settings
from lectern.store.db import create_db_engine, session_factory
from lectern.store.migrate import upgrade
from lectern.store.batch_models import WebhookDeliveryRow
from lectern.store.models import Tenant, utcnow
from lectern.webhooks import DELIVERED, DISABLED, FAILED, PENDING, deliver_due, enqueue, make_client
from lectern.webhooks.delivery import _claim, _Outcome, _record
from tests.conftest import BACKENDS, _fresh_database
from tests.webhooks import Receiver, Reply, free_port

Sessions = Any  # async_sessionmaker[AsyncSession]
RFC3339_MICROS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_allow_insecure_hosts": "127.0.0.1",
        "webhook_retry_seconds": "0.2,0.2,0.2",
        "webhook_timeout_seconds": 5.0,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture(scope="module", params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sessions]:
    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp_path_factory.mktemp('webhooks') / 'lectern.db'}", (lambda: None)
    else:
        url, drop = _fresh_database("postgresql")
    await asyncio.to_thread(upgrade, url)
    engine = create_db_engine(url)
    yield session_factory(engine)
    await engine.dispose()
    drop()


@pytest.fixture(scope="module")
async def tenant_id(db: Sessions) -> uuid.UUID:
    tenant = Tenant(name=f"hooks-{uuid.uuid4().hex[:8]}")
    async with db() as s, s.begin():
        s.add(tenant)
    return tenant.id


@pytest.fixture(autouse=True)
async def no_deliveries_left(db: Sessions) -> None:
    # deliver_due takes whatever is due, so each test starts from an empty table.
    async with db() as s, s.begin():
        await s.execute(delete(WebhookDeliveryRow))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


async def add(
    db: Sessions, tenant_id: uuid.UUID, url: str, *, secret: str | None = None,
    headers: dict[str, str] | None = None, event_type: str = "transcription.completed",
) -> WebhookDeliveryRow:
    resource_id = uuid.uuid4()
    async with db() as s, s.begin():
        enqueue(
            s, tenant_id=tenant_id, resource_id=resource_id, event_type=event_type,
            data={"id": resource_id, "status": "COMPLETED"},
            webhook={"url": url, "secret": secret, "headers": headers},
        )
    async with db() as s:
        query = select(WebhookDeliveryRow).where(WebhookDeliveryRow.resource_id == resource_id)
        return (await s.execute(query)).scalar_one()


async def get(db: Sessions, delivery_id: uuid.UUID) -> WebhookDeliveryRow:
    async with db() as s:
        return await s.get_one(WebhookDeliveryRow, delivery_id)


async def poll(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 20.0) -> Any:
    """``check()``'s first truthy result, looked for until a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def deliver_until(
    db: Sessions, config: Settings, client: httpx.AsyncClient, delivery_id: uuid.UUID,
    done: Callable[[WebhookDeliveryRow], bool],
) -> WebhookDeliveryRow:
    """Run deliver_due, as the loop would, until the delivery's row satisfies ``done``."""
    async def step() -> WebhookDeliveryRow | None:
        await deliver_due(db, config, client)
        row = await get(db, delivery_id)
        return row if done(row) else None

    return await poll(step, f"delivery {delivery_id}")


def status_is(*states: str) -> Callable[[WebhookDeliveryRow], bool]:
    return lambda row: row.status in states


@pytest.mark.parametrize("kind", ["whsec", "plain"])
async def test_delivered_signed_with_custom_headers(
    db: Sessions, tenant_id: uuid.UUID, receiver: Receiver, kind: str
) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode() if kind == "whsec" else "a plain secret"
    custom = {"Authorization": "Bearer abc.def", "X-Tenant": "acme"}
    row = await add(db, tenant_id, receiver.url(), secret=secret, headers=custom, event_type="summary.completed")
    config = settings()
    async with make_client(config) as client:
        row = await deliver_until(db, config, client, row.id, status_is(DELIVERED, FAILED))
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (DELIVERED, 1, 200, None)
    assert row.delivered_at is not None and row.message_id.startswith("msg_")
    [request] = receiver.received()
    assert (request.method, request.path) == ("POST", "/hook")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == "Bearer abc.def" and request.headers["x-tenant"] == "acme"
    assert request.headers["webhook-id"] == row.message_id
    assert request.body.decode() == row.body
    verifier = Webhook(secret) if kind == "whsec" else Webhook(secret.encode())
    payload = verifier.verify(request.body, request.headers)
    assert set(payload) == {"type", "timestamp", "data"}
    assert payload["type"] == "summary.completed" and RFC3339_MICROS.fullmatch(payload["timestamp"])
    assert payload["data"] == {"id": str(row.resource_id), "status": "COMPLETED"}


async def test_unsigned_without_secret(db: Sessions, tenant_id: uuid.UUID, receiver: Receiver) -> None:
    row = await add(db, tenant_id, receiver.url())
    config = settings()
    async with make_client(config) as client:
        await deliver_until(db, config, client, row.id, status_is(DELIVERED, FAILED))
    [request] = receiver.received()
    assert "webhook-signature" not in request.headers
    assert request.headers["webhook-id"] == row.message_id
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 300


def test_unknown_event_type_refused() -> None:
    with pytest.raises(ValueError):
        enqueue(None, tenant_id=uuid.uuid4(), resource_id=uuid.uuid4(), event_type="summary.done",  # type: ignore[arg-type]
                data={}, webhook={"url": "https://example.com/"})


async def test_receiver_down_then_up(db: Sessions, tenant_id: uuid.UUID) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    receiver = Receiver(port=free_port())  # the port is closed until the receiver starts
    row = await add(db, tenant_id, receiver.url(), secret=secret)
    config = settings(webhook_retry_seconds=",".join(["0.2"] * 20))
    try:
        async with make_client(config) as client:
            down = await deliver_until(db, config, client, row.id, lambda r: r.attempts >= 1)
            assert (down.status, down.last_status_code) == (PENDING, None)
            assert down.last_error and "ConnectError" in down.last_error
            assert down.next_attempt_at > down.last_attempt_at
            receiver.start()
            up = await deliver_until(db, config, client, row.id, status_is(DELIVERED, FAILED))
    finally:
        receiver.stop()
    assert up.status == DELIVERED and up.attempts >= 2 and up.last_error is None
    [request] = receiver.received()
    Webhook(secret).verify(request.body, request.headers)


async def test_500_then_200(db: Sessions, tenant_id: uuid.UUID) -> None:
    receiver = Receiver(script=[Reply(500)]).start()
    secret = "s3cret"
    row = await add(db, tenant_id, receiver.url(), secret=secret)
    config = settings()
    try:
        async with make_client(config) as client:
            row = await deliver_until(db, config, client, row.id, status_is(DELIVERED, FAILED))
    finally:
        receiver.stop()
    assert (row.status, row.attempts, row.last_status_code) == (DELIVERED, 2, 200)
    first, second = receiver.received()
    # The same message (id and body) each time, signed over each attempt's own timestamp.
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == row.message_id
    assert first.body == second.body
    for request in (first, second):
        Webhook(secret.encode()).verify(request.body, request.headers)


async def test_410_disables(db: Sessions, tenant_id: uuid.UUID) -> None:
    receiver = Receiver(default=Reply(410)).start()
    row = await add(db, tenant_id, receiver.url())
    config = settings()
    try:
        async with make_client(config) as client:
            row = await deliver_until(db, config, client, row.id, lambda r: r.status != PENDING)
            assert (row.status, row.attempts, row.last_status_code) == (DISABLED, 1, 410)
            assert row.next_attempt_at <= utcnow()  # due by time, yet never attempted again
            assert await deliver_due(db, config, client) == 0
    finally:
        receiver.stop()
    assert len(receiver.received()) == 1


async def test_schedule_exhausted_fails(db: Sessions, tenant_id: uuid.UUID) -> None:
    receiver = Receiver(default=Reply(500)).start()
    row = await add(db, tenant_id, receiver.url())
    config = settings(webhook_retry_seconds="0.05,0.05")
    try:
        async with make_client(config) as client:
            row = await deliver_until(db, config, client, row.id, lambda r: r.status != PENDING)
            assert await deliver_due(db, config, client) == 0
    finally:
        receiver.stop()
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (FAILED, 3, 500, "HTTP 500")
    assert row.delivered_at is None
    assert len(receiver.received()) == 3


async def test_timeout_is_a_failed_attempt(db: Sessions, tenant_id: uuid.UUID) -> None:
    receiver = Receiver(script=[Reply(200, delay=60)]).start()  # the first answer comes too late
    row = await add(db, tenant_id, receiver.url())
    config = settings(webhook_timeout_seconds=0.5)
    try:
        async with make_client(config) as client:
            late = await deliver_until(db, config, client, row.id, lambda r: r.attempts >= 1)
            assert (late.status, late.last_status_code) == (PENDING, None)
            assert late.last_error and "timed out" in late.last_error
            row = await deliver_until(db, config, client, row.id, status_is(DELIVERED, FAILED))
    finally:
        receiver.stop()
    assert (row.status, row.attempts) == (DELIVERED, 2)
    assert len(receiver.received()) == 2


async def test_redirect_not_followed(db: Sessions, tenant_id: uuid.UUID, receiver: Receiver) -> None:
    receiver.script.append(Reply(302, {"location": receiver.url("/elsewhere")}))
    row = await add(db, tenant_id, receiver.url())
    config = settings()
    async with make_client(config) as client:
        moved = await deliver_until(db, config, client, row.id, lambda r: r.attempts >= 1)
        assert (moved.status, moved.last_status_code) == (PENDING, 302)
        row = await deliver_until(db, config, client, row.id, status_is(DELIVERED, FAILED))
    assert (row.status, row.attempts) == (DELIVERED, 2)
    assert [r.path for r in receiver.received()] == ["/hook", "/hook"]


@pytest.mark.parametrize("retry_after", ["3600", "Wed, 21 Oct 2099 07:28:00 GMT"])
async def test_retry_after_asking_for_longer_is_honoured(
    db: Sessions, tenant_id: uuid.UUID, receiver: Receiver, retry_after: str
) -> None:
    receiver.default = Reply(503, {"retry-after": retry_after})
    row = await add(db, tenant_id, receiver.url())
    config = settings()
    async with make_client(config) as client:
        row = await deliver_until(db, config, client, row.id, lambda r: r.attempts >= 1)
        assert await deliver_due(db, config, client) == 0  # not due again yet
    assert (row.status, row.last_status_code) == (PENDING, 503)
    wait = row.next_attempt_at - row.last_attempt_at
    assert timedelta(seconds=3599) <= wait <= timedelta(days=1)  # a day at most, however far it asks
    assert len(receiver.received()) == 1


@pytest.mark.parametrize("host", ["localhost", "127.0.0.2"])
async def test_refused_by_guard_fails_at_once(
    db: Sessions, tenant_id: uuid.UUID, receiver: Receiver, host: str
) -> None:
    # localhost: http is not allowed for it; https gets as far as the connection, which resolves
    # to loopback and is refused. 127.0.0.2 is a literal private address, not the allowed one.
    rows = [await add(db, tenant_id, receiver.url(host=host)),
            await add(db, tenant_id, receiver.url(host=host).replace("http:", "https:"))]
    config = settings()
    async with make_client(config) as client:
        for row in rows:
            row = await deliver_until(db, config, client, row.id, lambda r: r.status != PENDING)
            assert (row.status, row.attempts, row.last_status_code) == (FAILED, 1, None)
            assert row.last_error and row.last_error.startswith("refused:")
    assert receiver.received() == []


async def test_concurrent_claimers_deliver_each_once(db: Sessions, tenant_id: uuid.UUID, receiver: Receiver) -> None:
    rows = [await add(db, tenant_id, receiver.url()) for _ in range(40)]
    config = settings()

    async def worker() -> None:
        async with make_client(config) as client:
            while await pending(db):
                await deliver_due(db, config, client, limit=3)

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(4))), timeout=60)
    counts = Counter(r.headers["webhook-id"] for r in receiver.received())
    assert counts == Counter({row.message_id: 1 for row in rows})
    async with db() as s:
        done = (await s.execute(select(WebhookDeliveryRow.status))).scalars().all()
    assert done == [DELIVERED] * 40


async def pending(db: Sessions) -> int:
    async with db() as s:
        return len((await s.execute(select(WebhookDeliveryRow.id).where(WebhookDeliveryRow.status == PENDING))).all())


async def test_lapsed_lease_comes_due_and_a_late_outcome_is_dropped(
    db: Sessions, tenant_id: uuid.UUID, receiver: Receiver
) -> None:
    row = await add(db, tenant_id, receiver.url())
    config = settings()
    [stale] = await _claim(db, config, 10)  # a worker claims it, then hangs past its lease
    assert await _claim(db, config, 10) == []  # held meanwhile
    async with db() as s, s.begin():
        await s.execute(update(WebhookDeliveryRow).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    async with make_client(config) as client:
        row = await deliver_until(db, config, client, row.id, status_is(DELIVERED, FAILED))
    await _record(db, config, stale, _Outcome(status_code=500, error="HTTP 500"))  # the hung worker wakes
    after = await get(db, row.id)
    assert (after.status, after.attempts, after.last_status_code) == (DELIVERED, 1, 200)
    assert len(receiver.received()) == 1


def test_body_is_compact_json(tmp_path: Any) -> None:
    # The stored body is what is signed and sent: plain JSON, non-ASCII kept as UTF-8.
    class Collect:
        added: list[Any] = []

        def add(self, row: Any) -> None:
            self.added.append(row)

    s = Collect()
    enqueue(s, tenant_id=uuid.uuid4(), resource_id=uuid.uuid4(), event_type="transcription.failed",  # type: ignore[arg-type]
            data={"error": "café"}, webhook={"url": "https://example.com/", "secret": "", "headers": None})
    [row] = s.added
    assert json.loads(row.body)["data"] == {"error": "café"} and "café" in row.body and ", " not in row.body
    assert row.secret is None and row.headers == {} and row.status == PENDING
