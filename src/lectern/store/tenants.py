"""Tenants as the operator sets them up (``lectern admin tenants``), and how a cap is resolved.

Which settings a tenant has is ``TENANT_SETTINGS``: the admin CLI makes its options from it and
lists tenants with it, so a new column needs one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lectern.store.models import Tenant, User


@dataclass(frozen=True, slots=True)
class TenantSetting:
    column: str  # Tenant's attribute
    kind: type  # bool, or int (then null is allowed: "none")
    help: str


TENANT_SETTINGS: tuple[TenantSetting, ...] = (
    TenantSetting("recording_allowed", bool, "streams may record their audio"),
    TenantSetting("zero_retention_allowed", bool, "streams and batch requests may ask for zero retention "
                  "(ElevenLabs enable_logging=false)"),
    TenantSetting("max_concurrent_streams", int, "realtime streams open at once (none: LECTERN_TENANT_MAX_STREAMS)"),
    TenantSetting("max_running_jobs", int, "transcription and summary jobs running at once "
                  "(none: LECTERN_TENANT_MAX_RUNNING_JOBS)"),
    TenantSetting("quota_transcription_minutes", int, "transcribed minutes a month, realtime and batch together "
                  "(none: unlimited)"),
    TenantSetting("quota_summaries", int, "summaries a month (none: unlimited)"),
    TenantSetting("quota_summary_tokens", int, "summary tokens a month (none: unlimited)"),
    TenantSetting("quota_storage_bytes", int, "bytes of stored files (none: unlimited)"),
    TenantSetting("recording_retention_days", int, "days a stream's recording is kept (none: until deleted)"),
    TenantSetting("transcript_retention_days", int, "days stream transcripts and transcription results are kept "
                  "(none: until deleted)"),
    TenantSetting("summary_retention_days", int, "days summaries are kept (none: until deleted)"),
)


class TenantError(ValueError):
    """The tenant (or user) named does not exist, or already does; the message says which."""


def settings_of(tenant: Tenant) -> dict[str, Any]:
    return {setting.column: getattr(tenant, setting.column) for setting in TENANT_SETTINGS}


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    known = {setting.column: setting for setting in TENANT_SETTINGS}
    for column, value in values.items():
        setting = known.get(column)
        if setting is None:
            raise TenantError(f"no tenant setting {column!r}")
        if setting.kind is bool and not isinstance(value, bool):
            raise TenantError(f"{column} is true or false")
        if setting.kind is int and value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                                          or value < 0):
            raise TenantError(f"{column} is a whole number >= 0, or none")
    return values


def list_tenants(db: Session) -> list[Tenant]:
    return list(db.scalars(select(Tenant).order_by(Tenant.name)))


def get_tenant(db: Session, name: str) -> Tenant:
    tenant = db.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise TenantError(f"no tenant {name!r}")
    return tenant


def create_tenant(db: Session, name: str, values: dict[str, Any]) -> Tenant:
    if not name.strip():
        raise TenantError("a tenant needs a name")
    if db.scalar(select(Tenant.id).where(Tenant.name == name)) is not None:
        raise TenantError(f"tenant {name!r} already exists")
    tenant = Tenant(name=name, **_checked(values))
    db.add(tenant)
    db.flush()
    return tenant


def update_tenant(db: Session, name: str, values: dict[str, Any]) -> Tenant:
    tenant = get_tenant(db, name)
    for column, value in _checked(values).items():
        setattr(tenant, column, value)
    db.flush()
    return tenant


def set_user_stream_cap(db: Session, tenant_name: str, user_name: str, cap: int | None) -> User:
    """A user's own cap on open streams, over the tenant's (None: the tenant's applies)."""
    if cap is not None and cap < 0:
        raise TenantError("max_concurrent_streams is a whole number >= 0, or none")
    tenant = get_tenant(db, tenant_name)
    user = db.scalar(select(User).where(User.tenant_id == tenant.id, User.external_id == user_name))
    if user is None:
        raise TenantError(f"no user {user_name!r} in tenant {tenant_name!r}")
    user.max_concurrent_streams = cap
    db.flush()
    return user


def default_share(capacity: int) -> int:
    """A tenant's cap when neither it nor the server sets one: three quarters of what the node
    can run (at least 1), so that one tenant never fills a node alone."""
    return max(1, capacity * 3 // 4)


def stream_cap(user_cap: int | None, tenant_cap: int | None, server_default: int | None, node_capacity: int) -> int:
    """Open streams allowed: the user's override, else the tenant's, else the server's, else a share."""
    for cap in (user_cap, tenant_cap, server_default):
        if cap is not None:
            return cap
    return default_share(node_capacity)


def running_jobs_cap(tenant_cap: int | None, server_default: int | None, node_slots: int) -> int:
    """Jobs of one tenant running at once: the tenant's cap, else the server's, else a share."""
    for cap in (tenant_cap, server_default):
        if cap is not None:
            return cap
    return default_share(node_slots)
