"""FastAPI dependencies shared by the REST routes: services and the authenticated principal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.api import rate_limits
from lectern.api.errors import ApiError
from lectern.auth.principal import AuthError, Principal
from lectern.auth.principals import authenticate
from lectern.rate_limits import RateLimited
from lectern.services import Services

# Declared for the OpenAPI document; authentication itself is done below.
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="A Lectern API key (kk-...)")
_bearer = HTTPBearer(auto_error=False, description="A JWT from the configured identity provider")


def services(request: Request) -> Services:
    return request.app.state.services


async def database(request: Request) -> AsyncIterator[AsyncSession]:
    async with services(request).db() as db:
        yield db


def require(scope: str | None) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency giving the caller's principal, after checking that it holds ``scope`` (None:
    any caller) and spending its rate limits."""

    async def principal(
        request: Request,
        api_key: str | None = Security(_api_key),
        bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
        db: AsyncSession = Depends(database),
    ) -> Principal:
        authorization = f"{bearer.scheme} {bearer.credentials}" if bearer else request.headers.get("authorization")
        try:
            await rate_limits.refuse_failing_address(request)
            try:
                caller = await authenticate(db, services(request).jwt, api_key, authorization)
            except AuthError as exc:
                await rate_limits.count_failed_authentication(request)
                raise ApiError(401, str(exc)) from None
            if scope is not None and not caller.has(scope):
                raise ApiError(403, f"insufficient scope: this operation needs {scope}")
            await rate_limits.admit(request, caller)
        except RateLimited as exc:
            raise rate_limits.too_many_requests(exc) from None
        return caller

    return principal


authenticated = require(None)
