"""What the job resources (transcriptions, summaries) share on the HTTP side: the listing's query
parameters, ids, webhook configuration, and access to a parent file."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.api.deps import services
from lectern.api.errors import ApiError
from lectern.api.params import Timestamp, instant
from lectern.auth.principal import Principal
from lectern.auth.scopes import FILES_READ
from lectern.jobs.queue import STATUSES
from lectern.store.batch_models import FileRow
from lectern.store.job_lifecycle import JobFilter, JobKind
from lectern.webhooks import allowed_hosts, check_webhook, signing_key

SORT_PATTERN = r"^(creationDate|completionDate|status)(,(asc|desc|ASC|DESC))?$"
STATUS_LIST = r"^\s*[A-Z_]+\s*(,\s*[A-Z_]+\s*)*$"


class SpeechServiceWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="HTTPS URL for notifications.")
    secret: str | None = Field(default=None, min_length=1, max_length=256,
                               description="Secret for HMAC-SHA256 signing (Standard Webhooks); never returned.")
    headers: dict[str, str] | None = Field(default=None, description="Custom HTTP headers.")


class WebhookView(BaseModel):
    """A configured webhook as responses show it: the secret itself is never returned."""

    url: str
    headers: dict[str, str] | None
    hasSecret: bool = Field(description="Whether deliveries are signed.")


def webhook_view(config: dict[str, Any] | None) -> WebhookView | None:
    if not config:
        return None
    return WebhookView(url=config["url"], headers=config.get("headers"), hasSecret=bool(config.get("secret")))


def webhook_config(webhook: SpeechServiceWebhook | None, request: Request) -> dict[str, Any] | None:
    """A webhook as stored with the job, once its URL, headers and secret are acceptable (400 if not)."""
    if webhook is None:
        return None
    try:
        allowed = allowed_hosts(services(request).settings.webhook_allow_insecure_hosts)
        check_webhook(webhook.url, webhook.headers, allowed)
        if webhook.secret is not None:
            signing_key(webhook.secret)
    except ValueError as exc:  # WebhookRefused, or a malformed whsec_ secret
        raise ApiError(400, f"webhook: {exc}", "webhook") from None
    return webhook.model_dump()


def job_id(raw: str, noun: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, f"no {noun} {raw!r}: ids are UUIDs", "id") from None


async def owned_job(db: AsyncSession, kind: JobKind, raw_id: str, caller: Principal) -> Any:
    """The caller's job of ``kind``, deleted or not: another user's is 403, another tenant's 404."""
    t = kind.table
    row = await db.scalar(select(t).where(t.id == job_id(raw_id, kind.noun), t.tenant_id == caller.tenant_id))
    if row is None:
        raise ApiError(404, f"{kind.noun} {raw_id} not found")
    if row.user_id != caller.user_id:
        raise ApiError(403, f"this {kind.noun} belongs to another user")
    return row


async def readable_file(db: AsyncSession, file_id: uuid.UUID, caller: Principal, parameter: str) -> FileRow:
    """A file the caller may read (their own: files are not shared, and ``speech:files:read``); 404 or 403."""
    if not caller.has(FILES_READ):
        raise ApiError(403, f"insufficient scope: reading a file needs {FILES_READ}", parameter)
    file = await db.get(FileRow, file_id)
    if file is None or file.tenant_id != caller.tenant_id:
        raise ApiError(404, f"file {file_id} not found", parameter)
    if file.user_id != caller.user_id:
        raise ApiError(403, "this file belongs to another user", parameter)
    return file


class JobListQuery:
    """The query parameters every job listing takes (a FastAPI dependency)."""

    def __init__(
        self,
        page: Annotated[int, Query(ge=0, le=1_000_000, description="Page number (zero-based).")] = 0,
        size: Annotated[int, Query(ge=1, le=100, description="Page size (max 100).")] = 20,
        status: Annotated[str | None, Query(max_length=200, pattern=STATUS_LIST, description=(
            "Filter by status (comma-separated). Values: PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED."
        ))] = None,
        isDeleted: Annotated[bool, Query(
            description="Filter by deleted state (as the seed: false by default, so `isPurged=true` alone finds "
            "nothing: a purged job is a deleted one)."
        )] = False,
        isPurged: Annotated[bool | None, Query(description="Filter by permanently deleted state.")] = None,
        createdAfter: Annotated[Timestamp | None, Query(description="Created on or after this instant.")] = None,
        createdBefore: Annotated[Timestamp | None, Query(description="Created on or before this instant.")] = None,
        completedAfter: Annotated[Timestamp | None, Query(description="Completed on or after this instant.")] = None,
        completedBefore: Annotated[Timestamp | None, Query(
            description="Completed on or before this instant.")] = None,
        sort: Annotated[str, Query(pattern=SORT_PATTERN, description=(
            "Sort field and direction. Allowed: creationDate, completionDate, status."))] = "creationDate,desc",
    ) -> None:
        self.page, self.size = page, size
        self.statuses = tuple(dict.fromkeys(s.strip() for s in status.split(","))) if status else ()
        unknown = [s for s in self.statuses if s not in STATUSES]
        if unknown:
            raise ApiError(400, f"status: unknown value(s) {', '.join(unknown)}; allowed: {', '.join(STATUSES)}",
                           "status")
        self.field, _, direction = sort.partition(",")
        self.descending = direction.lower() == "desc"  # no direction: ascending, as every listing here
        self._echo: dict[str, Any] = {
            "status": list(self.statuses) or None, "isDeleted": isDeleted, "isPurged": isPurged,
            "createdAfter": createdAfter, "createdBefore": createdBefore,
            "completedAfter": completedAfter, "completedBefore": completedBefore,
        }
        self._filter = dict(
            statuses=self.statuses, is_deleted=isDeleted, is_purged=isPurged,
            created_after=instant(createdAfter, "createdAfter"), created_before=instant(createdBefore, "createdBefore"),
            completed_after=instant(completedAfter, "completedAfter"),
            completed_before=instant(completedBefore, "completedBefore"),
        )

    def filter(self, caller: Principal, parents: dict[str, uuid.UUID | None]) -> JobFilter:
        """The caller's own jobs, or, when a parent is named, every job of that parent."""
        named = tuple((column, value) for column, value in parents.items() if value is not None)
        return JobFilter(tenant_id=caller.tenant_id, user_id=None if named else caller.user_id, parents=named,
                         **self._filter)

    def echo(self, **extra: Any) -> dict[str, Any]:
        """The applied filters, as the list response repeats them."""
        return {k: v for k, v in {**self._echo, **extra}.items() if v is not None}

    def sort_echo(self) -> dict[str, str]:
        return {"field": self.field, "direction": "desc" if self.descending else "asc"}
