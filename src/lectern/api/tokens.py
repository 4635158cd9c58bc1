"""ElevenLabs-compatible single-use tokens: ``POST /v1/single-use-token/{token_type}``."""

from __future__ import annotations

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from lectern.api import rate_limits
from lectern.auth import keys
from lectern.auth.principal import AuthError
from lectern.auth.scopes import SESSIONS_WRITE
from lectern.rate_limits import RateLimited

router = APIRouter(tags=["realtime"])


class SingleUseTokenResponse(BaseModel):
    token: str


def _detail(status: int, message: str, code: str = "error", headers: dict[str, str] | None = None) -> JSONResponse:
    # The shape ElevenLabs' clients expect for HTTP errors.
    return JSONResponse({"detail": {"status": code, "message": message}}, status_code=status, headers=headers)


def _too_many(exc: RateLimited) -> JSONResponse:
    return _detail(429, str(exc), "rate_limit_exceeded",
                   {"Retry-After": str(exc.retry_after), **rate_limits.headers(exc.standing)})


@router.post(
    "/v1/single-use-token/{token_type}",
    response_model=SingleUseTokenResponse,
    summary="Mint a token that opens one realtime socket within 15 minutes",
    responses={401: {}, 403: {}, 422: {}, 429: {"description": "Rate limited (token mints, or failed "
                                               "authentications from this address); see `Retry-After`"}},
)
async def create_single_use_token(
    token_type: str, request: Request, xi_api_key: str | None = Header(default=None)
) -> JSONResponse:
    services = request.app.state.services
    async with services.db() as db:
        try:
            await rate_limits.refuse_failing_address(request)
            try:
                principal = await keys.authenticate_api_key(db, xi_api_key)
            except AuthError as exc:
                await rate_limits.count_failed_authentication(request)
                return _detail(401, str(exc))
            if token_type not in keys.TOKEN_TYPES:
                return _detail(422, f"token_type must be one of: {', '.join(keys.TOKEN_TYPES)}")
            if not principal.has(SESSIONS_WRITE):
                return _detail(403, f"this API key lacks the {SESSIONS_WRITE} scope")
            await rate_limits.admit(request, principal)  # the requests budget and token_mints
        except RateLimited as exc:
            return _too_many(exc)
        token = await keys.issue_single_use_token(
            db, principal, token_type, services.settings.single_use_token_ttl_seconds
        )
    return JSONResponse({"token": token})
