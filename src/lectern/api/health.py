"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lectern.store.db import probe

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Ready once the engine pool is up and the database answers")
async def healthz(request: Request) -> JSONResponse:
    services = request.app.state.services
    pool = services.pool
    if not pool.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    models = services.models
    body: dict[str, Any] = {
        "status": "ok",
        "engine": models.default,
        "streams": pool.active_streams,
        "capacity": pool.capacity(models.default),
        "models": {
            name: {"capacity": pool.capacity(name), "languages": models.languages.get(name)}
            for name in models.models
        },
        "database": {"status": "ok"},
    }
    problem = await probe(services.db)
    if problem is not None:
        # Not ready: REST answers 503 and new streams are refused until the database returns,
        # though live streams carry on (their segments wait in memory).
        body["status"] = "unavailable"
        body["database"] = {"status": "down", "detail": problem}
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)
