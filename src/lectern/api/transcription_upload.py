"""``POST /api/v1/speech-services/transcriptions/upload``: a file and its transcription job in one call.

The form is the files API's (``file``, ``name``, ``path``, ``metadata``, ``tags``) plus the job's
options as JSON strings (``transcription``, ``diarization``, ``webhook``), as multipart forms
cannot nest. The options, and the tenant's transcription minutes, are checked before the file is
stored, so a refused job keeps nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.api.deps import database, require, services
from lectern.api.errors import ApiError, problem_responses
from lectern.api.file_fields import file_fields
from lectern.api.files import SpeechServiceFileResponse, file_response, ingest, received_upload
from lectern.api.job_resources import SpeechServiceWebhook, webhook_config
from lectern.api.transcription_models import (
    DiarizationOptions,
    SpeechServiceTranscriptionResponse,
    TranscriptionOptions,
    job_response,
)
from lectern.api.transcriptions import job_values, minutes_left
from lectern.auth.principal import Principal
from lectern.auth.scopes import FILES_WRITE, TRANSCRIPTIONS_WRITE
from lectern.json_input import JsonInputError, parse_json
from lectern.store import quotas as quota_store
from lectern.store import transcriptions as jobs

router = APIRouter(prefix="/api/v1/speech-services/transcriptions", tags=["Transcriptions"])

_FORM = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "The audio file."},
        "name": {"type": "string"},
        "path": {"type": "string", "description": "Virtual folder, e.g. `/incoming-audio/`."},
        "metadata": {"type": "string", "description": "A JSON object, as a string."},
        "tags": {"type": "string", "description": "A JSON array of strings, as a string."},
        "transcription": {"type": "string", "description": 'JSON, e.g. `{"model":"general","language":'
                          '{"defaultLanguageCode":"en"},"punctuation":true,"capitalization":true}`.'},
        "diarization": {"type": "string", "description": 'JSON, e.g. `{"enabled":false}`.'},
        "webhook": {"type": "string", "description": 'JSON, e.g. `{"url":"https://...","secret":"..."}`.'},
    },
}


class UploadAndTranscribeResponse(BaseModel):
    file: SpeechServiceFileResponse
    transcription: SpeechServiceTranscriptionResponse


def _json_option(form: dict[str, str], field: str, model: type[BaseModel]) -> Any:
    raw = form.get(field)
    if raw is None or not raw.strip():
        return None
    try:
        return model.model_validate(parse_json(raw))
    except JsonInputError as exc:
        raise ApiError(400, f"{field}: {exc}", field) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ApiError(400, f"{field}{'.' + where if where else ''}: {first['msg']}", field) from None


@router.post(
    "/upload",
    summary="Upload and Transcribe",
    status_code=201,
    response_model=UploadAndTranscribeResponse,
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _FORM}}}},
    responses=problem_responses(400, 401, 403, 413, 415),
)
async def upload_and_transcribe(
    request: Request,
    response: Response,
    caller: Annotated[Principal, Depends(require(TRANSCRIPTIONS_WRITE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> UploadAndTranscribeResponse:
    """Stores the file (as `POST /files` does) and queues its transcription; returns both."""
    if not caller.has(FILES_WRITE):
        raise ApiError(403, f"insufficient scope: uploading a file needs {FILES_WRITE}")
    left = await minutes_left(db, caller)  # an exhausted quota refuses before the upload streams in
    await db.close()  # give the connection back while the upload streams in
    upload = await received_upload(request, caller)
    async with upload:
        fields = file_fields(upload, services(request).settings.max_metadata_bytes)
        form = upload.fields
        options = _json_option(form, "transcription", TranscriptionOptions) or TranscriptionOptions()
        diarization = _json_option(form, "diarization", DiarizationOptions) or DiarizationOptions()
        webhook = webhook_config(_json_option(form, "webhook", SpeechServiceWebhook), request)
        values = job_values(caller, options, diarization, webhook, "upload", services(request).models)
        file = await ingest(request, caller, upload, fields,
                            accept=lambda audio: quota_store.check_transcription(left, audio.duration_seconds))
    async with services(request).db() as s:
        job = await jobs.create(s, {**values, "file_id": file.id, "duration_seconds": file.duration_seconds})
    request.app.state.jobs.wake()
    response.headers["Location"] = f"{router.prefix}/{job.id}"
    return UploadAndTranscribeResponse(file=file_response(file), transcription=job_response(job))
