"""The ``words`` entries of an ElevenLabs Scribe transcript, as batch and realtime both answer them.

Word and spacing entries whose texts concatenate to the transcript, each with its times, its
``logprob`` (four decimals; 0 for spacing) and, where asked for, one entry per character with the
word's time shared evenly among them. The callers bring the times as they answer them (the batch
route rounds them to milliseconds first; the realtime adapter sends the engine's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class SpokenWord(Protocol):
    @property
    def text(self) -> str: ...

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...

    @property
    def logprob(self) -> float: ...


def character_entries(text: str, start: float, end: float) -> list[dict[str, Any]]:
    step = (end - start) / max(len(text), 1)
    return [{"text": ch, "start": round(start + k * step, 3), "end": round(start + (k + 1) * step, 3)}
            for k, ch in enumerate(text)]


def word_entries(words: Sequence[SpokenWord], *, word_characters: bool,
                 spacing_characters: bool) -> list[dict[str, Any]]:
    """A word entry per word, and a spacing entry (``" "``) between two words that runs from the
    first one's end to the second one's start (never backwards)."""
    items: list[dict[str, Any]] = []
    for i, word in enumerate(words):
        if i:
            start = words[i - 1].end
            end = max(word.start, start)
            spacing: dict[str, Any] = {"text": " ", "start": start, "end": end, "type": "spacing",
                                       "speaker_id": None, "logprob": 0.0}
            if spacing_characters:
                spacing["characters"] = [{"text": " ", "start": start, "end": end}]
            items.append(spacing)
        entry: dict[str, Any] = {"text": word.text, "start": word.start, "end": word.end, "type": "word",
                                 "speaker_id": None, "logprob": round(word.logprob, 4)}
        if word_characters:
            entry["characters"] = character_entries(word.text, word.start, word.end)
        items.append(entry)
    return items
