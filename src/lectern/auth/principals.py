"""Who is calling a REST endpoint: an API key (X-API-Key) or a JWT bearer token."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.auth import keys
from lectern.auth.jwt import JwtIdentity, JwtVerifier
from lectern.auth.principal import AuthError, Principal
from lectern.store.models import Tenant, User


async def authenticate(
    db: AsyncSession, verifier: JwtVerifier, api_key: str | None, authorization: str | None
) -> Principal:
    """An API key wins when both are sent."""
    if api_key:
        return await keys.authenticate_api_key(db, api_key)
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        if not verifier.enabled:
            raise AuthError("bearer tokens are not accepted: no JWT verification is configured")
        return await principal_for(db, await verifier.verify(token.strip()))
    raise AuthError("missing credentials: send X-API-Key or Authorization: Bearer <JWT>")


async def principal_for(db: AsyncSession, identity: JwtIdentity) -> Principal:
    """The JWT's subject is the same user as an API key made for the same tenant and user name;
    both are created on first sight, as the identity provider is the authority on who exists."""
    tenant, user = await _ensure_user(db, identity.tenant, identity.user)
    return Principal(
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        user_id=user.id,
        user_name=user.external_id,
        scopes=identity.scopes,
        recording_allowed=tenant.recording_allowed,
        zero_retention_allowed=tenant.zero_retention_allowed,
    )


async def _ensure_user(db: AsyncSession, tenant_name: str, user_name: str) -> tuple[Tenant, User]:
    for _attempt in range(2):  # a concurrent first request may create the same rows
        try:
            tenant = await db.scalar(select(Tenant).where(Tenant.name == tenant_name))
            if tenant is None:
                tenant = Tenant(name=tenant_name)
                db.add(tenant)
                await db.flush()
            user = await db.scalar(select(User).where(User.tenant_id == tenant.id, User.external_id == user_name))
            if user is None:
                user = User(tenant_id=tenant.id, external_id=user_name)
                db.add(user)
                await db.flush()
            await db.commit()
            return tenant, user
        except IntegrityError:
            await db.rollback()
    raise AuthError("could not resolve the token's user")
