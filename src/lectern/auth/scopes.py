"""Scope names (``service:resource:action``), the roles that name sets of them, and the check
that a requested grant is made of known scopes the granter holds."""

from __future__ import annotations

from collections.abc import Iterable

SESSIONS_READ = "speech:sessions:read"
SESSIONS_WRITE = "speech:sessions:write"  # open realtime streams
SESSIONS_DELETE = "speech:sessions:delete"
SESSIONS_ADMIN = "speech:sessions:admin"  # read every session of the tenant
FILES_READ = "speech:files:read"
FILES_WRITE = "speech:files:write"
FILES_DELETE = "speech:files:delete"
TRANSCRIPTIONS_READ = "speech:transcriptions:read"
TRANSCRIPTIONS_WRITE = "speech:transcriptions:write"
TRANSCRIPTIONS_DELETE = "speech:transcriptions:delete"
SUMMARIES_READ = "speech:summaries:read"
SUMMARIES_WRITE = "speech:summaries:write"
SUMMARIES_DELETE = "speech:summaries:delete"
PROMPTS_ADMIN = "ai:prompts:admin"  # tenant-wide prompt templates, assignments for other users; not a default
APIKEYS_READ = "user:apikeys:read"  # list and read one's own API keys
APIKEYS_WRITE = "user:apikeys:write"  # create and revoke one's own API keys (the platform's name)
APIKEYS_ADMIN = "user:apikeys:admin"  # every key of the tenant: list, create for and revoke other users'

# What every user may do with their own content and their own keys (the platform's viewer, too,
# "can create and manage own API keys").
_OWN_KEYS = (APIKEYS_READ, APIKEYS_WRITE)

NORMAL_USER_SCOPES: tuple[str, ...] = (
    SESSIONS_READ,
    SESSIONS_WRITE,
    SESSIONS_DELETE,
    FILES_READ,
    FILES_WRITE,
    FILES_DELETE,
    TRANSCRIPTIONS_READ,
    TRANSCRIPTIONS_WRITE,
    TRANSCRIPTIONS_DELETE,
    SUMMARIES_READ,
    SUMMARIES_WRITE,
    SUMMARIES_DELETE,
    *_OWN_KEYS,
)

VIEWER_SCOPES: tuple[str, ...] = (SESSIONS_READ, FILES_READ, TRANSCRIPTIONS_READ, SUMMARIES_READ, *_OWN_KEYS)
TENANT_ADMIN_SCOPES: tuple[str, ...] = (SESSIONS_ADMIN, PROMPTS_ADMIN, APIKEYS_ADMIN)

ROLES: dict[str, tuple[str, ...]] = {
    "admin": (*NORMAL_USER_SCOPES, *TENANT_ADMIN_SCOPES),
    "member": NORMAL_USER_SCOPES,
    "viewer": VIEWER_SCOPES,
}
"""Named scope sets a key is created with (``--role``, ``"role"``): admin holds every scope."""

KNOWN_SCOPES: frozenset[str] = frozenset(ROLES["admin"])


class UnknownScope(ValueError):
    """A scope or role name that does not exist; the message names it and what exists."""


def role_scopes(role: str) -> tuple[str, ...]:
    try:
        return ROLES[role]
    except KeyError:
        raise UnknownScope(f"unknown role {role!r}: roles are {', '.join(ROLES)}") from None


def known(scopes: Iterable[str]) -> list[str]:
    """``scopes`` sorted and without duplicates, when every one exists."""
    requested = sorted(set(scopes))
    unknown = [s for s in requested if s not in KNOWN_SCOPES]
    if unknown:
        raise UnknownScope(f"unknown scope{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                           f"scopes are {', '.join(sorted(KNOWN_SCOPES))}")
    return requested


def not_held(requested: Iterable[str], held: Iterable[str]) -> list[str]:
    """The requested scopes the granter does not hold itself (a grant never widens access)."""
    return sorted(set(requested) - set(held))
