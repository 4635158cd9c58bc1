"""Model aliases: what a client asks for, resolved to an engine this server runs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lectern.speech.engines.pool import DEFAULT_ENGINE

# Names that mean exactly the embedded engine; anything else (vendor aliases such as
# scribe_v2_realtime included) falls back to it and says so.
_EXACT = {DEFAULT_ENGINE, "pocketsphinx", "default"}
# English in ISO 639-1/639-3, with any region (en-US, en_GB, en-AU...): one model serves them all.
_ENGLISH = re.compile(r"^(en|eng)([-_][a-z0-9]{2,8})?$")


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    requested_alias: str
    name: str
    used_fallback: bool


def resolve_model(alias: str) -> ResolvedModel:
    return ResolvedModel(alias, DEFAULT_ENGINE, alias.lower() not in _EXACT)


def serves_language(code: str | None) -> bool:
    return code is None or _ENGLISH.match(code.strip().lower()) is not None
