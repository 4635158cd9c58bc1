"""Transcript text helpers shared by every protocol."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

# Hesitations the en-US dictionary can emit; removed when a client asks for no_verbatim.
FILLERS = frozenset({"uh", "um", "umm", "uhm", "er", "erm", "ah", "eh", "hmm", "hm", "mm", "mhm", "huh"})
_ALTERNATE = re.compile(r"\(\d+\)$")

W = TypeVar("W")


def clean_token(token: str) -> str | None:
    """A dictionary token as a word, or None for silence and noise markers (<sil>, [NOISE], ++UH++)."""
    if not token or token[0] in "<[+":
        return None
    return _ALTERNATE.sub("", token)


def remove_disfluencies(words: Sequence[W], text_of: Callable[[W], str]) -> list[W]:
    """Drop fillers and immediate repetitions (false starts such as "I I think")."""
    kept: list[W] = []
    for word in words:
        text = text_of(word).lower()
        if text in FILLERS:
            continue
        if kept and text_of(kept[-1]).lower() == text:
            continue
        kept.append(word)
    return kept
