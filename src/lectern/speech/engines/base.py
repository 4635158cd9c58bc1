"""The recognizer interface every engine implements (hosted inside a pool worker process)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start: float  # seconds
    end: float
    confidence: float  # 0..1

    @property
    def logprob(self) -> float:
        return math.log(max(self.confidence, 1e-10))

    def shifted(self, seconds: float) -> "Word":
        return Word(self.text, round(self.start + seconds, 3), round(self.end + seconds, 3), self.confidence)


class Recognizer(ABC):
    """Decodes one utterance at a time of one stream's 16 kHz mono s16le audio."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def feed(self, pcm: bytes) -> None: ...

    @abstractmethod
    def partial(self) -> str:
        """Best hypothesis of the current utterance so far."""

    @abstractmethod
    def finish(self) -> list[Word]:
        """End the utterance; its words with times from the utterance start."""

    @abstractmethod
    def close(self) -> None: ...


class Engine(ABC):
    name: str
    languages: tuple[str, ...]

    @abstractmethod
    def recognizer(self, keyterms: Sequence[str] = (), source_rate: int = 16000) -> Recognizer:
        """A recognizer for one stream; ``source_rate`` is the client's rate before resampling."""

    def idle(self) -> None:
        """Called when the worker has nothing to do: a chance to prepare recognizers ahead of need."""
