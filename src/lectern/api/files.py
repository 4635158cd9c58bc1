"""Files: ``/api/v1/speech-services/files``, uploaded audio kept for transcription.

A caller sees only their own files (sharing is not built): another user's file in the tenant is
403, another tenant's file does not exist (404). A deleted file keeps its row, reads as
``isDeleted``, and has no content any more (410).
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.api.deps import database, require, services
from lectern.api.errors import ApiError, Problem, problem_responses
from lectern.api.file_fields import (
    MAX_DESCRIPTION,
    MAX_NAME,
    MAX_PATH,
    MAX_TAG,
    MAX_TAGS,
    FileFields,
    file_fields,
    valid_description,
    valid_metadata,
    valid_name,
    valid_path,
    valid_tags,
)
from lectern.api.pacing import download_pacer
from lectern.api.recording import parse_range, shown_range
from lectern.api.params import NO_CONTROL_CHARACTERS, Timestamp, instant
from lectern.api.uploads import Upload, UploadError, receive_upload
from lectern.auth.principal import Principal
from lectern.auth.scopes import FILES_DELETE, FILES_READ, FILES_WRITE
from lectern.speech.decode import AudioInfo, AudioTooLong, UnsupportedAudio
from lectern.store import files as store
from lectern.store import quotas as quota_store
from lectern.store.batch_models import FileRow

router = APIRouter(prefix="/api/v1/speech-services/files", tags=["Files"])

SORT_PATTERN = r"^(creationDate|name|size|duration)(,(asc|desc|ASC|DESC))?$"
UPLOAD_PROBLEMS = {
    **problem_responses(400, 401, 403),
    413: {"model": Problem, "description": "Payload Too Large"},
    415: {"model": Problem, "description": "Unsupported Media Type"},
}
UPLOAD_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "The audio (WAV, FLAC, MP3, Ogg/Opus, M4A/AAC, WebM...)."},
            "name": {"type": "string", "maxLength": MAX_NAME, "description": "Display name; default: the filename."},
            "path": {"type": "string", "maxLength": MAX_PATH, "pattern": "^/",
                     "description": "Virtual folder, e.g. `/incoming-audio/`; default `/`."},
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
            "metadata": {"type": "string", "description": "A JSON object, as a string."},
            "tags": {"type": "string", "description": f"A JSON array of up to {MAX_TAGS} strings, as a string."},
        },
    }}},
}


class SpeechServiceFileFormat(BaseModel):
    container: str = Field(description="The container FFmpeg detected, e.g. `wav`, `ogg`, `mp3`, `matroska,webm`.")
    codec: str = Field(description="e.g. `pcm_s16le`, `flac`, `mp3`, `opus`, `aac`.")
    sampleRate: int
    channels: int


class SpeechServiceFileResponse(BaseModel):
    id: uuid.UUID
    name: str
    filename: str = Field(description="The uploaded file's own name.")
    description: str | None
    path: str = Field(description="Virtual folder.")
    contentType: str | None = Field(description="The Content-Type the client declared for the file.")
    size: int = Field(description="Bytes.")
    sha256: str = Field(description="SHA-256 of the bytes, in hex.")
    durationMilliseconds: int
    format: SpeechServiceFileFormat
    metadata: dict[str, Any] | None
    tags: list[str]
    creationDate: datetime
    modificationDate: datetime
    isDeleted: bool
    deletedAt: datetime | None


class SpeechServiceFilesListResponse(BaseModel):
    files: list[SpeechServiceFileResponse]
    page: int = Field(description="Current page number (zero-based).")
    size: int = Field(description="Number of items returned in this page.")
    total: int = Field(description="Total number of matching files across all pages.")


class SpeechServiceFileUpdateRequest(BaseModel):
    """Only the fields sent change; `description` and `metadata` may be null to clear them."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=MAX_NAME)
    path: str | None = Field(default=None, max_length=MAX_PATH)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = Field(default=None, max_length=MAX_TAGS)


def file_response(row: FileRow) -> SpeechServiceFileResponse:
    return SpeechServiceFileResponse(
        id=row.id,
        name=row.name,
        filename=row.filename,
        description=row.description,
        path=row.path,
        contentType=row.content_type,
        size=row.size_bytes,
        sha256=row.sha256,
        durationMilliseconds=round(row.duration_seconds * 1000),
        format=SpeechServiceFileFormat(
            container=row.container, codec=row.codec, sampleRate=row.sample_rate, channels=row.channels
        ),
        metadata=row.metadata_,
        tags=row.tags,
        creationDate=row.created_at,
        modificationDate=row.updated_at,
        isDeleted=row.deleted_at is not None,
        deletedAt=row.deleted_at,
    )


# -- routes ---------------------------------------------------------------------------------------


def _file_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, f"no file {raw!r}: file ids are UUIDs", "id") from None


async def _owned_file(db: AsyncSession, raw_id: str, caller: Principal) -> FileRow:
    row = await store.get_file(db, _file_id(raw_id), caller.tenant_id, include_deleted=True)
    if row is None:
        raise ApiError(404, f"file {raw_id} not found")
    if row.user_id != caller.user_id:
        raise ApiError(403, "this file belongs to another user")
    return row


@router.post(
    "",
    summary="Upload File",
    status_code=201,
    response_model=SpeechServiceFileResponse,
    responses=UPLOAD_PROBLEMS,
    openapi_extra={"requestBody": UPLOAD_BODY},
)
async def upload_file(
    request: Request,
    response: Response,
    caller: Annotated[Principal, Depends(require(FILES_WRITE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> SpeechServiceFileResponse:
    """Multipart upload of one audio file; it is identified (container, codec, duration) before it is kept."""
    # The session that authenticated the caller (the same one: dependencies are cached) would
    # hold a pooled connection for as long as the upload streams in: give it back first.
    await db.close()
    upload = await received_upload(request, caller)
    async with upload:
        row = await ingest(request, caller, upload, file_fields(upload, services(request).settings.max_metadata_bytes))
    response.headers["Location"] = f"{router.prefix}/{row.id}"
    return file_response(row)


async def received_upload(request: Request, caller: Principal) -> Upload:
    """The request's upload, spooled within the size limit and what is left of the tenant's storage
    quota; problem+json (413, 415, 400) if not acceptable. Past the quota it is 413 as soon as the
    received bytes pass it, and nothing is kept."""
    settings = services(request).settings
    async with services(request).db() as s:
        left = await quota_store.quotas(s, caller.tenant_id)
    try:
        return await receive_upload(request, max_bytes=settings.max_upload_bytes, spool_dir=settings.uploads_dir,
                                    storage_left=left.storage_bytes.available,
                                    storage_refusal=quota_store.storage_refusal(left))
    except UploadError as exc:
        raise ApiError(exc.status, exc.message, exc.field) from None


async def ingest(request: Request, caller: Principal, upload: Upload, fields: FileFields,
                 accept: Callable[[AudioInfo], None] | None = None) -> FileRow:
    """Keep an upload as the caller's file; 400 for an empty file, 415 for one that is not audio,
    413 for one holding more audio than the limit; 403 when ``accept`` refuses its audio for a quota."""
    try:
        return await store.ingest_upload(services(request), caller, upload, name=fields.name, path=fields.path,
                                         description=fields.description, metadata=fields.metadata, tags=fields.tags,
                                         accept=accept)
    except quota_store.QuotaExceeded as exc:
        raise ApiError(403, str(exc), "file") from None
    except store.EmptyFile as exc:
        raise ApiError(400, f"file: {exc}", "file") from None
    except AudioTooLong as exc:
        raise ApiError(413, f"file: {exc}", "file") from None
    except UnsupportedAudio as exc:
        raise ApiError(415, f"file: {exc}", "file") from None


@router.get(
    "",
    summary="List Files",
    response_model=SpeechServiceFilesListResponse,
    responses=problem_responses(400, 401, 403),
)
async def list_files(
    caller: Annotated[Principal, Depends(require(FILES_READ))],
    db: Annotated[AsyncSession, Depends(database)],
    page: Annotated[int, Query(ge=0, le=1_000_000, description="Page number (zero-based).")] = 0,
    size: Annotated[int, Query(ge=1, le=100, description="Page size (max 100).")] = 20,
    name: Annotated[str | None, Query(max_length=MAX_NAME, pattern=NO_CONTROL_CHARACTERS,
                                      description="Name contains (case-insensitive).")] = None,
    filename: Annotated[str | None, Query(max_length=MAX_NAME, pattern=NO_CONTROL_CHARACTERS,
                                          description="Filename contains (case-insensitive).")] = None,
    sha256: Annotated[str | None, Query(pattern=r"^[0-9a-fA-F]{64}$", description="Exact SHA-256 (hex).")] = None,
    tags: Annotated[str | None, Query(max_length=MAX_TAGS * (MAX_TAG + 1), pattern=NO_CONTROL_CHARACTERS,
                                      description="Comma-separated: files having every one of these tags.")] = None,
    path: Annotated[str | None, Query(max_length=MAX_PATH, pattern=NO_CONTROL_CHARACTERS,
                                      description="Exact virtual folder.")] = None,
    createdAfter: Annotated[Timestamp | None, Query(description="Created on or after this ISO 8601 instant.")] = None,
    createdBefore: Annotated[Timestamp | None, Query(description="Created on or before this ISO 8601 instant.")] = None,
    isDeleted: Annotated[bool, Query(description="List deleted files instead of live ones.")] = False,
    sort: Annotated[str, Query(pattern=SORT_PATTERN, description="Sort field and direction, e.g. `name,asc` "
                               "(ascending when no direction is given). Fields: creationDate, name, size, duration.")]
    = "creationDate,desc",
) -> SpeechServiceFilesListResponse:
    """The caller's files, newest first by default."""
    field, _, direction = sort.partition(",")
    wanted = tuple(dict.fromkeys(t.strip() for t in (tags or "").split(",") if t.strip()))
    rows, total = await store.list_files(
        db,
        store.FileFilter(
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            name=name,
            filename=filename,
            sha256=sha256.lower() if sha256 else None,
            tags=wanted,
            path=path,
            created_after=instant(createdAfter, "createdAfter"),
            created_before=instant(createdBefore, "createdBefore"),
            deleted=isDeleted,
        ),
        sort=field,  # type: ignore[arg-type]
        descending=direction.lower() == "desc",
        page=page,
        size=size,
    )
    return SpeechServiceFilesListResponse(
        files=[file_response(r) for r in rows], page=page, size=len(rows), total=total
    )


@router.get(
    "/{id}", summary="Get File", response_model=SpeechServiceFileResponse, responses=problem_responses(401, 403, 404)
)
async def get_file(
    id: str,
    caller: Annotated[Principal, Depends(require(FILES_READ))],
    db: Annotated[AsyncSession, Depends(database)],
) -> SpeechServiceFileResponse:
    """A file, deleted ones included (`isDeleted`)."""
    return file_response(await _owned_file(db, id, caller))


@router.patch(
    "/{id}",
    summary="Update File",
    response_model=SpeechServiceFileResponse,
    responses=problem_responses(400, 401, 403, 404, 409),
)
async def update_file(
    id: str,
    body: SpeechServiceFileUpdateRequest,
    request: Request,
    caller: Annotated[Principal, Depends(require(FILES_WRITE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> SpeechServiceFileResponse:
    """Rename, move, describe or tag a file; its bytes never change."""
    row = await _owned_file(db, id, caller)
    if row.deleted_at is not None:
        raise ApiError(409, "the file is deleted")
    given = body.model_fields_set
    for required in ("name", "path", "tags"):
        if required in given and getattr(body, required) is None:
            raise ApiError(400, f"{required}: cannot be null", required)
    changes: dict[str, Any] = {}
    if "name" in given:
        changes["name"] = valid_name(body.name or "")
    if "path" in given:
        changes["path"] = valid_path(body.path or "")
    if "description" in given:
        changes["description"] = valid_description(body.description)
    if "metadata" in given:
        changes["metadata_"] = valid_metadata(body.metadata, services(request).settings.max_metadata_bytes)
    if "tags" in given:
        changes["tags"] = valid_tags(body.tags)
    updated = await store.update_file(db, row.id, changes)
    if updated is None:  # deleted since it was read
        raise ApiError(409, "the file is deleted")
    return file_response(updated)


@router.get(
    "/{id}/content",
    summary="Download File Content",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
              "description": "The file's bytes, as uploaded (Content-Type: the one declared at upload)."},
        206: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
              "description": "The requested byte range."},
        **problem_responses(401, 403, 404, 410, 416),
    },
)
async def download_content(
    id: str,
    request: Request,
    caller: Annotated[Principal, Depends(require(FILES_READ))],
    db: Annotated[AsyncSession, Depends(database)],
    range: Annotated[str | None, Header(description="One byte range, e.g. `bytes=0-65535` or `bytes=-1000`.")] = None,
) -> Response:
    """The bytes as uploaded, paced by the tenant's download bandwidth; supports `Range: bytes=...`."""
    row = await _owned_file(db, id, caller)
    if row.deleted_at is not None:
        raise ApiError(410, "the file is deleted: its content is gone")
    await db.close()  # a download may be long: no pooled connection held meanwhile
    try:
        selected = parse_range(range, row.size_bytes)
    except ApiError as exc:  # recording.py's wording names a recording
        raise ApiError(416, f"the range {shown_range(range or '')} is outside the file's {row.size_bytes} bytes",
                       headers=exc.headers)
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": _attachment(row.filename),
               "X-Content-Type-Options": "nosniff"}
    if selected is None:
        start, length, status = 0, row.size_bytes, 200
    else:
        start, length, status = selected[0], selected[1] - selected[0] + 1, 206
        headers["Content-Range"] = f"bytes {selected[0]}-{selected[1]}/{row.size_bytes}"
    headers["Content-Length"] = str(length)
    chunks = services(request).blobs.read(row.blob_key, start, length)
    try:  # the first chunk before the status line: a missing blob is still an error response
        first = await anext(chunks, b"")
    except FileNotFoundError:
        raise ApiError(410, "the file's content is no longer in storage") from None
    pacer = download_pacer(request, caller.tenant_id)  # the tenant's bandwidth, shared by all its downloads
    return StreamingResponse(pacer.paced(_then(first, chunks)), status_code=status,
                             media_type=row.content_type or "application/octet-stream", headers=headers)


async def _then(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


def _attachment(filename: str) -> str:
    fallback = "".join(c if " " <= c < "\x7f" and c not in '"\\' else "_" for c in filename) or "file"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}"


@router.delete(
    "/{id}", summary="Delete File", status_code=204, response_class=Response,
    responses=problem_responses(401, 403, 404, 409),
)
async def delete_file(
    id: str,
    request: Request,
    caller: Annotated[Principal, Depends(require(FILES_DELETE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> Response:
    """Soft delete: the row stays (`isDeleted`), the bytes leave storage at once. Refused while a
    transcription of the file is pending or in progress."""
    row = await _owned_file(db, id, caller)
    if row.deleted_at is not None:
        raise ApiError(409, "the file is already deleted")
    try:
        await store.delete_file(services(request), db, row)
    except store.FileConflict as exc:
        raise ApiError(409, str(exc)) from None
    return Response(status_code=204)
