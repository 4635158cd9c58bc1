"""Per-stream signal path inside an engine worker: convert, detect voice, recognize.

Everything here computes, so it runs in a pool worker process, never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnxruntime

from lectern.speech.audio import ENGINE_RATE, AudioConverter, AudioFormat
from lectern.speech.engines.base import Recognizer, Word
from lectern.speech.vad import WINDOW_SECONDS, SileroVad

# The recognizer utterance is settled at every pause inside a segment, so that a commit only
# has to finish the words since the last pause (pocketsphinx's second pass costs ~2 % of the
# utterance's duration; over a 30 s segment that would be 600 ms of commit latency).
SETTLE_SILENCE_SECONDS = 0.5
SPEECH_PROBABILITY = 0.5
SILENCE_PROBABILITY = 0.35


@dataclass(frozen=True, slots=True)
class StreamSpec:
    format: AudioFormat
    keyterms: tuple[str, ...] = ()
    return_pcm: bool = False


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
        self._recognizer.start()
        self._samples = 0  # 16 kHz samples fed since the stream began
        self._utterance_start = 0
        self._utterance_has_speech = False  # silence alone must not yield words ("i'm" on zeros)
        self._silent_windows = 0
        self._settled: list[Word] = []  # words of this segment's already finished utterances

    def feed(self, data: bytes) -> FeedResult:
        pcm = self._converter.convert(data)
        raw = pcm.tobytes()
        self._recognizer.feed(raw)
        self._samples += len(pcm)
        probabilities = self._vad.process(pcm)
        for p in probabilities:
            if p >= SPEECH_PROBABILITY:
                self._utterance_has_speech = True
                self._silent_windows = 0
            elif p < SILENCE_PROBABILITY:
                self._silent_windows += 1
        if self._utterance_has_speech and self._silent_windows * WINDOW_SECONDS >= SETTLE_SILENCE_SECONDS:
            self._settle()
        texts = [w.text for w in self._settled]
        if self._utterance_has_speech:
            texts.append(self._recognizer.partial())
        return FeedResult(
            partial=" ".join(t for t in texts if t),
            vad=probabilities,
            pcm=raw if self._spec.return_pcm else None,
        )

    def finish(self) -> list[Word]:
        """End the segment: all its words, timed in seconds from the start of the stream."""
        self._settle()
        words, self._settled = self._settled, []
        return words

    def close(self) -> None:
        self._recognizer.close()

    def _settle(self) -> None:
        words = self._recognizer.finish()
        if self._utterance_has_speech:
            offset = self._utterance_start / ENGINE_RATE
            self._settled.extend(w.shifted(offset) for w in words)
        self._recognizer.start()
        self._utterance_start = self._samples
        self._utterance_has_speech = False
        self._silent_windows = 0
