"""Transcriptions ``/api/v1/speech-services/transcriptions``: batch jobs over uploaded files, and
finished streaming sessions turned into transcriptions.

A caller sees their own jobs; another user's job in the tenant is 403, another tenant's does
not exist (404). With ``fileId``, the list shows every job of that file to whoever may read it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.api.deps import database, require, services
from lectern.api.errors import ApiError, problem_responses
from lectern.api.job_resources import (
    JobListQuery,
    SpeechServiceWebhook,
    owned_job,
    readable_file,
    webhook_config,
)
from lectern.api.transcription_models import (
    CreateTranscriptionRequest,
    DiarizationOptions,
    SpeechServiceTranscriptionListResponse,
    SpeechServiceTranscriptionResponse,
    SpeechServiceTranscriptionResult,
    TranscriptionOptions,
    TranscriptionStatus,
    job_response,
    result_body,
)
from lectern.auth.principal import Principal
from lectern.auth.scopes import (
    SESSIONS_ADMIN,
    SESSIONS_READ,
    TRANSCRIPTIONS_DELETE,
    TRANSCRIPTIONS_READ,
    TRANSCRIPTIONS_WRITE,
)
from lectern.speech.models import ModelRegistry, job_language
from lectern.speech.subtitles import TimedText, TimedWord, to_srt, to_txt, to_vtt
from lectern.speech.text import as_sentence
from lectern.store import job_lifecycle as lifecycle
from lectern.store import quotas as quota_store
from lectern.store import transcriptions as jobs
from lectern.store.batch_models import TranscriptionRow
from lectern.store.models import StreamSessionRow
from lectern.store.sessions import LIVE_STATES

router = APIRouter(prefix="/api/v1/speech-services/transcriptions", tags=["Transcriptions"])

Format = Literal["json", "srt", "vtt", "txt"]
_MEDIA = {"srt": "application/x-subrip", "vtt": "text/vtt", "txt": "text/plain"}


# -- lookups -------------------------------------------------------------------------------------


def job_values(caller: Principal, options: TranscriptionOptions, diarization: DiarizationOptions,
                webhook: dict[str, Any] | None, source: str, models: ModelRegistry) -> dict[str, Any]:
    if diarization.enabled:
        raise ApiError(400, "diarization is not available on this server", "diarization.enabled")
    model = models.resolve(options.model)
    language = options.language.defaultLanguageCode
    if not models.serves_language(model.name, language):
        raise ApiError(400, models.language_error(model.name, language or "", "language"),
                       "transcription.language.defaultLanguageCode")
    return {
        "tenant_id": caller.tenant_id,
        "user_id": caller.user_id,
        "source": source,
        "requested_model": model.requested_alias,
        "resolved_model_name": model.name,
        "language_code": job_language(models, model.name, language),
        "options": {"punctuation": options.punctuation, "capitalization": options.capitalization},
        "webhook": webhook,
    }


async def minutes_left(db: AsyncSession, caller: Principal) -> quota_store.Quotas:
    """The tenant's quotas, once checked that its transcription minutes are not spent (403 if they are)."""
    left = await quota_store.quotas(db, caller.tenant_id)
    refuse_past_quota(left, None)
    return left


def refuse_past_quota(left: quota_store.Quotas, seconds: float | None) -> None:
    """403 when ``seconds`` of audio (None: not known yet) do not fit the month's transcription minutes."""
    try:
        quota_store.check_transcription(left, seconds)
    except quota_store.QuotaExceeded as exc:
        raise ApiError(403, str(exc)) from None


async def _result(db: AsyncSession, row: TranscriptionRow) -> SpeechServiceTranscriptionResult | None:
    if row.status != TranscriptionStatus.COMPLETED.value or row.purged_at is not None:
        return None
    return result_body(row, list(await jobs.segments(db, row.id)))


async def _response(request: Request, db: AsyncSession, row: TranscriptionRow) -> SpeechServiceTranscriptionResponse:
    job = request.app.state.jobs.job(row.id)  # running here: its progress is finer than the stored figure
    progress = job.transcription.position if job is not None and job.transcription is not None else None
    return job_response(row, await _result(db, row), progress)


# -- routes --------------------------------------------------------------------------------------


@router.get("", summary="List Transcription Jobs", response_model=SpeechServiceTranscriptionListResponse,
            responses=problem_responses(400, 401, 403, 404))
async def list_transcriptions(
    caller: Annotated[Principal, Depends(require(TRANSCRIPTIONS_READ))],
    db: Annotated[AsyncSession, Depends(database)],
    query: Annotated[JobListQuery, Depends()],
    fileId: Annotated[uuid.UUID | None, Query(
        description="Transcriptions of this file: all of them, for anyone who may read the file.")] = None,
) -> SpeechServiceTranscriptionListResponse:
    """The caller's transcriptions, newest first by default; `result` is never included here."""
    if fileId is not None:
        await readable_file(db, fileId, caller, "fileId")
    rows, total = await lifecycle.list_page(db, jobs.KIND, query.filter(caller, {"file_id": fileId}), query.field,
                                            query.descending, query.page, query.size)
    return SpeechServiceTranscriptionListResponse(
        transcriptions=[job_response(r) for r in rows], page=query.page, size=len(rows), total=total,
        filters=query.echo(fileId=fileId), sort=query.sort_echo(),
    )


@router.post("", summary="Create Transcription Job", status_code=201,
             response_model=SpeechServiceTranscriptionResponse, responses=problem_responses(400, 401, 403, 404, 409))
async def create_transcription(
    body: CreateTranscriptionRequest,
    request: Request,
    response: Response,
    caller: Annotated[Principal, Depends(require(TRANSCRIPTIONS_WRITE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> SpeechServiceTranscriptionResponse:
    """From an uploaded file (`fileId`: queued, PENDING) or a finished streaming session
    (`sessionId`: its segments are the result, COMPLETED at once)."""
    if (body.fileId is None) == (body.sessionId is None):
        raise ApiError(400, "give exactly one of fileId and sessionId", "fileId")
    values = job_values(caller, body.transcription, body.diarization, webhook_config(body.webhook, request), "api",
                        request.app.state.services.models)
    if body.sessionId is not None:
        created = await _from_session(db, body.sessionId, caller, values, body.transcription)
        response.headers["Location"] = f"{router.prefix}/{created.id}"
        return created
    file = await readable_file(db, body.fileId, caller, "fileId")  # type: ignore[arg-type]
    if file.deleted_at is not None:
        raise ApiError(409, "the file has been deleted", "fileId")
    refuse_past_quota(await quota_store.quotas(db, caller.tenant_id), file.duration_seconds)
    row = await jobs.create(db, {**values, "file_id": file.id, "duration_seconds": file.duration_seconds})
    request.app.state.jobs.wake()
    response.headers["Location"] = f"{router.prefix}/{row.id}"
    return job_response(row)


async def _from_session(db: AsyncSession, session_id: uuid.UUID, caller: Principal, values: dict[str, Any],
                        options: TranscriptionOptions) -> SpeechServiceTranscriptionResponse:
    if not caller.has(SESSIONS_READ):
        raise ApiError(403, f"insufficient scope: reading a session needs {SESSIONS_READ}", "sessionId")
    session = await db.get(StreamSessionRow, session_id)
    if session is None or session.tenant_id != caller.tenant_id or session.deleted_at is not None:
        raise ApiError(404, f"session {session_id} not found", "sessionId")
    if session.user_id != caller.user_id and not caller.has(SESSIONS_ADMIN):
        raise ApiError(403, "this session belongs to another user", "sessionId")
    if session.state in LIVE_STATES:
        raise ApiError(409, "the session is still streaming; transcribe it once it has ended", "sessionId")
    if session.purged_at is not None:
        raise ApiError(409, "the session's transcript has been purged", "sessionId")
    values = {**values, "source": "session", "duration_seconds": session.duration_ms / 1000}

    def text_of(transcript: str) -> str:
        return as_sentence(transcript, options.capitalization, options.punctuation)

    row = await jobs.create_from_session(db, values, session.id, text_of)
    return job_response(row, await _result(db, row))


@router.get("/{id}", summary="Get Transcription Job", response_model=SpeechServiceTranscriptionResponse,
            responses=problem_responses(401, 403, 404))
async def get_transcription(
    id: str,
    request: Request,
    caller: Annotated[Principal, Depends(require(TRANSCRIPTIONS_READ))],
    db: Annotated[AsyncSession, Depends(database)],
) -> SpeechServiceTranscriptionResponse:
    return await _response(request, db, await owned_job(db, jobs.KIND, id, caller))


@router.get(
    "/{id}/result",
    summary="Get Transcription Result",
    response_model=SpeechServiceTranscriptionResult,
    responses={
        200: {"content": {"application/json": {}, **{m: {"schema": {"type": "string"}} for m in _MEDIA.values()}},
              "description": "The result: JSON, or SubRip / WebVTT / plain text with `format`."},
        **problem_responses(400, 401, 403, 404, 410),
    },
)
async def get_result(
    id: str,
    caller: Annotated[Principal, Depends(require(TRANSCRIPTIONS_READ))],
    db: Annotated[AsyncSession, Depends(database)],
    format: Annotated[Format, Query(description="json (default), srt, vtt or txt.")] = "json",
) -> Any:
    row = await owned_job(db, jobs.KIND, id, caller)
    if row.purged_at is not None:
        raise ApiError(410, "the result has been permanently deleted")
    if row.status != TranscriptionStatus.COMPLETED.value:
        raise ApiError(404, f"no result: the transcription is {row.status}")
    segments = list(await jobs.segments(db, row.id))
    if format == "json":
        return result_body(row, segments)
    timed = [TimedText(s.transcript, s.start_seconds, s.end_seconds,
                       [TimedWord(w["word"], w["startSeconds"], w["endSeconds"]) for w in s.words])
             for s in segments]
    render = {"srt": to_srt, "vtt": to_vtt, "txt": to_txt}[format]
    return PlainTextResponse(render(timed), media_type=_MEDIA[format])


@router.put("/{id}/webhook", summary="Update Webhook", response_model=SpeechServiceTranscriptionResponse,
            responses=problem_responses(400, 401, 403, 404, 409))
async def update_webhook(
    id: str,
    webhook: Annotated[SpeechServiceWebhook, Body()],
    request: Request,
    caller: Annotated[Principal, Depends(require(TRANSCRIPTIONS_WRITE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> SpeechServiceTranscriptionResponse:
    """Set or replace the webhook of a pending or running job (409 once it has ended)."""
    row = await owned_job(db, jobs.KIND, id, caller)
    try:
        await lifecycle.set_webhook(db, jobs.KIND, row, webhook_config(webhook, request))
    except lifecycle.Conflict as exc:
        raise ApiError(409, str(exc)) from None
    return await _response(request, db, row)


@router.delete("/{id}/webhook", summary="Delete Webhook", status_code=204, response_class=Response,
               responses=problem_responses(401, 403, 404, 409))
async def delete_webhook(
    id: str,
    caller: Annotated[Principal, Depends(require(TRANSCRIPTIONS_WRITE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> Response:
    row = await owned_job(db, jobs.KIND, id, caller)
    try:
        await lifecycle.set_webhook(db, jobs.KIND, row, None)
    except lifecycle.Conflict as exc:
        raise ApiError(409, str(exc)) from None
    return Response(status_code=204)


@router.post("/{id}/cancel", summary="Cancel Job", status_code=204, response_class=Response,
             responses=problem_responses(401, 403, 404, 409))
async def cancel_transcription(
    id: str,
    request: Request,
    caller: Annotated[Principal, Depends(require(TRANSCRIPTIONS_WRITE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> Response:
    """Stops a running job promptly (at once on this node, within a heartbeat on another)."""
    row = await owned_job(db, jobs.KIND, id, caller)
    try:
        await lifecycle.cancel(db, jobs.KIND, row)
    except lifecycle.Conflict as exc:
        raise ApiError(409, str(exc)) from None
    request.app.state.jobs.cancel(row.id)
    return Response(status_code=204)


@router.delete("/{id}", summary="Delete Job", status_code=204, response_class=Response,
               responses=problem_responses(400, 401, 403, 404, 409))
async def delete_transcription(
    id: str,
    request: Request,
    caller: Annotated[Principal, Depends(require(TRANSCRIPTIONS_DELETE))],
    db: Annotated[AsyncSession, Depends(database)],
    purge: Annotated[bool, Query(description="Also delete the result and errors now, for good.")] = False,
) -> Response:
    """Hides the job; its result is purged when the retention period ends (or now with `purge=true`)."""
    row = await owned_job(db, jobs.KIND, id, caller)
    retention = timedelta(days=services(request).settings.purge_after_days)
    try:
        await lifecycle.soft_delete(db, jobs.KIND, row, retention, purge)
    except lifecycle.Conflict as exc:
        raise ApiError(409, str(exc)) from None
    return Response(status_code=204)


@router.post("/{id}/purge", summary="Purge Job", status_code=204, response_class=Response,
             responses=problem_responses(401, 403, 404, 409))
async def purge_transcription(
    id: str,
    caller: Annotated[Principal, Depends(require(TRANSCRIPTIONS_DELETE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> Response:
    """Deletes a deleted job's result and errors for good, now."""
    row = await owned_job(db, jobs.KIND, id, caller)
    try:
        await lifecycle.purge(db, jobs.KIND, row)
    except lifecycle.Conflict as exc:
        raise ApiError(409, str(exc)) from None
    return Response(status_code=204)
