"""Lenient, strict-where-it-matters parsing of query parameters, shared by the protocol adapters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lectern.json_input import JsonInputError, parse_json
from lectern.param_values import boolean as spelled_boolean

MAX_MODEL_ALIAS = 200  # what a session row keeps of the model a client asked for


def model_alias(value: str, name: str) -> str:
    """A model id as asked for: ParamError when the sessions table could not keep it."""
    if len(value) > MAX_MODEL_ALIAS:
        raise ParamError(f"{name} must be at most {MAX_MODEL_ALIAS} characters, not {len(value)}")
    return value


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
        values = self.many(name)
        if not values:
            return None
        if len(set(values)) > 1:
            raise ParamError(f"{name} is given more than once with different values: {', '.join(values)}")
        return values[0]

    def many(self, name: str) -> list[str]:
        values = list(self._values.get(name, []))
        if any("\x00" in value for value in values):  # %00: no database column takes it
            raise ParamError(f"{name} must not contain NUL characters")
        return values

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
            value = parse_json(raw)
        except JsonInputError as exc:
            raise ParamError(f"{name} must be a URL-encoded JSON object: {exc}") from None
        if not isinstance(value, dict):
            raise ParamError(f"{name} must be a JSON object, not {type(value).__name__}")
        return value
