"""Whisper decoding of short utterances (0.3-30 s of 16 kHz mono float32), for an engine worker.

faster-whisper's ``WhisperModel.transcribe`` pads every call to a 30 s window: the encoder then
costs about half a second of one core whatever the audio's length. This runner encodes only the
audio plus a margin of padding, and gives the decoder a full-length encoder output all the same:
the positions after the margin are taken from one encoding of an all-padding 30 s window, made
once at load (``_silence_tail``). Without them the decoder reads the end of the encoder output as
the end of a 30 s window with speech running on past it, and loops ("The child almost hurt the
small dog. The child almost hurt the small dog. The child ...": 12 of speech-dev's 13 files with
no margin, 3 with 2 s); with only the last few of them it ends early and drops whole sentences.
With all of them the text agrees with the 30 s window's for about a quarter of its CPU
(bench/whisper_decode.py).

What is left over from faster-whisper's safety net, kept cheap: a token budget from the audio's
duration (a loop stops there), and one retry on the real 30 s window when the output looks like a
loop (budget used up, a repeated tail, or faster-whisper's compression-ratio test).

faster-whisper's own parts are reused rather than copied: the model loader (``WhisperModel``,
which also reads the feature extractor's settings), ``FeatureExtractor``, ``Tokenizer``,
``get_prompt`` (hotwords, then the previous text, after ``<|startofprev|>``),
``add_word_timestamps`` (cross-attention alignment, DTW, ``merge_punctuations``),
``get_suppressed_tokens`` and ``get_compression_ratio``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens
from threadpoolctl import threadpool_limits

from lectern.speech.engines.base import Word

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MAX_SECONDS = 30.0  # one Whisper window; callers cut segments at 30 s
MAX_SAMPLES = int(MAX_SECONDS * SAMPLE_RATE)

# Padding (log-mel value 0.0, as faster-whisper pads its last window) encoded after the audio,
# before the precomputed tail takes over. Against the 30 s window's text on 112 utterances
# (speech-dev and the fixtures, clean, with noisy silence around them, cut to a half and three
# quarters, concatenated): 0.5 s differs on 3.4 % of words and needs one retry, 1 s 3.2 % (one),
# 2 s 2.7 % (none), 3 s 2.6 %; each second costs about 13 ms per call (bench/whisper_decode.py).
MARGIN_SECONDS = 2.0
# Token budget: the most seen was 6.4 tokens per second of audio (short cuts of fast speech), so
# 8/s + 12 never cuts a real utterance; it only bounds the cost of a loop before the retry.
TOKENS_PER_SECOND = 8.0
TOKENS_BASE = 12
CONTEXT_TOKENS = 100  # the previous text's last tokens after <|startofprev|>
# Greedy. Beam 5 on this window bought nothing: speech-dev WER 0.118 against greedy's 0.108 (it
# drops LJ050's closing "in this regard"), 0.059 against 0.054 with the fixtures added, for 17 to
# 26 % more CPU per call (bench/whisper_decode.py). faster-whisper's own beam 5 gains one word on
# speech-dev (0.088 against 0.098) at four to five times the runner's cost.
BEAM_SIZE = 1
# faster-whisper's thresholds: no speech when the no-speech token's probability is above 0.6 and
# the text's average log-probability below -1 (Whisper writes "Thank you." or " ." on silence);
# a loop when the text compresses better than 2.4:1.
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4
# A loop: any 4 tokens occurring 3 times ("in this regard, in this regard, in this regard"), or
# any 8 occurring twice (a whole sentence said again, then the end: "She went to the library to
# return her books. She went to the library to return her books."). "five five five" is none.
# A real repetition that long is rare and only costs a retry.
LOOP_NGRAMS = ((4, 3), (8, 2))  # (tokens, occurrences)
CPU_BATCH = 4  # requests per encode/generate on a CPU: see WhisperRunner.transcribe_batch
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
MAX_DECODER_LENGTH = 448  # Whisper's decoder positions: prompt + generated tokens


@dataclass(frozen=True, slots=True)
class WhisperRequest:
    audio: np.ndarray  # float32, 16 kHz mono, the utterance (may have leading/trailing silence)
    context: str = ""  # previous text (what was said before: previous segment, client's previous_text)
    hotwords: tuple[str, ...] = ()  # terms to favour (e.g. "ComfyUI"), faster-whisper's `hotwords` prompt style
    language: str | None = None  # ISO 639-1; None = detect (multilingual models), "en" forced for .en models
    words: bool = True  # word timestamps + probabilities (costs an align pass); False for cheap partials


@dataclass(frozen=True, slots=True)
class WhisperResult:
    text: str  # cased and punctuated as Whisper writes it, stripped
    words: list[Word]  # with punctuation attached, no leading space; seconds from the start of request.audio
    language: str  # the given or detected language
    language_probability: float
    no_speech_probability: float


@dataclass(slots=True)
class _Job:
    """One request on its way through a batch."""

    request: WhisperRequest
    samples: int  # length of the audio
    mel: np.ndarray  # [n_mels, content frames]: the audio's log-mel, no padding
    language: str = "en"
    language_probability: float = 1.0
    tokenizer: Tokenizer | None = None
    prompt: list[int] = field(default_factory=list)
    budget: int = 0
    tokens: list[int] = field(default_factory=list)
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    encoded: ctranslate2.StorageView | None = None  # what the tokens were decoded from, for align
    row: int = 0  # this job's row in `encoded`
    words: list[Word] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def content_frames(self) -> int:
        return self.mel.shape[-1]


class WhisperRunner:
    """A CTranslate2 Whisper model decoding batches of short utterances. Not thread-safe: one
    runner per worker process, called from one thread."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 1,
        device_index: int = 0,
    ) -> None:
        model_dir = Path(model_dir)
        # WhisperModel downloads from the Hugging Face hub when given anything but a directory:
        # never let a wrong path get that far.
        if not (model_dir / "model.bin").is_file():
            raise FileNotFoundError(f"no CTranslate2 Whisper model (model.bin) in {model_dir}")
        if cpu_threads > 0:
            # The feature extractor's one matrix product makes numpy's OpenBLAS start a thread per
            # core, which then spin after it returns: measured, the process's CPU time doubled
            # during the encode and generate that follow, on the core another worker counts on.
            threadpool_limits(limits=cpu_threads, user_api="blas")
        # intra_threads=cpu_threads, inter_threads=num_workers=1: one decode at a time per process.
        self._fw = WhisperModel(
            str(model_dir),
            device=device,
            device_index=device_index,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=1,
        )
        self._model: ctranslate2.models.Whisper = self._fw.model
        self._features = self._fw.feature_extractor
        self.is_multilingual: bool = self._model.is_multilingual
        self.languages: tuple[str, ...] = self._languages()
        self._tokenizers: dict[str, Tokenizer] = {}
        self._suppress: dict[str, list[int]] = {}
        self._window_frames = self._features.nb_max_frames  # 3000 mel frames = 30 s
        self._margin_frames = round(MARGIN_SECONDS * self._fw.frames_per_second)
        # On a GPU the 30 s encoder is cheap and splicing would cost host round trips: every call
        # uses the full window there (and batches are what saves time).
        self._short_window = self._model.device == "cpu"
        self._tail = self._silence_tail() if self._short_window else None
        self._beam_size = BEAM_SIZE  # bench/whisper_decode.py varies these two
        self._fallbacks = 0  # decodes retried on the 30 s window so far (bench figure)

    # ---- public ----

    def transcribe(self, request: WhisperRequest) -> WhisperResult:
        return self.transcribe_batch([request])[0]

    def transcribe_batch(self, requests: Sequence[WhisperRequest]) -> list[WhisperResult]:
        """Several utterances in one generate (one per prompt shape: CTranslate2 needs
        <|startoftranscript|> at the same index in every prompt, and padding the previous text to
        line them up changes what Whisper writes) and one align; on a CPU the encoder runs once
        per length (see _encode), so each result is what a single call gives. Every request is
        checked first: a ValueError (over 30 s, not mono, a language the model lacks) fails the
        batch before any decoding.

        On a CPU (one thread) that saves little: 4 speech-dev files at a time cost 134 ms of CPU
        each against 143 alone (bench/whisper_decode.py, on a busy box), and four streams' due
        decodes served together in a worker 0-5 % of its CPU, within the noise; so a worker
        decodes its streams one at a time. A larger batch is decoded 4 at a time there
        (CPU_BATCH). On a GPU the whole batch goes at once."""
        jobs = [self._job(request) for request in requests]
        live = [job for job in jobs if job.samples]
        step = CPU_BATCH if self._model.device == "cpu" else max(1, len(live))
        for start in range(0, len(live), step):
            self._decode(live[start : start + step])
        return [self._result(job) for job in jobs]

    def _decode(self, jobs: list[_Job]) -> None:
        encoded = self._encode([job.mel for job in jobs], short=self._short_window)
        self._set_languages(jobs, encoded)
        for job in jobs:
            self._set_prompt(job)
        self._generate(jobs, encoded)
        looped = [job for job in jobs if self._looks_looped(job)]
        if looped and self._short_window:
            # faster-whisper's fallback, once: the real 30 s window, the whole budget.
            self._fallbacks += len(looped)
            self._generate(looped, self._encode([job.mel for job in looped], short=False), full_budget=True)
        for job in looped:
            if len(job.tokens) >= job.budget:  # still running on at the end: cut the loop off
                job.tokens = _cut_loop(job.tokens)
        self._align([job for job in jobs if job.request.words and self._text_tokens(job)])

    # ---- preparation ----

    def _job(self, request: WhisperRequest) -> _Job:
        audio = np.asarray(request.audio)
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono (1-D), got shape {audio.shape}")
        if audio.shape[0] > MAX_SAMPLES:
            seconds = audio.shape[0] / SAMPLE_RATE
            raise ValueError(f"audio is {seconds:.2f} s long; at most {MAX_SECONDS:.0f} s per request")
        language = self._check_language(request.language)
        audio = audio.astype(np.float32, copy=False)
        samples = audio.shape[0]
        if samples:
            # The STFT needs a frame's worth of samples; a shorter clip is padded with silence.
            padded = np.pad(audio, (0, max(0, self._features.n_fft - samples)))
            mel = self._features(padded)
            mel = mel[:, : max(1, min(samples // self._features.hop_length, self._window_frames))]
        else:
            mel = np.zeros((self._features.mel_filters.shape[0], 0), np.float32)
        job = _Job(request=request, samples=samples, mel=mel)
        if language is not None:
            job.language = language
        return job

    def _check_language(self, language: str | None) -> str | None:
        if language is None:
            return None if self.is_multilingual else "en"
        if not self.is_multilingual and language != "en":
            raise ValueError(f"this model is English-only: cannot transcribe language {language!r}")
        if language not in self.languages:
            raise ValueError(f"unknown language code {language!r}: not one of this model's {len(self.languages)}")
        return language

    def _languages(self) -> tuple[str, ...]:
        """The codes of the model's language tokens, in Whisper's order (English first). Not
        faster-whisper's list: that has yue, which only large-v3 models have a token for."""
        if not self.is_multilingual:
            return ("en",)
        ids = {code: self._fw.hf_tokenizer.token_to_id(f"<|{code}|>") for code in _LANGUAGE_CODES}
        return tuple(sorted((code for code, token in ids.items() if token is not None), key=lambda code: ids[code]))

    def _silence_tail(self) -> np.ndarray:
        """The encoder's output for a 30 s window of padding only ([positions, d_model]): what
        the positions after a short input's margin stand for."""
        n_mels = self._features.mel_filters.shape[0]
        padding = np.zeros((1, n_mels, self._window_frames), np.float32)
        return np.asarray(self._model.encode(ctranslate2.StorageView.from_array(padding)))[0].copy()

    def _encode(self, mels: list[np.ndarray], short: bool) -> ctranslate2.StorageView:
        """The batch's encoder output, a whole window's positions per row. ``short``: each
        log-mel padded with 0.0 (as faster-whisper pads) by the margin only, and the silence tail
        appended after its encoding. Only log-mels of the same length are encoded together: the
        encoder attends to the padding too, so a row padded further than its own length plus the
        margin would not read as it does alone (8 of 225 texts changed in random batches of 2 to
        4 utterances of different lengths). Otherwise padded to 30 s, all in one call."""
        if not short:
            return self._encode_padded(mels, self._window_frames)
        frames = [self._short_frames(mel) for mel in mels]
        if self._tail is None:  # the short encoding alone (bench/whisper_decode.py's "no splice")
            return self._encode_padded(mels, max(frames))
        if len(set(frames)) == 1:
            return self._spliced(self._encode_padded(mels, frames[0]))
        rows: list[np.ndarray | None] = [None] * len(mels)
        for length in set(frames):
            same = [i for i, f in enumerate(frames) if f == length]
            encoded = np.asarray(self._spliced(self._encode_padded([mels[i] for i in same], length)))
            for i, row in zip(same, encoded):
                rows[i] = row
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(rows)))  # type: ignore[arg-type]

    def _short_frames(self, mel: np.ndarray) -> int:
        frames = min(self._window_frames, mel.shape[-1] + self._margin_frames)
        return frames + frames % 2  # the encoder's convolution halves the frames

    def _encode_padded(self, mels: list[np.ndarray], frames: int) -> ctranslate2.StorageView:
        batch = np.stack([np.pad(mel, ((0, 0), (0, frames - mel.shape[-1]))) for mel in mels])
        # A batch's rows may be decoded or aligned apart (prompt shapes, languages, words=False),
        # which takes host memory to slice: on a GPU a batch's encoder output comes back to it.
        to_cpu = self._model.device != "cpu" and len(mels) > 1
        return self._model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=to_cpu)

    def _spliced(self, encoded: ctranslate2.StorageView) -> ctranslate2.StorageView:
        """A short encoding continued by the silence tail: the decoder sees a whole window."""
        head = np.asarray(encoded)
        if self._tail is None or head.shape[1] >= self._tail.shape[0]:
            return encoded
        tail = np.broadcast_to(self._tail[head.shape[1] :], (head.shape[0], *self._tail[head.shape[1] :].shape))
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate([head, tail], axis=1)))

    def _set_languages(self, jobs: list[_Job], encoded: ctranslate2.StorageView) -> None:
        """Detect the language of the requests that did not give one (multilingual models)."""
        if not any(job.request.language is None for job in jobs) or not self.is_multilingual:
            return
        for job, ranked in zip(jobs, self._model.detect_language(encoded)):
            if job.request.language is None:
                token, probability = ranked[0]
                job.language, job.language_probability = token[2:-2], float(probability)

    def _tokenizer(self, language: str) -> Tokenizer:
        if language not in self._tokenizers:
            self._tokenizers[language] = Tokenizer(
                self._fw.hf_tokenizer, self.is_multilingual, task="transcribe", language=language
            )
        return self._tokenizers[language]

    def _suppressed(self, tokenizer: Tokenizer) -> list[int]:
        """faster-whisper's default suppress_tokens=[-1]: symbols, speaker tags, special tokens."""
        if tokenizer.language_code not in self._suppress:
            self._suppress[tokenizer.language_code] = list(get_suppressed_tokens(tokenizer, [-1]))
        return self._suppress[tokenizer.language_code]

    def _set_prompt(self, job: _Job) -> None:
        job.tokenizer = self._tokenizer(job.language)
        context = job.request.context.strip()
        # As faster-whisper's initial_prompt: " " + the text, its last tokens only.
        previous = job.tokenizer.encode(" " + context)[-CONTEXT_TOKENS:] if context else []
        hotwords = ", ".join(word.strip() for word in job.request.hotwords if word.strip()) or None
        job.prompt = self._fw.get_prompt(job.tokenizer, previous, without_timestamps=True, hotwords=hotwords)
        # Whisper's decoder holds 448 positions, prompt included.
        wanted = math.ceil(TOKENS_BASE + TOKENS_PER_SECOND * job.seconds)
        job.budget = max(1, min(wanted, MAX_DECODER_LENGTH // 2, MAX_DECODER_LENGTH - len(job.prompt)))

    # ---- decoding ----

    def _generate(self, jobs: list[_Job], encoded: ctranslate2.StorageView, full_budget: bool = False) -> None:
        """Greedy decoding of every job's rows of `encoded` (row i = jobs[i]), one generate call
        per prompt shape."""
        groups: dict[tuple[int, int], list[int]] = {}
        for index, job in enumerate(jobs):
            assert job.tokenizer is not None
            shape = (job.prompt.index(job.tokenizer.sot), len(job.prompt))
            groups.setdefault(shape, []).append(index)
        for rows in groups.values():
            group = [jobs[row] for row in rows]
            features = encoded if len(rows) == len(jobs) else _rows(encoded, rows)
            prompt_length = len(group[0].prompt)
            budget = MAX_DECODER_LENGTH - prompt_length if full_budget else max(job.budget for job in group)
            budget = max(1, min(budget, MAX_DECODER_LENGTH // 2))
            tokenizer = group[0].tokenizer
            assert tokenizer is not None
            results = self._model.generate(
                features,
                [job.prompt for job in group],
                beam_size=self._beam_size,
                # CTranslate2 generates at most min(max_length / 2, max_length - prompt) tokens.
                max_length=max(2 * budget, budget + prompt_length - 1),
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
                suppress_tokens=self._suppressed(tokenizer),
            )
            for row, job, result in zip(rows, group, results):
                tokens = list(result.sequences_ids[0])
                if not full_budget:
                    tokens = tokens[: job.budget]  # the group's budget is its largest
                job.tokens = tokens
                # As faster-whisper: the score is the summed log-probability over the length
                # (length_penalty 1), averaged over the tokens and the end token.
                job.avg_logprob = result.scores[0] * len(result.sequences_ids[0]) / (len(result.sequences_ids[0]) + 1)
                job.no_speech_prob = float(result.no_speech_prob)
                job.encoded, job.row = encoded, row
                if full_budget:
                    job.budget = budget

    def _looks_looped(self, job: _Job) -> bool:
        assert job.tokenizer is not None
        if len(job.tokens) >= job.budget:
            return True  # no end of text within the budget
        if any(_repeated_ngram(job.tokens, n, times) is not None for n, times in LOOP_NGRAMS):
            return True
        text = job.tokenizer.decode(job.tokens).strip()
        return bool(text) and get_compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD

    def _text_tokens(self, job: _Job) -> list[int]:
        if self._is_silence(job):
            return []
        assert job.tokenizer is not None
        return [token for token in job.tokens if token < job.tokenizer.eot]

    def _is_silence(self, job: _Job) -> bool:
        if not job.tokens:
            return True
        if job.no_speech_prob > NO_SPEECH_THRESHOLD and job.avg_logprob < LOG_PROB_THRESHOLD:
            return True
        assert job.tokenizer is not None
        # " ." and the like: nothing a person said.
        return not any(char.isalnum() for char in job.tokenizer.decode(job.tokens))

    # ---- word timestamps ----

    def _align(self, jobs: list[_Job]) -> None:
        """faster-whisper's add_word_timestamps, one align call per encoder output and language."""
        groups: dict[tuple[int, str], list[_Job]] = {}
        for job in jobs:
            groups.setdefault((id(job.encoded), job.language), []).append(job)
        for group in groups.values():
            encoded = group[0].encoded
            assert encoded is not None and group[0].tokenizer is not None
            rows = [job.row for job in group]
            if rows != list(range(encoded.shape[0])):
                encoded = _rows(encoded, rows)
            segments = [
                [{"seek": 0, "start": 0.0, "end": job.seconds, "tokens": self._text_tokens(job)}] for job in group
            ]
            self._fw.add_word_timestamps(
                segments,
                group[0].tokenizer,
                encoded,
                [job.content_frames for job in group],
                PREPEND_PUNCTUATIONS,
                APPEND_PUNCTUATIONS,
                last_speech_timestamp=0.0,
            )
            for job, segment in zip(group, segments):
                job.words = _words(segment[0].get("words", []), job.seconds)

    # ---- result ----

    def _result(self, job: _Job) -> WhisperResult:
        silent = not job.samples or self._is_silence(job)
        text = "" if silent else job.tokenizer.decode(job.tokens).strip()  # type: ignore[union-attr]
        words = [] if silent or not job.request.words else job.words
        return WhisperResult(
            text=text,
            words=words,
            language=job.language,
            language_probability=job.language_probability,
            no_speech_probability=job.no_speech_prob if job.samples else 1.0,
        )


# ---- helpers ----


def _rows(encoded: ctranslate2.StorageView, rows: list[int]) -> ctranslate2.StorageView:
    """Some rows of a batch's encoder output (host memory: see WhisperRunner._encode)."""
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[rows]))


def _repeated_ngram(tokens: list[int], n: int, times: int) -> int | None:
    """Where the first n tokens in a row that occur `times` times occur for the second time, or
    None. (A loop's first turn may differ from the next ones in case: "In this regard, in this
    regard", so the whole phrase need not match.)"""
    seen: dict[tuple[int, ...], list[int]] = {}
    for start in range(len(tokens) - n + 1):
        starts = seen.setdefault(tuple(tokens[start : start + n]), [])
        starts.append(start)
        if len(starts) >= times:
            return starts[1]
    return None


def _cut_loop(tokens: list[int]) -> list[int]:
    """The tokens before a runaway loop's second turn."""
    turns = [_repeated_ngram(tokens, n, times) for n, times in LOOP_NGRAMS]
    second = min((turn for turn in turns if turn is not None), default=None)
    return tokens if second is None else tokens[:second]


def _words(aligned: list[dict], seconds: float) -> list[Word]:
    """faster-whisper's word dicts as Words: text without the leading space, times clamped into
    the audio and made monotonic (each word starts where the previous one ended, or later)."""
    words: list[Word] = []
    last_end = 0.0
    for item in aligned:
        text = item["word"].strip()
        if not text:
            continue
        start = min(max(float(item["start"]), last_end), seconds)
        end = min(max(float(item["end"]), start), seconds)
        words.append(Word(text, round(start, 3), round(end, 3), float(item["probability"])))
        last_end = end
    return words
