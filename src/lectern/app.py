"""create_app(settings): the HTTP and WebSocket surface and the background work behind it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from lectern.api import errors, health, streams, tokens
from lectern.auth.jwt import JwtVerifier
from lectern.realtime.protocols import elevenlabs, native, reverie
from lectern.realtime.resume import ResumableStreams
from lectern.services import Services
from lectern.settings import Settings
from lectern.speech.engines.pool import RecognizerPool
from lectern.store import migrate
from lectern.store import sessions as session_rows
from lectern.store.db import create_db_engine, session_factory

log = logging.getLogger(__name__)


async def _sweep_lapsed_leases(services: Services) -> None:
    while True:
        try:
            failed = await session_rows.fail_lapsed(services.db)
            if failed:
                log.warning("ended %d stream(s) whose server stopped renewing their lease", failed)
        except Exception:
            log.exception("lease sweep failed")
        await asyncio.sleep(services.settings.sweep_interval_seconds)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
        engine = create_db_engine(settings.resolved_database_url)
        pool = RecognizerPool(settings.engine_workers, settings.streams_per_worker)
        services = Services(settings=settings, db=session_factory(engine), pool=pool, jwt=JwtVerifier(settings))
        app.state.services = services
        app.state.resumable_streams = ResumableStreams()
        background = [
            asyncio.create_task(pool.start(), name="pool-start"),
            asyncio.create_task(_sweep_lapsed_leases(services), name="lease-sweeper"),
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await app.state.resumable_streams.cancel_all()
            await pool.close()
            await engine.dispose()

    app = FastAPI(
        title="Lectern",
        version="0.1.0",
        summary="Self-hosted speech services",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(tokens.router)
    app.include_router(streams.router)
    app.add_api_websocket_route("/v1/speech-to-text/realtime", elevenlabs.realtime_endpoint)
    app.add_api_websocket_route("/stream", reverie.stream_endpoint)
    app.add_api_websocket_route("/api/v1/speech-services/stream", native.stream_endpoint)
    return app
