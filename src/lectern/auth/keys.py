"""API keys and single-use tokens.

Both are high-entropy random secrets, so a plain SHA-256 of the secret is a safe lookup key and
the only thing stored; a slow password hash would add latency without adding security.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from lectern.auth.principal import AuthError, Principal
from lectern.store.models import ApiKey, SingleUseToken, Tenant, User, utcnow

API_KEY_PREFIX = "kk-"
TOKEN_PREFIX = "sutkn_"
TOKEN_TYPES = ("realtime_scribe",)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    id: uuid.UUID
    plaintext: str


def ensure_user(db: Session, tenant_name: str, user_name: str) -> tuple[Tenant, User]:
    tenant = db.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        db.add(tenant)
        db.flush()
    user = db.scalar(select(User).where(User.tenant_id == tenant.id, User.external_id == user_name))
    if user is None:
        user = User(tenant_id=tenant.id, external_id=user_name)
        db.add(user)
        db.flush()
    return tenant, user


def create_api_key(
    db: Session,
    tenant_name: str,
    user_name: str,
    scopes: list[str],
    name: str = "",
    expires_at: datetime | None = None,
) -> NewKey:
    """Create (tenant, user if needed and) a key; the plaintext is returned once and never stored."""
    tenant, user = ensure_user(db, tenant_name, user_name)
    plaintext = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        tenant_id=tenant.id,
        user_id=user.id,
        name=name,
        prefix=plaintext[:10],
        secret_hash=_digest(plaintext),
        scopes=sorted(set(scopes)),
        expires_at=expires_at,
    )
    db.add(key)
    db.flush()
    return NewKey(key.id, plaintext)


def count_api_keys(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(ApiKey)) or 0


async def _principal_for_key(db: AsyncSession, key: ApiKey) -> Principal:
    row = (
        await db.execute(
            select(Tenant, User).join(User, User.tenant_id == Tenant.id).where(User.id == key.user_id)
        )
    ).one()
    tenant, user = row
    return Principal(
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        user_id=user.id,
        user_name=user.external_id,
        scopes=frozenset(key.scopes),
        recording_allowed=tenant.recording_allowed,
        api_key_id=key.id,
    )


def _usable(key: ApiKey | None, now: datetime) -> ApiKey:
    if key is None or key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise AuthError("invalid, expired or revoked API key")
    return key


async def authenticate_api_key(db: AsyncSession, plaintext: str | None) -> Principal:
    if not plaintext or not plaintext.startswith(API_KEY_PREFIX):
        raise AuthError("missing or malformed API key")
    key = await db.scalar(select(ApiKey).where(ApiKey.secret_hash == _digest(plaintext)))
    return await _principal_for_key(db, _usable(key, utcnow()))


async def issue_single_use_token(db: AsyncSession, principal: Principal, token_type: str, ttl_seconds: int) -> str:
    if principal.api_key_id is None:
        raise AuthError("single-use tokens are minted with an API key")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(24)
    now = utcnow()
    db.add(
        SingleUseToken(
            token_hash=_digest(plaintext),
            token_type=token_type,
            api_key_id=principal.api_key_id,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
    )
    await db.commit()
    return plaintext


async def redeem_single_use_token(db: AsyncSession, plaintext: str, token_type: str) -> Principal:
    """Consume a token atomically: of two sockets racing with one token, exactly one wins."""
    now = utcnow()
    token_hash = _digest(plaintext)
    result = await db.execute(
        update(SingleUseToken)
        .where(
            SingleUseToken.token_hash == token_hash,
            SingleUseToken.token_type == token_type,
            SingleUseToken.consumed_at.is_(None),
            SingleUseToken.expires_at > now,
        )
        .values(consumed_at=now)
    )
    await db.commit()
    if result.rowcount != 1:
        raise AuthError("invalid, expired or already used token")
    key = await db.scalar(
        select(ApiKey).join(SingleUseToken, SingleUseToken.api_key_id == ApiKey.id).where(
            SingleUseToken.token_hash == token_hash
        )
    )
    return await _principal_for_key(db, _usable(key, now))
