"""Transcript text helpers shared by every protocol."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from text_to_num import alpha2digit

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


_PRONOUN_I = re.compile(r"\bi\b")  # also the I of I'm, I'll


def display_text(text: str, punctuate: bool) -> str:
    """A transcript as a reader wants it: numbers as digits ("twenty three" → "23"); with
    ``punctuate``, the pronoun I, a capital first letter and a closing period. The engine emits
    no punctuation inside a sentence, so nothing is invented there."""
    if not text:
        return ""
    shown = alpha2digit(text, "en")
    if punctuate:
        shown = _PRONOUN_I.sub("I", shown)
        shown = shown[0].upper() + shown[1:] + "."
    return shown


def as_sentence(text: str, capitalization: bool, punctuation: bool) -> str:
    """A segment's words as a written sentence: the engine gives lower case and no punctuation,
    so a capital opens it (and "i" is "I") and a full stop ends it, when asked for."""
    if not text:
        return text
    if capitalization:
        text = re.sub(r"\bi\b", "I", text)
        text = text[0].upper() + text[1:]
    if punctuation and text[-1] not in ".?!":
        text += "."
    return text
