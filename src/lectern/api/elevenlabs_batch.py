"""ElevenLabs batch speech-to-text (``POST /v1/speech-to-text``), as the official SDKs call it.

One request is one transcription job of the platform: the upload is kept as a file (it shows in
the files API), a job with ``source="elevenlabs"`` is queued (it shows in the transcriptions API,
its id is the answer's ``transcription_id``), and the answer waits for the job to end. A client
that goes away cancels its job.

Wire details follow the SDK (``speech_to_text/raw_client.py``, ``SpeechToTextChunkResponseModel``):
every form field it can send is either honoured or refused with a clear message. Errors are
ElevenLabs' REST shape, ``{"detail": {"type", "code", "message", "status", "request_id", "param"}}``
(``status`` is their legacy field, still read by older clients), answered from the route itself so
the platform's problem+json handlers never see them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import struct
import tempfile
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from lectern.api.errors import ApiError
from lectern.api.transcription_models import DiarizationOptions, TranscriptionOptions
from lectern.api.transcriptions import job_values
from lectern.api.uploads import Upload, UploadError, receive_upload
from lectern.auth import keys
from lectern.auth.principal import AuthError, Principal
from lectern.auth.principals import authenticate
from lectern.auth.scopes import FILES_WRITE, TRANSCRIPTIONS_WRITE
from lectern.jobs.queue import CANCELLED, COMPLETED, TERMINAL
from lectern.jobs.transcription import AUDIO_DECODING_FAILED, FILE_NOT_FOUND
from lectern.services import Services
from lectern.speech.decode import UnsupportedAudio
from lectern.speech.models import serves_language
from lectern.speech.subtitles import TimedText, TimedWord, to_srt, to_txt
from lectern.speech.text import as_sentence, remove_disfluencies
from lectern.store import files as file_store
from lectern.store import transcriptions as jobs
from lectern.store.models import FileRow, TranscriptionRow, TranscriptionSegmentRow

log = logging.getLogger(__name__)

router = APIRouter(tags=["ElevenLabs compatibility"])

POLL_SECONDS = 0.1  # how often the waiting request reads its job's row
LANGUAGE_CODE = "eng"  # ISO 639-3, as ElevenLabs answers ("The detected language code (e.g. 'eng' for English)")
MAX_MODEL_ID = 200  # the transcriptions table's column
MAX_KEYTERMS, MAX_KEYTERM_CHARS, MAX_KEYTERM_WORDS = 1000, 50, 5  # ElevenLabs' documented limits
_KEYTERM_FORBIDDEN = re.compile(r"[<>{}\[\]\\]")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?$")
MAX_FIELDS = 40 + MAX_KEYTERMS  # every scalar field the SDK sends, its keyterms, secondary languages
MAX_FIELD_BYTES = 20_000  # webhook_metadata may be 16 KB
PCM_RATE = 16000
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
NO_CREDENTIALS = "Neither authorization header nor xi-api-key received, please provide one."
_EXPORTS = {  # additional_formats this server renders: format -> (extension, media type, renderer)
    "srt": ("srt", "application/x-subrip", to_srt),
    "txt": ("txt", "text/plain", to_txt),
}
_EXPORT_FORMATS = ("docx", "html", "pdf", "segmented_json", "srt", "txt")


# -- errors ----------------------------------------------------------------------------------------


class ScribeError(Exception):
    """An error answered in ElevenLabs' shape (never reaches the app's problem+json handlers)."""

    def __init__(self, http_status: int, message: str, *, param: str | None = None, type: str = "validation_error",
                 code: str = "invalid_parameters", status: str | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.param = param
        self.type = type
        self.code = code
        self.status = status or code

    def response(self) -> JSONResponse:
        detail: dict[str, Any] = {"type": self.type, "code": self.code, "message": self.message,
                                  "status": self.status, "request_id": uuid.uuid4().hex}
        if self.param is not None:
            detail["param"] = self.param
        return JSONResponse({"detail": detail}, status_code=self.http_status)


def _invalid(message: str, param: str) -> ScribeError:
    return ScribeError(400, message, param=param)


def _unauthorized(message: str, status: str = "invalid_api_key") -> ScribeError:
    return ScribeError(401, message, type="authentication_error", code="unauthorized", status=status)


def _upload_error(exc: UploadError) -> ScribeError:
    if exc.status == 413:
        return ScribeError(413, exc.message, param="file", type="invalid_request", code="file_too_large")
    if exc.status == 415:
        return ScribeError(415, exc.message, type="invalid_request", code="unsupported_media_type")
    if exc.field == "file" and exc.message.startswith("no file"):
        return _invalid("no file: send the audio as the multipart part 'file' (this server does not fetch "
                        "source_url or cloud_storage_url)", "file")
    return _invalid(exc.message, exc.field or "file")


# -- the documented shapes (OpenAPI only: the route answers with JSONResponse) ---------------------


class ScribeCharacter(BaseModel):
    text: str
    start: float
    end: float


class ScribeWord(BaseModel):
    text: str
    start: float
    end: float
    type: Literal["word", "spacing", "audio_event"]
    speaker_id: str | None = None
    logprob: float = Field(description="log of the word's confidence; 0 for spacing")
    characters: list[ScribeCharacter] | None = Field(default=None, description="with timestamps_granularity=character")


class ScribeAdditionalFormat(BaseModel):
    requested_format: str
    file_extension: str
    content_type: str
    is_base64_encoded: bool
    content: str


class ScribeTranscript(BaseModel):
    language_code: str = Field(description="ISO 639-3: always `eng`, the one language served")
    language_probability: float
    text: str
    words: list[ScribeWord]
    channel_index: int | None = None
    additional_formats: list[ScribeAdditionalFormat] | None = None
    transcription_id: str = Field(description="The platform's transcription job id")
    entities: list[Any] | None = None
    audio_duration_secs: float | None = None


class ScribeErrorDetail(BaseModel):
    type: str
    code: str
    message: str
    status: str = Field(description="ElevenLabs' legacy error code field")
    request_id: str
    param: str | None = None


class ScribeErrorBody(BaseModel):
    detail: ScribeErrorDetail


_FIELDS_DOC: dict[str, dict[str, Any]] = {
    "model_id": {"type": "string", "description": "Any alias (e.g. `scribe_v1`, `scribe_v2`)."},
    "file": {"type": "string", "format": "binary", "description": "The audio (any common container)."},
    "file_format": {"type": "string", "enum": ["pcm_s16le_16", "other"], "default": "other",
                    "description": "`pcm_s16le_16`: raw 16 kHz mono 16-bit little-endian PCM, no header."},
    "language_code": {"type": "string", "description": "English only (`en`, `eng`, `en-US`...)."},
    "timestamps_granularity": {"type": "string", "enum": ["none", "word", "character"], "default": "word"},
    "tag_audio_events": {"type": "boolean", "description": "Accepted; no audio events are detected."},
    "no_verbatim": {"type": "boolean", "description": "Drop fillers and immediate repetitions."},
    "keyterms": {"type": "array", "items": {"type": "string"},
                 "description": "Accepted and recorded; batch recognition does not use them yet."},
    "diarize": {"type": "boolean", "description": "Only `false`: diarization is not available."},
    "num_speakers": {"type": "integer", "description": "Only 1: diarization is not available."},
    "additional_formats": {"type": "string", "description": "JSON list; `srt` and `txt` are rendered."},
    "webhook": {"type": "boolean", "description": "Only `false`: the answer always carries the transcript."},
}
_REQUEST_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["model_id", "file"], "properties": _FIELDS_DOC,
    "description": "The fields ElevenLabs' SDKs send; the others are accepted or refused with a 400 saying why.",
}}}}


# -- the form --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ScribeRequest:
    model_id: str
    granularity: Literal["none", "word", "character"]
    pcm: bool
    no_verbatim: bool
    keyterms: tuple[str, ...]
    exports: tuple[str, ...]


class _Form:
    def __init__(self, upload: Upload) -> None:
        self.upload = upload

    def text(self, name: str) -> str | None:
        value = self.upload.fields.get(name)
        return value if value not in (None, "") else None

    def boolean(self, name: str, default: bool = False) -> bool:
        return _boolean(self.text(name), name, default)

    def number(self, name: str, low: float, high: float, integer: bool = False) -> float | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise _invalid(f"{name} must be {kind}, not {raw[:50]!r}", name) from None
        if not low <= value <= high:  # NaN fails too
            raise _invalid(f"{name} must be between {low:g} and {high:g}, not {raw[:50]}", name)
        return value

    def json(self, name: str) -> Any:
        """A JSON-encoded field; the SDK sends ``null`` for the ones the caller left out."""
        raw = self.text(name)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise _invalid(f"{name} must be JSON", name) from None

    def refuse_true(self, name: str, why: str) -> None:
        if self.boolean(name):
            raise _invalid(f"{name}=true is not supported: {why}", name)

    def refuse_given(self, name: str, why: str) -> None:
        """A JSON-or-text field that must ask for nothing (absent, ``null``, ``[]``)."""
        raw = self.text(name)
        try:
            value = json.loads(raw) if raw is not None else None
        except (ValueError, RecursionError):
            value = raw
        if value not in (None, [], {}, ""):
            raise _invalid(f"{name} is not supported: {why}", name)


def _boolean(raw: str | None, name: str, default: bool) -> bool:
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _invalid(f"{name} must be true or false, not {raw[:50]!r}", name)


def _language(code: str, name: str) -> None:
    if len(code) > 35 or not _LANGUAGE.match(code):
        raise _invalid(f"{name} must be an ISO 639-1 or ISO 639-3 code, not {code[:50]!r}", name)
    if not serves_language(code):
        raise _invalid(f"{name} {code!r} is not served: this server transcribes English (en/eng) only", name)


def parse_form(upload: Upload) -> ScribeRequest:
    """Every field the SDK can send, checked before anything is stored."""
    form = _Form(upload)
    model_id = form.text("model_id")
    if model_id is None:
        raise _invalid("model_id is required (e.g. scribe_v1)", "model_id")
    if len(model_id) > MAX_MODEL_ID or not model_id.isprintable():
        raise _invalid(f"model_id must be at most {MAX_MODEL_ID} printable characters", "model_id")
    for name in ("source_url", "cloud_storage_url"):
        if form.text(name) is not None:
            raise _invalid(f"{name} is not supported: this server does not fetch audio from the network; "
                           "upload the audio itself as 'file'", name)

    language = form.text("language_code")
    if language is not None:
        _language(language, "language_code")
    for code in upload.getlist("secondary_language_codes"):
        if code:
            _language(code, "secondary_language_codes")

    granularity = form.text("timestamps_granularity") or "word"
    if granularity not in ("none", "word", "character"):
        raise _invalid(f"timestamps_granularity must be none, word or character, not {granularity[:50]!r}",
                       "timestamps_granularity")
    file_format = form.text("file_format") or "other"
    if file_format not in ("pcm_s16le_16", "other"):
        raise _invalid(f"file_format must be pcm_s16le_16 or other, not {file_format[:50]!r}", "file_format")

    # Speakers and channels: one voice, one (mixed) channel.
    form.refuse_true("diarize", "speaker diarization is not available on this server")
    speakers = form.number("num_speakers", 1, 32, integer=True)
    if speakers is not None and speakers > 1:
        raise _invalid(f"num_speakers={int(speakers)} asks for speaker separation, which this server does not do "
                       "(no diarization); leave it out or send 1", "num_speakers")
    if form.text("diarization_threshold") is not None:
        raise _invalid("diarization_threshold can only be set with diarize=true, and diarization is not available "
                       "on this server", "diarization_threshold")
    form.refuse_true("detect_speaker_roles", "it needs diarization, which is not available on this server")
    form.boolean("use_speaker_library")  # only meaningful with diarization: accepted, no effect
    form.refuse_true("use_multi_channel", "channels are mixed into one transcript on this server")
    style = form.text("multichannel_output_style")
    if style is not None and style not in ("separate", "combined"):
        raise _invalid(f"multichannel_output_style must be separate or combined, not {style[:50]!r}",
                       "multichannel_output_style")

    # Asynchronous delivery: the answer always carries the transcript.
    form.refuse_true("webhook", "this server answers with the transcript itself; poll "
                     "GET /api/v1/speech-services/transcriptions or use its webhooks instead")
    if form.text("webhook_id") is not None:
        raise _invalid("webhook_id is only valid with webhook=true, which this server does not support", "webhook_id")
    form.json("webhook_metadata")  # only delivered with a webhook: accepted when it is JSON

    # Features the engine does not have.
    form.refuse_given("entity_detection", "entity detection is not available on this server")
    form.refuse_given("entity_redaction", "entity redaction is not available on this server")
    mode = form.text("entity_redaction_mode")
    if mode is not None and mode not in ("redacted", "entity_type", "enumerated_entity_type"):
        raise _invalid("entity_redaction_mode must be redacted, entity_type or enumerated_entity_type",
                       "entity_redaction_mode")
    if form.text("transcript_edit") is not None:
        raise _invalid("transcript_edit is not supported: this server does not edit transcripts", "transcript_edit")
    numbers = form.text("numbers_format")
    if numbers == "digits":
        raise _invalid("numbers_format=digits is not supported: numbers are written as words", "numbers_format")
    if numbers not in (None, "words"):
        raise _invalid(f"numbers_format must be digits or words, not {numbers[:50]!r}", "numbers_format")

    # Sampling knobs of a generative model: the engine is deterministic, so they change nothing.
    form.number("temperature", 0.0, 2.0)
    form.number("seed", 0, 2_147_483_647, integer=True)
    form.boolean("tag_audio_events", True)  # accepted: the engine detects no audio events, none are tagged
    form.boolean("enable_logging", True)  # a query parameter; tolerated in the form as well

    return ScribeRequest(
        model_id=model_id,
        granularity=granularity,  # type: ignore[arg-type]
        pcm=file_format == "pcm_s16le_16",
        no_verbatim=form.boolean("no_verbatim"),
        keyterms=_keyterms(upload.getlist("keyterms")),
        exports=_exports(form.json("additional_formats")),
    )


def _keyterms(values: list[str]) -> tuple[str, ...]:
    terms = [v for v in values if v != ""]
    if len(terms) > MAX_KEYTERMS:
        raise _invalid(f"at most {MAX_KEYTERMS} keyterms are allowed, {len(terms)} were given", "keyterms")
    for term in terms:
        if not term.strip() or len(term) > MAX_KEYTERM_CHARS:
            raise _invalid(f"keyterms: each term has 1 to {MAX_KEYTERM_CHARS} characters, not {term[:60]!r}",
                           "keyterms")
        if len(term.split()) > MAX_KEYTERM_WORDS:
            raise _invalid(f"keyterms: each term holds at most {MAX_KEYTERM_WORDS} words, not {term!r}", "keyterms")
        if _KEYTERM_FORBIDDEN.search(term):
            raise _invalid(f"keyterms: a term may not contain < > {{ }} [ ] or \\, as {term!r} does", "keyterms")
    return tuple(terms)


def _exports(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _invalid("additional_formats must be a JSON list of objects such as {\"format\": \"srt\"}",
                       "additional_formats")
    formats = []
    for item in value:
        name = item.get("format")
        if name not in _EXPORTS:
            known = name in _EXPORT_FORMATS
            raise _invalid(f"additional_formats: {name!r} is {'not rendered by this server' if known else 'unknown'};"
                           f" this server renders {', '.join(_EXPORTS)}", "additional_formats")
        formats.append(name)
    return tuple(formats)


# -- authentication --------------------------------------------------------------------------------


async def _caller(request: Request, services: Services) -> Principal:
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
                raise _unauthorized(NO_CREDENTIALS, "needs_authorization")
            else:
                caller = await authenticate(db, services.jwt, api_key, authorization)
    except AuthError as exc:
        message = "Invalid API key" if api_key else f"Invalid credentials: {exc}"
        raise _unauthorized(message) from None
    for scope in (TRANSCRIPTIONS_WRITE, FILES_WRITE):  # a job, and the file it reads
        if not caller.has(scope):
            raise ScribeError(403, f"This API key lacks the {scope} scope, which speech-to-text needs.",
                              type="authorization_error", code="insufficient_permissions",
                              status="missing_permissions")
    return caller


# -- the route -------------------------------------------------------------------------------------


@router.post(
    "/v1/speech-to-text",
    summary="Speech to text (ElevenLabs-compatible)",
    response_model=None,
    responses={
        200: {"model": ScribeTranscript, "description": "The transcript."},
        **{status: {"model": ScribeErrorBody, "description": description} for status, description in (
            (400, "Invalid or unsupported parameters, or audio that cannot be decoded"),
            (401, "Missing or invalid credentials"), (403, "The key lacks a scope"),
            (409, "The job was cancelled, or its file deleted, before it ended"),
            (413, "The file is larger than the upload limit"), (415, "Not multipart/form-data"),
            (500, "The transcription failed"))},
    },
    openapi_extra={"requestBody": _REQUEST_BODY},
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
    enable_logging = _boolean(request.query_params.get("enable_logging"), "enable_logging", True)
    try:
        upload = await receive_upload(request, max_bytes=settings.max_upload_bytes, spool_dir=settings.uploads_dir,
                                      max_fields=MAX_FIELDS, max_field_bytes=MAX_FIELD_BYTES)
    except UploadError as exc:
        raise _upload_error(exc) from None
    async with upload:
        scribe = parse_form(upload)
        values = _values(caller, scribe)
        if upload.size == 0:
            raise _invalid("the file is empty", "file")
        stored = await _as_wav(upload, settings.uploads_dir) if scribe.pcm else upload
        async with stored:
            file = await _ingest(services, caller, stored)
    async with services.db() as s:
        job = await jobs.create(s, {**values, "file_id": file.id, "duration_seconds": file.duration_seconds})
    request.app.state.jobs.wake()
    try:
        ended = await _wait(request, services, job.id, caller)
        if ended is None:  # the client left: nobody reads an answer
            return Response(status_code=499)
        row, segments = ended
        return JSONResponse(_answer(row, segments, file, scribe))
    finally:
        if not enable_logging:
            await asyncio.shield(_forget(services, job.id, caller, file))


def _values(caller: Principal, scribe: ScribeRequest) -> dict[str, Any]:
    options = TranscriptionOptions(model=scribe.model_id, punctuation=True, capitalization=True)
    try:
        values = job_values(caller, options, DiarizationOptions(), None, "elevenlabs")
    except ApiError as exc:  # already checked above; kept in ElevenLabs' shape all the same
        raise _invalid(exc.detail, exc.parameter or "model_id") from None
    extra: dict[str, Any] = {"no_verbatim": scribe.no_verbatim}
    if scribe.keyterms:
        extra["keyterms"] = list(scribe.keyterms)
    return {**values, "options": {**values["options"], **extra}}


def _wav_header(data_bytes: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, PCM_RATE, PCM_RATE * 2, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))


async def _as_wav(upload: Upload, spool_dir: Path) -> Upload:
    """``pcm_s16le_16``: the raw samples behind a WAV header, so the decoder (and a download) knows them."""
    if upload.size % 2:
        raise _invalid(f"file_format=pcm_s16le_16 needs whole 16-bit samples (an even number of bytes), "
                       f"not {upload.size} bytes", "file")
    if upload.size > 0xFFFFFFFF - 36:
        raise ScribeError(413, "pcm_s16le_16 audio is limited to 4 GiB (a WAV file's size)", param="file",
                          type="invalid_request", code="file_too_large")
    path, sha256 = await asyncio.to_thread(_write_wav, upload.path, upload.size, spool_dir)
    name = upload.filename or "audio.pcm"
    return dataclasses.replace(upload, path=path, filename=name, content_type="audio/wav", size=upload.size + 44,
                               sha256=sha256)


def _write_wav(source: Path, size: int, spool_dir: Path) -> tuple[Path, str]:
    descriptor, name = tempfile.mkstemp(dir=spool_dir, prefix="upload-", suffix=".wav")
    hasher = hashlib.sha256()
    try:
        with os.fdopen(descriptor, "wb") as out, open(source, "rb") as pcm:
            header = _wav_header(size)
            out.write(header)
            hasher.update(header)
            while chunk := pcm.read(1 << 20):
                out.write(chunk)
                hasher.update(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name), hasher.hexdigest()


async def _ingest(services: Services, caller: Principal, upload: Upload) -> FileRow:
    try:
        return await file_store.ingest_upload(services, caller, upload, name=upload.filename or "upload", path="/",
                                              description=None, metadata=None, tags=[])
    except file_store.EmptyFile as exc:
        raise _invalid(f"file: {exc}", "file") from None
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
    if row.error_code == FILE_NOT_FOUND:
        raise ScribeError(409, message, param="file", type="invalid_request", code="file_deleted")
    raise ScribeError(500, message, type="internal_error", code=(row.error_code or "internal_error").lower())


async def _cancel(request: Request, services: Services, job_id: uuid.UUID, caller: Principal) -> None:
    try:
        async with services.db() as s:
            row = await jobs.get(s, job_id, caller.tenant_id)
            if row is not None and row.status not in TERMINAL:
                await jobs.cancel(s, row)
    except jobs.Conflict:  # it ended meanwhile
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
                await jobs.soft_delete(s, row, retention, purge_now=True)
            stored = await file_store.get_file(s, file.id, caller.tenant_id)
            if stored is not None:
                await file_store.delete_file(services, s, stored)
    except Exception:
        log.exception("zero retention: could not remove transcription %s and its file", job_id)


# -- the answer ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Word:
    text: str  # as written in the transcript (capitals, final stop)
    start: float
    end: float
    confidence: float | None


def _segment_words(segment: TranscriptionSegmentRow, no_verbatim: bool) -> tuple[str, list[_Word]]:
    """The segment's text and its words, written as the text is: the stored transcript is the raw
    words made a sentence, token for token, so each word takes its token (``The``, ``dog.``)."""
    words = list(segment.words)
    text = segment.transcript
    if no_verbatim:
        words = remove_disfluencies(words, lambda w: w["word"])
        text = as_sentence(" ".join(w["word"] for w in words), True, True) if words else ""
    tokens = text.split(" ") if text else []
    if len(tokens) != len(words):  # not token for token (never expected): the engine's words as they are
        tokens = [w["word"] for w in words]
    return text, [_Word(t, w["startSeconds"], w["endSeconds"], w.get("confidence")) for t, w in zip(tokens, words)]


def _logprob(confidence: float | None) -> float:
    if confidence is None:
        return 0.0
    return min(0.0, round(math.log(min(max(confidence, 1e-6), 1.0)), 4))


def _characters(text: str, start: float, end: float) -> list[dict[str, Any]]:
    step = (end - start) / max(len(text), 1)
    return [{"text": ch, "start": round(start + k * step, 3), "end": round(start + (k + 1) * step, 3)}
            for k, ch in enumerate(text)]


def _words_payload(words: Sequence[_Word], granularity: str) -> list[dict[str, Any]]:
    """Word and spacing entries whose texts concatenate to the transcript."""
    if granularity == "none":
        return []
    items: list[dict[str, Any]] = []
    for i, word in enumerate(words):
        if i:
            start = round(words[i - 1].end, 3)
            end = round(max(word.start, words[i - 1].end), 3)
            spacing: dict[str, Any] = {"text": " ", "start": start, "end": end, "type": "spacing",
                                       "speaker_id": None, "logprob": 0.0}
            if granularity == "character":
                spacing["characters"] = [{"text": " ", "start": start, "end": end}]
            items.append(spacing)
        start, end = round(word.start, 3), round(word.end, 3)
        entry: dict[str, Any] = {"text": word.text, "start": start, "end": end, "type": "word",
                                 "speaker_id": None, "logprob": _logprob(word.confidence)}
        if granularity == "character":
            entry["characters"] = _characters(word.text, start, end)
        items.append(entry)
    return items


def _answer(row: TranscriptionRow, segments: list[TranscriptionSegmentRow], file: FileRow,
            scribe: ScribeRequest) -> dict[str, Any]:
    texts: list[str] = []
    words: list[_Word] = []
    timed: list[TimedText] = []
    for segment in segments:
        text, segment_words = _segment_words(segment, scribe.no_verbatim)
        if not text:
            continue
        texts.append(text)
        words.extend(segment_words)
        timed.append(TimedText(text, segment.start_seconds, segment.end_seconds,
                               [TimedWord(w.text, w.start, w.end) for w in segment_words]))
    exports = None
    if scribe.exports:
        exports = []
        for name in scribe.exports:
            extension, media_type, render = _EXPORTS[name]
            exports.append({"requested_format": name, "file_extension": extension, "content_type": media_type,
                            "is_base64_encoded": False, "content": render(timed)})
    return {
        "language_code": LANGUAGE_CODE,
        "language_probability": 1.0,  # English is the one language served, not a guess
        "text": " ".join(texts),
        "words": _words_payload(words, scribe.granularity),
        "channel_index": None,
        "additional_formats": exports,
        "transcription_id": str(row.id),
        "entities": None,
        "audio_duration_secs": file.duration_seconds,
    }
