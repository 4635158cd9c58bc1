"""Who may open a stream, for every protocol alike: rate limits on failed authentications and on
stream starts, caps on open streams per tenant and per user (counted across nodes), and the
tenant's transcription quota. Each refusal is a StreamError the adapters render in their own shape.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from lectern.auth.principal import AuthError, Principal
from lectern.rate_limits import RateLimited
from lectern.realtime.errors import ErrorKind, StreamError
from lectern.services import Services
from lectern.store import stream_admission
from lectern.store.stream_admission import Admitted, Refusal

QUOTA_EXHAUSTED = "The tenant's monthly transcription minutes quota is used up."


def rate_limited(exc: RateLimited) -> StreamError:
    return StreamError(ErrorKind.RATE_LIMITED, f"Rate limit exceeded: {exc}.")


@contextlib.asynccontextmanager
async def authentication_attempt(services: Services, address: str) -> AsyncIterator[None]:
    """Around checking credentials: an address past its failed-authentication budget is refused
    before they are looked at (RATE_LIMITED), and an AuthError raised inside is counted."""
    limits = services.rate_limits
    refused = await limits.spent(limits.budgets.auth_failures, address)
    if refused is not None:
        raise rate_limited(refused)
    try:
        yield
    except AuthError:
        await count_failed_authentication(services, address)
        raise


async def count_failed_authentication(services: Services, address: str) -> None:
    """For credentials refused outside ``authentication_attempt`` (e.g. a key of another tenant)."""
    limits = services.rate_limits
    with contextlib.suppress(RateLimited):  # refused from now on; this attempt gets its auth error
        await limits.spend(limits.budgets.auth_failures, address)


async def spend_stream_start(services: Services, principal: Principal) -> None:
    """One stream start from the caller's key (a JWT caller: its user) and its tenant's budgets."""
    limits = services.rate_limits
    caller = str(principal.api_key_id or principal.user_id)
    try:
        await limits.spend(limits.budgets.stream_starts, caller, str(principal.tenant_id))
    except RateLimited as exc:
        raise rate_limited(exc) from None


async def create_row(services: Services, values: dict[str, Any], model: str) -> float | None:
    """Create the stream's row if the tenant and user are under their caps and the tenant has
    minutes left; returns the seconds of the quota left (None: unlimited), else StreamError."""
    settings = services.settings
    result = await stream_admission.create_within_caps(
        services.db, values, settings.lease_seconds, settings.tenant_max_streams, services.pool.capacity(model))
    if isinstance(result, Admitted):
        return result.seconds_left
    raise _refused(result)


async def stream_quota(services: Services, tenant_id: uuid.UUID, session_id: uuid.UUID) -> tuple[int, float | None]:
    """The stream's recorded duration (ms) and its tenant's quota left then (seconds; None: unlimited)."""
    return await stream_admission.stream_quota(services.db, tenant_id, session_id)


def quota_exceeded() -> StreamError:
    return StreamError(ErrorKind.QUOTA_EXCEEDED, QUOTA_EXHAUSTED)


def _refused(refusal: Refusal) -> StreamError:
    if refusal.reason == "quota":
        return quota_exceeded()
    who = "tenant" if refusal.reason == "tenant_streams" else "user"
    return StreamError(
        ErrorKind.CONCURRENCY_LIMIT,
        f"Concurrent stream limit reached: this {who} may have at most {refusal.limit} streams open at once.",
    )
