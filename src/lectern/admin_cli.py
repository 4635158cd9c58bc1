"""``lectern admin ...``: API keys and tenants, straight in the database (the operator's tools).

    lectern admin keys create --tenant T --user U [--role R | --scopes A,B] [--name N] [--expires ISO]
    lectern admin keys list [--tenant T]
    lectern admin keys revoke KEY_ID
    lectern admin tenants list | create NAME [settings] | update NAME [settings]
    lectern admin users update --tenant T --user U --max-concurrent-streams N|none
    lectern admin create-key ...      (the same as `keys create`; kept for scripts)

A created key is the last line printed and is never shown again; listings show its prefix.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import datetime, timezone
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from lectern.auth import keys, scopes
from lectern.settings import Settings
from lectern.store import migrate
from lectern.store import tenants as tenant_rows
from lectern.store.db import create_sync_engine
from lectern.store.models import rfc3339, utcnow

Common = Callable[[argparse.ArgumentParser], None]


class AdminError(Exception):
    """A refused command: the message is printed, the exit status is 1."""


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(**({"data_dir": args.data_dir} if getattr(args, "data_dir", None) else {}))


@contextmanager
def _database(args: argparse.Namespace) -> Iterator[Session]:
    """One transaction on a migrated database: committed when the command succeeds."""
    settings = _settings(args)
    migrate.upgrade(settings.resolved_database_url)
    engine = create_sync_engine(settings.resolved_database_url)
    try:
        with Session(engine) as db, db.begin():
            yield db
    finally:
        engine.dispose()


def _run(command: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
    def handler(args: argparse.Namespace) -> None:
        try:
            command(args)
        except (AdminError, scopes.UnknownScope, tenant_rows.TenantError) as exc:
            sys.exit(f"lectern admin: {exc}")

    return handler


# -- keys -----------------------------------------------------------------------------------------


def _requested_scopes(args: argparse.Namespace) -> list[str]:
    if args.role is not None and args.scopes is not None:
        raise AdminError("give either --role or --scopes, not both")
    if args.scopes is not None:
        return scopes.known(s.strip() for s in args.scopes.split(",") if s.strip())
    return scopes.known(scopes.role_scopes(args.role or "member"))


def _expiry(raw: str | None) -> datetime | None:
    """``--expires``: an ISO 8601 instant in the future (UTC when it has no offset)."""
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise AdminError(f"--expires {raw!r} is not an ISO 8601 date or time") from None
    expires_at = parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
    if expires_at <= utcnow():
        raise AdminError(f"--expires {raw} is in the past")
    return expires_at


def create_key(args: argparse.Namespace) -> None:
    granted = _requested_scopes(args)
    expires_at = _expiry(args.expires)
    with _database(args) as db:
        key = keys.create_api_key(db, args.tenant, args.user, granted, name=args.name or "",
                                  expires_at=expires_at, description=args.description)
    print(f"API key {key.id} for tenant {args.tenant!r}, user {args.user!r}, scopes: {' '.join(granted)}")
    print(key.plaintext)


def list_keys(args: argparse.Namespace) -> None:
    with _database(args) as db:
        if args.tenant is not None:
            tenant_rows.get_tenant(db, args.tenant)
        now = utcnow()
        rows = [{"id": str(key.id), "tenant": tenant, "user": owner, "name": key.name, "prefix": key.prefix,
                 "status": keys.key_status(key, now), "scopes": list(key.scopes),
                 "created": rfc3339(key.created_at), "expires": key.expires_at and rfc3339(key.expires_at),
                 "revoked": key.revoked_at and rfc3339(key.revoked_at)}
                for key, tenant, owner in keys.list_keys_sync(db, args.tenant)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    _table(rows, ("id", "tenant", "user", "name", "prefix", "status", "expires", "scopes"))


def revoke_key(args: argparse.Namespace) -> None:
    try:
        key_id = uuid.UUID(args.key_id)
    except ValueError:
        raise AdminError(f"{args.key_id!r} is not a key id (a UUID, as `lectern admin keys list` shows)") from None
    with _database(args) as db:
        key = keys.revoke_key_sync(db, key_id)
        if key is None:
            raise AdminError(f"no API key {key_id}")
        revoked_at = rfc3339(key.revoked_at) if key.revoked_at else ""
    print(f"API key {key_id} revoked at {revoked_at}")


# -- tenants --------------------------------------------------------------------------------------


def _flag(column: str) -> str:
    return "--" + column.replace("_", "-")


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{raw!r} is not true or false")


def _parse_limit(raw: str) -> int | None:
    if raw.strip().lower() in ("none", "null", ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number or none") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{raw!r} is negative")
    return value


def _tenant_values(args: argparse.Namespace) -> dict[str, Any]:
    return {s.column: getattr(args, s.column) for s in tenant_rows.TENANT_SETTINGS
            if getattr(args, s.column) is not _UNSET}


_UNSET = object()


def _tenant_row(tenant: Any) -> dict[str, Any]:
    return {"name": tenant.name, **tenant_rows.settings_of(tenant)}


def list_tenants(args: argparse.Namespace) -> None:
    with _database(args) as db:
        rows = [_tenant_row(t) for t in tenant_rows.list_tenants(db)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    _table(rows, ("name", *(s.column for s in tenant_rows.TENANT_SETTINGS)))


def create_tenant(args: argparse.Namespace) -> None:
    with _database(args) as db:
        row = _tenant_row(tenant_rows.create_tenant(db, args.name, _tenant_values(args)))
    print(json.dumps(row, indent=2))


def update_tenant(args: argparse.Namespace) -> None:
    values = _tenant_values(args)
    if not values:
        raise AdminError("nothing to change: give at least one setting (see --help)")
    with _database(args) as db:
        row = _tenant_row(tenant_rows.update_tenant(db, args.name, values))
    print(json.dumps(row, indent=2))


def update_user(args: argparse.Namespace) -> None:
    with _database(args) as db:
        user = tenant_rows.set_user_stream_cap(db, args.tenant, args.user, args.max_concurrent_streams)
        cap = user.max_concurrent_streams
    print(f"user {args.user!r} of tenant {args.tenant!r}: max_concurrent_streams {cap if cap is not None else 'none'}")


# -- output and parser ----------------------------------------------------------------------------


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, list):
            return ",".join(value) or "-"
        return str(value).lower() if isinstance(value, bool) else str(value)

    cells = [[cell(row[c]) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    for line in [list(columns), *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())


def _key_options(p: argparse.ArgumentParser, common: Common) -> None:
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--role", help=f"a named scope set: {', '.join(scopes.ROLES)} (default: member)")
    p.add_argument("--scopes", help="comma-separated scopes instead of a role")
    p.add_argument("--name", help="a label for the key")
    p.add_argument("--description")
    p.add_argument("--expires", metavar="ISO_8601", help="when the key stops working (default: never)")
    common(p)
    p.set_defaults(handler=_run(create_key))


def _setting_options(p: argparse.ArgumentParser) -> None:
    for setting in tenant_rows.TENANT_SETTINGS:
        kind = _parse_bool if setting.kind is bool else _parse_limit
        metavar = "true|false" if setting.kind is bool else "N|none"
        p.add_argument(_flag(setting.column), dest=setting.column, type=kind, default=_UNSET, metavar=metavar,
                       help=setting.help)


def register(commands: Any, common: Common) -> None:
    """Add ``lectern admin`` and its commands to the main parser's subcommands."""
    admin = commands.add_parser("admin", help="administration: API keys and tenants").add_subparsers(
        dest="admin_command", required=True)
    _key_options(admin.add_parser("create-key", help="create an API key (as `keys create`); the key is the "
                                  "last line printed"), common)

    key_commands = admin.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    _key_options(key_commands.add_parser("create", help="create an API key; the key is the last line printed"),
                 common)
    listing = key_commands.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant", help="only this tenant's")
    listing.add_argument("--json", action="store_true")
    common(listing)
    listing.set_defaults(handler=_run(list_keys))
    revoke = key_commands.add_parser("revoke", help="revoke a key (again: no change)")
    revoke.add_argument("key_id", metavar="KEY_ID")
    common(revoke)
    revoke.set_defaults(handler=_run(revoke_key))

    tenant_commands = admin.add_parser("tenants", help="tenants and their settings").add_subparsers(
        dest="tenants_command", required=True)
    listing = tenant_commands.add_parser("list", help="every tenant with its settings")
    listing.add_argument("--json", action="store_true")
    common(listing)
    listing.set_defaults(handler=_run(list_tenants))
    for name, handler, what in (("create", create_tenant, "create a tenant"),
                                ("update", update_tenant, "change a tenant's settings")):
        p = tenant_commands.add_parser(name, help=what)
        p.add_argument("name", metavar="NAME")
        _setting_options(p)
        common(p)
        p.set_defaults(handler=_run(handler))

    user_commands = admin.add_parser("users", help="per-user settings").add_subparsers(
        dest="users_command", required=True)
    p = user_commands.add_parser("update", help="a user's own cap on open streams, over the tenant's")
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--max-concurrent-streams", dest="max_concurrent_streams", type=_parse_limit, required=True,
                   metavar="N|none", help="none: the tenant's cap applies")
    common(p)
    p.set_defaults(handler=_run(update_user))
