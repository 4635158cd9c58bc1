"""The long-lived parts every request, stream and job uses, made once per process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lectern.auth.jwt import JwtVerifier
from lectern.blobs import BlobStore, blob_store
from lectern.rate_limits import RateLimits
from lectern.settings import Settings
from lectern.speech.engines.pool import RecognizerPool
from lectern.speech.models import ModelRegistry, build_registry
from lectern.store import migrate
from lectern.store.db import create_db_engine, session_factory
from lectern.summarize import Summarizer, summarizer_from_settings


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    db: async_sessionmaker[AsyncSession]
    pool: RecognizerPool
    models: ModelRegistry
    jwt: JwtVerifier
    blobs: BlobStore
    summarizer: Summarizer
    rate_limits: RateLimits

    @property
    def recordings_dir(self) -> Path:
        return self.settings.recordings_dir


@contextlib.asynccontextmanager
async def running_services(settings: Settings) -> AsyncIterator[Services]:
    """Migrate the database, load the models into the engine pool, then hold the pool, the
    database engine and the summarizer open. A model that cannot be loaded raises
    (ModelUnavailable, EngineStartFailed): the server does not start without its engines."""
    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    models = await asyncio.to_thread(
        build_registry, settings.default_model, settings.models, settings.allow_model_download,
        settings.streams_per_worker, settings.whisper_streams_per_worker,
    )
    pool = RecognizerPool(settings.engine_workers, models)
    try:
        await pool.start()
    except BaseException:
        await pool.close()
        raise
    engine = create_db_engine(settings.resolved_database_url)
    summarizer = summarizer_from_settings(settings)
    try:
        yield Services(settings=settings, db=session_factory(engine), pool=pool, models=models,
                       jwt=JwtVerifier(settings), blobs=blob_store(settings), summarizer=summarizer,
                       rate_limits=RateLimits.from_settings(settings))
    finally:
        await summarizer.aclose()
        await pool.close()
        await engine.dispose()
