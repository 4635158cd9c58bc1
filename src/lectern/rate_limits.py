"""Rate limits: named budgets counted per key, per tenant or per client address.

Counting is the `limits` library's sliding window counter, in this process by default or in Redis
when `LECTERN_REDIS_URL` is set, so every node spends from one budget. A limit string is the
library's notation (``60/minute``, ``5/second; 100/minute``); an empty string turns a limit off.

If Redis cannot be reached the request is let through and the outage logged once: a rate limit
protects the service, it must not become the reason the service is down.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.storage import storage_from_string
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from lectern.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Budget:
    """One named limit: ``items`` for each caller (key or address), ``tenant_items`` for a tenant."""

    name: str
    what: str  # for the error: "too many <what>"
    items: tuple[RateLimitItem, ...] = ()
    tenant_items: tuple[RateLimitItem, ...] = ()

    @classmethod
    def parse(cls, name: str, what: str, per_caller: str, per_tenant: str = "") -> Budget:
        return cls(name, what, _items(per_caller), _items(per_tenant))


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a caller stands in the tightest of a budget's limits (the RateLimit-* headers)."""

    limit: int
    remaining: int
    reset_seconds: int


class RateLimited(Exception):
    """A budget is spent; ``retry_after`` whole seconds until one more request fits."""

    def __init__(self, budget: Budget, item: RateLimitItem, retry_after: int) -> None:
        self.budget = budget
        self.retry_after = retry_after
        self.standing = Standing(limit=item.amount, remaining=0, reset_seconds=retry_after)
        per = f"{item.multiples} {item.GRANULARITY.name}s" if item.multiples > 1 else item.GRANULARITY.name
        super().__init__(f"too many {budget.what}: at most {item.amount} a {per}; retry in {retry_after} s")


@dataclass(frozen=True, slots=True)
class Budgets:
    """Every budget the service spends from, as the settings give them."""

    requests: Budget  # every authenticated REST request
    stream_starts: Budget
    uploads: Budget
    token_mints: Budget
    purges: Budget
    summaries: Budget
    auth_failures: Budget  # counted per client address

    @classmethod
    def from_settings(cls, settings: Settings) -> Budgets:
        summaries = f"{settings.summary_create_per_minute}/minute" if settings.summary_create_per_minute else ""
        return cls(
            requests=Budget.parse("requests", "requests", settings.rate_limit_requests,
                                  settings.rate_limit_tenant_requests),
            stream_starts=Budget.parse("stream_starts", "streams started", settings.rate_limit_stream_starts,
                                       settings.rate_limit_tenant_stream_starts),
            uploads=Budget.parse("uploads", "uploads", settings.rate_limit_uploads),
            token_mints=Budget.parse("token_mints", "tokens minted", settings.rate_limit_token_mints),
            purges=Budget.parse("purges", "purges", settings.rate_limit_purges),
            summaries=Budget.parse("summaries", "summary requests", summaries),
            auth_failures=Budget.parse("auth_failures", "failed authentications", settings.rate_limit_auth_failures),
        )


class RateLimits:
    def __init__(self, budgets: Budgets, redis_url: str | None = None, redis_key_prefix: str = "lectern") -> None:
        self.budgets = budgets
        self._storage: Storage = (storage_from_string(_async_uri(redis_url), key_prefix=redis_key_prefix)
                                  if redis_url else MemoryStorage())
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        self._storage_down = False

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(Budgets.from_settings(settings), settings.redis_url, settings.redis_key_prefix)

    async def spend(self, budget: Budget, caller: str, tenant: str | None = None) -> Standing | None:
        """Count one request against ``budget`` for ``caller`` (and ``tenant``); raise RateLimited if
        any of its limits is spent. Returns the standing in the tightest limit."""
        checks = [(item, "caller", caller) for item in budget.items]
        if tenant is not None:
            checks += [(item, "tenant", tenant) for item in budget.tenant_items]
        if not checks:
            return None
        try:
            standings = []
            for item, kind, who in checks:  # each hit is atomic: it counts only if it fits
                if not await self._limiter.hit(item, budget.name, kind, who):
                    raise RateLimited(budget, item, await self._retry_after(item, budget.name, kind, who))
                standings.append(await self._standing(item, budget.name, kind, who))
        except RateLimited:
            raise
        except Exception as exc:  # the storage (Redis) is unreachable: let the request through
            if not self._storage_down:
                log.warning("rate limits are not enforced: their storage failed (%s)", type(exc).__name__)
                self._storage_down = True
            return None
        if self._storage_down:
            log.warning("rate limits are enforced again")
            self._storage_down = False
        return min(standings, key=lambda s: s.remaining)

    async def spent(self, budget: Budget, caller: str) -> RateLimited | None:
        """Whether ``caller`` has already spent ``budget`` (nothing is counted): for failed
        authentications, which are counted only once they have failed."""
        try:
            for item in budget.items:
                if not await self._limiter.test(item, budget.name, "caller", caller):
                    return RateLimited(budget, item, await self._retry_after(item, budget.name, "caller", caller))
        except Exception:
            return None
        return None

    async def _standing(self, item: RateLimitItem, *identifiers: str) -> Standing:
        stats = await self._limiter.get_window_stats(item, *identifiers)
        return Standing(item.amount, stats.remaining, _seconds_until(stats.reset_time))

    async def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        stats = await self._limiter.get_window_stats(item, *identifiers)
        return max(1, _seconds_until(stats.reset_time))


def _items(limit_string: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(limit_string)) if limit_string.strip() else ()


def _seconds_until(epoch_seconds: float) -> int:
    return max(0, math.ceil(epoch_seconds - time.time()))


def _async_uri(redis_url: str) -> str:
    """The library's async Redis scheme for a plain ``redis://`` / ``rediss://`` URL."""
    return redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
