"""API keys: ``/api/v1/api-keys`` (create, list, get, revoke).

Everyone manages their own keys (``user:apikeys:read`` to list and read them, ``user:apikeys:write``
to create and revoke them: the platform's viewer "can create and manage own API keys"); other
users' keys of the tenant need ``user:apikeys:admin`` as well. Another user's key is 403 without
it; another tenant's key does not exist (404). A key is created with a ``role`` or explicit
``scopes``, never wider than the creator's own; the secret is in the create response only.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.api.deps import database, require
from lectern.api.errors import ApiError, problem_responses
from lectern.api.params import NO_CONTROL_CHARACTERS, Timestamp, instant
from lectern.auth import keys, scopes
from lectern.auth.principal import Principal
from lectern.auth.scopes import APIKEYS_ADMIN, APIKEYS_READ, APIKEYS_WRITE
from lectern.store.models import ApiKey, utcnow

router = APIRouter(prefix="/api/v1/api-keys", tags=["API Keys"])

MAX_NAME, MAX_DESCRIPTION, MAX_SCOPES = 200, 2000, 100


class ApiKeyStatus(str, enum.Enum):
    ACTIVE = "ACTIVE"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"


class CreateApiKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME, pattern=NO_CONTROL_CHARACTERS)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    scopes: list[Annotated[str, Field(max_length=100)]] | None = Field(
        default=None, max_length=MAX_SCOPES,
        description="Permission scopes in service:resource:action format (e.g. speech:files:read); each must be "
        "one the creator holds. Omitted (and no role): an identity-only key with no scopes.")
    role: str | None = Field(
        default=None, max_length=50,
        description="A named set of scopes instead of `scopes`: admin, member or viewer (all held by the creator).")
    expirationDate: Timestamp | None = Field(default=None, description="ISO 8601; omitted: the key never expires.")
    userId: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=NO_CONTROL_CHARACTERS,
        description="The user the key is for (default: the caller); another user's needs user:apikeys:admin.")


class ApiKeyResponse(BaseModel):
    id: uuid.UUID
    name: str
    description: str | None
    prefix: str = Field(description="The key's first characters, to tell keys apart; never the secret.")
    scopes: list[str]
    userId: str = Field(description="The user the key acts as.")
    status: ApiKeyStatus
    creationDate: datetime
    expirationDate: datetime | None
    revocationDate: datetime | None


class CreatedApiKeyResponse(ApiKeyResponse):
    key: str = Field(description="The secret (kk-...). Shown only in this response: store it now.")


class ApiKeyListResponse(BaseModel):
    apiKeys: list[ApiKeyResponse]
    page: int = Field(description="Current page number (zero-based).")
    size: int = Field(description="Number of items returned in this page.")
    total: int = Field(description="Total number of matching keys across all pages.")


Db = Annotated[AsyncSession, Depends(database)]


def key_response(key: ApiKey, owner: str) -> ApiKeyResponse:
    return ApiKeyResponse(
        id=key.id, name=key.name, description=key.description, prefix=key.prefix, scopes=list(key.scopes),
        userId=owner, status=ApiKeyStatus(keys.key_status(key, utcnow())), creationDate=key.created_at,
        expirationDate=key.expires_at, revocationDate=key.revoked_at)


async def _user_id(db: AsyncSession, caller: Principal, user_name: str | None) -> uuid.UUID:
    """The user whose keys are meant: the caller, or (with user:apikeys:admin) a user of their tenant."""
    if user_name is None or user_name == caller.user_name:
        return caller.user_id
    if not caller.has(APIKEYS_ADMIN):
        raise ApiError(403, f"insufficient scope: another user's API keys need {APIKEYS_ADMIN}", "userId")
    user_id = await keys.find_user_id(db, caller.tenant_id, user_name)
    if user_id is None:
        raise ApiError(404, f"userId: no user {user_name!r} in this tenant", "userId")
    return user_id


async def _visible_key(db: AsyncSession, raw_id: str, caller: Principal) -> tuple[ApiKey, str]:
    try:
        key_id = uuid.UUID(raw_id)
    except ValueError:
        raise ApiError(404, f"no API key {raw_id!r}: key ids are UUIDs", "keyId") from None
    found = await keys.get_key(db, key_id, caller.tenant_id)
    if found is None:
        raise ApiError(404, f"API key {raw_id} not found")
    if found[0].user_id != caller.user_id and not caller.has(APIKEYS_ADMIN):
        raise ApiError(403, "this API key belongs to another user")
    return found


def _granted(body: CreateApiKeyRequest, caller: Principal) -> list[str]:
    """The scopes the new key gets: known ones, all held by the creator."""
    if body.role is not None and body.scopes is not None:
        raise ApiError(400, "give either role or scopes, not both", "role")
    try:
        requested = scopes.known(scopes.role_scopes(body.role) if body.role is not None else body.scopes or [])
    except scopes.UnknownScope as exc:
        raise ApiError(400, str(exc), "role" if body.role is not None else "scopes") from None
    missing = scopes.not_held(requested, caller.scopes)
    if missing:
        raise ApiError(403, f"a key's scopes cannot exceed the creator's own: you do not hold {', '.join(missing)}",
                       "role" if body.role is not None else "scopes")
    return requested


@router.post("", summary="Create API Key", status_code=201, response_model=CreatedApiKeyResponse,
             responses=problem_responses(400, 401, 403, 404))
async def create_key(body: CreateApiKeyRequest, response: Response,
                     caller: Annotated[Principal, Depends(require(APIKEYS_WRITE))], db: Db) -> CreatedApiKeyResponse:
    """The key's secret is in this response only; it is stored hashed."""
    granted = _granted(body, caller)
    expires_at = instant(body.expirationDate, "expirationDate")
    if expires_at is not None and expires_at <= utcnow():
        raise ApiError(400, "expirationDate: the key would have expired already", "expirationDate")
    user_id = await _user_id(db, caller, body.userId)
    key, plaintext = await keys.create_key_for(db, caller.tenant_id, user_id, granted, body.name, body.description,
                                               expires_at)
    response.headers["Location"] = f"{router.prefix}/{key.id}"
    owner = body.userId or caller.user_name
    return CreatedApiKeyResponse(**key_response(key, owner).model_dump(), key=plaintext)


@router.get("", summary="List API Keys", response_model=ApiKeyListResponse,
            responses=problem_responses(400, 401, 403, 404))
async def list_keys(
    caller: Annotated[Principal, Depends(require(APIKEYS_READ))],
    db: Db,
    page: Annotated[int, Query(ge=0, le=1_000_000, description="Page number (zero-based).")] = 0,
    size: Annotated[int, Query(ge=1, le=100, description="Page size (max 100).")] = 20,
    userId: Annotated[
        str | None, Query(min_length=1, max_length=200, pattern=NO_CONTROL_CHARACTERS,
                          description="Only this user's keys (another user's needs user:apikeys:admin).")
    ] = None,
) -> ApiKeyListResponse:
    """The caller's keys, newest first (every key of the tenant with user:apikeys:admin); never a secret."""
    if userId is None and caller.has(APIKEYS_ADMIN):
        user_id = None
    else:
        user_id = await _user_id(db, caller, userId)
    listed, total = await keys.list_keys(db, caller.tenant_id, user_id, page, size)
    return ApiKeyListResponse(apiKeys=[key_response(k, owner) for k, owner in listed], page=page, size=len(listed),
                              total=total)


@router.get("/{keyId}", summary="Get API Key", response_model=ApiKeyResponse,
            responses=problem_responses(401, 403, 404))
async def get_key(keyId: str, caller: Annotated[Principal, Depends(require(APIKEYS_READ))], db: Db) -> ApiKeyResponse:
    return key_response(*await _visible_key(db, keyId, caller))


@router.delete("/{keyId}", summary="Revoke API Key", status_code=204, response_class=Response,
               responses=problem_responses(401, 403, 404))
async def revoke_key(keyId: str, caller: Annotated[Principal, Depends(require(APIKEYS_WRITE))], db: Db) -> Response:
    """The key is refused from now on (its open streams end at their next lease renewal). Revoking a
    revoked key again is 204 and keeps the first revocation's time."""
    key, _ = await _visible_key(db, keyId, caller)
    await keys.revoke_key(db, key)
    return Response(status_code=204)
