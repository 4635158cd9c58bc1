"""create_app(settings): the HTTP and WebSocket surface and the background work behind it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from lectern.api import (
    api_keys,
    elevenlabs_batch,
    errors,
    files,
    health,
    prompt_templates,
    quotas,
    streams,
    summaries,
    tokens,
    transcription_upload,
    transcriptions,
)
from lectern.api.body_limits import BodyLimits
from lectern.api.rate_limits import RateLimitHeaders
from lectern.api.uploads import remove_stale_spools
from lectern.jobs.runner import JobRunner, job_sources
from lectern.realtime.protocols import elevenlabs, native, reverie
from lectern.realtime.resume import ResumableStreams
from lectern.services import running_services
from lectern.settings import Settings

def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(remove_stale_spools, settings.uploads_dir)
        async with running_services(settings) as services:
            app.state.services = services
            app.state.resumable_streams = ResumableStreams()
            app.state.jobs = runner = JobRunner(services, job_sources(settings))
            runner.start()
            try:
                yield
            finally:
                await runner.close()
                await app.state.resumable_streams.cancel_all()

    app = FastAPI(
        title="Lectern",
        version="0.1.0",
        summary="Self-hosted speech services",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(BodyLimits, settings=settings)
    app.include_router(health.router)
    app.include_router(tokens.router)
    app.include_router(streams.router)
    app.include_router(files.router)
    app.include_router(transcription_upload.router)
    app.include_router(transcriptions.router)
    app.include_router(prompt_templates.router)
    app.include_router(elevenlabs_batch.router)
    app.include_router(summaries.router)
    app.include_router(quotas.router)
    app.include_router(api_keys.router)
    app.add_api_websocket_route("/v1/speech-to-text/realtime", elevenlabs.realtime_endpoint)
    app.add_api_websocket_route("/stream", reverie.stream_endpoint)
    app.add_api_websocket_route("/api/v1/speech-services/stream", native.stream_endpoint)
    return app
