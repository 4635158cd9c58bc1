"""pocketsphinx with the en-US model bundled in its wheel."""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass

from pocketsphinx import Decoder

from lectern.speech.engines.base import Engine, Recognizer, RecognizerOptions, Word
from lectern.speech.text import clean_token

FRAME_SECONDS = 0.01
# Keyterm biasing rescoring the N-best list: an alternative that holds more keyterm words wins
# when its path score is within this fraction of the best path's.
KEYTERM_NBEST = 20
KEYTERM_SCORE_MARGIN = 0.02


# Cepstral mean normalization (CMN). pocketsphinx decoding live normalizes each frame by a mean
# that starts from the model's prior (cmninit: 40,3,-1) and carries the weight of CMN_WINDOW_SECONDS
# of audio, so it moves toward the speaker's own only after seconds of speech; decoding a whole
# utterance at once (the offline decode) normalizes by the utterance's own mean. Real voices and
# microphones sit far from the prior (c0 45-56 on ../shared/speech-dev): the live decode of a
# stream's first utterances lost words the whole-utterance decode finds (WER 0.294 against 0.275).
# So while a stream's own mean covers less than CMN_WINDOW_SECONDS of its audio (the stream is
# "cold"), partials come from the live decode, and the utterance's result from decoding it again
# as a whole with its own mean: at the speaker's pause (so the commit that usually follows is
# ready), or at the end. Each such utterance's mean joins the stream's, which the next utterance's
# live decode starts from; a cold utterance that reaches CMN_WINDOW_SECONDS is decoded on live
# from its own mean (one re-decode of that much audio), and from then on pocketsphinx's live CMN
# follows the stream as it was made to.
CMN_WINDOW_SECONDS = 5.0  # pocketsphinx's own live CMN window (CMN_WIN, 500 frames), the weight set_cmn gives
# The mean of some audio alone costs a decode when the language model searches it (end_utt
# searches what process_raw(no_search=True) skipped); a grammar of one word makes it ~40x cheaper.
_MEAN_SEARCH = "lectern_cmn"
_MEAN_GRAMMAR = "#JSGF V1.0; grammar cmn; public <cmn> = yes;"
# Narrowband audio (telephone rates, upsampled) is so far from the prior that live CMN never
# recovers within an utterance ("the great around on" for "the quick brown fox"): such a stream
# holds its first CMN_CALIBRATION_SECONDS, measures their mean, then decodes live from it (so its
# partials are worth showing too).
CMN_CALIBRATION_SECONDS = 2.0
NARROWBAND_BELOW_HZ = 16000
_BYTES_PER_SECOND = 32000


class StreamMean:
    """A stream's own cepstral mean: the means of its audio so far, weighted by their length."""

    def __init__(self) -> None:
        self._sum: list[float] = []
        self.seconds = 0.0

    @property
    def warm(self) -> bool:
        return self.seconds >= CMN_WINDOW_SECONDS

    def add(self, mean: str, seconds: float) -> None:
        values = [float(v) for v in mean.split(",")]
        self._sum = [a + v * seconds for a, v in zip(self._sum, values, strict=True)] if self._sum else [
            v * seconds for v in values]
        self.seconds += seconds

    def mean(self) -> str:
        return ",".join(f"{a / self.seconds:.6g}" for a in self._sum)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A cold utterance decoded as a whole at a pause: valid while no audio followed."""

    audio_bytes: int
    words: list[Word]
    mean: str  # the utterance's own


class PocketSphinxRecognizer(Recognizer):
    def __init__(
        self, engine: "PocketSphinxEngine", decoder: Decoder, keyterms: frozenset[str], calibrate_cmn: bool
    ) -> None:
        self._engine = engine
        self._decoder = decoder
        self._search = decoder.current_search()
        self._keyterms = keyterms
        self._calibrating = calibrate_cmn  # holding the stream's first audio until its mean is known
        self._mean = StreamMean()
        self._audio: list[bytes] = []  # the current utterance's, while it may have to be decoded again
        self._audio_bytes = 0
        self._cold = False  # the current utterance's live decode began without the stream's own mean
        self._prepared: _Prepared | None = None
        self._next_mean: str | None = None  # for the next live decode to start from
        self._live = False  # the decoder is inside an utterance (live decoding)
        self._live_from_own_mean = False  # that live decode started from this utterance's own mean

    def start(self) -> None:
        self._audio.clear()
        self._audio_bytes = 0
        self._prepared = None
        self._cold = not self._mean.warm
        if not self._calibrating:
            self._start_live()

    def feed(self, pcm: bytes) -> None:
        if not pcm:  # pocketsphinx fails on an empty buffer
            return
        if self._prepared is not None:  # speech resumed after the pause's decode: go on live
            self._resume_live(self._prepared.mean)
        if self._cold:
            # Up to the window exactly, so what is decided does not depend on the chunking.
            remaining = self._window_bytes() - self._audio_bytes
            if 0 < remaining < len(pcm):
                self.feed(pcm[:remaining])
                self.feed(pcm[remaining:])
                return
            self._audio.append(pcm)
            self._audio_bytes += len(pcm)
        if self._calibrating:
            if self._audio_bytes >= CMN_CALIBRATION_SECONDS * _BYTES_PER_SECOND:
                self._calibrate()
            return
        self._decoder.process_raw(pcm, False, False)
        if self._cold and self._audio_bytes >= self._window_bytes():
            self._warm_up()

    def _window_bytes(self) -> int:
        """The current utterance's audio that makes the stream's mean cover the CMN window."""
        return round((CMN_WINDOW_SECONDS - self._mean.seconds) * _BYTES_PER_SECOND / 2) * 2

    def _calibrate(self) -> None:
        self._calibrating = False
        audio = b"".join(self._audio)
        if audio:
            self._next_mean = self._mean_of(audio)  # the utterance's own mean still joins at its end
        self._start_live()
        if audio:
            self._decoder.process_raw(audio, False, False)

    def _warm_up(self) -> None:
        """The stream's audio now fills the CMN window: its mean is the stream's from here on,
        and the utterance is decoded live again from it."""
        audio = b"".join(self._audio)
        seconds = len(audio) / _BYTES_PER_SECOND
        self._cold = False
        self._audio.clear()
        self._audio_bytes = 0
        if self._live_from_own_mean:  # resumed after a pause from this utterance's mean: decode on
            self._mean.add(self._decoder.get_cmn(False), seconds)
            return
        self._mean.add(self._mean_of(audio), seconds)
        self._resume_live(self._mean.mean(), audio)

    def pause(self) -> None:
        if self._cold and self._audio_bytes and self._prepared is None and not self._calibrating:
            self._prepared = self._decode_whole()

    def partial(self) -> str:
        if self._calibrating:
            return ""
        if self._prepared is not None:
            return " ".join(w.text for w in self._prepared.words)
        hyp = self._decoder.hyp()
        if hyp is None:
            return ""
        return " ".join(filter(None, (clean_token(t) for t in hyp.hypstr.split())))

    def finish(self) -> list[Word]:
        if self._calibrating:
            self._calibrate()
        if not self._cold:
            self._end_live()
            return self._result()
        prepared = self._prepared if self._prepared is not None else self._decode_whole()
        self._prepared = None
        self._audio.clear()
        self._audio_bytes = 0
        if prepared.audio_bytes:
            self._mean.add(prepared.mean, prepared.audio_bytes / _BYTES_PER_SECOND)
            self._next_mean = self._mean.mean()  # the whole-utterance decode reset the front end
        return prepared.words

    def _decode_whole(self) -> _Prepared:
        """The utterance so far decoded at once, normalized by its own mean (as offline)."""
        self._end_live()
        audio = b"".join(self._audio)
        if not audio:
            return _Prepared(0, [], "")
        self._decoder.reinit_feat()  # a live decode left the front end in live CMN for good
        self._decoder.start_utt()
        self._decoder.process_raw(audio, False, True)
        self._decoder.end_utt()
        return _Prepared(len(audio), self._result(), self._decoder.get_cmn(False))

    def _mean_of(self, audio: bytes) -> str:
        """The cepstral mean of ``audio`` alone, searched by the one-word grammar (cheap)."""
        self._end_live()
        self._decoder.reinit_feat()
        self._decoder.activate_search(_MEAN_SEARCH)
        try:
            self._decoder.start_utt()
            self._decoder.process_raw(audio, True, True)
            mean = self._decoder.get_cmn(False)
            self._decoder.end_utt()
        finally:
            self._decoder.activate_search(self._search)
        return mean

    def _start_live(self) -> None:
        # Once the stream is warm, pocketsphinx's live CMN carries the mean from one utterance to
        # the next; only a front end reset by a decode of ours needs the stream's mean given.
        if self._next_mean is not None:
            self._decoder.set_cmn(self._next_mean)
            self._next_mean = None
        self._decoder.start_utt()
        self._live = True
        self._live_from_own_mean = False

    def _resume_live(self, mean: str, audio: bytes | None = None) -> None:
        """Decode the utterance so far live again, from ``mean``, to go on with it."""
        self._prepared = None
        self._end_live()
        self._decoder.set_cmn(mean)
        self._decoder.start_utt()
        self._live = True
        self._live_from_own_mean = True
        audio = b"".join(self._audio) if audio is None else audio
        if audio:
            self._decoder.process_raw(audio, False, False)

    def _end_live(self) -> None:
        if self._live:
            self._decoder.end_utt()
            self._live = False

    def _result(self) -> list[Word]:
        """The words of the utterance the decoder ended last."""
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
        self._end_live()
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
        decoder = Decoder(loglevel="FATAL")
        decoder.add_jsgf_string(_MEAN_SEARCH, _MEAN_GRAMMAR)
        return decoder

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
