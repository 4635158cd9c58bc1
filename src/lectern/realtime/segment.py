"""A committed transcript segment as the core hands it to protocols and to storage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lectern.speech.engines.base import Word
from lectern.speech.segmenter import Trigger


@dataclass(frozen=True, slots=True)
class Segment:
    index: int | None  # None for an empty commit (silence), which is not stored
    text: str
    words: tuple[Word, ...]
    start: float
    end: float
    language_code: str
    trigger: Trigger = "manual"  # what closed it; protocols that report a reason render it

    @property
    def confidence(self) -> float | None:
        if not self.words:
            return None
        return round(sum(w.confidence for w in self.words) / len(self.words), 4)

    def as_row(self) -> dict[str, Any]:
        return {
            "segment_index": self.index,
            "transcript": self.text,
            "confidence": self.confidence,
            "start_seconds": self.start,
            "end_seconds": self.end,
            "words": [
                {
                    "word": w.text,
                    "startSeconds": w.start,
                    "endSeconds": w.end,
                    "confidence": round(w.confidence, 4),
                    "speakerTag": None,
                }
                for w in self.words
            ],
        }
