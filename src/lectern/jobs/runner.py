"""JobRunner: the background work of one process (``lectern serve`` in-process, or ``lectern worker``).

It claims jobs while it has room to run them (a transcription needs a free recognizer), delivers
webhooks, ends streams and fails jobs whose node died, and purges deleted results when their
retention runs out. Everything is claimed from the database, so any number of runners on any
number of machines share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from lectern.jobs import queue
from lectern.jobs.claimed import ClaimedJob, fail_abandoned
from lectern.jobs.summary import SummaryJob
from lectern.jobs.transcription import TranscriptionJob
from lectern.services import Services, running_services
from lectern.settings import Settings
from lectern.store import job_lifecycle as lifecycle
from lectern.store import retention
from lectern.store import sessions as session_rows
from lectern.store.db import log_failure
from lectern.store.tenants import running_jobs_cap
from lectern.webhooks import run_delivery_loop

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobSource:
    """One kind of job this runner claims: how many at once, and whether it can start one now."""

    job: type[ClaimedJob]
    slots: int
    can_start: Callable[[Services], bool]


def _recognizer_free(services: Services) -> bool:
    # A job needs a recognizer: claim only when one is free, so that a claimed job never waits for
    # a slot while another worker could have run it.
    pool = services.pool
    return pool.ready and pool.can_admit(pool.models.default)


def job_sources(settings: Settings) -> list[JobSource]:
    return [
        JobSource(TranscriptionJob, settings.resolved_job_workers, _recognizer_free),
        JobSource(SummaryJob, settings.summary_workers, lambda _: True),
    ]


class JobRunner:
    def __init__(self, services: Services, sources: list[JobSource]) -> None:
        self._services = services
        self._sources = [source for source in sources if source.slots > 0]
        self._fairness = queue.Fairness(
            # A tenant's own cap is read in the claim; this is the cap of tenants without one.
            default_cap=running_jobs_cap(None, services.settings.tenant_max_running_jobs,
                                         sum(source.slots for source in sources)),
            running_in=tuple(source.job.kind.table for source in sources),
        )
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._running: dict[uuid.UUID, tuple[ClaimedJob, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for source in self._sources:
            self._tasks.append(asyncio.create_task(self._claim_loop(source), name=f"claims-{source.job.kind.noun}"))
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name="job-sweeps"))
        self._tasks.append(asyncio.create_task(run_delivery_loop(self._services.db, self._services.settings),
                                               name="webhook-deliveries"))

    def wake(self) -> None:
        """A job was just created here: look now, not at the next poll."""
        self._wake.set()

    def cancel(self, job_id: uuid.UUID) -> None:
        """The job was cancelled through this process's API: if it runs here, stop it now."""
        running = self._running.get(job_id)
        if running is not None:
            running[0].stop()
            running[1].cancel()

    def job(self, job_id: uuid.UUID) -> ClaimedJob | None:
        """The job, when it runs in this process (for progress finer than the stored figure)."""
        running = self._running.get(job_id)
        return running[0] if running else None

    async def close(self) -> None:
        """Stop, giving running jobs back so that another worker (or this one, restarted) resumes them."""
        for task in self._tasks:
            task.cancel()
        running = list(self._running.values())
        for _, task in running:
            task.cancel()
        await asyncio.gather(*self._tasks, *(task for _, task in running), return_exceptions=True)
        for job, _ in running:
            with contextlib.suppress(Exception):
                await job.release()

    async def _claim_loop(self, source: JobSource) -> None:
        settings = self._services.settings
        table = source.job.kind.table
        while True:
            try:
                mine = sum(1 for job, _ in self._running.values() if isinstance(job, source.job))
                row = None
                if mine < source.slots and source.can_start(self._services):
                    async with self._services.db() as s:
                        row = await queue.claim(s, table, self.worker_id, settings.job_lease_seconds,
                                                settings.job_max_attempts, self._fairness)
                if row is not None:
                    self._run(source.job(self._services, row, self.worker_id))
                    continue
            except Exception as exc:
                log_failure(self._services.db, exc, log, f"claiming a {source.job.kind.noun}")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.job_poll_seconds):
                    await self._wake.wait()

    def _run(self, job: ClaimedJob) -> None:
        task = asyncio.create_task(job.run(), name=f"{job.kind.noun}-{job.id}")
        self._running[job.id] = (job, task)

        def done(_: asyncio.Task[None]) -> None:
            self._running.pop(job.id, None)
            self._wake.set()  # room for another

        task.add_done_callback(done)

    async def _sweep_loop(self) -> None:
        services = self._services
        retention_due = 0.0  # monotonic time of the next retention pass: the first sweep makes one
        while True:
            try:
                ended = await session_rows.fail_lapsed(services.db, lease_seconds=services.settings.lease_seconds)
                if ended:
                    log.warning("ended %d stream(s) whose server stopped renewing their lease", ended)
                for job in (TranscriptionJob, SummaryJob):  # whatever this runner claims itself
                    kind = job.kind
                    failed = await fail_abandoned(services, kind, job.abandoned_code)
                    if failed:
                        log.warning("failed %d %s job(s) whose workers kept stopping", failed, kind.noun)
                    async with services.db() as s:
                        await lifecycle.purge_due(s, kind)
            except Exception as exc:
                log_failure(services.db, exc, log, "the job sweep")
            if time.monotonic() >= retention_due:  # its own try: a failure here never stops the sweeps above
                retention_due = time.monotonic() + services.settings.retention_sweep_seconds
                try:
                    purged = await retention.purge_expired(services.db)
                    if purged:
                        log.info("retention periods ended: purged %s", purged)
                except Exception as exc:
                    log_failure(services.db, exc, log, "the retention sweep")
            await asyncio.sleep(services.settings.sweep_interval_seconds)


async def run_worker(settings: Settings) -> None:
    """``lectern worker``: run jobs until SIGTERM or SIGINT, then give running jobs back."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_services(settings) as services:
        runner = JobRunner(services, job_sources(settings))
        runner.start()
        log.info("worker %s started", runner.worker_id)
        try:
            await stop.wait()
        finally:
            await runner.close()
