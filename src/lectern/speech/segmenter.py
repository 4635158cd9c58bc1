"""Cutting a whole file's audio into transcript segments, inside an engine worker.

A batch job sends audio far faster than real time and never waits for partials, so the pauses
that end segments are found where the audio is recognized, not by a round trip per pause: the
worker feeds each block to the pipeline in short steps and closes a segment at the step where
the VAD hears the pause, before any later audio reaches the recognizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lectern.speech.audio import ENGINE_RATE
from lectern.speech.endpointing import VadEndpointer, VadSettings
from lectern.speech.engines.base import Word
from lectern.speech.pipeline import StreamPipeline

# As a VAD-committed realtime stream: a pause ends a segment within 0.2 s of audio.
STEP_SAMPLES = int(0.2 * ENGINE_RATE)


@dataclass(frozen=True, slots=True)
class SegmentRules:
    vad: VadSettings = VadSettings(threshold=0.5, silence_seconds=0.7)
    max_segment_seconds: float = 30.0  # a segment is closed at this length even without a pause
    offset_seconds: float = 0.0  # where this audio starts in the file (a resumed job)


@dataclass(frozen=True, slots=True)
class RawSegment:
    """A segment's words, their span, and where in the audio it was closed: a resumed job starts
    there. All in seconds from the start of the file."""

    words: tuple[Word, ...]
    start: float  # the first word's start
    end: float  # the last word's end
    closed_at: float
    trigger: Literal["vad", "auto", "end"]


class Segmenter:
    def __init__(self, pipeline: StreamPipeline, rules: SegmentRules) -> None:
        self._pipeline = pipeline
        self._rules = rules
        self._endpointer = VadEndpointer(rules.vad)
        self._samples = 0  # fed so far
        self._segment_start = 0
        self._max_samples = int(rules.max_segment_seconds * ENGINE_RATE)

    def feed(self, pcm: bytes) -> list[RawSegment]:
        """16 kHz mono s16le; the segments closed within it."""
        closed: list[RawSegment] = []
        step = STEP_SAMPLES * 2
        for offset in range(0, len(pcm), step):
            piece = pcm[offset : offset + step]
            result = self._pipeline.feed(piece)
            self._samples += len(piece) // 2
            if self._endpointer.update(result.vad):
                closed.extend(self._close("vad"))
            elif self._samples - self._segment_start >= self._max_samples:
                closed.extend(self._close("auto"))
        return closed

    def finish(self) -> list[RawSegment]:
        """The end of the audio: the last segment, if it holds anything."""
        self._pipeline.feed(b"", last=True)
        return self._close("end")

    def close(self) -> None:
        self._pipeline.close()

    def _close(self, trigger: Literal["vad", "auto", "end"]) -> list[RawSegment]:
        words = self._pipeline.finish()
        self._segment_start = self._samples
        self._endpointer.reset()
        if not words:
            return []
        shift = self._rules.offset_seconds
        words = [w.shifted(shift) for w in words]
        return [
            RawSegment(
                words=tuple(words),
                start=words[0].start,
                end=words[-1].end,
                closed_at=round(self._samples / ENGINE_RATE + shift, 3),
                trigger=trigger,
            )
        ]
