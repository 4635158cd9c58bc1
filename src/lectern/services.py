"""The long-lived parts every request and stream uses, made once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lectern.auth.jwt import JwtVerifier
from lectern.settings import Settings
from lectern.speech.engines.pool import RecognizerPool


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    db: async_sessionmaker[AsyncSession]
    pool: RecognizerPool
    jwt: JwtVerifier

    @property
    def recordings_dir(self) -> Path:
        return self.settings.recordings_dir
