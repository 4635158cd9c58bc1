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
OPENER_WEIGHT = 0.25  # what a strong opener (2) is worth: a piece ~14 words off the target

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
    "okay", "ok", "alright", "so", "now", "anyway", "anyways", "finally", "thanks", "yes", "yeah", "sure",
    "great", "let's", "moving",
})
_WEAK_OPENERS = frozenset({"and", "but", "then", "also", "i", "we", "i'll", "we'll", "i'm", "we're", "if", "because"})
# Words a sentence does not end on: cutting after them splits a phrase ("marketing and | finally").
_NO_END = frozenset({
    "and", "or", "but", "the", "a", "an", "to", "of", "for", "with", "in", "on", "at", "from", "by", "is", "are",
    "was", "were", "that", "this", "my", "our", "your", "their", "i", "we", "you", "they", "it", "if", "so", "very",
    "think", "guess", "mean", "like", "about", "into", "than", "as",
})


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
    """An over-long stretch cut into pieces of MIN_WORDS to MAX_WORDS words, choosing the cuts
    together (dynamic programming): each piece costs its squared distance from TARGET_WORDS, and
    each cut earns its opener's strength, so "... this quarter | okay next item is ..." is cut
    where the speaker started over, and a stretch without openers into even pieces."""
    words = sentence.split()
    n = len(words)
    if n <= MAX_WORDS:
        return [sentence]
    inf = float("inf")
    best = [0.0] + [inf] * n  # best[j]: the cheapest cutting of words[:j]
    cut_before = [0] * (n + 1)
    for j in range(MIN_WORDS, n + 1):
        bonus = -OPENER_WEIGHT * _opener_strength(words, j) if j < n else 0.0
        for i in range(max(0, j - MAX_WORDS), j - MIN_WORDS + 1):
            if best[i] == inf:
                continue
            cost = best[i] + ((j - i - TARGET_WORDS) / TARGET_WORDS) ** 2 + bonus
            if cost < best[j]:
                best[j], cut_before[j] = cost, i
    cuts, j = [], n
    while j > 0:
        cuts.append((cut_before[j], j))
        j = cut_before[j]
    return [" ".join(words[i:j]) for i, j in reversed(cuts)]


def _opener_strength(words: list[str], i: int) -> float:
    """How much words[i] looks like the start of a new sentence."""
    word = words[i].lower().strip(",.;:!?\"'")
    strength = 2.0 if word in _STRONG_OPENERS else 1.0 if word in _WEAK_OPENERS else 0.0
    if words[i - 1][-1:] in ",;:":
        strength += 0.5  # a comma inside an otherwise unpunctuated stretch is a pause
    elif words[i - 1].lower() in _NO_END:
        strength -= 1.5
    return strength
