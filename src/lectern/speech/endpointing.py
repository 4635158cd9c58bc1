"""VAD endpointing: when silence after speech ends a segment (a stream's commit_strategy=vad, and
every batch transcription)."""

from __future__ import annotations

from dataclasses import dataclass

from lectern.speech.vad import WINDOW_SECONDS

_HYSTERESIS = 0.15  # as silero's own iterator: speech ends below threshold - 0.15


@dataclass(frozen=True, slots=True)
class VadSettings:
    threshold: float = 0.4
    silence_seconds: float = 1.5
    min_speech_ms: int = 100
    min_silence_ms: int = 100


class VadEndpointer:
    def __init__(self, settings: VadSettings) -> None:
        self._speech_at = settings.threshold
        self._silence_below = max(settings.threshold - _HYSTERESIS, 0.01)
        self._min_speech = settings.min_speech_ms / 1000
        self._min_silence = settings.min_silence_ms / 1000
        self._commit_after = max(settings.silence_seconds, self._min_silence)
        self.reset()

    def reset(self) -> None:
        self._speech_run = 0.0
        self._silence_run = 0.0
        self._heard_speech = False

    def update(self, probabilities: list[float]) -> bool:
        """Feed window probabilities; True when the segment should be committed now."""
        fire = False
        for p in probabilities:
            if p >= self._speech_at:
                self._speech_run += WINDOW_SECONDS
                self._silence_run = 0.0
                if self._speech_run >= self._min_speech:
                    self._heard_speech = True
            elif p < self._silence_below:
                self._silence_run += WINDOW_SECONDS
                if self._silence_run >= self._min_silence:
                    self._speech_run = 0.0  # a blip shorter than min_speech is not speech
                if self._heard_speech and self._silence_run >= self._commit_after:
                    fire = True
                    self.reset()
        return fire
