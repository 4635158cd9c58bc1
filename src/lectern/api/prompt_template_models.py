"""The prompt templates API's request and response bodies (camelCase), and the rules a template's
fields follow beyond their types (placeholders, global flags), as ApiError 400 naming the field."""

from __future__ import annotations

import enum
import re
import uuid
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field

from lectern.api.errors import ApiError
from lectern.api.params import NO_CONTROL_CHARACTERS
from lectern.store import prompt_templates as store
from lectern.store.batch_models import PromptTemplateAssignmentRow, PromptTemplateRow

MAX_NAME, MAX_DESCRIPTION, MAX_PROMPT, MAX_OUTPUT_TOKENS = 200, 2000, 20_000, 32_000


class TemplateLevel(str, enum.Enum):
    """USER: personal templates owned by an individual user. TENANT: shared templates available to
    all users within a tenant. APPLICATION: system-wide templates provided by the platform."""

    APPLICATION = "APPLICATION"
    TENANT = "TENANT"
    USER = "USER"


class TemplateKind(str, enum.Enum):
    """What a template makes: a summary, meeting minutes or a list of action items."""

    summary = "summary"
    minutes = "minutes"
    action_items = "action_items"


class OutputOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: TemplateKind
    maxOutputTokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS, strict=True,
                                        description="The most tokens the summary may have.")
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False, strict=True,
                                      description="Sampling temperature, 0 to 2.")


class SummaryPromptTemplateRequest(BaseModel):
    """A template's fields; an update (PUT) replaces all of them."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME, pattern=NO_CONTROL_CHARACTERS)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    level: TemplateLevel | None = Field(
        default=None, description="USER (the default when creating) or TENANT (needs ai:prompts:admin). "
        "APPLICATION templates are the platform's. A template's level never changes.")
    systemPrompt: str = Field(max_length=MAX_PROMPT, description="The instructions given to the model.")
    userPrompt: str = Field(
        min_length=1, max_length=MAX_PROMPT,
        description="The request, with placeholders `{{transcript}}` (required), `{{language}}` and `{{date}}` "
        "(spaces inside the braces are allowed).")
    outputOptions: OutputOptions
    isGlobal: bool = Field(default=False, strict=True, description=(
        "Implicitly assigned to every user in the tenant who has access to view it (TENANT level only)."))
    isGlobalDefault: bool = Field(default=False, strict=True, description=(
        "Requires isGlobal=true: automatically assigned to all users in the tenant as a default prompt "
        "(replaces the tenant's previous global default)."))


class SummaryPromptTemplateResponse(BaseModel):
    id: uuid.UUID
    name: str
    description: str | None
    level: TemplateLevel
    systemPrompt: str
    userPrompt: str
    outputOptions: OutputOptions
    isGlobal: bool
    isGlobalDefault: bool
    ownerId: str | None = Field(description="The owner's user name (USER level); null otherwise.")
    creationDate: datetime
    modificationDate: datetime


class AssignedSummaryPromptTemplateResponse(SummaryPromptTemplateResponse):
    isDefault: bool = Field(description="The user's default template: their own default assignment, or else "
                            "the tenant's global default. At most one template is.")
    isExplicit: bool = Field(description="Assigned to the user explicitly (it may be unassigned); false: "
                             "implicitly, as a global template.")


class SummaryPromptTemplateListResponse(BaseModel):
    templates: list[SummaryPromptTemplateResponse]
    page: int = Field(description="Current page number (zero-based).")
    size: int = Field(description="Number of items returned in this page.")
    total: int = Field(description="Total number of matching templates across all pages.")


class AssignedSummaryPromptTemplateListResponse(BaseModel):
    templates: list[AssignedSummaryPromptTemplateResponse]
    page: int = Field(description="Current page number (zero-based).")
    size: int = Field(description="Number of items returned in this page.")
    total: int = Field(description="Total number of matching templates across all pages.")


_USER_ID = Field(default=None, min_length=1, max_length=200, pattern=NO_CONTROL_CHARACTERS, description=(
    "The user's name (as in their API keys, or their JWT's sub); default: the caller. Another user "
    "needs ai:prompts:admin."))


class AssignTemplateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    userId: str | None = _USER_ID
    isDefault: bool = Field(default=False, strict=True, description=(
        "Make it the user's default template (replacing their previous default)."))


class UpdateAssignmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    userId: str | None = _USER_ID
    isDefault: bool = Field(strict=True, description=(
        "Make it the user's default template (replacing their previous default), or not."))


class PromptTemplateAssignmentResponse(BaseModel):
    templateId: uuid.UUID
    userId: str = Field(description="The assigned user's name.")
    isDefault: bool
    creationDate: datetime


# -- rules and conversions -------------------------------------------------------------------------


def _text(value: str | None, field: str) -> None:
    if value is None:
        return
    if "\x00" in value:
        raise ApiError(400, f"{field}: NUL characters are not allowed", field)
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ApiError(400, f"{field}: not valid Unicode (a lone surrogate)", field) from None


def check_fields(body: SummaryPromptTemplateRequest, level: TemplateLevel) -> None:
    """The rules beyond the fields' types: text, placeholders and the global flags."""
    if not body.name.strip():
        raise ApiError(400, "name: must not be blank", "name")
    for field in ("name", "description", "systemPrompt", "userPrompt"):
        _text(getattr(body, field), field)
    allowed = ", ".join(f"{{{{{p}}}}}" for p in store.PLACEHOLDERS)
    for field in ("systemPrompt", "userPrompt"):
        unknown = [p for p in store.placeholders(getattr(body, field)) if p not in store.PLACEHOLDERS]
        if unknown:
            named = ", ".join(f"{{{{{p}}}}}" for p in unknown)
            raise ApiError(400, f"{field}: unknown placeholder(s) {named}; allowed: {allowed}", field)
        stray = re.search(r"\{\{|\}\}", store.PLACEHOLDER.sub("", getattr(body, field)))
        if stray:
            raise ApiError(400, f"{field}: a malformed placeholder ({stray.group()!r} without its other half); "
                           f"placeholders are written {{{{name}}}}", field)
    if "transcript" not in store.placeholders(body.userPrompt):
        raise ApiError(400, "userPrompt: must contain the {{transcript}} placeholder", "userPrompt")
    if body.isGlobalDefault and not body.isGlobal:
        raise ApiError(400, "isGlobalDefault: requires isGlobal=true", "isGlobalDefault")
    if body.isGlobal and level != TemplateLevel.TENANT:
        raise ApiError(400, f"isGlobal: only TENANT templates may be global, not {level.value}", "isGlobal")


def column_values(body: SummaryPromptTemplateRequest) -> dict[str, object]:
    """The editable columns of a template, from a request."""
    return {
        "name": body.name,
        "description": body.description,
        "system_prompt": body.systemPrompt,
        "user_prompt": body.userPrompt,
        "kind": body.outputOptions.kind.value,
        "max_output_tokens": body.outputOptions.maxOutputTokens,
        "temperature": body.outputOptions.temperature,
        "is_global": body.isGlobal,
        "is_global_default": body.isGlobalDefault,
    }


def template_fields(row: PromptTemplateRow, owner_name: str | None) -> dict[str, object]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "level": TemplateLevel(row.level),
        "systemPrompt": row.system_prompt,
        "userPrompt": row.user_prompt,
        "outputOptions": OutputOptions(kind=TemplateKind(row.kind), maxOutputTokens=row.max_output_tokens,
                                       temperature=row.temperature),
        "isGlobal": row.is_global,
        "isGlobalDefault": row.is_global_default,
        "ownerId": owner_name if row.level == store.USER else None,
        "creationDate": row.created_at.astimezone(timezone.utc),
        "modificationDate": row.updated_at.astimezone(timezone.utc),
    }


def template_response(row: PromptTemplateRow, owner_name: str | None) -> SummaryPromptTemplateResponse:
    return SummaryPromptTemplateResponse(**template_fields(row, owner_name))  # type: ignore[arg-type]


def assigned_response(listed: store.Listed) -> AssignedSummaryPromptTemplateResponse:
    return AssignedSummaryPromptTemplateResponse(
        **template_fields(listed.row, listed.owner_name),  # type: ignore[arg-type]
        isDefault=listed.is_default, isExplicit=listed.is_explicit,
    )


def assignment_response(row: PromptTemplateAssignmentRow, user_name: str) -> PromptTemplateAssignmentResponse:
    return PromptTemplateAssignmentResponse(templateId=row.template_id, userId=user_name, isDefault=row.is_default,
                                            creationDate=row.created_at.astimezone(timezone.utc))
