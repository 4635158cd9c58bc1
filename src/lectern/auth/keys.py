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

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from lectern.auth.principal import AuthError, Principal
from lectern.store.models import ApiKey, SingleUseToken, Tenant, User, utcnow

API_KEY_PREFIX = "kk-"
PREFIX_LENGTH = 10  # the part of a key kept and shown, to tell keys apart
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


def _new_key(tenant_id: uuid.UUID, user_id: uuid.UUID, scopes: list[str], name: str, description: str | None,
             expires_at: datetime | None) -> tuple[ApiKey, str]:
    """A key row and its plaintext, which is returned once and never stored (only its digest)."""
    plaintext = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        user_id=user_id,
        name=name,
        description=description,
        prefix=plaintext[:PREFIX_LENGTH],
        secret_hash=_digest(plaintext),
        scopes=sorted(set(scopes)),
        created_at=utcnow(),
        expires_at=expires_at,
    )
    return key, plaintext


def create_api_key(
    db: Session,
    tenant_name: str,
    user_name: str,
    scopes: list[str],
    name: str = "",
    expires_at: datetime | None = None,
    description: str | None = None,
) -> NewKey:
    """Create (tenant, user if needed and) a key with these scopes, checked by the caller (``scopes.known``)."""
    tenant, user = ensure_user(db, tenant_name, user_name)
    key, plaintext = _new_key(tenant.id, user.id, scopes, name, description, expires_at)
    db.add(key)
    db.flush()
    return NewKey(key.id, plaintext)


async def create_key_for(
    db: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, scopes: list[str], name: str,
    description: str | None, expires_at: datetime | None,
) -> tuple[ApiKey, str]:
    """A key for a user of the tenant: the row and its plaintext (shown once, never stored)."""
    key, plaintext = _new_key(tenant_id, user_id, scopes, name, description, expires_at)
    db.add(key)
    await db.commit()
    return key, plaintext


def key_status(key: ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "REVOKED"
    if key.expires_at is not None and key.expires_at <= now:
        return "EXPIRED"
    return "ACTIVE"


def _owned(tenant_id: uuid.UUID, user_id: uuid.UUID | None) -> Select:
    query = select(ApiKey, User.external_id).join(User, User.id == ApiKey.user_id).where(ApiKey.tenant_id == tenant_id)
    return query if user_id is None else query.where(ApiKey.user_id == user_id)


async def find_user_id(db: AsyncSession, tenant_id: uuid.UUID, user_name: str) -> uuid.UUID | None:
    return await db.scalar(select(User.id).where(User.tenant_id == tenant_id, User.external_id == user_name))


async def list_keys(db: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID | None, page: int,
                    size: int) -> tuple[list[tuple[ApiKey, str]], int]:
    """One page of the tenant's keys (one user's, unless ``user_id`` is None), newest first, with
    their owners' names; and the total."""
    query = _owned(tenant_id, user_id)
    rows = (await db.execute(query.order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
                             .offset(page * size).limit(size))).all()
    total = await db.scalar(select(func.count()).select_from(query.subquery())) or 0
    return [(key, owner) for key, owner in rows], total


async def get_key(db: AsyncSession, key_id: uuid.UUID, tenant_id: uuid.UUID) -> tuple[ApiKey, str] | None:
    row = (await db.execute(_owned(tenant_id, None).where(ApiKey.id == key_id))).first()
    return (row[0], row[1]) if row else None


async def revoke_key(db: AsyncSession, key: ApiKey) -> None:
    """Revoked from now on; revoking again keeps the first revocation's time."""
    await db.execute(update(ApiKey).where(ApiKey.id == key.id, ApiKey.revoked_at.is_(None))
                     .values(revoked_at=utcnow()).execution_options(synchronize_session=False))
    await db.commit()
    await db.refresh(key)


def list_keys_sync(db: Session, tenant_name: str | None) -> list[tuple[ApiKey, str, str]]:
    """Every key (of one tenant), for the admin CLI: (key, tenant name, owner name)."""
    query = (select(ApiKey, Tenant.name, User.external_id).join(Tenant, Tenant.id == ApiKey.tenant_id)
             .join(User, User.id == ApiKey.user_id).order_by(Tenant.name, User.external_id, ApiKey.created_at))
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    return [(key, tenant, owner) for key, tenant, owner in db.execute(query).all()]


def revoke_key_sync(db: Session, key_id: uuid.UUID) -> ApiKey | None:
    """The admin CLI's revoke: None when there is no such key; revoking again changes nothing."""
    key = db.get(ApiKey, key_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = utcnow()
        db.flush()
    return key


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
        zero_retention_allowed=tenant.zero_retention_allowed,
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
