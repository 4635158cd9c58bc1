"""One transcription job, run by whichever worker claimed it: the file's audio becomes segments,
each written with the job's progress in one transaction, so a worker that takes the job over
resumes after the last stored segment instead of starting again. An engine worker that dies under
the job is replaced by the pool, and the job resumes the same way on the replacement."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from sqlalchemy import insert, select

from lectern.jobs.claimed import ClaimedJob, JobFailed
from lectern.jobs.queue import COMPLETED
from lectern.services import Services
from lectern.speech.batch import FileTranscription
from lectern.speech.decode import UnsupportedAudio
from lectern.speech.engines.base import RecognizerOptions
from lectern.speech.engines.pool import EngineFailure, PoolExhausted, WorkerDied
from lectern.speech.models import AUTO
from lectern.speech.segmenter import RawSegment
from lectern.speech.text import as_sentence
from lectern.store import transcriptions
from lectern.store.quotas import QuotaExceeded, check_transcription, quotas
from lectern.store.batch_models import FileRow, TranscriptionRow, TranscriptionSegmentRow

# Error codes a failed transcription reports (``errorCode`` and ``errors[].code``), with
# INTERNAL_ERROR (jobs/claimed.py).
AUDIO_DECODING_FAILED = "AUDIO_DECODING_FAILED"
FILE_NOT_FOUND = "FILE_NOT_FOUND"
TRANSCRIPTION_FAILED = "TRANSCRIPTION_FAILED"
WORKER_LOST = "WORKER_LOST"
QUOTA_EXCEEDED = "QUOTA_EXCEEDED"

# How long a job whose engine worker died waits for room on a worker (its replacement loads
# every model first, which takes seconds, more on a busy machine) before it fails.
REPLACEMENT_WAIT_SECONDS = 300.0

log = logging.getLogger(__name__)


class TranscriptionJob(ClaimedJob):
    kind = transcriptions.KIND
    abandoned_code = WORKER_LOST
    row: TranscriptionRow

    def __init__(self, services: Services, row: TranscriptionRow, worker_id: str) -> None:
        super().__init__(services, row, worker_id)
        self._segments = row.segment_count
        self._words = row.words_count
        self._capitalization = bool(row.options.get("capitalization", True))
        self._punctuation = bool(row.options.get("punctuation", True))
        self._resume_at = row.processed_seconds  # the end of the last stored segment
        self._language_asked = None if row.language_code == AUTO else row.language_code  # None: detect it
        self._detected: Counter[str] = Counter()  # words per detected language (a job with language auto)
        self.transcription: FileTranscription | None = None

    async def work(self) -> None:
        try:
            await self._transcribe()
        except UnsupportedAudio as exc:
            raise JobFailed(AUDIO_DECODING_FAILED, str(exc)) from None
        except QuotaExceeded as exc:
            raise JobFailed(QUOTA_EXCEEDED, str(exc)) from None
        except FileNotFoundError:
            raise JobFailed(FILE_NOT_FOUND, "the file's content is no longer stored (it was deleted)") from None
        except EngineFailure as exc:
            raise JobFailed(TRANSCRIPTION_FAILED, f"the speech engine failed: {exc}") from None
        except PoolExhausted:  # realtime streams took the free recognizer first
            await self.release()

    async def _transcribe(self) -> None:
        async with self.services.db() as s:
            file = await s.get(FileRow, self.row.file_id) if self.row.file_id else None
            left = await quotas(s, self.row.tenant_id)
        if file is None or file.deleted_at is not None:
            raise FileNotFoundError(self.row.file_id)
        # The quota was checked when the job was made; other jobs and streams may have spent it
        # since. What this job already processed (a takeover's) is counted in the usage already.
        remaining = None if file.duration_seconds is None else file.duration_seconds - self._resume_at
        if remaining is None or remaining > 0:
            check_transcription(left, remaining)
        async with self.services.blobs.local_path(file.blob_key) as path:
            restarts = 0
            while True:
                self.transcription = FileTranscription(
                    self.services.pool, path, self._resume_at, model=self.row.resolved_model_name,
                    recognizer=RecognizerOptions(keyterms=tuple(self.row.options.get("keyterms", ())),
                                                 language=self._language_asked),
                )
                try:
                    async for segment in self.transcription.segments():
                        await self._store(segment)
                    break
                except WorkerDied:
                    if restarts >= self.services.settings.job_engine_restarts:
                        raise
                    restarts += 1
                    log.warning("transcription %s: its engine worker died; resuming at %.2f s on another "
                                "(restart %d of %d)", self.id, self._resume_at, restarts,
                                self.services.settings.job_engine_restarts)
                    if not await self.services.pool.wait_admissible(self.transcription.model,
                                                                    REPLACEMENT_WAIT_SECONDS):
                        raise
        async with self.services.db() as s:
            texts = await s.scalars(select(TranscriptionSegmentRow.transcript)
                                    .where(TranscriptionSegmentRow.transcription_id == self.id)
                                    .order_by(TranscriptionSegmentRow.segment_index))
            await self.settle(s, COMPLETED, text=" ".join(texts),
                              processed_seconds=max(self.transcription.position, self.row.processed_seconds),
                              **self._language())
            await s.commit()

    def _language(self) -> dict[str, Any]:
        """A detected job's language: the one most of its words were decoded in, and that share
        (ElevenLabs' language_probability). A job taken over counts only the segments it made."""
        if self.row.language_code != AUTO or not self._detected:
            return {}
        language, words = self._detected.most_common(1)[0]
        share = round(words / sum(self._detected.values()), 4)
        return {"language_code": language, "options": {**self.row.options, "language_probability": share}}

    async def _store(self, segment: RawSegment) -> None:
        if segment.language and segment.words:
            self._detected[segment.language] += len(segment.words)
        raw = " ".join(w.text for w in segment.words)
        async with self.services.db() as s:
            await self.renew(s, processed_seconds=segment.closed_at, segment_count=self._segments + 1,
                             words_count=self._words + len(segment.words))
            await s.execute(insert(TranscriptionSegmentRow).values(
                transcription_id=self.id,
                segment_index=self._segments,
                transcript=as_sentence(raw, self._capitalization, self._punctuation),
                confidence=round(sum(w.confidence for w in segment.words) / len(segment.words), 4),
                start_seconds=segment.start,
                end_seconds=segment.end,
                words=[{"word": w.text, "startSeconds": w.start, "endSeconds": w.end,
                        "confidence": round(w.confidence, 4)} for w in segment.words],
            ))
            await s.commit()
        self._segments += 1
        self._words += len(segment.words)
        self._resume_at = segment.closed_at
