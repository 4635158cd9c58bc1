"""pocketsphinx with the en-US model bundled in its wheel."""

from __future__ import annotations

import difflib
import itertools

from pocketsphinx import Decoder

from lectern.speech.engines.base import Engine, Recognizer, RecognizerOptions, Word
from lectern.speech.text import clean_token

FRAME_SECONDS = 0.01
# Keyterm biasing rescoring the N-best list: an alternative that holds more keyterm words wins
# when its path score is within this fraction of the best path's.
KEYTERM_NBEST = 20
KEYTERM_SCORE_MARGIN = 0.02


# Live cepstral mean normalization starts from the model's prior, which suits wideband audio.
# Narrowband audio (telephone rates, upsampled) is so far from it that live CMN never recovers
# within an utterance ("the great around on" for "the quick brown fox"), so such a stream first
# measures its own mean over this much audio (a feature pass without search), then decodes.
CMN_CALIBRATION_SECONDS = 2.0
NARROWBAND_BELOW_HZ = 16000
_BYTES_PER_SECOND = 32000


class PocketSphinxRecognizer(Recognizer):
    def __init__(
        self, engine: "PocketSphinxEngine", decoder: Decoder, keyterms: frozenset[str], calibrate_cmn: bool
    ) -> None:
        self._engine = engine
        self._decoder = decoder
        self._keyterms = keyterms
        self._calibrating = calibrate_cmn
        self._held: list[bytes] = []  # audio waiting for the calibration
        self._held_bytes = 0
        self._in_utterance = False

    def start(self) -> None:
        if not self._calibrating:
            self._decoder.start_utt()
        self._in_utterance = True

    def feed(self, pcm: bytes) -> None:
        if not pcm:  # pocketsphinx fails on an empty buffer
            return
        if self._calibrating:
            self._held.append(pcm)
            self._held_bytes += len(pcm)
            if self._held_bytes >= CMN_CALIBRATION_SECONDS * _BYTES_PER_SECOND:
                self._calibrate()
            return
        self._decoder.process_raw(pcm, False, False)

    def _calibrate(self) -> None:
        audio = b"".join(self._held)
        self._held.clear()
        self._calibrating = False
        if audio:
            self._decoder.start_utt()
            self._decoder.process_raw(audio, True, True)  # batch CMN over the audio, no search
            mean = self._decoder.get_cmn(False)
            self._decoder.end_utt()
            self._decoder.set_cmn(mean)
        self._decoder.start_utt()
        if audio:
            self._decoder.process_raw(audio, False, False)

    def partial(self) -> str:
        if self._calibrating:
            return ""
        hyp = self._decoder.hyp()
        if hyp is None:
            return ""
        return " ".join(filter(None, (clean_token(t) for t in hyp.hypstr.split())))

    def finish(self) -> list[Word]:
        if self._calibrating:
            self._calibrate()
        self._decoder.end_utt()
        self._in_utterance = False
        words = []
        for seg in self._decoder.seg():
            text = clean_token(seg.word)
            if text is None:
                continue
            words.append(
                Word(
                    text=text,
                    start=round(seg.start_frame * FRAME_SECONDS, 3),
                    end=round((seg.end_frame + 1) * FRAME_SECONDS, 3),
                    confidence=min(max(seg.prob, 0.0), 1.0),
                )
            )
        return self._bias(words) if self._keyterms else words

    def _bias(self, words: list[Word]) -> list[Word]:
        best_count = sum(w.text in self._keyterms for w in words)
        best_score: float | None = None
        chosen: list[str] | None = None
        for entry in itertools.islice(self._decoder.nbest(), KEYTERM_NBEST):
            if best_score is None:
                best_score = entry.score
                continue
            if entry.score < best_score * (1 - KEYTERM_SCORE_MARGIN):
                break
            tokens = [t for t in (clean_token(x) for x in entry.hypstr.split()) if t]
            count = sum(t in self._keyterms for t in tokens)
            if count > best_count:
                best_count, chosen = count, tokens
        return words if chosen is None else _retime(words, chosen)

    def close(self) -> None:
        if self._in_utterance and not self._calibrating:
            self._decoder.end_utt()
            self._in_utterance = False
        self._engine._release(self._decoder)


class PocketSphinxEngine(Engine):
    """Keeps a bounded free list of decoders (~90 MB each) so a new stream does not wait for a load."""

    name = "pocketsphinx-en-us"
    languages = ("en",)

    def __init__(self, ready_decoders: int = 1, max_spare_decoders: int = 8) -> None:
        self._ready_target = ready_decoders  # loaded ahead of need, while idle
        self._max_spares = max_spare_decoders  # kept for reuse when streams end
        self._spares: list[Decoder] = []
        self.idle()

    @staticmethod
    def _new_decoder() -> Decoder:
        return Decoder(loglevel="FATAL")

    def recognizer(self, options: RecognizerOptions = RecognizerOptions()) -> PocketSphinxRecognizer:
        """Keyterms bias the result by N-best rescoring. pocketsphinx has no letter-to-sound rules
        and its Python API cannot reweight the language model, so a keyterm the dictionary lacks
        cannot be recognized at all."""
        decoder = self._spares.pop() if self._spares else self._new_decoder()
        # The front end adapts to the audio it hears (cepstral mean, noise floor); a reused decoder
        # must forget the previous stream, or one stream's voice would colour the next one's words.
        decoder.reinit_feat()
        return PocketSphinxRecognizer(
            self, decoder, _keyterm_words(options.keyterms), calibrate_cmn=options.source_rate < NARROWBAND_BELOW_HZ
        )

    def _release(self, decoder: Decoder) -> None:
        if len(self._spares) < self._max_spares:
            self._spares.append(decoder)

    def idle(self) -> None:
        if len(self._spares) < self._ready_target:
            self._spares.append(self._new_decoder())


def _keyterm_words(keyterms: tuple[str, ...]) -> frozenset[str]:
    return frozenset(w for term in keyterms for w in term.lower().split())


def _retime(words: list[Word], tokens: list[str]) -> list[Word]:
    """Give an N-best alternative the times of the best path: kept words keep theirs, a replaced
    span shares the time of the span it replaces."""
    out: list[Word] = []
    matcher = difflib.SequenceMatcher(a=[w.text for w in words], b=tokens, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            out.extend(words[a0:a1])
            continue
        if b0 == b1:
            continue
        if a0 < a1:
            start, end, conf = words[a0].start, words[a1 - 1].end, min(w.confidence for w in words[a0:a1])
        else:  # pure insertion: squeeze it in at the neighbour's boundary
            start = end = out[-1].end if out else (words[0].start if words else 0.0)
            conf = 0.5
        step = (end - start) / (b1 - b0)
        for i, token in enumerate(tokens[b0:b1]):
            out.append(Word(token, round(start + i * step, 3), round(start + (i + 1) * step, 3), conf))
    return out
