"""`GET /api/v1/quotas`: the caller's tenant's quotas, what it has used and what is left."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.api.deps import authenticated, database
from lectern.api.errors import problem_responses
from lectern.auth.principal import Principal
from lectern.store import quotas as store
from lectern.store.quotas import QuotaEntry as StoredEntry

router = APIRouter(prefix="/api/v1/quotas", tags=["Quotas"])


class QuotaEntry(BaseModel):
    limit: int | None = Field(description="null: no limit")
    used: int
    available: int | None = Field(description="limit - used, never below 0; null: no limit")

    @classmethod
    def of(cls, entry: StoredEntry) -> QuotaEntry:
        return cls(limit=entry.limit, used=entry.used, available=entry.available)


class SpeechServiceQuotas(BaseModel):
    storage: QuotaEntry = Field(description="bytes of files and recordings kept")
    transcription: QuotaEntry = Field(description="minutes this calendar month (UTC), realtime and batch together")
    summaries: QuotaEntry = Field(description="summaries requested this calendar month")
    summaryTokens: QuotaEntry = Field(description="LLM tokens (prompt and completion) of this month's summaries")


class QuotasResponse(BaseModel):
    speech_service: SpeechServiceQuotas = Field(alias="speech-service")


@router.get("", summary="Get Quotas", response_model=QuotasResponse, response_model_by_alias=True,
            responses=problem_responses(401))
async def get_quotas(
    caller: Annotated[Principal, Depends(authenticated)],
    db: Annotated[AsyncSession, Depends(database)],
) -> QuotasResponse:
    """Quotas are per tenant; every authenticated caller may read its own tenant's."""
    q = await store.quotas(db, caller.tenant_id)
    return QuotasResponse.model_validate({"speech-service": SpeechServiceQuotas(
        storage=QuotaEntry.of(q.storage_bytes), transcription=QuotaEntry.of(q.transcription_minutes),
        summaries=QuotaEntry.of(q.summaries), summaryTokens=QuotaEntry.of(q.summary_tokens))})
