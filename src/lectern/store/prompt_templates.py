"""Summary prompt templates and their assignments: the prompt templates API's queries, and
``visible_template`` for the summaries that use a template.

A caller sees the platform's APPLICATION templates, their tenant's TENANT templates and their
own USER templates; a deleted template (``deleted_at``) is seen by no one. A user's assigned
templates are their explicit assignments plus every visible global template; at most one of
them is their default: their own default assignment, or else the tenant's global default.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from lectern.auth.principal import Principal
from lectern.store.batch_models import PromptTemplateAssignmentRow, PromptTemplateRow
from lectern.store.models import Tenant, User, utcnow

APPLICATION, TENANT, USER = "APPLICATION", "TENANT", "USER"
LEVELS = (APPLICATION, TENANT, USER)  # the listing order
KINDS = ("summary", "minutes", "action_items")
PLACEHOLDERS = ("transcript", "language", "date")
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")  # {{name}} or {{ name }}; filled by summarize/prompts.py

Assignment = PromptTemplateAssignmentRow


def placeholders(text: str) -> list[str]:
    """The names of the ``{{ name }}`` placeholders in ``text``, in order of first appearance."""
    return list(dict.fromkeys(PLACEHOLDER.findall(text)))


@dataclass(frozen=True, slots=True)
class Listed:
    """A template as a listing gives it: the row, its owner's user name (USER level) and, in a
    user's assigned templates, whether it is their default and whether it was assigned explicitly."""

    row: PromptTemplateRow
    owner_name: str | None
    is_default: bool = False
    is_explicit: bool = False


# -- visibility ----------------------------------------------------------------------------------


def _visible_to(tenant_id: uuid.UUID, user_id: uuid.UUID) -> ColumnElement[bool]:
    t = PromptTemplateRow
    return and_(
        t.deleted_at.is_(None),
        or_(
            t.level == APPLICATION,
            and_(t.level == TENANT, t.tenant_id == tenant_id),
            and_(t.level == USER, t.tenant_id == tenant_id, t.owner_id == user_id),
        ),
    )


async def visible_to(db: AsyncSession, template_id: uuid.UUID, tenant_id: uuid.UUID,
                     user_id: uuid.UUID) -> PromptTemplateRow | None:
    """The template, when this user of this tenant may see it (and it is not deleted)."""
    return await db.scalar(
        select(PromptTemplateRow).where(PromptTemplateRow.id == template_id, _visible_to(tenant_id, user_id))
    )


async def visible_template(db: AsyncSession, template_id: uuid.UUID, caller: Principal) -> PromptTemplateRow | None:
    """The template, when the caller may see it and it is not deleted; None otherwise (for a
    summary naming it: PROMPT_TEMPLATE_NOT_FOUND)."""
    return await visible_to(db, template_id, caller.tenant_id, caller.user_id)


async def owner_name(db: AsyncSession, row: PromptTemplateRow) -> str | None:
    if row.level != USER or row.owner_id is None:
        return None
    return await db.scalar(select(User.external_id).where(User.id == row.owner_id))


async def find_user(db: AsyncSession, tenant_id: uuid.UUID, name: str) -> User | None:
    """A user of the tenant by their external name (API-key user name or JWT ``sub``)."""
    return await db.scalar(select(User).where(User.tenant_id == tenant_id, User.external_id == name))


# -- listings ------------------------------------------------------------------------------------

_LEVEL_ORDER = case({APPLICATION: 0, TENANT: 1}, value=PromptTemplateRow.level, else_=2)
_ORDER = (_LEVEL_ORDER, func.lower(PromptTemplateRow.name), PromptTemplateRow.name, PromptTemplateRow.id)


def _filtered(query: Select[Any], level: str | None, kind: str | None) -> Select[Any]:
    if level is not None:
        query = query.where(PromptTemplateRow.level == level)
    if kind is not None:
        query = query.where(PromptTemplateRow.kind == kind)
    return query


async def _page(db: AsyncSession, query: Select[Any], page: int, size: int) -> tuple[list[Any], int]:
    total = await db.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = list((await db.execute(query.order_by(*_ORDER).offset(page * size).limit(size))).all())
    return rows, total


async def list_visible(db: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, *, level: str | None = None,
                       kind: str | None = None, page: int = 0, size: int = 20) -> tuple[list[Listed], int]:
    """One page of the templates this user sees, by level (APPLICATION, TENANT, USER) then name; and their total."""
    query = (
        select(PromptTemplateRow, User.external_id)
        .outerjoin(User, User.id == PromptTemplateRow.owner_id)
        .where(_visible_to(tenant_id, user_id))
    )
    rows, total = await _page(db, _filtered(query, level, kind), page, size)
    return [Listed(row, name if row.level == USER else None) for row, name in rows], total


async def list_assigned(db: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, *, level: str | None = None,
                        kind: str | None = None, page: int = 0, size: int = 20) -> tuple[list[Listed], int]:
    """One page of the user's assigned templates (explicit assignments and visible global templates),
    in the listing order, each saying whether it is the user's default; and their total."""
    mine = aliased(PromptTemplateAssignmentRow)
    query = (
        select(PromptTemplateRow, User.external_id, mine.id, mine.is_default)
        .outerjoin(mine, and_(mine.template_id == PromptTemplateRow.id, mine.user_id == user_id))
        .outerjoin(User, User.id == PromptTemplateRow.owner_id)
        .where(_visible_to(tenant_id, user_id))
        .where(or_(mine.id.is_not(None),
                   and_(PromptTemplateRow.is_global.is_(True), PromptTemplateRow.level.in_((TENANT, APPLICATION)))))
    )
    rows, total = await _page(db, _filtered(query, level, kind), page, size)
    own_default = await default_assignment(db, tenant_id, user_id) is not None
    return [
        Listed(row, name if row.level == USER else None,
               is_default=bool(chosen) if own_default else bool(row.is_global and row.is_global_default),
               is_explicit=assignment_id is not None)
        for row, name, assignment_id, chosen in rows
    ], total


async def default_assignment(db: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID) -> Assignment | None:
    """The user's own default assignment, when its template is still visible to them."""
    return await db.scalar(
        select(Assignment)
        .join(PromptTemplateRow, PromptTemplateRow.id == Assignment.template_id)
        .where(Assignment.user_id == user_id, Assignment.is_default.is_(True), _visible_to(tenant_id, user_id))
        .limit(1)
    )


# -- templates -----------------------------------------------------------------------------------


async def _lock(db: AsyncSession, table: type[Tenant] | type[User], row_id: uuid.UUID) -> None:
    """Serializes changes to one tenant's or user's defaults on PostgreSQL (SQLite has one writer)."""
    await db.execute(select(table.id).where(table.id == row_id).with_for_update())


async def _clear_global_default(db: AsyncSession, tenant_id: uuid.UUID, keep: uuid.UUID) -> None:
    await _lock(db, Tenant, tenant_id)
    await db.execute(
        update(PromptTemplateRow)
        .where(PromptTemplateRow.tenant_id == tenant_id, PromptTemplateRow.id != keep,
               PromptTemplateRow.is_global_default.is_(True))
        .values(is_global_default=False)
    )


async def create(db: AsyncSession, values: dict[str, Any]) -> PromptTemplateRow:
    """A new template from column values (``tenant_id``, ``owner_id``, ``level``, ``name``, ...).
    A new global default replaces the tenant's previous one."""
    now = utcnow()
    row = PromptTemplateRow(id=uuid.uuid4(), created_at=now, updated_at=now, **values)
    if row.is_global_default and row.tenant_id is not None:
        await _clear_global_default(db, row.tenant_id, row.id)
    db.add(row)
    await db.commit()
    return row


async def replace(db: AsyncSession, row: PromptTemplateRow, values: dict[str, Any]) -> PromptTemplateRow | None:
    """Every editable field of a template replaced; None when it was deleted meanwhile."""
    if values.get("is_global_default") and row.tenant_id is not None:
        await _clear_global_default(db, row.tenant_id, row.id)
    result = await db.execute(
        update(PromptTemplateRow)
        .where(PromptTemplateRow.id == row.id, PromptTemplateRow.deleted_at.is_(None))
        .values(**values, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    await db.commit()
    if result.rowcount == 0:  # type: ignore[attr-defined]
        return None
    await db.refresh(row)
    return row


async def soft_delete(db: AsyncSession, row: PromptTemplateRow) -> bool:
    """Hides the template and removes its assignments; False when it was already deleted."""
    result = await db.execute(
        update(PromptTemplateRow)
        .where(PromptTemplateRow.id == row.id, PromptTemplateRow.deleted_at.is_(None))
        .values(deleted_at=utcnow(), is_global_default=False)
        .execution_options(synchronize_session=False)
    )
    await db.execute(delete(Assignment).where(Assignment.template_id == row.id))
    await db.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


# -- assignments ---------------------------------------------------------------------------------


async def assignment(db: AsyncSession, template_id: uuid.UUID, user_id: uuid.UUID) -> Assignment | None:
    return await db.scalar(select(Assignment).where(Assignment.template_id == template_id,
                                                    Assignment.user_id == user_id))


async def _clear_default(db: AsyncSession, user_id: uuid.UUID, keep: uuid.UUID) -> None:
    await db.execute(
        update(Assignment)
        .where(Assignment.user_id == user_id, Assignment.template_id != keep, Assignment.is_default.is_(True))
        .values(is_default=False)
    )


async def assign(db: AsyncSession, template_id: uuid.UUID, tenant_id: uuid.UUID, user_id: uuid.UUID,
                 is_default: bool) -> tuple[Assignment, bool]:
    """Assigns the template to the user (or sets the existing assignment's default flag); a new
    default replaces the user's previous one. Returns the assignment and whether it is new."""
    for attempt in range(2):  # a concurrent first assignment may insert the same row
        try:
            await _lock(db, User, user_id)
            if is_default:
                await _clear_default(db, user_id, template_id)
            row = await assignment(db, template_id, user_id)
            created = row is None
            if row is None:
                row = Assignment(id=uuid.uuid4(), template_id=template_id, tenant_id=tenant_id, user_id=user_id,
                                 is_default=is_default, created_at=utcnow())
                db.add(row)
            else:
                row.is_default = is_default
            await db.commit()
            return row, created
        except IntegrityError:
            await db.rollback()
            if attempt:
                raise
    raise AssertionError("unreachable")


async def set_default(db: AsyncSession, template_id: uuid.UUID, user_id: uuid.UUID,
                      is_default: bool) -> Assignment | None:
    """Changes an existing assignment's default flag (a new default replaces the user's previous
    one); None when there is no such assignment."""
    await _lock(db, User, user_id)
    row = await assignment(db, template_id, user_id)
    if row is None:
        await db.rollback()
        return None
    if is_default:
        await _clear_default(db, user_id, template_id)
    row.is_default = is_default
    await db.commit()
    return row


async def unassign(db: AsyncSession, template_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Removes the assignment; False when there was none."""
    result = await db.execute(
        delete(Assignment).where(Assignment.template_id == template_id, Assignment.user_id == user_id)
    )
    await db.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]

