"""Per-caller rate limits for the endpoints that start expensive work (a summary runs an LLM).

A token bucket per user and endpoint, in this process: a node enforces its own limit. Behind a
load balancer spreading one user over N nodes the effective limit is up to N times higher; a
shared (Redis) bucket belongs with the platform-wide quotas and rate limits.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

from lectern.api.errors import ApiError

_MAX_BUCKETS = 100_000  # idle full buckets are dropped beyond this, so memory stays bounded


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``per_minute`` requests a minute per key, in bursts of up to ``per_minute``; 0 disables it."""

    def __init__(self, per_minute: int, what: str) -> None:
        self._rate = per_minute / 60.0
        self._capacity = float(per_minute)
        self._what = what
        self._buckets: dict[uuid.UUID, _Bucket] = {}

    def check(self, key: uuid.UUID) -> None:
        """Take one request from ``key``'s bucket, or raise ApiError 429 with Retry-After."""
        if self._capacity <= 0:
            return
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(self._capacity, now)
        bucket.tokens = min(self._capacity, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            wait = math.ceil((1.0 - bucket.tokens) / self._rate)
            raise ApiError(429, f"too many {self._what}: at most {int(self._capacity)} a minute; retry in {wait} s",
                           headers={"Retry-After": str(wait)})
        bucket.tokens -= 1.0

    def _forget_full(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * self._rate >= self._capacity:
                del self._buckets[key]
