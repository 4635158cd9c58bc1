"""Where a stream's transcript segments end, decided inside the engine worker beside the audio.

One rule for realtime streams and batch files alike: the pipeline asks after every 32 ms VAD
window whether the segment ends there, when the VAD rule hears the pause (a stream's
commit_strategy=vad, and every batch job) or the segment reaches its longest length, and closes
it before any later audio reaches the recognizer. So a segment is closed at its place in the
audio whatever the chunking, without a round trip per pause, and no VAD probability ever travels
to the event loop. Manual commits and the end of the audio close a segment on request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import onnxruntime

from lectern.speech.audio import ENGINE_RATE, AudioFormat
from lectern.speech.endpointing import VadEndpointer, VadSettings
from lectern.speech.engines.base import Recognizer, Word
from lectern.speech.pipeline import SPEECH_PROBABILITY, ClosedSegment, StreamPipeline

# What closed a segment: the client asked, the VAD heard a pause, the automatic bound on segment
# length, or the end of the audio.
Trigger = Literal["manual", "vad", "auto", "end"]

AUTO_GRACE_SAMPLES = ENGINE_RATE  # one second


@dataclass(frozen=True, slots=True)
class SegmentRules:
    vad: VadSettings | None = None  # None: segments end only on request (or at the longest length)
    max_segment_seconds: float = 28.0  # a segment is closed at this length even without a pause (at a word gap)
    offset_seconds: float = 0.0  # where this audio starts in the file (a resumed job)
    single_segment: bool = False  # nothing after the first VAD-closed segment is recognized (Reverie)


BATCH_RULES = SegmentRules(vad=VadSettings(threshold=0.5, silence_seconds=0.7))


@dataclass(frozen=True, slots=True)
class RawSegment:
    """A segment's words, their span, and where in the audio it was closed: a resumed job starts
    there. All in seconds from the start of the audio. A segment without words spans the audio
    it closed."""

    words: tuple[Word, ...]
    start: float  # the first word's start
    end: float  # the last word's end
    closed_at: float
    trigger: Trigger
    language: str | None = None  # as the engine detected it, when it does


@dataclass(frozen=True, slots=True)
class FeedResult:
    partial: str | None  # the current segment's text so far; None when not computed this time
    segments: list[RawSegment]  # closed within the fed audio
    pcm: bytes | None  # the audio at 16 kHz s16le, when asked for


class Segmenter:
    def __init__(self, recognizer: Recognizer, vad_model: onnxruntime.InferenceSession, fmt: AudioFormat,
                 rules: SegmentRules) -> None:
        self._rules = rules
        self._endpointer = VadEndpointer(rules.vad) if rules.vad is not None else None
        self._max_samples = int(rules.max_segment_seconds * ENGINE_RATE)
        self._pipeline = StreamPipeline(fmt, recognizer, vad_model, self._boundary)

    @property
    def recognizer(self) -> Recognizer:
        return self._pipeline.recognizer

    def feed(self, data: bytes, partial: bool = True, return_pcm: bool = False) -> FeedResult:
        """The client's audio; the segments closed within it and, when asked, the partial text."""
        pcm = self._pipeline.feed(data) if not self._pipeline.stopped else None
        return FeedResult(
            partial=self._pipeline.partial() if partial and not self._pipeline.stopped else None,
            segments=[self._raw(closed) for closed in self._pipeline.take_closed()],
            pcm=(pcm.tobytes() if pcm is not None else b"") if return_pcm else None,
        )

    def commit(self) -> list[RawSegment]:
        """The client's commit: the segment so far (an empty one too: a commit is answered)."""
        return self._close("manual")

    def finish(self) -> tuple[list[RawSegment], bytes]:
        """The end of the audio: the last segment, and the resampler's tail (16 kHz s16le)."""
        if self._pipeline.stopped:
            return [], b""
        tail = self._pipeline.feed(b"", last=True)
        closed = [self._raw(c) for c in self._pipeline.take_closed()]
        return closed + self._close("end"), tail.tobytes()

    def close(self) -> None:
        self._pipeline.close()

    def _boundary(self, probability: float, segment_samples: int) -> Trigger | None:
        if self._endpointer is not None and self._endpointer.update([probability]):
            self._pipeline.stopped = self._rules.single_segment
            return "vad"
        # At the longest length, the segment ends at the next window without speech (a gap
        # between words), and only past AUTO_GRACE_SECONDS in the middle of a word.
        if segment_samples >= self._max_samples and (
            probability < SPEECH_PROBABILITY or segment_samples >= self._max_samples + AUTO_GRACE_SAMPLES
        ):
            self._reset()
            return "auto"
        return None

    def _close(self, trigger: Trigger) -> list[RawSegment]:
        if self._pipeline.stopped:
            return []
        self._reset()
        return [self._raw(self._pipeline.close_segment(trigger))]

    def _reset(self) -> None:
        if self._endpointer is not None:
            self._endpointer.reset()

    def _raw(self, closed: ClosedSegment) -> RawSegment:
        shift = self._rules.offset_seconds
        words = tuple(w.shifted(shift) for w in closed.words)
        closed_at = round(closed.end / ENGINE_RATE + shift, 3)
        return RawSegment(
            words=words,
            start=words[0].start if words else round(closed.start / ENGINE_RATE + shift, 3),
            end=words[-1].end if words else closed_at,
            closed_at=closed_at,
            trigger=closed.reason,  # type: ignore[arg-type]
            language=self._pipeline.recognizer.language,
        )
