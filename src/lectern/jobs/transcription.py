"""One transcription job, run by whichever worker claimed it: the file's audio becomes segments,
each written with the job's progress in one transaction, so a worker that takes the job over
resumes after the last stored segment instead of starting again."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import insert, select

from lectern.jobs import queue
from lectern.jobs.queue import COMPLETED, FAILED, JobLost
from lectern.services import Services
from lectern.speech.batch import FileTranscription
from lectern.speech.decode import UnsupportedAudio
from lectern.speech.engines.pool import EngineFailure, PoolExhausted
from lectern.speech.segmenter import RawSegment
from lectern.speech.text import as_sentence
from lectern.store import transcriptions as jobs
from lectern.store.models import FileRow, TranscriptionRow, TranscriptionSegmentRow, utcnow

log = logging.getLogger(__name__)

# Error codes a failed transcription reports (``errorCode`` and ``errors[].code``).
AUDIO_DECODING_FAILED = "AUDIO_DECODING_FAILED"
FILE_NOT_FOUND = "FILE_NOT_FOUND"
TRANSCRIPTION_FAILED = "TRANSCRIPTION_FAILED"
WORKER_LOST = "WORKER_LOST"
INTERNAL_ERROR = "INTERNAL_ERROR"


class TranscriptionJob:
    def __init__(self, services: Services, job: TranscriptionRow, worker_id: str) -> None:
        self._services = services
        self._job = job
        self._worker_id = worker_id
        self._lost = False
        self._segments = job.segment_count
        self._words = job.words_count
        self._capitalization = bool(job.options.get("capitalization", True))
        self._punctuation = bool(job.options.get("punctuation", True))
        self.transcription: FileTranscription | None = None

    @property
    def id(self) -> Any:
        return self._job.id

    async def run(self) -> None:
        """Ends the job as COMPLETED or FAILED, or returns quietly when it was cancelled or taken over."""
        work = asyncio.current_task()
        assert work is not None
        heartbeat = asyncio.create_task(self._heartbeat(work), name=f"job-heartbeat-{self.id}")
        try:
            await self._run()
        except asyncio.CancelledError:
            if not self._lost:
                raise
            work.uncancel()
            log.info("transcription %s stopped: cancelled or taken over", self.id)
        except JobLost:
            log.info("transcription %s stopped: cancelled or taken over", self.id)
        finally:
            heartbeat.cancel()

    async def _run(self) -> None:
        try:
            await self._transcribe()
        except UnsupportedAudio as exc:
            await self._fail(AUDIO_DECODING_FAILED, str(exc))
        except FileNotFoundError:
            await self._fail(FILE_NOT_FOUND, "the file's content is no longer stored (it was deleted)")
        except EngineFailure as exc:
            await self._fail(TRANSCRIPTION_FAILED, f"the speech engine failed: {exc}")
        except PoolExhausted:  # realtime streams took the free recognizer first: give the job back
            async with self._services.db() as s:
                await queue.release(s, TranscriptionRow, self.id, self._worker_id)
        except (JobLost, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("transcription %s failed", self.id)
            await self._fail(INTERNAL_ERROR, "an unexpected error occurred; it has been logged")

    async def _transcribe(self) -> None:
        async with self._services.db() as s:
            file = await s.get(FileRow, self._job.file_id) if self._job.file_id else None
        if file is None or file.deleted_at is not None:
            raise FileNotFoundError(self._job.file_id)
        async with self._services.blobs.local_path(file.blob_key) as path:
            self.transcription = FileTranscription(self._services.pool, path, self._job.processed_seconds,
                                                   keyterms=tuple(self._job.options.get("keyterms", ())))
            async for segment in self.transcription.segments():
                await self._store(segment)
        await self._complete(file.duration_seconds)

    async def _store(self, segment: RawSegment) -> None:
        raw = " ".join(w.text for w in segment.words)
        confidence = round(sum(w.confidence for w in segment.words) / len(segment.words), 4)
        async with self._services.db() as s:
            await queue.renew(s, TranscriptionRow, self.id, self._worker_id, self._services.settings.job_lease_seconds,
                              processed_seconds=segment.closed_at, segment_count=self._segments + 1,
                              words_count=self._words + len(segment.words))
            await s.execute(insert(TranscriptionSegmentRow).values(
                transcription_id=self.id,
                segment_index=self._segments,
                transcript=as_sentence(raw, self._capitalization, self._punctuation),
                confidence=confidence,
                start_seconds=segment.start,
                end_seconds=segment.end,
                words=[{"word": w.text, "startSeconds": w.start, "endSeconds": w.end,
                        "confidence": round(w.confidence, 4)} for w in segment.words],
            ))
            await s.commit()
        self._segments += 1
        self._words += len(segment.words)

    async def _complete(self, duration: float) -> None:
        async with self._services.db() as s:
            texts = await s.scalars(select(TranscriptionSegmentRow.transcript)
                                    .where(TranscriptionSegmentRow.transcription_id == self.id)
                                    .order_by(TranscriptionSegmentRow.segment_index))
            position = self.transcription.position if self.transcription else duration
            await queue.settle(s, TranscriptionRow, self.id, self._worker_id, COMPLETED,
                               text=" ".join(texts), processed_seconds=max(position, self._job.processed_seconds))
            await self._queue_event(s)
            await s.commit()

    async def _fail(self, code: str, message: str) -> None:
        error = {"code": code, "message": message, "timestamp": utcnow().isoformat()}
        async with self._services.db() as s:
            await queue.settle(s, TranscriptionRow, self.id, self._worker_id, FAILED, error_code=code, errors=[error])
            await self._queue_event(s)
            await s.commit()

    async def _queue_event(self, s: Any) -> None:
        row = await s.get(TranscriptionRow, self.id, populate_existing=True)
        jobs.queue_event(s, row)

    async def _heartbeat(self, work: asyncio.Task[Any]) -> None:
        """Renew the lease; a job cancelled (or taken over) elsewhere stops here within one beat."""
        settings = self._services.settings
        while True:
            await asyncio.sleep(settings.job_heartbeat_seconds)
            try:
                async with self._services.db() as s:
                    await queue.renew(s, TranscriptionRow, self.id, self._worker_id, settings.job_lease_seconds)
                    await s.commit()
            except JobLost:
                self._lost = True
                work.cancel()
                return
            except Exception:
                log.exception("lease renewal failed for transcription %s", self.id)

    def stop(self) -> None:
        """Cancelled through this process's API: stop at once rather than at the next heartbeat."""
        self._lost = True


async def fail_abandoned(services: Services) -> int:
    """Fail the jobs whose worker went silent on their last allowed attempt."""
    settings = services.settings
    async with services.db() as s:
        rows = await queue.abandoned(s, TranscriptionRow, settings.job_max_attempts)
        for row in rows:
            message = (f"the worker processing this transcription stopped {row.attempts} time(s); "
                       "it will not be retried")
            row.status, row.completed_at, row.worker_id, row.lease_expires_at = FAILED, utcnow(), None, None
            row.error_code = WORKER_LOST
            row.errors = [{"code": WORKER_LOST, "message": message, "timestamp": utcnow().isoformat()}]
            jobs.queue_event(s, row)
        await s.commit()
    return len(rows)
