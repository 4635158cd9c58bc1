"""Cutting a text into consecutive pieces that each fit a token budget, between lines where it
can (a transcript's lines are its segments), else between sentences, else between words. The
pieces are the original text: joined with newlines they give the text back (whitespace inside a
cut line or sentence aside)."""

from __future__ import annotations

from lectern.summarize.sentences import split_sentences
from lectern.summarize.tokens import count_tokens


def chunk_text(text: str, budget: int) -> list[str]:
    """Pieces of ``text`` of at most ``budget`` tokens each (``count_tokens``), in order."""
    if budget < 1:
        raise ValueError("budget must be positive")
    units: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if count_tokens(line) <= budget:
            units.append(line.strip())
            continue
        for sentence in split_sentences(line):
            units.extend([sentence] if count_tokens(sentence) <= budget else _by_words(sentence, budget))
    return _pack(units, budget, "\n")


def _by_words(sentence: str, budget: int) -> list[str]:
    out: list[str] = []
    for piece in _pack(sentence.split(), budget, " "):
        if count_tokens(piece) <= budget:
            out.append(piece)
        else:  # one "word" longer than the budget (a pasted blob): by characters, at most 2 tokens each
            step = max(1, budget // 2)
            out.extend(piece[i:i + step] for i in range(0, len(piece), step))
    return out


def _pack(units: list[str], budget: int, joiner: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    cost = 0
    for unit in units:
        unit_cost = count_tokens(unit) + 1  # and the joiner
        if current and cost + unit_cost > budget:
            pieces.append(joiner.join(current))
            current, cost = [], 0
        current.append(unit)
        cost += unit_cost
    if current:
        pieces.append(joiner.join(current))
    return pieces
