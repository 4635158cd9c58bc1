"""ElevenLabs-compatible single-use tokens: ``POST /v1/single-use-token/{token_type}``."""

from __future__ import annotations

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from lectern.auth import keys
from lectern.auth.principal import AuthError
from lectern.auth.scopes import SESSIONS_WRITE

router = APIRouter(tags=["realtime"])


class SingleUseTokenResponse(BaseModel):
    token: str


def _detail(status: int, message: str) -> JSONResponse:
    # The shape ElevenLabs' clients expect for HTTP errors.
    return JSONResponse({"detail": {"status": "error", "message": message}}, status_code=status)


@router.post(
    "/v1/single-use-token/{token_type}",
    response_model=SingleUseTokenResponse,
    summary="Mint a token that opens one realtime socket within 15 minutes",
    responses={401: {}, 403: {}, 422: {}},
)
async def create_single_use_token(
    token_type: str, request: Request, xi_api_key: str | None = Header(default=None)
) -> JSONResponse:
    services = request.app.state.services
    async with services.db() as db:
        try:
            principal = await keys.authenticate_api_key(db, xi_api_key)
        except AuthError as exc:
            return _detail(401, str(exc))
        if token_type not in keys.TOKEN_TYPES:
            return _detail(422, f"token_type must be one of: {', '.join(keys.TOKEN_TYPES)}")
        if not principal.has(SESSIONS_WRITE):
            return _detail(403, f"this API key lacks the {SESSIONS_WRITE} scope")
        token = await keys.issue_single_use_token(
            db, principal, token_type, services.settings.single_use_token_ttl_seconds
        )
    return JSONResponse({"token": token})
