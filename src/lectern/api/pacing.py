"""Download bandwidth per tenant: one token bucket per tenant, shared by all of that tenant's
recording and file downloads in this process.

A per-request limit lets a tenant multiply its share by opening parallel downloads (12 of them got
7 MiB/s against 1 MiB/s); the bucket paces them together, and each tenant has its own, so one
tenant's downloads never slow another's. Waiters are served in the order they asked (a reservation
moves the bucket's clock forward), so parallel downloads of one tenant share its rate evenly.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import Request

from lectern.settings import Settings

MAX_CHUNK = 64 * 1024


class Pacer:
    """A token bucket of ``bytes_per_second`` holding at most ``burst`` bytes (0: unlimited).

    Kept as the time at which the bucket will be full again (GCRA): a take of n bytes moves it
    n / rate later and waits until the bucket holds them, so by any moment at most
    ``burst + rate * elapsed`` bytes have been let through.
    """

    def __init__(self, bytes_per_second: int) -> None:
        self.bytes_per_second = bytes_per_second
        # A tenth of a second's allowance per chunk, so that no download (a small range included)
        # gets a long head start; the burst is one chunk.
        self.chunk_size = MAX_CHUNK if bytes_per_second <= 0 else max(1024, min(MAX_CHUNK, bytes_per_second // 10))
        self.burst = self.chunk_size
        self._full_at = 0.0

    async def take(self, n: int) -> None:
        if self.bytes_per_second <= 0:
            return
        now = time.monotonic()
        self._full_at = max(self._full_at, now) + n / self.bytes_per_second
        wait = self._full_at - self.burst / self.bytes_per_second - now
        if wait > 0:
            await asyncio.sleep(wait)

    async def paced(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``chunks``, each let through once the bucket allows it (split to at most ``chunk_size``)."""
        async for chunk in chunks:
            for at in range(0, len(chunk), self.chunk_size):
                piece = chunk[at:at + self.chunk_size]
                await self.take(len(piece))
                yield piece


class Pacers:
    """One Pacer per tenant, made on its first download; this process's share of the setting."""

    def __init__(self, bytes_per_second: int) -> None:
        self.bytes_per_second = bytes_per_second
        self._by_tenant: dict[uuid.UUID, Pacer] = {}

    def of(self, tenant_id: uuid.UUID) -> Pacer:
        pacer = self._by_tenant.get(tenant_id)
        if pacer is None:
            pacer = self._by_tenant[tenant_id] = Pacer(self.bytes_per_second)
        return pacer


def download_pacer(request: Request, tenant_id: uuid.UUID) -> Pacer:
    """The tenant's pacer in this app (made with the app's first download: no startup hook needed)."""
    state = request.app.state
    pacers: Pacers | None = getattr(state, "download_pacers", None)
    if pacers is None:
        settings = state.services.settings
        pacers = state.download_pacers = Pacers(download_bytes_per_second(settings))
    return pacers.of(tenant_id)


def download_bytes_per_second(settings: Settings) -> int:
    """The per-tenant rate: LECTERN_DOWNLOAD_BYTES_PER_SECOND_PER_TENANT, else the older
    LECTERN_RECORDING_DOWNLOAD_BYTES_PER_SECOND (which now means per tenant as well)."""
    per_tenant = settings.download_bytes_per_second_per_tenant
    return per_tenant if per_tenant is not None else settings.recording_download_bytes_per_second
