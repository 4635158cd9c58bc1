"""ClaimedJob: what every job a worker has claimed does besides its own work.

It renews the lease while the work runs, stops when the job is cancelled or taken over (noticed
at a heartbeat, at a write, or at once through ``stop`` when the cancel came through this
process), and ends the job as COMPLETED or FAILED with its webhook event in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from lectern.jobs import queue
from lectern.jobs.queue import FAILED, JobLost
from lectern.services import Services
from lectern.store import job_lifecycle
from lectern.store.job_lifecycle import JobKind
from lectern.store.models import rfc3339, utcnow

log = logging.getLogger(__name__)

INTERNAL_ERROR = "INTERNAL_ERROR"


class JobFailed(Exception):
    """The job cannot succeed: ``code`` and the message go into its ``errors``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ClaimedJob(ABC):
    kind: JobKind
    abandoned_code: str = INTERNAL_ERROR  # the error of a job whose workers kept dying

    def __init__(self, services: Services, row: Any, worker_id: str) -> None:
        self.services = services
        self.row = row
        self.worker_id = worker_id
        self._lost = False

    @property
    def id(self) -> Any:
        return self.row.id

    @abstractmethod
    async def work(self) -> None:
        """Do the job and ``settle`` it as COMPLETED; raise JobFailed when it cannot succeed."""

    async def run(self) -> None:
        """Ends the job as COMPLETED or FAILED, or returns quietly when it was cancelled or taken over."""
        task = asyncio.current_task()
        assert task is not None
        heartbeat = asyncio.create_task(self._heartbeat(task), name=f"heartbeat-{self.kind.noun}-{self.id}")
        try:
            try:
                await self.work()
            except JobFailed as exc:
                await self.fail(exc.code, exc.message)
            except (JobLost, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("%s %s failed", self.kind.noun, self.id)
                await self.fail(INTERNAL_ERROR, "an unexpected error occurred; it has been logged")
        except asyncio.CancelledError:
            if not self._lost:
                raise  # the process is shutting down: the runner gives the job back
            task.uncancel()
            log.info("%s %s stopped: cancelled or taken over", self.kind.noun, self.id)
        except JobLost:
            log.info("%s %s stopped: cancelled or taken over", self.kind.noun, self.id)
        finally:
            heartbeat.cancel()

    def stop(self) -> None:
        """Cancelled through this process's API: the runner cancels the task, which must end quietly."""
        self._lost = True

    async def renew(self, s: AsyncSession, **progress: Any) -> None:
        """Extend the lease (recording progress) in ``s``'s transaction; JobLost once the job is not ours."""
        await queue.renew(s, self.kind.table, self.id, self.worker_id, self.services.settings.job_lease_seconds,
                          **progress)

    async def settle(self, s: AsyncSession, status: str, **values: Any) -> None:
        """End the job in ``s``'s transaction with its webhook event; the caller commits."""
        await queue.settle(s, self.kind.table, self.id, self.worker_id, status, **values)
        row = await s.get(self.kind.table, self.id, populate_existing=True)
        job_lifecycle.queue_event(s, self.kind, row)

    async def fail(self, code: str, message: str) -> None:
        error = {"code": code, "message": message, "timestamp": rfc3339(utcnow())}
        async with self.services.db() as s:
            await self.settle(s, FAILED, error_code=code, errors=[error])
            await s.commit()

    async def release(self) -> None:
        """Give the job back unstarted (no resource for it after all); another claim will take it."""
        async with self.services.db() as s:
            await queue.release(s, self.kind.table, self.id, self.worker_id)

    async def _heartbeat(self, task: asyncio.Task[Any]) -> None:
        settings = self.services.settings
        while True:
            await asyncio.sleep(settings.job_heartbeat_seconds)
            try:
                async with self.services.db() as s:
                    await self.renew(s)
                    await s.commit()
            except JobLost:
                self._lost = True
                task.cancel()
                return
            except Exception:
                log.exception("lease renewal failed for %s %s", self.kind.noun, self.id)


async def fail_abandoned(services: Services, kind: JobKind, error_code: str) -> int:
    """Fail the jobs whose worker went silent on their last allowed attempt (nobody may claim them)."""
    async with services.db() as s:
        rows = await queue.abandoned(s, kind.table, services.settings.job_max_attempts)
        for row in rows:
            message = f"the worker processing this {kind.noun} stopped {row.attempts} time(s); it will not be retried"
            row.status, row.completed_at, row.worker_id, row.lease_expires_at = FAILED, utcnow(), None, None
            row.error_code = error_code
            row.errors = [{"code": error_code, "message": message, "timestamp": rfc3339(utcnow())}]
            job_lifecycle.queue_event(s, kind, row)
        await s.commit()
    return len(rows)
