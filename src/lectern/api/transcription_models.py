"""The transcriptions API's request and response bodies (camelCase, as the platform's other resources)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lectern.api.job_resources import SpeechServiceWebhook, WebhookView, webhook_view
from lectern.store.batch_models import TranscriptionRow, TranscriptionSegmentRow


class TranscriptionStatus(str, enum.Enum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class LanguageOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaultLanguageCode: str | None = Field(
        default=None, max_length=35,
        description="The audio's language; none: detected by a multilingual model, English on the others.")


class TranscriptionOptions(BaseModel):
    """How to transcribe; the fields of the platform's `transcription` object."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default="general", min_length=1, max_length=200, description="A model alias.")
    language: LanguageOptions = LanguageOptions()
    punctuation: bool = Field(default=True, description="End each segment with a full stop.")
    capitalization: bool = Field(default=True, description="Capitalize each segment's first word.")


class DiarizationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False


class CreateTranscriptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fileId: uuid.UUID | None = Field(default=None, description="An uploaded file to transcribe.")
    sessionId: uuid.UUID | None = Field(
        default=None, description="A finished streaming session: its segments become the result at once.")
    transcription: TranscriptionOptions = TranscriptionOptions()
    diarization: DiarizationOptions = DiarizationOptions()
    webhook: SpeechServiceWebhook | None = None


class TranscriptionWord(BaseModel):
    word: str
    startSeconds: float
    endSeconds: float
    confidence: float | None
    segmentIndex: int


class TranscriptionSegment(BaseModel):
    segmentIndex: int
    text: str
    startSeconds: float
    endSeconds: float
    confidence: float | None


class SpeechServiceTranscriptionResult(BaseModel):
    text: str
    languageCode: str
    durationMilliseconds: int
    segments: list[TranscriptionSegment]
    words: list[TranscriptionWord]


class SpeechServiceTranscriptionError(BaseModel):
    code: str = Field(description="Machine-readable error code.")
    message: str
    timestamp: datetime


class SpeechServiceTranscriptionResponse(BaseModel):
    id: uuid.UUID
    fileId: uuid.UUID | None
    sessionId: uuid.UUID | None
    status: TranscriptionStatus
    model: str = Field(description="The model alias requested.")
    resolvedModelName: str
    languageCode: str
    punctuation: bool
    capitalization: bool
    durationMilliseconds: int | None = Field(description="Duration of the audio.")
    processedMilliseconds: int = Field(description="Audio transcribed so far.")
    segmentCount: int
    wordsCount: int
    isDeleted: bool
    isPurged: bool
    creationDate: datetime
    startDate: datetime | None
    completionDate: datetime | None
    deletedAt: datetime | None
    purgedAt: datetime | None
    purgeAt: datetime | None
    result: SpeechServiceTranscriptionResult | None = Field(
        default=None, description="Present only when COMPLETED and not purged; never in list responses.")
    errorCode: str | None
    errors: list[SpeechServiceTranscriptionError] | None
    webhook: WebhookView | None


class SpeechServiceTranscriptionListResponse(BaseModel):
    transcriptions: list[SpeechServiceTranscriptionResponse]
    page: int
    size: int = Field(description="Number of items returned in this page.")
    total: int = Field(description="Total number of matching items across all pages.")
    filters: dict[str, Any] = Field(description="Echo of applied filters.")
    sort: dict[str, str] = Field(description="Applied sort order (field and direction).")


def job_response(row: TranscriptionRow, result: SpeechServiceTranscriptionResult | None = None,
                 processed_seconds: float | None = None) -> SpeechServiceTranscriptionResponse:
    processed = processed_seconds if processed_seconds is not None else row.processed_seconds
    return SpeechServiceTranscriptionResponse(
        id=row.id,
        fileId=row.file_id,
        sessionId=row.session_id,
        status=TranscriptionStatus(row.status),
        model=row.requested_model,
        resolvedModelName=row.resolved_model_name,
        languageCode=row.language_code,
        punctuation=bool(row.options.get("punctuation", True)),
        capitalization=bool(row.options.get("capitalization", True)),
        durationMilliseconds=round(row.duration_seconds * 1000) if row.duration_seconds is not None else None,
        processedMilliseconds=round(processed * 1000),
        segmentCount=row.segment_count,
        wordsCount=row.words_count,
        isDeleted=row.deleted_at is not None,
        isPurged=row.purged_at is not None,
        creationDate=row.created_at,
        startDate=row.started_at,
        completionDate=row.completed_at,
        deletedAt=row.deleted_at,
        purgedAt=row.purged_at,
        purgeAt=row.purge_at,
        result=result,
        errorCode=row.error_code,
        errors=[SpeechServiceTranscriptionError(**e) for e in row.errors] if row.errors else None,
        webhook=webhook_view(row.webhook),
    )


def result_body(row: TranscriptionRow, segments: list[TranscriptionSegmentRow]) -> SpeechServiceTranscriptionResult:
    return SpeechServiceTranscriptionResult(
        text=row.text or "",
        languageCode=row.language_code,
        durationMilliseconds=round((row.duration_seconds or row.processed_seconds) * 1000),
        segments=[
            TranscriptionSegment(segmentIndex=s.segment_index, text=s.transcript, startSeconds=s.start_seconds,
                                 endSeconds=s.end_seconds, confidence=s.confidence)
            for s in segments
        ],
        words=[
            TranscriptionWord(word=w["word"], startSeconds=w["startSeconds"], endSeconds=w["endSeconds"],
                              confidence=w.get("confidence"), segmentIndex=s.segment_index)
            for s in segments
            for w in s.words
        ],
    )
