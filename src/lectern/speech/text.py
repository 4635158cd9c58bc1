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


def bare_word(text: str) -> str:
    """A word without its case and surrounding punctuation ("Um," -> "um")."""
    return text.strip(_PUNCTUATION).lower()


def remove_disfluencies(words: Sequence[W], text_of: Callable[[W], str]) -> list[W]:
    """Drop fillers and immediate repetitions (false starts such as "I I think")."""
    kept: list[W] = []
    for word in words:
        text = bare_word(text_of(word))
        if text in FILLERS:
            continue
        if kept and bare_word(text_of(kept[-1])) == text:
            continue
        kept.append(word)
    return kept


_PUNCTUATION = ".,?!;:\"“”‘’()[]…-—"
_STRIP_PUNCTUATION = re.compile(r"[.,?!;:\"“”()\[\]…—]|(?<!\w)['‘’-]|['‘’-](?!\w)")


_PRONOUN_I = re.compile(r"\bi\b")  # also the I of I'm, I'll


def display_text(text: str, punctuate: bool) -> str:
    """A transcript as a reader wants it: numbers as digits ("twenty three" → "23"); with
    ``punctuate``, written as a sentence (Whisper punctuates itself; pocketsphinx's lower-case
    words get the pronoun I, a capital first letter and a closing period), without it, no
    punctuation at all."""
    if not text:
        return ""
    shown = alpha2digit(text, "en")
    return as_sentence(shown, capitalization=True, punctuation=True) if punctuate else without_punctuation(shown)


def without_punctuation(text: str) -> str:
    """Sentence punctuation removed; apostrophes and hyphens inside words kept ("don't", "e-mail")."""
    return " ".join(_STRIP_PUNCTUATION.sub("", text).split())


def as_sentence(text: str, capitalization: bool, punctuation: bool) -> str:
    """A segment's text as asked for. Cased and punctuated text (Whisper's) keeps its own
    writing; lower-case words without punctuation (pocketsphinx's) get a capital opening (and
    "i" as "I") and a closing full stop. Without capitalization the text is lower case, without
    punctuation it has none."""
    if not text:
        return text
    if capitalization:
        text = _PRONOUN_I.sub("I", text)
        text = text[0].upper() + text[1:]
    else:
        text = text.lower()
    if not punctuation:
        return without_punctuation(text)
    if text[-1] not in ".?!…":
        text += "."
    return text
