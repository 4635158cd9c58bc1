"""Per-stream signal path inside an engine worker: convert, detect voice, recognize.

Everything here computes, so it runs in a pool worker process, never on the event loop. Every
decision (is this speech, has the speaker paused, does the segment end here) is taken per 32 ms
VAD window at its place in the stream, so the result is the same however the audio was split
into chunks and requests.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnxruntime

from lectern.speech.audio import ENGINE_RATE, AudioConverter, AudioFormat
from lectern.speech.engines.base import Recognizer, Word
from lectern.speech.vad import WINDOW, WINDOW_SECONDS, SileroVad

SPEECH_PROBABILITY = 0.5
SILENCE_PROBABILITY = 0.35
# Audio where the VAD hears no speech is not decoded at all (pocketsphinx finds words in digital
# silence, Whisper invents "Thank you."; silence costs both as much CPU as speech). The last
# PREROLL_SECONDS before the VAD's onset are decoded with the speech: soft onsets ("f", "th",
# "s") rise before the VAD fires. After speech, HANGOVER_SECONDS of silence are decoded to close
# the last word; further silence waits (fed if speech resumes within the utterance, so the
# recognizer's timeline never has a gap). More preroll did not help on real voices and hurt
# narrowband pocketsphinx streams, whose first seconds set their cepstral mean.
PREROLL_SECONDS = 0.3
HANGOVER_SECONDS = 0.15
# Whisper's alignment stretches an utterance's first word back over the preroll's silence (a word
# "starting" at 0.0 s that is spoken at 0.3 s): no word starts earlier than this before the VAD's
# onset.
ONSET_SLACK_SECONDS = 0.2
# Silence after speech that counts as a pause: the recognizer prepares its result then, so the
# commit that usually follows (the client's, or the VAD's a moment later) is ready at once.
PAUSE_SECONDS = 0.3
# An utterance is decoded as one piece, with all its context. Only a long one is finished and
# continued as a new one, at a pause past SETTLE_AFTER_SECONDS (a commit then decodes at most
# that much), or at MAX_UTTERANCE_SECONDS without a pause (Whisper reads at most 30 s at once).
SETTLE_AFTER_SECONDS = 20.0
MAX_UTTERANCE_SECONDS = 28.0

# Asked after every window: (speech probability, samples in the segment so far) -> a reason to
# close the segment at the end of this window, or None.
Boundary = Callable[[float, int], str | None]


@dataclass(frozen=True, slots=True)
class ClosedSegment:
    words: list[Word]  # timed in seconds from the start of the stream
    start: int  # 16 kHz samples from the start of the stream
    end: int  # where it was closed
    reason: str


class StreamPipeline:
    def __init__(
        self,
        fmt: AudioFormat,
        recognizer: Recognizer,
        vad_model: onnxruntime.InferenceSession,
        boundary: Boundary | None = None,
    ) -> None:
        self._converter = AudioConverter(fmt)
        self._vad = SileroVad(vad_model)
        self._recognizer = recognizer
        self._boundary = boundary
        self.samples = 0  # 16 kHz samples decided on (speech or not) since the stream began: the clock
        self._undecided = np.zeros(0, dtype=np.int16)  # converted, waiting for its window's probability
        self._held: collections.deque[np.ndarray] = collections.deque()  # decided, not decoded (yet)
        self._held_samples = 0
        self._to_recognizer: list[bytes] = []  # decided to decode, sent in one call
        self._in_utterance = False  # speech was heard and the recognizer is being fed
        self._utterance_start = 0
        self._onset = 0  # where the VAD heard the current utterance begin
        self._fed_samples = 0  # of the current utterance
        self._silent_windows = 0
        self._paused = False  # the recognizer was told of the current pause
        self._settled: list[Word] = []  # words of this segment's already finished utterances
        self._segment_start = 0
        self._closed: list[ClosedSegment] = []
        self.stopped = False  # nothing more is recognized (a stream that ends at its first segment)

    @property
    def recognizer(self) -> Recognizer:
        return self._recognizer

    def feed(self, data: bytes, last: bool = False) -> np.ndarray:
        """Process a chunk; ``last`` flushes the resampler's tail and the last partial window at
        the end of the stream. Returns the chunk at 16 kHz s16le, up to where it was stopped."""
        pcm = self._converter.convert(data, last=last)
        earlier = len(self._undecided)  # samples of earlier chunks, still waiting for their window
        audio = np.concatenate([self._undecided, pcm])
        probabilities = self._vad.process(pcm)
        decided = 0
        for p in probabilities:
            if self.stopped:
                break
            self._window(audio[decided : decided + WINDOW], p)
            decided += WINDOW
        if last and not self.stopped and decided < len(audio):
            # The stream's last few milliseconds: decided as the window before them was.
            self._window(audio[decided:], SPEECH_PROBABILITY if self._in_utterance else 0.0, ask=False)
            decided = len(audio)
        self._flush()
        if self.stopped:
            self._undecided = np.zeros(0, dtype=np.int16)
            return pcm[: max(0, decided - earlier)]
        self._undecided = audio[decided:]
        return pcm

    def take_closed(self) -> list[ClosedSegment]:
        """Segments the boundary closed since the last call."""
        closed, self._closed = self._closed, []
        return closed

    def partial(self) -> str:
        texts = [w.text for w in self._settled]
        if self._in_utterance:
            texts.append(self._recognizer.partial())
        return " ".join(t for t in texts if t)

    def close_segment(self, reason: str) -> ClosedSegment:
        """End the segment here: all its words, timed in seconds from the start of the stream."""
        self._flush()
        self._settle()
        segment = ClosedSegment(self._settled, self._segment_start, self.samples, reason)
        self._settled = []
        self._segment_start = self.samples
        return segment

    def close(self) -> None:
        self._recognizer.close()

    # -- one window at a time ----------------------------------------------------------------

    def _window(self, window: np.ndarray, p: float, ask: bool = True) -> None:
        if not self._in_utterance:
            if p >= SPEECH_PROBABILITY:
                self._begin_utterance(window)
            else:
                self._hold(window, trim=True)
        else:
            if p >= SPEECH_PROBABILITY:
                self._silent_windows = 0
                self._paused = False
            elif p < SILENCE_PROBABILITY:
                self._silent_windows += 1
            silence = self._silent_windows * WINDOW_SECONDS
            if p >= SPEECH_PROBABILITY or silence < HANGOVER_SECONDS:
                self._decode(window)
            else:
                self._hold(window, trim=False)
            if silence >= PAUSE_SECONDS and not self._paused:
                self._paused = True
                self._flush()
                if self._fed_samples >= SETTLE_AFTER_SECONDS * ENGINE_RATE:
                    self._settle()
                else:
                    self._recognizer.pause()
            elif self._fed_samples >= MAX_UTTERANCE_SECONDS * ENGINE_RATE:
                self._settle()
        self.samples += len(window)
        if ask and self._boundary is not None:
            reason = self._boundary(p, self.samples - self._segment_start)
            if reason is not None:
                self._closed.append(self.close_segment(reason))

    def _hold(self, pcm: np.ndarray, trim: bool) -> None:
        self._held.append(pcm)
        self._held_samples += len(pcm)
        if not trim:  # inside an utterance nothing may be dropped: word times depend on it
            return
        limit = int(PREROLL_SECONDS * ENGINE_RATE)
        while self._held and self._held_samples - len(self._held[0]) >= limit:
            self._held_samples -= len(self._held.popleft())

    def _decode(self, window: np.ndarray) -> None:
        """Decode the held audio, then the window (sent to the recognizer at the next flush)."""
        for held in self._held:
            self._to_recognizer.append(held.tobytes())
        self._fed_samples += self._held_samples + len(window)
        self._held.clear()
        self._held_samples = 0
        self._to_recognizer.append(window.tobytes())

    def _flush(self) -> None:
        if self._to_recognizer:
            self._recognizer.feed(b"".join(self._to_recognizer))
            self._to_recognizer.clear()

    def _begin_utterance(self, window: np.ndarray) -> None:
        self._utterance_start = self.samples - self._held_samples
        self._onset = self.samples
        self._recognizer.start()
        self._in_utterance = True
        self._fed_samples = 0
        self._silent_windows = 0
        self._paused = False
        self._decode(window)

    def _settle(self) -> None:
        if not self._in_utterance:
            return
        self._flush()
        offset = self._utterance_start / ENGINE_RATE
        words = [w.shifted(offset) for w in self._recognizer.finish()]
        earliest = round(self._onset / ENGINE_RATE - ONSET_SLACK_SECONDS, 3)
        if words and words[0].start < earliest:
            first = words[0]
            words[0] = Word(first.text, min(earliest, first.end), first.end, first.confidence)
        self._settled.extend(words)
        self._in_utterance = False
