"""ElevenLabs batch speech-to-text (``POST /v1/speech-to-text``), as the official SDKs call it.

One request is one transcription job of the platform: the upload is kept as a file (it shows in
the files API), a job with ``source="elevenlabs"`` is queued (it shows in the transcriptions API,
its id is the answer's ``transcription_id``), and the answer waits for the job to end. A client
that goes away cancels its job.

This module is the route and the job's flow. Wire details follow the SDK
(``speech_to_text/raw_client.py``, ``SpeechToTextChunkResponseModel``): the form is read in
``scribe_form``, the answer written in ``scribe_answer``, and errors are ElevenLabs' REST shape
(``scribe_errors``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from lectern.api import rate_limits
from lectern.api.errors import ApiError
from lectern.api.scribe_answer import ScribeTranscript, answer
from lectern.api.scribe_errors import (
    ScribeError,
    ScribeErrorBody,
    invalid,
    quota_exceeded,
    too_many_requests,
    unauthorized,
    upload_error,
    zero_retention_refused,
)
from lectern.api.scribe_form import MAX_KEYTERMS, REQUEST_BODY, ScribeRequest, boolean, parse_form
from lectern.api.scribe_pcm import as_wav
from lectern.api.transcription_models import DiarizationOptions, LanguageOptions, TranscriptionOptions
from lectern.api.transcriptions import job_values
from lectern.api.uploads import Upload, UploadError, receive_upload
from lectern.auth import keys
from lectern.auth.principal import AuthError, Principal
from lectern.auth.principals import authenticate
from lectern.auth.scopes import FILES_WRITE, TRANSCRIPTIONS_WRITE
from lectern.jobs.queue import CANCELLED, COMPLETED, TERMINAL
from lectern.jobs.transcription import AUDIO_DECODING_FAILED, FILE_NOT_FOUND, QUOTA_EXCEEDED
from lectern.rate_limits import RateLimited
from lectern.services import Services
from lectern.speech.decode import UnsupportedAudio
from lectern.speech.models import ModelRegistry
from lectern.store import files as file_store
from lectern.store import job_lifecycle as lifecycle
from lectern.store import transcriptions as jobs
from lectern.store.batch_models import FileRow, TranscriptionRow, TranscriptionSegmentRow
from lectern.store.models import Tenant
from lectern.store.quotas import QuotaExceeded, Quotas, check_transcription, quotas, storage_refusal

log = logging.getLogger(__name__)

router = APIRouter(tags=["ElevenLabs compatibility"])

POLL_SECONDS = 0.1  # how often the waiting request reads its job's row
MAX_FIELDS = 40 + MAX_KEYTERMS  # every scalar field the SDK sends, its keyterms, secondary languages
MAX_FIELD_BYTES = 20_000  # webhook_metadata may be 16 KB
NO_CREDENTIALS = "Neither authorization header nor xi-api-key received, please provide one."


# -- authentication --------------------------------------------------------------------------------


async def _caller(request: Request, services: Services) -> Principal:
    """The authenticated caller, past its rate limits (429 in ElevenLabs' shape): an address that
    keeps failing to authenticate is refused before its credentials are looked at."""
    try:
        await rate_limits.refuse_failing_address(request)
        try:
            caller = await _authenticated(request, services)
        except ScribeError as exc:
            if exc.http_status == 401:
                await rate_limits.count_failed_authentication(request)
            raise
        await rate_limits.admit(request, caller)  # the requests budget and the uploads one
    except RateLimited as exc:
        raise too_many_requests(exc) from None
    return caller


async def _authenticated(request: Request, services: Services) -> Principal:
    """``xi-api-key`` as ElevenLabs' clients send it; the platform's ``X-API-Key`` or a bearer JWT;
    or a single-use ``token`` query parameter of type ``batch_scribe``."""
    api_key = request.headers.get("xi-api-key") or request.headers.get("x-api-key")
    authorization = request.headers.get("authorization")
    token = request.query_params.get("token")
    try:
        async with services.db() as db:
            if not api_key and not authorization and token:
                caller = await keys.redeem_single_use_token(db, token, "batch_scribe")
            elif not api_key and not authorization:
                raise unauthorized(NO_CREDENTIALS, "needs_authorization")
            else:
                caller = await authenticate(db, services.jwt, api_key, authorization)
    except AuthError as exc:
        message = "Invalid API key" if api_key else f"Invalid credentials: {exc}"
        raise unauthorized(message) from None
    for scope in (TRANSCRIPTIONS_WRITE, FILES_WRITE):  # a job, and the file it reads
        if not caller.has(scope):
            raise ScribeError(403, f"This API key lacks the {scope} scope, which speech-to-text needs.",
                              type="authorization_error", code="insufficient_permissions",
                              status="missing_permissions")
    return caller


async def _admissible(services: Services, caller: Principal, enable_logging: bool) -> Quotas:
    """The tenant's quotas, once checked that it may ask for zero retention (when it does) and that
    its transcription minutes are not spent: both refused before the upload streams in."""
    async with services.db() as s:
        tenant = await s.get(Tenant, caller.tenant_id)
        if not enable_logging and tenant is not None and not tenant.zero_retention_allowed:
            raise zero_retention_refused()
        left = await quotas(s, caller.tenant_id)
    try:
        check_transcription(left, None)
    except QuotaExceeded as exc:
        raise quota_exceeded(str(exc)) from None
    return left


# -- the route -------------------------------------------------------------------------------------


@router.post(
    "/v1/speech-to-text",
    summary="Speech to text (ElevenLabs-compatible)",
    response_model=None,
    responses={
        200: {"model": ScribeTranscript, "description": "The transcript."},
        **{status: {"model": ScribeErrorBody, "description": description} for status, description in (
            (400, "Invalid or unsupported parameters, or audio that cannot be decoded"),
            (401, "Missing or invalid credentials"),
            (403, "The key lacks a scope, the tenant's transcription minutes are spent (`quota_exceeded`), or "
                  "it may not ask for zero retention (`enable_logging=false`)"),
            (409, "The job was cancelled, or its file deleted, before it ended"),
            (413, "The file is larger than the upload limit, or than what is left of the storage quota"),
            (415, "Not multipart/form-data"), (429, "Rate limited (`Retry-After` says when to retry)"),
            (500, "The transcription failed"))},
    },
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def speech_to_text(request: Request) -> Response:
    """ElevenLabs' `POST /v1/speech-to-text`: the audio's transcript, once its job has run.

    Authenticate with `xi-api-key` (or `X-API-Key`, or a bearer JWT); the key needs the
    `speech:transcriptions:write` and `speech:files:write` scopes. The upload becomes a file and
    the transcription a job, both visible in the platform's APIs (`transcription_id` is the job's id).
    """
    services: Services = request.app.state.services
    try:
        return await _speech_to_text(request, services)
    except ScribeError as exc:
        return exc.response()
    except Exception:
        log.exception("speech-to-text request failed")
        return ScribeError(500, "An unexpected error occurred; it has been logged.", type="internal_error",
                           code="internal_error").response()


async def _speech_to_text(request: Request, services: Services) -> Response:
    settings = services.settings
    caller = await _caller(request, services)
    enable_logging = boolean(request.query_params.get("enable_logging"), "enable_logging", True)
    left = await _admissible(services, caller, enable_logging)
    try:
        upload = await receive_upload(request, max_bytes=settings.max_upload_bytes, spool_dir=settings.uploads_dir,
                                      max_fields=MAX_FIELDS, max_field_bytes=MAX_FIELD_BYTES,
                                      storage_left=left.storage_bytes.available, storage_refusal=storage_refusal(left))
    except UploadError as exc:
        raise upload_error(exc) from None
    async with upload:
        scribe = parse_form(upload)
        values = _values(caller, scribe, services.models)
        if upload.size == 0:
            raise invalid("the file is empty", "file")
        stored = await as_wav(upload, settings.uploads_dir) if scribe.pcm else upload
        async with stored:
            file = await _ingest(services, caller, stored, left)
    async with services.db() as s:
        job = await jobs.create(s, {**values, "file_id": file.id, "duration_seconds": file.duration_seconds})
    request.app.state.jobs.wake()
    try:
        ended = await _wait(request, services, job.id, caller)
        if ended is None:  # the client left: nobody reads an answer
            return Response(status_code=499)
        row, segments = ended
        return JSONResponse(answer(row, segments, file, scribe))
    finally:
        if not enable_logging:
            await asyncio.shield(_forget(services, job.id, caller, file))


def _values(caller: Principal, scribe: ScribeRequest, models: ModelRegistry) -> dict[str, Any]:
    options = TranscriptionOptions(model=scribe.model_id, punctuation=True, capitalization=True,
                                   language=LanguageOptions(defaultLanguageCode=scribe.language_code))
    try:
        values = job_values(caller, options, DiarizationOptions(), None, "elevenlabs", models)
    except ApiError as exc:  # in ElevenLabs' shape
        raise invalid(exc.detail, "language_code") from None
    for code in scribe.secondary_language_codes:
        if not models.serves_language(values["resolved_model_name"], code):
            message = models.language_error(values["resolved_model_name"], code, "secondary_language_codes")
            raise invalid(message, "secondary_language_codes")
    extra: dict[str, Any] = {"no_verbatim": scribe.no_verbatim}
    if scribe.keyterms:
        extra["keyterms"] = list(scribe.keyterms)
    return {**values, "options": {**values["options"], **extra}}


async def _ingest(services: Services, caller: Principal, upload: Upload, left: Quotas) -> FileRow:
    """The upload as a file, unless its audio passes what is left of the transcription minutes."""
    try:
        return await file_store.ingest_upload(services, caller, upload, name=upload.filename or "upload", path="/",
                                              description=None, metadata=None, tags=[],
                                              accept=lambda audio: check_transcription(left, audio.duration_seconds))
    except QuotaExceeded as exc:
        raise quota_exceeded(str(exc)) from None
    except file_store.EmptyFile as exc:
        raise invalid(f"file: {exc}", "file") from None
    except UnsupportedAudio as exc:
        raise ScribeError(400, f"the file cannot be transcribed: {exc}", param="file", code="invalid_audio") from None


async def _wait(request: Request, services: Services, job_id: uuid.UUID,
                caller: Principal) -> tuple[TranscriptionRow, list[TranscriptionSegmentRow]] | None:
    """The job once it has ended (and its segments), or None when the client left first (the job is
    then cancelled)."""
    try:
        while True:
            async with services.db() as s:
                row = await jobs.get(s, job_id, caller.tenant_id)
                if row is None:
                    raise ScribeError(500, "the transcription job disappeared", type="internal_error",
                                      code="internal_error")
                if row.status in TERMINAL:
                    segments = list(await jobs.segments(s, job_id)) if row.status == COMPLETED else []
                    return _outcome(row), segments
            if await request.is_disconnected():
                await _cancel(request, services, job_id, caller)
                return None
            await asyncio.sleep(POLL_SECONDS)
    except asyncio.CancelledError:
        await asyncio.shield(_cancel(request, services, job_id, caller))
        raise


def _outcome(row: TranscriptionRow) -> TranscriptionRow:
    """A COMPLETED job, or the ElevenLabs error its failure or cancellation amounts to."""
    if row.status == COMPLETED:
        return row
    if row.status == CANCELLED:
        raise ScribeError(409, "the transcription was cancelled before it ended", type="invalid_request",
                          code="transcription_cancelled")
    message = (row.errors or [{}])[0].get("message") or "the transcription failed"
    if row.error_code == AUDIO_DECODING_FAILED:
        raise ScribeError(400, f"the file cannot be transcribed: {message}", param="file", code="invalid_audio")
    if row.error_code == QUOTA_EXCEEDED:  # other jobs or streams spent the minutes while it waited
        raise quota_exceeded(message)
    if row.error_code == FILE_NOT_FOUND:
        raise ScribeError(409, message, param="file", type="invalid_request", code="file_deleted")
    raise ScribeError(500, message, type="internal_error", code=(row.error_code or "internal_error").lower())


async def _cancel(request: Request, services: Services, job_id: uuid.UUID, caller: Principal) -> None:
    try:
        async with services.db() as s:
            row = await jobs.get(s, job_id, caller.tenant_id)
            if row is not None and row.status not in TERMINAL:
                await lifecycle.cancel(s, jobs.KIND, row)
    except lifecycle.Conflict:  # it ended meanwhile
        pass
    except Exception:
        log.exception("could not cancel transcription %s after its client left", job_id)
    request.app.state.jobs.cancel(job_id)


async def _forget(services: Services, job_id: uuid.UUID, caller: Principal, file: FileRow) -> None:
    """``enable_logging=false`` (zero retention): the audio and the transcript go once answered; the
    job's row stays (status, times, duration) for audit, as a deleted and purged job."""
    try:
        async with services.db() as s:
            row = await jobs.get(s, job_id, caller.tenant_id)
            if row is not None and row.status in TERMINAL:
                retention = timedelta(days=services.settings.purge_after_days)
                await lifecycle.soft_delete(s, jobs.KIND, row, retention, purge_now=True)
            stored = await file_store.get_file(s, file.id, caller.tenant_id)
            if stored is not None:
                await file_store.delete_file(services, s, stored)
    except Exception:
        log.exception("zero retention: could not remove transcription %s and its file", job_id)
