"""JSON from clients, parsed and checked within bounds every part of the server can hold.

``json.loads`` raises RecursionError on deep nesting and a bare ValueError (not a JSONDecodeError)
on an integer of more than 4300 digits, and it accepts NaN and Infinity, which PostgreSQL's JSON
refuses, as its text columns refuse NUL characters. Here every such input is one ``JsonInputError``
whose message says what to fix; each protocol renders it in its own error shape.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Deeper than any metadata a person writes; shallow enough that nothing recursive ever struggles.
MAX_DEPTH = 32


class JsonInputError(ValueError):
    """JSON a client must fix; the message says what is wrong, without naming the field."""


def parse_json(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of ``text``, checked by ``check_json_value``; JsonInputError otherwise."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except JsonInputError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonInputError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    except RecursionError:
        raise JsonInputError(f"JSON nested more than {max_depth} levels deep") from None
    except ValueError:  # an integer past Python's 4300-digit conversion limit
        raise JsonInputError("a JSON number has too many digits") from None
    check_json_value(value, max_depth)
    return value


def check_json_value(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """JsonInputError unless ``value`` nests at most ``max_depth`` arrays and objects deep, holds
    only finite numbers and no NUL character in any string or key. Iterative: any depth is safe."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= max_depth:
                raise JsonInputError(f"JSON nested more than {max_depth} levels deep")
            if isinstance(item, dict):
                for key, member in item.items():
                    if not isinstance(key, str) or "\x00" in key:
                        raise JsonInputError("JSON keys must be strings without NUL characters")
                    stack.append((member, depth + 1))
            else:
                stack.extend((member, depth + 1) for member in item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise JsonInputError("JSON strings must not contain NUL characters (\\u0000)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise JsonInputError("JSON numbers must be finite (not NaN or Infinity)")


def _no_constant(name: str) -> Any:
    raise JsonInputError(f"{name} is not a JSON number")
