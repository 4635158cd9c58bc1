"""A transcript as sentences: the units the extractive summarizer ranks and the LLM backend cuts
long transcripts between.

Transcripts arrive in three styles. A punctuating engine writes sentences. Lectern's own engine
ends each segment (a stretch of speech between pauses, up to 30 s) with a full stop and writes no
punctuation inside it, so one "sentence" may hold several. With punctuation off there is none at
all. So: a line break is a boundary (segments joined by newlines are pauses), sentence-final
punctuation is one (not after a known abbreviation or an initial), and whatever is still longer
than ``MAX_WORDS`` is cut where a new sentence most plausibly starts: before a discourse marker
("okay", "so", "next", ...; English), else at a fixed length.
"""

from __future__ import annotations

import re

MAX_WORDS = 40  # longer stretches are cut (a spoken sentence rarely runs past this)
TARGET_WORDS = 20  # where cuts in an unpunctuated stretch are aimed
MIN_WORDS = 6  # no cut leaves a piece shorter than this

# After these, a full stop does not end a sentence.
_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "eg", "ie", "approx",
    "no", "inc", "ltd", "co", "corp", "dept", "est", "fig", "min", "max", "jan", "feb", "mar", "apr",
    "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mon", "tue", "wed", "thu", "fri", "a.m", "p.m",
})
_END = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|[。！？]+")
_LAST_WORD = re.compile(r"([\w.]+)[.!?…]*$")

# Words that often open a new spoken sentence, by how strongly they signal one.
_STRONG_OPENERS = frozenset({
    "okay", "ok", "alright", "so", "now", "next", "anyway", "anyways", "first", "second", "third", "finally",
    "thanks", "yes", "yeah", "right", "well", "great", "sure", "let's", "moving",
})
_WEAK_OPENERS = frozenset({"and", "but", "then", "also", "i", "we", "i'll", "we'll", "i'm", "we're", "if", "because"})


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` in order, whitespace normalized, none empty."""
    out: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            for sentence in _split_punctuated(line):
                out.extend(_split_long(sentence))
    return out


def _split_punctuated(line: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    for m in _END.finditer(line):
        candidate = line[start:m.end()].strip()
        last = _LAST_WORD.search(line[start:m.start() + 1])
        word = last.group(1).lower().rstrip(".") if last else ""
        if line[m.start()] == "." and (word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())):
            continue  # "Dr. Chen", "J. Smith"
        if candidate:
            pieces.append(candidate)
        start = m.end()
    rest = line[start:].strip()
    if rest:
        pieces.append(rest)
    return pieces


def _split_long(sentence: str) -> list[str]:
    words = sentence.split()
    pieces: list[str] = []
    while len(words) > MAX_WORDS:
        cut = _best_cut(words)
        pieces.append(" ".join(words[:cut]))
        words = words[cut:]
    if words:
        pieces.append(" ".join(words))
    return pieces


def _best_cut(words: list[str]) -> int:
    """Where the next piece of an over-long stretch ends: before the strongest opener near the
    target length, never leaving fewer than MIN_WORDS on either side."""
    best, best_score = min(MAX_WORDS, len(words) - MIN_WORDS), float("-inf")
    for i in range(MIN_WORDS, min(MAX_WORDS, len(words) - MIN_WORDS) + 1):
        word = words[i].lower().strip(",.;:!?\"'")
        strength = 2.0 if word in _STRONG_OPENERS else 1.0 if word in _WEAK_OPENERS else 0.0
        if words[i - 1][-1:] in ",;:":
            strength += 0.5  # a comma inside an otherwise unpunctuated stretch is a pause
        score = strength - abs(i - TARGET_WORDS) / MAX_WORDS
        if score > best_score:
            best, best_score = i, score
    return best
