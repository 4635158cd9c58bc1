"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Ready once the engine pool is up")
async def healthz(request: Request) -> JSONResponse:
    pool = request.app.state.services.pool
    if not pool.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    models = request.app.state.services.models
    return JSONResponse({
        "status": "ok",
        "engine": models.default,
        "streams": pool.active_streams,
        "capacity": pool.capacity(models.default),
        "models": {
            name: {"capacity": pool.capacity(name), "languages": models.languages.get(name)}
            for name in models.models
        },
    })
