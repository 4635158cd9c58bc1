"""Streaming sessions history: ``/api/v1/speech-services/streams`` (seed 000).

By default a caller sees only their own sessions; a holder of ``speech:sessions:admin`` sees
every session of their tenant. Another user's session in the tenant is 403; another tenant's
session does not exist (404).
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.api.deps import database, require, services
from lectern.api.errors import ApiError, problem_responses
from lectern.api.params import NO_CONTROL_CHARACTERS, Timestamp, instant
from lectern.api.pacing import download_pacer
from lectern.api.recording import recording_response
from lectern.auth.principal import Principal
from lectern.auth.scopes import SESSIONS_ADMIN, SESSIONS_DELETE, SESSIONS_READ
from lectern.store import session_history as history
from lectern.store.models import StreamSegmentRow, StreamSessionRow
from lectern.store.sessions import LIVE_STATES

router = APIRouter(prefix="/api/v1/speech-services/streams", tags=["Streaming Sessions"])

SORT_PATTERN = r"^(startTime|endTime|durationMilliseconds|wordsCount|segmentCount)(,(asc|desc|ASC|DESC))?$"


class SessionState(str, enum.Enum):
    CREATED = "CREATED"
    ACTIVE = "ACTIVE"
    FINISHED = "FINISHED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


class SpeechServiceSessionResponse(BaseModel):
    sessionId: uuid.UUID = Field(description="Unique identifier of the streaming session.")
    state: SessionState
    requestedModelAlias: str = Field(description="The model alias requested by the client.")
    resolvedModelName: str = Field(description="The actual speech model name used for processing.")
    usedFallback: bool
    startTime: datetime
    endTime: datetime | None
    durationMilliseconds: int = Field(description="Total duration of processed audio in milliseconds.")
    wordsCount: int
    segmentCount: int
    recordingRequested: bool
    recordingPurged: bool
    recordingPurgedAt: datetime | None
    clientAddress: str
    userAgent: str | None
    failureReason: str | None
    metadata: dict[str, Any] | None = Field(description="Custom key-value metadata associated with the session.")


class SpeechServiceSessionsListResponse(BaseModel):
    sessions: list[SpeechServiceSessionResponse]
    page: int = Field(description="Current page number (zero-based).")
    size: int = Field(description="Number of items returned in this page.")
    total: int = Field(description="Total number of matching sessions across all pages.")


class SpeechServiceSessionWordResponse(BaseModel):
    word: str
    startSeconds: float
    endSeconds: float
    confidence: float | None
    speakerTag: int | None


class SpeechServiceSessionSegmentResponse(BaseModel):
    id: uuid.UUID
    segmentIndex: int
    transcript: str
    confidence: float | None
    words: list[SpeechServiceSessionWordResponse] | None
    startSeconds: float
    endSeconds: float
    createdAt: datetime


def session_response(row: StreamSessionRow) -> SpeechServiceSessionResponse:
    return SpeechServiceSessionResponse(
        sessionId=row.id,
        state=SessionState(row.state),
        requestedModelAlias=row.requested_model_alias,
        resolvedModelName=row.resolved_model_name,
        usedFallback=row.used_fallback,
        startTime=row.start_time,
        endTime=row.end_time,
        durationMilliseconds=row.duration_ms,
        wordsCount=row.words_count,
        segmentCount=row.segment_count,
        recordingRequested=row.recording_requested,
        recordingPurged=row.recording_purged,
        recordingPurgedAt=row.recording_purged_at,
        clientAddress=row.client_address,
        userAgent=row.user_agent,
        failureReason=row.failure_reason,
        metadata=row.metadata_,
    )


def segment_response(row: StreamSegmentRow) -> SpeechServiceSessionSegmentResponse:
    return SpeechServiceSessionSegmentResponse(
        id=row.id,
        segmentIndex=row.segment_index,
        transcript=row.transcript,
        confidence=row.confidence,
        words=[SpeechServiceSessionWordResponse(**w) for w in row.words],
        startSeconds=row.start_seconds,
        endSeconds=row.end_seconds,
        createdAt=row.created_at,
    )


def _session_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, f"no session {raw!r}: session ids are UUIDs", "id") from None


async def _owned_session(db: AsyncSession, raw_id: str, caller: Principal) -> StreamSessionRow:
    session = await history.get_session(db, _session_id(raw_id), caller.tenant_id)
    if session is None:
        raise ApiError(404, f"session {raw_id} not found")
    if session.user_id != caller.user_id and not caller.has(SESSIONS_ADMIN):
        raise ApiError(403, "this session belongs to another user")
    return session


def _require_recording(session: StreamSessionRow) -> None:
    if not session.recording_requested:
        raise ApiError(404, "no recording was requested for this session")
    if session.recording_purged:
        raise ApiError(410, "the recording has been purged")


@router.get(
    "",
    summary="List Sessions",
    response_model=SpeechServiceSessionsListResponse,
    responses=problem_responses(400, 401, 403),
)
async def list_sessions(
    request: Request,
    caller: Annotated[Principal, Depends(require(SESSIONS_READ))],
    page: Annotated[int, Query(ge=0, le=1_000_000, description="Page number (zero-based).")] = 0,
    size: Annotated[int, Query(ge=1, le=100, description="Page size (max 100).")] = 20,
    state: Annotated[SessionState | None, Query(description="Filter by session state.")] = None,
    modelAlias: Annotated[
        str | None,
        Query(max_length=200, pattern=NO_CONTROL_CHARACTERS,
              description="Filter by model alias (partial, case-insensitive)."),
    ] = None,
    startedAfter: Annotated[
        Timestamp | None, Query(description="Sessions started on or after this ISO 8601 instant.")
    ] = None,
    startedBefore: Annotated[
        Timestamp | None, Query(description="Sessions started on or before this ISO 8601 instant.")
    ] = None,
    recordingRequested: Annotated[bool | None, Query(description="Whether recording was requested.")] = None,
    sort: Annotated[
        str,
        Query(
            pattern=SORT_PATTERN,
            description="Sort field and direction, e.g. `startTime,desc` (ascending when no direction is "
            "given). Fields: startTime, endTime, durationMilliseconds, wordsCount, segmentCount.",
        ),
    ] = "startTime,desc",
) -> SpeechServiceSessionsListResponse:
    """Sessions of the caller, newest first by default (all of the tenant's with `speech:sessions:admin`)."""
    field, _, direction = sort.partition(",")
    rows, total = await history.list_sessions(
        services(request).db,
        history.SessionFilter(
            tenant_id=caller.tenant_id,
            user_id=None if caller.has(SESSIONS_ADMIN) else caller.user_id,
            state=state.value if state else None,
            model_alias=modelAlias,
            started_after=instant(startedAfter, "startedAfter"),
            started_before=instant(startedBefore, "startedBefore"),
            recording_requested=recordingRequested,
        ),
        sort=field,  # type: ignore[arg-type]
        descending=direction.lower() == "desc",
        page=page,
        size=size,
    )
    return SpeechServiceSessionsListResponse(
        sessions=[session_response(r) for r in rows], page=page, size=len(rows), total=total
    )


@router.get(
    "/{id}",
    summary="Get Session",
    response_model=SpeechServiceSessionResponse,
    responses=problem_responses(401, 403, 404),
)
async def get_session(
    id: str,
    caller: Annotated[Principal, Depends(require(SESSIONS_READ))],
    db: Annotated[AsyncSession, Depends(database)],
) -> SpeechServiceSessionResponse:
    return session_response(await _owned_session(db, id, caller))


@router.get(
    "/{id}/segments",
    summary="Get Session Segments",
    response_model=list[SpeechServiceSessionSegmentResponse],
    responses=problem_responses(401, 403, 404),
)
async def get_segments(
    id: str,
    caller: Annotated[Principal, Depends(require(SESSIONS_READ))],
    db: Annotated[AsyncSession, Depends(database)],
) -> list[SpeechServiceSessionSegmentResponse]:
    """Finalized segments in order; empty once the session's content is purged."""
    session = await _owned_session(db, id, caller)
    return [segment_response(r) for r in await history.segments(db, session.id)]


@router.get(
    "/{id}/recording",
    summary="Download Recording",
    response_class=Response,
    responses={
        200: {"content": {"audio/x-pcm": {"schema": {"type": "string", "format": "binary"}}},
              "description": "16 kHz, 16-bit signed little-endian, mono PCM."},
        206: {"content": {"audio/x-pcm": {"schema": {"type": "string", "format": "binary"}}},
              "description": "The requested byte range."},
        **problem_responses(401, 403, 404, 410, 416),
    },
)
async def download_recording(
    id: str,
    request: Request,
    caller: Annotated[Principal, Depends(require(SESSIONS_READ))],
    db: Annotated[AsyncSession, Depends(database)],
    range: Annotated[
        str | None, Header(description="One byte range, e.g. `bytes=0-32767` or `bytes=-32000`.")
    ] = None,
) -> Response:
    """Raw audio, streamed at the configured bandwidth limit; supports `Range: bytes=...`."""
    session = await _owned_session(db, id, caller)
    _require_recording(session)
    path = Path(session.recording_path) if session.recording_path else None
    if path is None or not path.exists():
        raise ApiError(410, "the recording is no longer in storage")
    return recording_response(path, range, download_pacer(request, caller.tenant_id))


@router.delete(
    "/{id}", summary="Delete Session", status_code=204, response_class=Response,
    responses=problem_responses(401, 403, 404),
)
async def delete_session(
    id: str,
    caller: Annotated[Principal, Depends(require(SESSIONS_DELETE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> Response:
    """Soft delete: the row stays for audit and quota, but is hidden from every listing and read."""
    session = await _owned_session(db, id, caller)
    await history.soft_delete(db, session.id)
    return Response(status_code=204)


@router.delete(
    "/{id}/recording", summary="Purge Recording", status_code=204, response_class=Response,
    responses=problem_responses(401, 403, 404, 409, 410),
)
async def purge_recording(
    id: str,
    caller: Annotated[Principal, Depends(require(SESSIONS_DELETE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> Response:
    """Removes the audio from storage for good; metadata and segments stay."""
    session = await _owned_session(db, id, caller)
    _require_recording(session)
    if session.state in LIVE_STATES:
        raise ApiError(409, "the session is still streaming; purge its recording once it has ended")
    _remove(session.recording_path)
    await history.mark_recording_purged(db, session.id)
    return Response(status_code=204)


@router.post(
    "/{id}/purge", summary="Purge Session Content", status_code=204, response_class=Response,
    responses=problem_responses(401, 403, 404, 409),
)
async def purge_session(
    id: str,
    caller: Annotated[Principal, Depends(require(SESSIONS_DELETE))],
    db: Annotated[AsyncSession, Depends(database)],
) -> Response:
    """Removes the segments and the recording for good; the session's metadata stays."""
    session = await _owned_session(db, id, caller)
    if session.state in LIVE_STATES:
        raise ApiError(409, "the session is still streaming; purge it once it has ended")
    if session.recording_requested and not session.recording_purged:
        _remove(session.recording_path)
    await history.purge_content(db, session)
    return Response(status_code=204)


def _remove(path: str | None) -> None:
    if path:
        Path(path).unlink(missing_ok=True)
