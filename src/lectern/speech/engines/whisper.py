"""Whisper (faster-whisper's CTranslate2 models) behind the recognizer interface.

Whisper reads a whole utterance at once, so a stream's recognizer keeps the utterance's audio and
decodes it when that pays: when the speaker pauses (the commit that usually follows is then
ready at once, and is only decoded again if speech resumed), and for partials once enough new
speech has arrived. The decoding itself, with its bounds on cost, is ``whisper_runner``.
"""

from __future__ import annotations

import numpy as np

from lectern.speech.audio import ENGINE_RATE
from lectern.speech.engines.base import Engine, Recognizer, RecognizerOptions, Word
from lectern.speech.engines.whisper_runner import WhisperRequest, WhisperResult, WhisperRunner
from lectern.speech.models import ModelConfig, normalize_language

# New speech after which a partial is decoded again: partials come at least once a second of
# speech, and a partial costs a decode of the utterance so far (no word alignment).
PARTIAL_EVERY_SECONDS = 0.6
# What was said before an utterance is given to Whisper as its prompt (spelling, casing, names);
# the runner keeps the last of it that fits.
CONTEXT_CHARS = 600


class WhisperEngine(Engine):
    warms_up = True  # its first minutes of speech grew the heap, and made the first decodes cold

    def __init__(self, config: ModelConfig) -> None:
        assert config.path is not None
        self.name = config.name
        self._runner = WhisperRunner(config.path, config.device, config.compute_type, config.threads)
        self.languages = self._runner.languages

    def recognizer(self, options: RecognizerOptions = RecognizerOptions()) -> "WhisperRecognizer":
        language = normalize_language(options.language) if self._runner.is_multilingual else "en"
        return WhisperRecognizer(self._runner, options, language)


class WhisperRecognizer(Recognizer):
    def __init__(self, runner: WhisperRunner, options: RecognizerOptions, language: str | None) -> None:
        self._runner = runner
        self._hotwords = options.keyterms
        self._language = language
        self._detected: str | None = language
        self._context = options.context[-CONTEXT_CHARS:]
        self._chunks: list[bytes] = []
        self._samples = 0
        self._prepared: WhisperResult | None = None  # decoded at a pause, valid while no audio came since
        self._prepared_at = -1
        self._partial = ""
        self._partial_at = 0

    def start(self) -> None:
        self._chunks.clear()
        self._samples = 0
        self._prepared, self._prepared_at = None, -1
        self._partial, self._partial_at = "", 0

    def feed(self, pcm: bytes) -> None:
        if pcm:
            self._chunks.append(pcm)
            self._samples += len(pcm) // 2

    def partial(self) -> str:
        if self._prepared_at == self._samples and self._prepared is not None:
            return self._prepared.text
        if self._samples - self._partial_at >= PARTIAL_EVERY_SECONDS * ENGINE_RATE:
            self._partial = self._decode(words=False).text
            self._partial_at = self._samples
        return self._partial

    def pause(self) -> None:
        if self._prepared_at != self._samples and self._samples:
            self._prepared, self._prepared_at = self._decode(words=True), self._samples

    def finish(self) -> list[Word]:
        if not self._samples:
            return []
        result = self._prepared if self._prepared_at == self._samples else None
        if result is None:
            result = self._decode(words=True)
        self._detected = result.language
        if result.text:
            self._context = (self._context + " " + result.text).strip()[-CONTEXT_CHARS:]
        self.start()
        return result.words

    @property
    def language(self) -> str | None:
        return self._detected

    def set_context(self, text: str) -> None:
        self._context = text.strip()[-CONTEXT_CHARS:]

    def close(self) -> None:
        self._chunks.clear()

    def _decode(self, words: bool) -> WhisperResult:
        audio = np.frombuffer(b"".join(self._chunks), dtype="<i2").astype(np.float32) / 32768.0
        return self._runner.transcribe(WhisperRequest(
            audio=audio, context=self._context, hotwords=self._hotwords, language=self._language, words=words,
        ))
