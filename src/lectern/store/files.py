"""Uploaded files: ingesting an upload (probe, blob, row) and the files API's queries.

A file's bytes are a blob (``files/{tenant}/{file}``) in the configured store; its row is the
source of truth for everything else. A deleted file keeps its row (``deleted_at``) for audit and
for the transcriptions that name it; its bytes leave the store at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import ColumnElement, Select, cast, exists, func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.speech.decode import AudioInfo, probe
from lectern.store.batch_models import FileRow, TranscriptionRow
from lectern.store.models import utcnow

if TYPE_CHECKING:
    from lectern.api.uploads import Upload
    from lectern.auth.principal import Principal
    from lectern.services import Services

log = logging.getLogger(__name__)

SortField = Literal["creationDate", "name", "size", "duration"]
SORT_COLUMNS: dict[str, Any] = {
    "creationDate": FileRow.created_at,
    "name": func.lower(FileRow.name),  # as people read a list of names: case-insensitive
    "size": FileRow.size_bytes,
    "duration": FileRow.duration_seconds,
}
# A transcription in one of these states still reads the file's bytes.
BUSY_TRANSCRIPTION_STATES = ("PENDING", "IN_PROGRESS")
UPDATABLE = frozenset({"name", "path", "description", "metadata_", "tags"})


class EmptyFile(ValueError):
    """The upload holds no bytes at all (a client error, distinct from bytes that are not audio)."""


class FileConflict(Exception):
    """The file cannot be deleted now; the message says why, for the client."""


@dataclass(frozen=True, slots=True)
class FileFilter:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    name: str | None = None  # partial, case-insensitive
    filename: str | None = None  # partial, case-insensitive
    sha256: str | None = None  # exact, lower-case hex
    tags: tuple[str, ...] = ()  # files having every one of them
    path: str | None = None  # exact folder
    created_after: datetime | None = None
    created_before: datetime | None = None
    deleted: bool = False


def blob_key(tenant_id: uuid.UUID, file_id: uuid.UUID) -> str:
    return f"files/{tenant_id}/{file_id}"


async def ingest_upload(
    services: Services,
    caller: Principal,
    upload: Upload,
    *,
    name: str,
    path: str,
    description: str | None,
    metadata: dict[str, Any] | None,
    tags: list[str],
    accept: Callable[[AudioInfo], None] | None = None,
) -> FileRow:
    """Make a file of a received upload: probe it, move its bytes into the blob store, insert its row.
    ``accept`` sees the probed audio before anything is stored and may refuse it by raising.

    EmptyFile when it has no bytes; the probe's UnsupportedAudio (its message is for the client)
    when they are not audio this server decodes. Either way nothing is stored, and the upload's
    temporary file stays the caller's to discard. The arguments are taken as validated.
    """
    if upload.size == 0:
        raise EmptyFile("the file is empty")
    info = await asyncio.to_thread(probe, upload.path, services.settings.max_file_seconds)  # decodes: off the loop
    if accept is not None:
        accept(info)
    file_id = uuid.uuid4()
    key = blob_key(caller.tenant_id, file_id)
    now = utcnow()
    row = FileRow(
        id=file_id,
        tenant_id=caller.tenant_id,
        user_id=caller.user_id,
        name=name,
        filename=upload.filename or name,
        description=description,
        path=path,
        content_type=upload.content_type,
        size_bytes=upload.size,
        sha256=upload.sha256,
        duration_seconds=info.duration_seconds,
        container=info.container,
        codec=info.codec,
        sample_rate=info.sample_rate,
        channels=info.channels,
        metadata_=metadata,
        tags=tags,
        blob_key=key,
        created_at=now,
        updated_at=now,
    )
    await services.blobs.put(key, upload.path)
    try:
        async with services.db() as db:
            db.add(row)
            await db.commit()
    except BaseException:  # a row that was never written must leave no blob behind
        await asyncio.shield(services.blobs.delete(key))
        raise
    return row


async def get_file(
    db: AsyncSession, file_id: uuid.UUID, tenant_id: uuid.UUID, *, include_deleted: bool = False
) -> FileRow | None:
    """The tenant's file (a deleted one too, when asked); other tenants' files do not exist here."""
    query = select(FileRow).where(FileRow.id == file_id, FileRow.tenant_id == tenant_id)
    if not include_deleted:
        query = query.where(FileRow.deleted_at.is_(None))
    return await db.scalar(query)


async def list_files(
    db: AsyncSession, f: FileFilter, sort: SortField, descending: bool, page: int, size: int
) -> tuple[list[FileRow], int]:
    """One page of the owner's files matching ``f``, and how many match in all."""
    query = _filtered(select(FileRow), f, db.get_bind().dialect.name)
    column = SORT_COLUMNS[sort]
    tiebreak = FileRow.id.desc() if descending else FileRow.id.asc()
    query = query.order_by(column.desc() if descending else column.asc(), tiebreak)
    rows = list(await db.scalars(query.offset(page * size).limit(size)))
    if page == 0 and len(rows) < size:  # the whole result is on this page: no count needed
        return rows, len(rows)
    total = await db.scalar(_filtered(select(func.count()).select_from(FileRow), f, db.get_bind().dialect.name))
    return rows, int(total or 0)


def _filtered(query: Select, f: FileFilter, dialect: str) -> Select:
    query = query.where(FileRow.tenant_id == f.tenant_id, FileRow.user_id == f.user_id)
    query = query.where(FileRow.deleted_at.is_not(None) if f.deleted else FileRow.deleted_at.is_(None))
    if f.name:
        query = query.where(_contains(FileRow.name, f.name))
    if f.filename:
        query = query.where(_contains(FileRow.filename, f.filename))
    if f.sha256:
        query = query.where(FileRow.sha256 == f.sha256)
    if f.path is not None:
        query = query.where(FileRow.path == f.path)
    if f.created_after is not None:
        query = query.where(FileRow.created_at >= f.created_after)
    if f.created_before is not None:
        query = query.where(FileRow.created_at <= f.created_before)
    if f.tags:
        query = query.where(*_has_tags(f.tags, dialect))
    return query


def _contains(column: Any, text: str) -> ColumnElement[bool]:
    """Partial and case-insensitive; % and _ in the text are plain characters."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return func.lower(column).like(f"%{escaped}%", escape="\\")


def _has_tags(tags: tuple[str, ...], dialect: str) -> list[ColumnElement[bool]]:
    """Whole-element matches in the JSON array, never substrings: on PostgreSQL, jsonb containment
    (the column is json: cast); on SQLite, one json_each lookup per tag."""
    if dialect == "postgresql":
        return [cast(FileRow.tags, JSONB).contains(literal(list(tags), JSONB))]
    conditions = []
    for tag in tags:
        elements = func.json_each(FileRow.tags).table_valued("value")
        conditions.append(exists(select(1).select_from(elements).where(elements.c.value == tag)))
    return conditions


async def update_file(db: AsyncSession, file_id: uuid.UUID, changes: dict[str, Any]) -> FileRow | None:
    """Apply ``changes`` (FileRow attribute names) to a file that is not deleted; None when it is."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    row = await db.scalar(select(FileRow).where(FileRow.id == file_id, FileRow.deleted_at.is_(None)))
    if row is None:
        return None
    for attribute, value in changes.items():
        setattr(row, attribute, value)
    row.updated_at = utcnow()
    await db.commit()
    return row


async def soft_delete(db: AsyncSession, file_id: uuid.UUID) -> None:
    """Mark the file deleted, unless it already is or a transcription still reads it (FileConflict).

    One UPDATE decides, so a file is never marked deleted beside a transcription the check missed.
    """
    busy = exists().where(
        TranscriptionRow.file_id == file_id, TranscriptionRow.status.in_(BUSY_TRANSCRIPTION_STATES)
    )
    result = await db.execute(
        update(FileRow)
        .where(FileRow.id == file_id, FileRow.deleted_at.is_(None), ~busy)
        .values(deleted_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    await db.commit()
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return
    deleted = await db.scalar(select(FileRow.deleted_at).where(FileRow.id == file_id))
    if deleted is not None:
        raise FileConflict("the file is already deleted")
    raise FileConflict("a transcription of this file is pending or in progress: cancel it first, then delete the file")


async def delete_file(services: Services, db: AsyncSession, row: FileRow) -> None:
    """Soft-delete the file's row, then remove its bytes from the blob store for good."""
    await soft_delete(db, row.id)
    try:
        await services.blobs.delete(row.blob_key)
    except Exception:  # the row says deleted, so the bytes are unreachable: an orphan, not an error
        log.exception("file %s is deleted but its blob %s could not be removed", row.id, row.blob_key)
