"""Per-stream signal path inside an engine worker: convert, detect voice, recognize.

Everything here computes, so it runs in a pool worker process, never on the event loop.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime

from lectern.speech.audio import ENGINE_RATE, AudioConverter, AudioFormat
from lectern.speech.engines.base import Recognizer, Word
from lectern.speech.vad import WINDOW_SECONDS, SileroVad

if TYPE_CHECKING:
    from lectern.speech.segmenter import SegmentRules

# The recognizer utterance is settled at every pause inside a segment, so that a commit only
# has to finish the words since the last pause: pocketsphinx's second pass costs ~2 % of the
# utterance's duration (60 ms for 3 s of speech, 600 ms for a 30 s segment). 0.3 s is the
# shortest silence a VAD commit can wait for, so VAD commits never wait for the second pass.
SETTLE_SILENCE_SECONDS = 0.3
SPEECH_PROBABILITY = 0.5
SILENCE_PROBABILITY = 0.35
# Audio where the VAD hears no speech is not decoded at all (pocketsphinx even finds words in
# digital silence, and silence costs it as much CPU as speech). The last PREROLL_SECONDS before
# speech is kept and decoded with it, so no onset is clipped; after speech, HANGOVER_SECONDS of
# silence are decoded to close the last word, and further silence waits (fed if speech resumes
# before the utterance settles, so the recognizer's timeline never has a gap).
PREROLL_SECONDS = 0.2
HANGOVER_SECONDS = 0.15


@dataclass(frozen=True, slots=True)
class StreamSpec:
    format: AudioFormat
    keyterms: tuple[str, ...] = ()
    return_pcm: bool = False
    partials: bool = True  # a batch job wants none: each costs a search of the lattice
    segmenting: "SegmentRules | None" = None  # a batch job: the worker cuts segments itself


@dataclass(frozen=True, slots=True)
class FeedResult:
    partial: str
    vad: list[float]  # speech probability of each 32 ms window of the fed audio
    pcm: bytes | None  # the audio at 16 kHz s16le, when the spec asked for it


class StreamPipeline:
    def __init__(self, spec: StreamSpec, recognizer: Recognizer, vad_model: onnxruntime.InferenceSession) -> None:
        self._spec = spec
        self._converter = AudioConverter(spec.format)
        self._vad = SileroVad(vad_model)
        self._recognizer = recognizer
        self._samples = 0  # 16 kHz samples received since the stream began: the clock
        self._held: collections.deque[np.ndarray] = collections.deque()  # audio not yet decoded
        self._held_samples = 0
        self._in_utterance = False  # speech was heard and the recognizer is being fed
        self._utterance_start = 0
        self._silent_windows = 0
        self._settled: list[Word] = []  # words of this segment's already finished utterances

    def feed(self, data: bytes, last: bool = False) -> FeedResult:
        """Process a chunk; ``last`` flushes the resampler's tail at the end of the stream."""
        pcm = self._converter.convert(data, last=last)
        probabilities = self._vad.process(pcm)
        heard_speech = any(p >= SPEECH_PROBABILITY for p in probabilities)
        if not self._in_utterance:
            if heard_speech:
                self._begin_utterance(pcm)
            else:
                self._hold(pcm, trim=True)
        else:
            for p in probabilities:
                if p >= SPEECH_PROBABILITY:
                    self._silent_windows = 0
                elif p < SILENCE_PROBABILITY:
                    self._silent_windows += 1
            if heard_speech or self._silent_windows * WINDOW_SECONDS < HANGOVER_SECONDS:
                self._recognizer.feed(self._take_held() + pcm.tobytes())
            else:
                self._hold(pcm, trim=False)
            if self._silent_windows * WINDOW_SECONDS >= SETTLE_SILENCE_SECONDS:
                self._settle()
        self._samples += len(pcm)
        texts = [w.text for w in self._settled]
        if self._in_utterance and self._spec.partials:
            texts.append(self._recognizer.partial())
        return FeedResult(
            partial=" ".join(t for t in texts if t),
            vad=probabilities,
            pcm=pcm.tobytes() if self._spec.return_pcm else None,
        )

    def finish(self) -> list[Word]:
        """End the segment: all its words, timed in seconds from the start of the stream."""
        self._settle()
        words, self._settled = self._settled, []
        return words

    def close(self) -> None:
        self._recognizer.close()

    def _hold(self, pcm: np.ndarray, trim: bool) -> None:
        self._held.append(pcm)
        self._held_samples += len(pcm)
        if not trim:  # inside an utterance nothing may be dropped: word times depend on it
            return
        limit = int(PREROLL_SECONDS * ENGINE_RATE)
        while self._held and self._held_samples - len(self._held[0]) >= limit:
            self._held_samples -= len(self._held.popleft())

    def _take_held(self) -> bytes:
        audio = b"".join(p.tobytes() for p in self._held)
        self._held.clear()
        self._held_samples = 0
        return audio

    def _begin_utterance(self, pcm: np.ndarray) -> None:
        self._utterance_start = self._samples - self._held_samples
        self._recognizer.start()
        self._recognizer.feed(self._take_held() + pcm.tobytes())
        self._in_utterance = True
        self._silent_windows = 0

    def _settle(self) -> None:
        if not self._in_utterance:
            return
        offset = self._utterance_start / ENGINE_RATE
        self._settled.extend(w.shifted(offset) for w in self._recognizer.finish())
        self._in_utterance = False
