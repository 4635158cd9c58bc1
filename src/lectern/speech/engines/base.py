"""The recognizer interface every engine implements (hosted inside a pool worker process)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Word:
    text: str  # as the engine writes it: Whisper attaches punctuation ("Hello,"), pocketsphinx has none
    start: float  # seconds
    end: float
    confidence: float  # 0..1

    @property
    def logprob(self) -> float:
        return math.log(max(self.confidence, 1e-10))

    def shifted(self, seconds: float) -> "Word":
        return Word(self.text, round(self.start + seconds, 3), round(self.end + seconds, 3), self.confidence)


@dataclass(frozen=True, slots=True)
class RecognizerOptions:
    """What one stream asks of its recognizer."""

    keyterms: tuple[str, ...] = ()
    source_rate: int = 16000  # the client's rate before resampling (narrowband audio needs care)
    language: str | None = None  # None: the engine's own, or detected where the model can
    context: str = ""  # text said before this stream's audio (ElevenLabs' previous_text)


class Recognizer(ABC):
    """Decodes one utterance at a time of one stream's 16 kHz mono s16le audio.

    ``pause`` and ``partial`` let an engine spend its effort where it pays: pocketsphinx decodes
    as audio arrives, so both are cheap; Whisper decodes whole utterances, so it decodes when
    the speaker pauses (the commit that usually follows is then ready at once) and throttles
    partials.
    """

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def feed(self, pcm: bytes) -> None: ...

    @abstractmethod
    def partial(self) -> str:
        """Best hypothesis of the current utterance so far."""

    def pause(self) -> None:
        """The speaker paused: a commit may follow. Prepare the utterance's result now."""

    @abstractmethod
    def finish(self) -> list[Word]:
        """End the utterance; its words with times from the utterance start."""

    @property
    def language(self) -> str | None:
        """The language of the last finished utterance, when the engine detects it."""
        return None

    def set_context(self, text: str) -> None:
        """Text said before the next utterance (the client's previous_text), for engines that use it."""

    @abstractmethod
    def close(self) -> None: ...


class Engine(ABC):
    name: str
    languages: tuple[str, ...] | None  # None: any language the model knows (multilingual)
    # The worker decodes a few seconds of speech with it before reporting ready (worker.warm_up).
    warms_up: bool = False

    @abstractmethod
    def recognizer(self, options: RecognizerOptions) -> Recognizer:
        """A recognizer for one stream."""

    def idle(self) -> None:
        """Called when the worker has nothing to do: a chance to prepare recognizers ahead of need."""
