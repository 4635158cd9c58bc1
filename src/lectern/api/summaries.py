"""Summaries ``/api/v1/speech-services/summaries`` (seed 001): summaries, meeting minutes or action
items of a COMPLETED transcription, through a prompt template; polled or sent by webhook.

A caller sees their own summaries; with ``transcriptionId`` or ``fileId``, every summary of that
resource, for whoever may read it. Another user's summary in the tenant is 403; another tenant's
does not exist (404).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.api.deps import database, require, services
from lectern.api.errors import ApiError, problem_responses
from lectern.api.job_resources import JobListQuery, SpeechServiceWebhook, owned_job, readable_file, webhook_config
from lectern.api.summary_models import (
    SpeechServiceSummaryListResponse,
    SpeechServiceSummaryRequest,
    SpeechServiceSummaryResponse,
    SpeechServiceSummaryResult,
    summary_response,
    summary_result,
)
from lectern.auth.principal import Principal
from lectern.auth.scopes import SUMMARIES_DELETE, SUMMARIES_READ, SUMMARIES_WRITE
from lectern.jobs.queue import COMPLETED
from lectern.store import job_lifecycle as lifecycle
from lectern.store import quotas as quota_store
from lectern.store import summaries as store
from lectern.store import transcriptions
from lectern.store.batch_models import TranscriptionRow
from lectern.store.prompt_templates import visible_template

router = APIRouter(prefix="/api/v1/speech-services/summaries", tags=["Summaries"])


async def _readable_transcription(db: AsyncSession, transcription_id: uuid.UUID, caller: Principal,
                                  deleted_too: bool = False) -> TranscriptionRow:
    """The caller's transcription; a deleted one only for ``deleted_too`` (its summaries can still be listed)."""
    row = await transcriptions.get(db, transcription_id, caller.tenant_id)
    if row is None or (row.deleted_at is not None and not deleted_too):
        raise ApiError(404, f"transcription {transcription_id} not found", "transcriptionId")
    if row.user_id != caller.user_id:
        raise ApiError(403, "this transcription belongs to another user", "transcriptionId")
    return row


def _conflict(exc: lifecycle.Conflict) -> ApiError:
    return ApiError(409, str(exc))


@router.get("", summary="List Summaries", response_model=SpeechServiceSummaryListResponse,
            responses=problem_responses(400, 401, 403, 404))
async def list_summaries(
    caller: Annotated[Principal, Depends(require(SUMMARIES_READ))],
    db: Annotated[AsyncSession, Depends(database)],
    query: Annotated[JobListQuery, Depends()],
    transcriptionId: Annotated[uuid.UUID | None, Query(description="Filter by parent transcription ID.")] = None,
    fileId: Annotated[uuid.UUID | None, Query(description="Filter by source file ID.")] = None,
    promptTemplateId: Annotated[uuid.UUID | None, Query(description="Filter by prompt template ID.")] = None,
) -> SpeechServiceSummaryListResponse:
    """By default the caller's summaries; with `transcriptionId` or `fileId`, every summary of that
    resource (its reader may discover them). The result is never included here."""
    if transcriptionId is not None:
        await _readable_transcription(db, transcriptionId, caller, deleted_too=True)
    if fileId is not None:
        await readable_file(db, fileId, caller, "fileId")
    f = query.filter(caller, {"transcription_id": transcriptionId, "file_id": fileId})
    if promptTemplateId is not None:  # narrows the listing; unlike a parent, it does not widen it to other users
        f = replace(f, parents=(*f.parents, ("prompt_template_id", promptTemplateId)))
    rows, total = await lifecycle.list_page(db, store.KIND, f, query.field, query.descending, query.page, query.size)
    return SpeechServiceSummaryListResponse(
        summaries=[summary_response(r, with_result=False) for r in rows], size=len(rows), total=total,
        filters=query.echo(page=query.page, size=query.size, transcriptionId=transcriptionId, fileId=fileId,
                           promptTemplateId=promptTemplateId),
        sort=query.sort_echo(),
    )



@router.post("", summary="Create Summary", status_code=201, response_model=SpeechServiceSummaryResponse,
             responses=problem_responses(400, 401, 403, 404, 429))
async def create_summary(
    body: SpeechServiceSummaryRequest,
    request: Request,
    caller: Annotated[Principal, Depends(require(SUMMARIES_WRITE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> SpeechServiceSummaryResponse:
    """Queue a summary of a COMPLETED transcription with a prompt template the caller can see.
    Rate limited: `LECTERN_SUMMARY_CREATE_PER_MINUTE` per key (429 with Retry-After past it); 403
    when the tenant's summaries or summary tokens of the month are spent."""
    transcription = await _readable_transcription(db, body.transcriptionId, caller)
    template = await visible_template(db, body.promptTemplateId, caller)
    if template is None:
        raise ApiError(404, f"prompt template {body.promptTemplateId} not found", "promptTemplateId")
    if transcription.status != COMPLETED:
        raise ApiError(400, f"the transcription is {transcription.status}; only a COMPLETED transcription can be "
                       "summarized", "transcriptionId")
    if transcription.purged_at is not None:
        raise ApiError(400, "the transcription's result has been permanently deleted", "transcriptionId")
    try:
        quota_store.check_summary(await quota_store.quotas(db, caller.tenant_id))
    except quota_store.QuotaExceeded as exc:
        raise ApiError(403, str(exc)) from None
    row = await store.create(db, {
        "tenant_id": caller.tenant_id,
        "user_id": caller.user_id,
        "transcription_id": transcription.id,
        "file_id": transcription.file_id,
        "prompt_template_id": template.id,
        "webhook": webhook_config(body.webhook, request),
    })
    request.app.state.jobs.wake()
    return summary_response(row)


@router.get("/{id}", summary="Get Summary", response_model=SpeechServiceSummaryResponse,
            responses=problem_responses(401, 403, 404))
async def get_summary(
    id: str,
    caller: Annotated[Principal, Depends(require(SUMMARIES_READ))],
    db: Annotated[AsyncSession, Depends(database)],
) -> SpeechServiceSummaryResponse:
    return summary_response(await owned_job(db, store.KIND, id, caller))


@router.get("/{id}/result", summary="Get Summary Result", response_model=SpeechServiceSummaryResult,
            responses=problem_responses(401, 403, 404, 410))
async def get_summary_result(
    id: str,
    caller: Annotated[Principal, Depends(require(SUMMARIES_READ))],
    db: Annotated[AsyncSession, Depends(database)],
) -> SpeechServiceSummaryResult:
    row = await owned_job(db, store.KIND, id, caller)
    if row.purged_at is not None:
        raise ApiError(410, "the summary result has been permanently deleted")
    result = summary_result(row)
    if result is None:
        raise ApiError(404, f"no result yet: the summary is {row.status}")
    return result


@router.put("/{id}/webhook", summary="Update Webhook", response_model=SpeechServiceSummaryResponse,
            responses=problem_responses(400, 401, 403, 404, 409))
async def update_webhook(
    id: str,
    webhook: Annotated[SpeechServiceWebhook, Body()],
    request: Request,
    caller: Annotated[Principal, Depends(require(SUMMARIES_WRITE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> SpeechServiceSummaryResponse:
    """Set or replace the webhook of a pending or in-progress summary."""
    row = await owned_job(db, store.KIND, id, caller)
    try:
        await lifecycle.set_webhook(db, store.KIND, row, webhook_config(webhook, request))
    except lifecycle.Conflict as exc:
        raise _conflict(exc) from None
    return summary_response(row)


@router.delete("/{id}/webhook", summary="Delete Webhook", status_code=204, response_class=Response,
               responses=problem_responses(401, 403, 404, 409))
async def delete_webhook(
    id: str,
    caller: Annotated[Principal, Depends(require(SUMMARIES_WRITE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> Response:
    row = await owned_job(db, store.KIND, id, caller)
    try:
        await lifecycle.set_webhook(db, store.KIND, row, None)
    except lifecycle.Conflict as exc:
        raise _conflict(exc) from None
    return Response(status_code=204)


@router.post("/{id}/cancel", summary="Cancel Summary", status_code=204, response_class=Response,
             responses=problem_responses(401, 403, 404, 409))
async def cancel_summary(
    id: str,
    request: Request,
    caller: Annotated[Principal, Depends(require(SUMMARIES_WRITE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> Response:
    """Stops a pending or in-progress summary; an in-flight LLM request is aborted."""
    row = await owned_job(db, store.KIND, id, caller)
    try:
        await lifecycle.cancel(db, store.KIND, row)
    except lifecycle.Conflict as exc:
        raise _conflict(exc) from None
    request.app.state.jobs.cancel(row.id)
    return Response(status_code=204)


@router.delete("/{id}", summary="Delete Summary", status_code=204, response_class=Response,
               responses=problem_responses(400, 401, 403, 404, 409))
async def delete_summary(
    id: str,
    request: Request,
    caller: Annotated[Principal, Depends(require(SUMMARIES_DELETE))],
    db: Annotated[AsyncSession, Depends(database)],
    purge: Annotated[bool, Query(
        description="If true, immediately and permanently deletes result/error data.")] = False,
) -> Response:
    """The record remains until the retention period expires (`purgeAt`), or is purged now with `purge=true`."""
    row = await owned_job(db, store.KIND, id, caller)
    retention = timedelta(days=services(request).settings.summary_retention_days)
    try:
        await lifecycle.soft_delete(db, store.KIND, row, retention, purge)
    except lifecycle.Conflict as exc:
        raise _conflict(exc) from None
    return Response(status_code=204)


@router.post("/{id}/purge", summary="Permanently Delete Summary", status_code=204, response_class=Response,
             responses=problem_responses(401, 403, 404, 409))
async def purge_summary(
    id: str,
    caller: Annotated[Principal, Depends(require(SUMMARIES_DELETE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> Response:
    """Permanently delete result and error data of a previously deleted summary."""
    row = await owned_job(db, store.KIND, id, caller)
    try:
        await lifecycle.purge(db, store.KIND, row)
    except lifecycle.Conflict as exc:
        raise _conflict(exc) from None
    return Response(status_code=204)
