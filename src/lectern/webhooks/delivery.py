"""Webhook deliveries: an event becomes a row in its job's own transaction, and a loop in every
server claims due rows and POSTs them, retrying on Standard Webhooks' schedule.

Outcomes of one attempt: a 2xx delivers; ``410 Gone`` disables (the receiver asked us to stop);
a refusal by the SSRF guard fails the delivery at once, since it is policy, not a passing fault of
the receiver, and retrying for days would only delay the news; anything else (3xx, 4xx, 5xx, a
connection error, a timeout) is retried after the next wait of ``LECTERN_WEBHOOK_RETRY_SECONDS``,
and fails once the schedule is spent.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lectern.settings import Settings
from lectern.store.batch_models import WebhookDeliveryRow
from lectern.store.db import log_failure
from lectern.store.models import rfc3339, utcnow
from lectern.webhooks.guard import GuardedTransport, WebhookRefused, allowed_hosts, check_webhook
from lectern.webhooks.signing import sign

log = logging.getLogger(__name__)

EVENT_TYPES = frozenset({
    "transcription.completed", "transcription.failed", "transcription.cancelled",
    "summary.completed", "summary.failed", "summary.cancelled",
})
PENDING, DELIVERED, FAILED, DISABLED = "PENDING", "DELIVERED", "FAILED", "DISABLED"

# A claim holds a delivery for the attempt's timeout plus this, then lets it come due again (the
# worker died); DNS and the database writes around the attempt fit in it.
LEASE_MARGIN_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 86400.0  # a receiver's Retry-After is honoured up to a day
MAX_ERROR_CHARS = 500

Sessions = async_sessionmaker[AsyncSession]


def _json_default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def enqueue(
    s: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    resource_id: uuid.UUID,
    event_type: str,
    data: dict[str, Any],
    webhook: dict[str, Any],
) -> None:
    """Add the delivery of one event to ``s``; the caller commits it with the state it announces.

    ``webhook`` is ``{"url", "secret" (or None), "headers" (or None)}``, as checked when it was
    submitted; it is checked again at each attempt, not here, so that a job's terminal transaction
    never fails on its webhook. ``data`` may hold UUIDs and datetimes.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    now = utcnow()
    # Serialized once: every attempt sends, and signs, the same bytes.
    body = json.dumps(
        {"type": event_type, "timestamp": rfc3339(now), "data": data},
        separators=(",", ":"), ensure_ascii=False, default=_json_default,
    )
    s.add(WebhookDeliveryRow(
        message_id=f"msg_{secrets.token_hex(16)}",
        tenant_id=tenant_id,
        resource_id=resource_id,
        event_type=event_type,
        url=webhook["url"],
        secret=webhook.get("secret") or None,
        headers=dict(webhook.get("headers") or {}),
        body=body,
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    ))


def retry_schedule(settings: Settings) -> list[float]:
    """The waits before each retry; a delivery is attempted at most ``len(...) + 1`` times."""
    return [float(w) for w in settings.webhook_retry_seconds.split(",") if w.strip()]


def make_client(settings: Settings) -> httpx.AsyncClient:
    """The delivery client: SSRF-guarded connections, no redirects, no proxies from the environment."""
    return httpx.AsyncClient(
        transport=GuardedTransport(allowed_hosts(settings.webhook_allow_insecure_hosts)),
        follow_redirects=False,
        trust_env=False,
        timeout=settings.webhook_timeout_seconds,
        headers={"user-agent": "Lectern-Webhooks/1"},
    )


@dataclass(frozen=True)
class _Claimed:
    id: uuid.UUID
    message_id: str
    url: str
    secret: str | None
    headers: dict[str, str]
    body: str
    attempts: int
    lease: datetime  # the next_attempt_at this claim wrote: whoever still finds it there owns the row


@dataclass(frozen=True)
class _Outcome:
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    final: str | None = None  # DELIVERED, DISABLED or FAILED; None: retry if the schedule allows


async def deliver_due(db: Sessions, settings: Settings, client: httpx.AsyncClient, limit: int = 20) -> int:
    """Attempt up to ``limit`` due deliveries (concurrently); returns how many were claimed."""
    claimed = await _claim(db, settings, limit)
    if claimed:
        await asyncio.gather(*(_deliver_one(db, settings, client, c) for c in claimed))
    return len(claimed)


async def _claim(db: Sessions, settings: Settings, limit: int) -> list[_Claimed]:
    """Take due deliveries and push their next_attempt_at past the attempt (the lease), in one
    statement: PostgreSQL locks the chosen rows with SKIP LOCKED, so concurrent claimers take
    different rows; SQLite runs the UPDATE under its single writer lock, which it takes before
    reading, so a second claimer sees the first one's lease."""
    now = utcnow()
    lease = now + timedelta(seconds=settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS)
    due = (WebhookDeliveryRow.status == PENDING, WebhookDeliveryRow.next_attempt_at <= now)
    chosen = (
        select(WebhookDeliveryRow.id)
        .where(*due)
        .order_by(WebhookDeliveryRow.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)  # not rendered on SQLite
    )
    T = WebhookDeliveryRow
    async with db() as s, s.begin():
        rows = (await s.execute(
            update(T)
            .where(T.id.in_(chosen), *due)
            .values(next_attempt_at=lease)
            .returning(T.id, T.message_id, T.url, T.secret, T.headers, T.body, T.attempts)
        )).all()
    return [
        _Claimed(r.id, r.message_id, r.url, r.secret, dict(r.headers or {}), r.body, r.attempts, lease)
        for r in rows
    ]


async def _deliver_one(db: Sessions, settings: Settings, client: httpx.AsyncClient, claimed: _Claimed) -> None:
    try:
        outcome = await _attempt(settings, client, claimed)
        await _record(db, settings, claimed, outcome)
    except Exception:  # one bad delivery must not stop the others; its lease brings it back
        log.exception("webhook delivery %s (%s) failed unexpectedly", claimed.id, claimed.message_id)


async def _attempt(settings: Settings, client: httpx.AsyncClient, claimed: _Claimed) -> _Outcome:
    try:
        # Checked again: the allowed hosts may have changed since the webhook was submitted.
        check_webhook(claimed.url, claimed.headers, allowed_hosts(settings.webhook_allow_insecure_hosts))
        timestamp = int(time.time())
        headers = {
            **claimed.headers,
            "content-type": "application/json",
            "webhook-id": claimed.message_id,
            "webhook-timestamp": str(timestamp),
        }
        if claimed.secret:
            headers["webhook-signature"] = sign(claimed.secret, claimed.message_id, timestamp, claimed.body)
    except (WebhookRefused, ValueError) as exc:  # ValueError: a secret that is no key
        return _Outcome(error=_short(f"refused: {exc}"), final=FAILED)
    try:
        # httpx's timeout bounds each phase; this bounds the whole attempt, which the lease relies on.
        async with asyncio.timeout(settings.webhook_timeout_seconds):
            # Streamed and never read: a receiver's response body is of no interest, whatever its size.
            async with client.stream("POST", claimed.url, content=claimed.body.encode(), headers=headers) as response:
                status, retry_after = response.status_code, _retry_after(response.headers.get("retry-after"))
    except WebhookRefused as exc:
        return _Outcome(error=_short(f"refused: {exc}"), final=FAILED)
    except (TimeoutError, httpx.TimeoutException):
        return _Outcome(error=f"timed out after {settings.webhook_timeout_seconds:g} s")
    except httpx.HTTPError as exc:
        return _Outcome(error=_short(f"{type(exc).__name__}: {exc}"))
    except Exception as exc:  # a bug, or a surprise from a library: retried like a network fault
        log.exception("webhook delivery %s: unexpected error", claimed.message_id)
        return _Outcome(error=_short(f"{type(exc).__name__}: {exc}"))
    if 200 <= status < 300:
        return _Outcome(status_code=status, final=DELIVERED)
    if status == 410:
        return _Outcome(status_code=status, error="410 Gone: the receiver disabled this webhook", final=DISABLED)
    error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
    return _Outcome(status_code=status, error=error, retry_after=retry_after)


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds or as an HTTP date, as seconds from now; None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - utcnow()).total_seconds())


def _short(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 1] + "…"


async def _record(db: Sessions, settings: Settings, claimed: _Claimed, outcome: _Outcome) -> None:
    now = utcnow()
    attempts = claimed.attempts + 1
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_attempt_at": now,
        "last_status_code": outcome.status_code,
        "last_error": outcome.error,
        "next_attempt_at": now,
    }
    schedule = retry_schedule(settings)
    if outcome.final is not None:
        values["status"] = outcome.final
        if outcome.final == DELIVERED:
            values["delivered_at"] = now
    elif attempts <= len(schedule):
        wait = schedule[attempts - 1]
        if outcome.retry_after is not None:
            wait = max(wait, min(outcome.retry_after, MAX_RETRY_AFTER_SECONDS))
        values["next_attempt_at"] = now + timedelta(seconds=wait)
    else:
        values["status"] = FAILED
    T = WebhookDeliveryRow
    async with db() as s, s.begin():
        result = await s.execute(
            update(T)
            .where(T.id == claimed.id, T.status == PENDING, T.next_attempt_at == claimed.lease)
            .values(**values)
        )
    if not result.rowcount:
        # Our lease lapsed and another worker claimed the delivery: its outcome is the one kept.
        log.warning("webhook delivery %s: lease lost, outcome %s not recorded", claimed.id, outcome)


async def run_delivery_loop(db: Sessions, settings: Settings, poll_seconds: float = 1.0) -> None:
    """Deliver due webhooks until cancelled, sleeping ``poll_seconds`` whenever nothing was due."""
    async with make_client(settings) as client:
        while True:
            try:
                delivered = await deliver_due(db, settings, client)
            except Exception as exc:  # the database away, say: try again after a pause
                log_failure(db, exc, log, "the webhook delivery loop")
                delivered = 0
            if not delivered:
                await asyncio.sleep(poll_seconds)
