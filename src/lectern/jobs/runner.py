"""JobRunner: the background work of one process (``lectern serve`` in-process, or ``lectern worker``).

It claims transcription jobs while it has recognizer slots to run them, delivers webhooks, ends
streams and fails jobs whose node died, and purges deleted results when their retention runs out.
Everything is claimed from the database, so any number of runners on any number of machines
share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid

from lectern.jobs import queue
from lectern.jobs.transcription import TranscriptionJob, fail_abandoned
from lectern.services import Services, running_services
from lectern.settings import Settings
from lectern.store import sessions as session_rows
from lectern.store import transcriptions as jobs
from lectern.store.models import TranscriptionRow
from lectern.webhooks import run_delivery_loop

log = logging.getLogger(__name__)

class JobRunner:
    def __init__(self, services: Services, slots: int) -> None:
        self._services = services
        self._slots = slots
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._running: dict[uuid.UUID, tuple[TranscriptionJob, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self._slots:
            self._tasks.append(asyncio.create_task(self._claim_loop(), name="job-claims"))
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

    def progress(self, job_id: uuid.UUID) -> float | None:
        """Seconds of audio recognized so far, when the job runs here (finer than the stored figure)."""
        running = self._running.get(job_id)
        transcription = running[0].transcription if running else None
        return transcription.position if transcription else None

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
                async with self._services.db() as s:
                    await queue.release(s, TranscriptionRow, job.id, self.worker_id)

    async def _claim_loop(self) -> None:
        settings = self._services.settings
        pool = self._services.pool
        while True:
            try:
                # A job needs a recognizer: claim only when one is free, so that a claimed job never
                # waits for a slot while another worker could have run it.
                free = pool.ready and len(self._running) < self._slots and pool.active_streams < pool.capacity
                job = None
                if free:
                    async with self._services.db() as s:
                        job = await queue.claim(s, TranscriptionRow, self.worker_id, settings.job_lease_seconds,
                                                settings.job_max_attempts)
                if job is not None:
                    self._run(job)
                    continue
            except Exception:
                log.exception("claiming a job failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.job_poll_seconds):
                    await self._wake.wait()

    def _run(self, row: TranscriptionRow) -> None:
        job = TranscriptionJob(self._services, row, self.worker_id)
        task = asyncio.create_task(job.run(), name=f"transcription-{row.id}")
        self._running[row.id] = (job, task)

        def done(_: asyncio.Task[None]) -> None:
            self._running.pop(row.id, None)
            self._wake.set()  # a slot is free

        task.add_done_callback(done)

    async def _sweep_loop(self) -> None:
        while True:
            try:
                ended = await session_rows.fail_lapsed(self._services.db)
                if ended:
                    log.warning("ended %d stream(s) whose server stopped renewing their lease", ended)
                failed = await fail_abandoned(self._services)
                if failed:
                    log.warning("failed %d transcription(s) whose workers kept stopping", failed)
                async with self._services.db() as s:
                    await jobs.purge_due(s)
            except Exception:
                log.exception("job sweep failed")
            await asyncio.sleep(self._services.settings.sweep_interval_seconds)


async def run_worker(settings: Settings) -> None:
    """``lectern worker``: run jobs until SIGTERM or SIGINT, then give running jobs back."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_services(settings) as services:
        runner = JobRunner(services, settings.resolved_job_workers)
        runner.start()
        log.info("worker %s running %d job(s) at a time", runner.worker_id, settings.resolved_job_workers)
        try:
            await stop.wait()
        finally:
            await runner.close()
