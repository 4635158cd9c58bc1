"""Who is calling: the identity every authenticated request and stream carries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: uuid.UUID
    tenant_name: str
    user_id: uuid.UUID
    user_name: str
    scopes: frozenset[str]
    recording_allowed: bool = True
    zero_retention_allowed: bool = True  # may a stream ask that nothing be kept
    api_key_id: uuid.UUID | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes


class AuthError(Exception):
    """Credentials missing, unknown, expired, revoked or spent."""


class ScopeError(AuthError):
    """Authenticated, but without the scope the operation needs."""
