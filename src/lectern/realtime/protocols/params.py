"""Lenient, strict-where-it-matters parsing of query parameters, shared by the protocol adapters."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lectern.param_values import boolean as spelled_boolean


class ParamError(ValueError):
    """A parameter value the client must fix; the message names the parameter."""


class QueryParams:
    """Multi-valued query parameters: a repeated parameter must repeat the same value unless it is a list."""

    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for key, value in items:
            self._values.setdefault(key, []).append(value)

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def one(self, name: str) -> str | None:
        values = self._values.get(name)
        if not values:
            return None
        if len(set(values)) > 1:
            raise ParamError(f"{name} is given more than once with different values: {', '.join(values)}")
        return values[0]

    def many(self, name: str) -> list[str]:
        return list(self._values.get(name, []))

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.one(name)
        if raw is None or raw == "":
            return default
        value = spelled_boolean(raw)
        if value is None:
            raise ParamError(f"{name} must be true or false, not {raw!r}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.one(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ParamError(f"{name} must be a number, not {raw!r}") from None
        if not low <= value <= high:
            raise ParamError(f"{name} must be between {low:g} and {high:g}, not {raw}")
        return value

    def integer(self, name: str, default: int | None, low: int, high: int) -> int | None:
        raw = self.one(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ParamError(f"{name} must be an integer, not {raw!r}") from None
        if not value.is_integer():
            raise ParamError(f"{name} must be an integer, not {raw!r}")
        if not low <= value <= high:
            raise ParamError(f"{name} must be between {low} and {high}, not {raw}")
        return int(value)

    def json_object(self, name: str, max_bytes: int) -> dict[str, Any] | None:
        raw = self.one(name)
        if raw is None or raw == "":
            return None
        if len(raw.encode()) > max_bytes:
            raise ParamError(f"{name} is larger than {max_bytes} bytes")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise ParamError(f"{name} must be a URL-encoded JSON object") from None
        if not isinstance(value, dict):
            raise ParamError(f"{name} must be a JSON object, not {type(value).__name__}")
        return value
