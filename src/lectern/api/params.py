"""Query parameter types every REST resource shares: ISO 8601 instants, free text without controls."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import Field

from lectern.api.errors import ApiError

# ISO 8601 date or date-time, as text: pydantic's lax datetime would also take Unix numbers.
ISO_8601 = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"([Tt ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?([Zz]|[+-](0\d|1[0-4]):?[0-5]\d)?)?$"
)
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"

Timestamp = Annotated[str, Field(pattern=ISO_8601, json_schema_extra={"format": "date-time"})]


def instant(value: str | None, parameter: str) -> datetime | None:
    """An ISO 8601 timestamp in UTC; one without an offset is taken as UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
        return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise ApiError(400, f"{parameter}: {value!r} is not an ISO 8601 timestamp in range", parameter) from None
