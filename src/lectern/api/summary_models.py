"""The summaries API's bodies, with the names and fields of seed 001."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lectern.api.job_resources import SpeechServiceWebhook, WebhookView, webhook_view
from lectern.store.batch_models import SummaryRow


class SummaryJobStatus(str, enum.Enum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class SpeechServiceSummaryErrorCode(str, enum.Enum):
    SUMMARIZATION_FAILED = "SUMMARIZATION_FAILED"
    PROMPT_TEMPLATE_NOT_FOUND = "PROMPT_TEMPLATE_NOT_FOUND"
    TRANSCRIPTION_NOT_COMPLETED = "TRANSCRIPTION_NOT_COMPLETED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class SpeechServiceSummaryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transcriptionId: uuid.UUID = Field(description="The ID of the completed transcription to summarize.")
    promptTemplateId: uuid.UUID = Field(description="The ID of the prompt template to use.")
    webhook: SpeechServiceWebhook | None = Field(
        default=None, description="Optional webhook configuration for completion notifications.")


class SpeechServiceSummaryTokenUsage(BaseModel):
    inputTokens: int = Field(description="Tokens in the request.")
    outputTokens: int = Field(description="Tokens in the response.")
    totalTokens: int = Field(description="Total tokens consumed.")


class SpeechServiceSummaryResult(BaseModel):
    text: str = Field(description="The generated summary text.")
    promptTemplateId: uuid.UUID = Field(description="The ID of the template used.")
    usage: SpeechServiceSummaryTokenUsage = Field(description="LLM token usage statistics.")


class SpeechServiceSummaryError(BaseModel):
    code: SpeechServiceSummaryErrorCode = Field(description="Machine-readable error code.")
    message: str = Field(description="Human-readable error message.")
    timestamp: datetime = Field(description="When the error occurred.")


class SpeechServiceSummaryResponse(BaseModel):
    id: uuid.UUID = Field(description="Unique identifier of the summary.")
    transcriptionId: uuid.UUID = Field(description="The ID of the parent transcription job.")
    fileId: uuid.UUID | None = Field(description="The transcription's source file, if it has one.")
    status: SummaryJobStatus = Field(description="Current status of the summary.")
    isDeleted: bool = Field(description="Whether the summary has been deleted.")
    isPurged: bool = Field(description="Whether result/error data has been permanently removed.")
    promptTemplateId: uuid.UUID = Field(description="The ID of the prompt template used.")
    creationDate: datetime = Field(description="Timestamp when created.")
    completionDate: datetime | None = Field(description="Timestamp when completed.")
    deletedAt: datetime | None = Field(description="Timestamp when deleted.")
    purgedAt: datetime | None = Field(description="Timestamp when permanently deleted.")
    purgeAt: datetime | None = Field(description="Scheduled automatic permanent deletion timestamp.")
    result: SpeechServiceSummaryResult | None = Field(
        default=None, description="Summary output. Present only when COMPLETED and not permanently deleted.")
    errors: list[SpeechServiceSummaryError] | None = Field(
        description="List of errors encountered. Cleared when permanently deleted.")
    webhook: WebhookView | None = Field(description="Configured webhook for this summary (its secret is not shown).")


class SpeechServiceSummaryListResponse(BaseModel):
    summaries: list[SpeechServiceSummaryResponse] = Field(description="Array of summary objects (without full result).")
    size: int = Field(description="Number of items returned in this page.")
    total: int = Field(description="Total number of matching items across all pages.")
    filters: dict[str, Any] = Field(description="Echo of applied filters.")
    sort: dict[str, str] = Field(description="Applied sort order (field and direction).")


def summary_result(row: SummaryRow) -> SpeechServiceSummaryResult | None:
    if row.status != SummaryJobStatus.COMPLETED.value or row.purged_at is not None:
        return None
    inputs, outputs = row.input_tokens or 0, row.output_tokens or 0
    return SpeechServiceSummaryResult(
        text=row.text or "",
        promptTemplateId=row.prompt_template_id,
        usage=SpeechServiceSummaryTokenUsage(inputTokens=inputs, outputTokens=outputs, totalTokens=inputs + outputs),
    )


def summary_response(row: SummaryRow, with_result: bool = True) -> SpeechServiceSummaryResponse:
    return SpeechServiceSummaryResponse(
        id=row.id,
        transcriptionId=row.transcription_id,
        fileId=row.file_id,
        status=SummaryJobStatus(row.status),
        isDeleted=row.deleted_at is not None,
        isPurged=row.purged_at is not None,
        promptTemplateId=row.prompt_template_id,
        creationDate=row.created_at,
        completionDate=row.completed_at,
        deletedAt=row.deleted_at,
        purgedAt=row.purged_at,
        purgeAt=row.purge_at,
        result=summary_result(row) if with_result else None,
        errors=[SpeechServiceSummaryError(**e) for e in row.errors] if row.errors else None,
        webhook=webhook_view(row.webhook),
    )
