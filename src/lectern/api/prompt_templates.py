"""Summary prompt templates ``/api/v1/session-history/summary-prompt-templates``: the platform's
APPLICATION templates (read-only), a tenant's TENANT templates and each user's USER templates, and
which of them are assigned to whom.

A caller sees APPLICATION templates, their tenant's TENANT templates and their own USER templates;
anything else (another user's or tenant's, or a deleted template) does not exist for them (404).
Reading needs ``speech:summaries:read``; changing one's own USER templates and assignments
``speech:summaries:write``; TENANT templates and other users' assignments also ``ai:prompts:admin``.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.api.deps import database, require
from lectern.api.errors import ApiError, problem_responses
from lectern.api.params import NO_CONTROL_CHARACTERS
from lectern.api.prompt_template_models import (
    AssignedSummaryPromptTemplateListResponse,
    AssignTemplateRequest,
    PromptTemplateAssignmentResponse,
    SummaryPromptTemplateListResponse,
    SummaryPromptTemplateRequest,
    SummaryPromptTemplateResponse,
    TemplateKind,
    TemplateLevel,
    UpdateAssignmentRequest,
    assigned_response,
    assignment_response,
    check_fields,
    column_values,
    template_response,
)
from lectern.auth.principal import Principal
from lectern.auth.scopes import PROMPTS_ADMIN, SUMMARIES_READ, SUMMARIES_WRITE
from lectern.store import prompt_templates as store
from lectern.store.batch_models import PromptTemplateRow

router = APIRouter(prefix="/api/v1/session-history/summary-prompt-templates", tags=["Summary Prompt Templates"])


Page = Annotated[int, Query(ge=0, le=1_000_000, description="Page number (zero-based).")]
Size = Annotated[int, Query(ge=1, le=100, description="Page size (max 100).")]
LevelFilter = Annotated[TemplateLevel | None, Query(description="Only templates of this level.")]
KindFilter = Annotated[TemplateKind | None, Query(description="Only templates with this output kind.")]
Reader = Annotated[Principal, Depends(require(SUMMARIES_READ))]
Writer = Annotated[Principal, Depends(require(SUMMARIES_WRITE))]
Db = Annotated[AsyncSession, Depends(database)]


# -- lookups and permissions ----------------------------------------------------------------------


async def _visible(db: AsyncSession, raw_id: str, caller: Principal) -> PromptTemplateRow:
    try:
        template_id = uuid.UUID(raw_id)
    except ValueError:
        raise ApiError(404, f"no prompt template {raw_id!r}: ids are UUIDs", "id") from None
    row = await store.visible_template(db, template_id, caller)
    if row is None:
        raise ApiError(404, f"prompt template {raw_id} not found")
    return row


def _admin(caller: Principal, what: str, parameter: str | None = None) -> None:
    if not caller.has(PROMPTS_ADMIN):
        raise ApiError(403, f"insufficient scope: {what} needs {PROMPTS_ADMIN}", parameter)


def _may_change(row: PromptTemplateRow, caller: Principal) -> None:
    """A visible template the caller may edit or delete: their own, or a TENANT one as prompt admin."""
    if row.level == store.APPLICATION:
        raise ApiError(403, "APPLICATION templates are the platform's and read-only")
    if row.level == store.TENANT:
        _admin(caller, "changing a TENANT template")


async def _assignee(db: AsyncSession, caller: Principal, user_name: str | None) -> tuple[uuid.UUID, str]:
    """The user an assignment is for (id, name): the caller, or (as prompt admin) a user of their tenant."""
    if user_name is None or user_name == caller.user_name:
        return caller.user_id, caller.user_name
    _admin(caller, "another user's assignment", "userId")
    user = await store.find_user(db, caller.tenant_id, user_name)
    if user is None:
        raise ApiError(404, f"userId: no user {user_name!r} in this tenant", "userId")
    return user.id, user.external_id


# -- templates ------------------------------------------------------------------------------------


@router.get("", summary="List Visible Templates", response_model=SummaryPromptTemplateListResponse,
            responses=problem_responses(400, 401, 403))
async def list_templates(caller: Reader, db: Db, page: Page = 0, size: Size = 20, level: LevelFilter = None,
                         kind: KindFilter = None) -> SummaryPromptTemplateListResponse:
    """The templates the caller may use, by level (APPLICATION, TENANT, USER), then name."""
    listed, total = await store.list_visible(
        db, caller.tenant_id, caller.user_id, level=level.value if level else None,
        kind=kind.value if kind else None, page=page, size=size)
    return SummaryPromptTemplateListResponse(
        templates=[template_response(t.row, t.owner_name) for t in listed], page=page, size=len(listed), total=total)


@router.get("/assigned", summary="List Assigned Templates", response_model=AssignedSummaryPromptTemplateListResponse,
            responses=problem_responses(400, 401, 403))
async def list_assigned(caller: Reader, db: Db, page: Page = 0, size: Size = 20, level: LevelFilter = None,
                        kind: KindFilter = None) -> AssignedSummaryPromptTemplateListResponse:
    """The caller's assigned templates: their explicit assignments and every global template they
    see, in the listing order; `isDefault` marks at most one, their default."""
    listed, total = await store.list_assigned(
        db, caller.tenant_id, caller.user_id, level=level.value if level else None,
        kind=kind.value if kind else None, page=page, size=size)
    return AssignedSummaryPromptTemplateListResponse(
        templates=[assigned_response(t) for t in listed], page=page, size=len(listed), total=total)


@router.get("/{id}", summary="Get Template Details", response_model=SummaryPromptTemplateResponse,
            responses=problem_responses(401, 403, 404))
async def get_template(id: str, caller: Reader, db: Db) -> SummaryPromptTemplateResponse:
    row = await _visible(db, id, caller)
    return template_response(row, await store.owner_name(db, row))


@router.post("", summary="Create Prompt Template", status_code=201, response_model=SummaryPromptTemplateResponse,
             responses=problem_responses(400, 401, 403))
async def create_template(body: SummaryPromptTemplateRequest, caller: Writer, db: Db) -> SummaryPromptTemplateResponse:
    """A USER template of the caller's (the default), or a TENANT template (needs ai:prompts:admin)."""
    level = body.level or TemplateLevel.USER
    if level == TemplateLevel.APPLICATION:
        raise ApiError(403, "APPLICATION templates are the platform's; create USER or TENANT templates", "level")
    if level == TemplateLevel.TENANT:
        _admin(caller, "creating a TENANT template", "level")
    check_fields(body, level)
    row = await store.create(db, {
        **column_values(body),
        "level": level.value,
        "tenant_id": caller.tenant_id,
        "owner_id": caller.user_id if level == TemplateLevel.USER else None,
        "created_by": caller.user_id,
    })
    return template_response(row, caller.user_name)


@router.put("/{id}", summary="Update Prompt Template", response_model=SummaryPromptTemplateResponse,
            responses=problem_responses(400, 401, 403, 404))
async def update_template(id: str, body: SummaryPromptTemplateRequest, caller: Writer,
                          db: Db) -> SummaryPromptTemplateResponse:
    """Replaces every field of the template (`level`, when given, must be its own)."""
    row = await _visible(db, id, caller)
    _may_change(row, caller)
    level = TemplateLevel(row.level)
    if body.level is not None and body.level != level:
        raise ApiError(400, f"level: a template's level cannot change ({level.value} to {body.level.value})", "level")
    check_fields(body, level)
    owner = await store.owner_name(db, row)
    updated = await store.replace(db, row, column_values(body))
    if updated is None:
        raise ApiError(404, f"prompt template {id} not found")
    return template_response(updated, owner)


@router.delete("/{id}", summary="Delete Prompt Template", status_code=204, response_class=Response,
               responses=problem_responses(401, 403, 404))
async def delete_template(id: str, caller: Writer, db: Db) -> Response:
    """Hides the template and removes its assignments; summaries that name it then fail with
    PROMPT_TEMPLATE_NOT_FOUND."""
    row = await _visible(db, id, caller)
    _may_change(row, caller)
    if not await store.soft_delete(db, row):
        raise ApiError(404, f"prompt template {id} not found")
    return Response(status_code=204)


# -- assignments ----------------------------------------------------------------------------------


@router.post(
    "/{id}/assign", summary="Assign Template to User", status_code=201,
    response_model=PromptTemplateAssignmentResponse,
    responses={200: {"model": PromptTemplateAssignmentResponse,
                     "description": "The template was already assigned to the user; `isDefault` is now as given."},
               201: {"description": "The template is now assigned to the user."},
               **problem_responses(400, 401, 403, 404)},
)
async def assign_template(id: str, body: AssignTemplateRequest, response: Response, caller: Writer,
                          db: Db) -> PromptTemplateAssignmentResponse:
    """Assigns the template to the caller, or (with ai:prompts:admin) to a user of their tenant, who
    must be able to see it; `isDefault` makes it their default, replacing their previous one."""
    row = await _visible(db, id, caller)
    user_id, user_name = await _assignee(db, caller, body.userId)
    template_id = row.id
    if user_id != caller.user_id and await store.visible_to(db, template_id, caller.tenant_id, user_id) is None:
        raise ApiError(400, f"userId: {user_name!r} cannot see this template (a personal one)", "userId")
    assignment, created = await store.assign(db, template_id, caller.tenant_id, user_id, body.isDefault)
    response.status_code = 201 if created else 200
    return assignment_response(assignment, user_name)


@router.patch("/{id}/assign", summary="Update Assignment", response_model=PromptTemplateAssignmentResponse,
              responses=problem_responses(400, 401, 403, 404))
async def update_assignment(id: str, body: UpdateAssignmentRequest, caller: Writer,
                            db: Db) -> PromptTemplateAssignmentResponse:
    """Makes an explicit assignment the user's default (replacing their previous one), or not."""
    row = await _visible(db, id, caller)
    user_id, user_name = await _assignee(db, caller, body.userId)
    assignment = await store.set_default(db, row.id, user_id, body.isDefault)
    if assignment is None:
        raise ApiError(404, f"prompt template {id} is not assigned to {user_name!r}")
    return assignment_response(assignment, user_name)


@router.delete("/{id}/unassign", summary="Unassign Template", status_code=204, response_class=Response,
               responses=problem_responses(400, 401, 403, 404))
async def unassign_template(
    id: str,
    caller: Writer,
    db: Db,
    userId: Annotated[str | None, Query(min_length=1, max_length=200, pattern=NO_CONTROL_CHARACTERS, description=(
        "The user's name; default: the caller. Another user needs ai:prompts:admin."))] = None,
) -> Response:
    """Removes an explicit assignment (global templates are assigned implicitly and stay)."""
    row = await _visible(db, id, caller)
    user_id, user_name = await _assignee(db, caller, userId)
    if not await store.unassign(db, row.id, user_id):
        raise ApiError(404, f"prompt template {id} is not explicitly assigned to {user_name!r}")
    return Response(status_code=204)
