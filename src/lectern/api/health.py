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
    return JSONResponse(
        {"status": "ok", "engine": pool.engine, "streams": pool.active_streams, "capacity": pool.capacity}
    )
