"""WhisperRunner and WhisperEngine on a multilingual model (tests/speech/tiny_multilingual.py: random
weights, so its words are gibberish): detection, a given language, refusals. Only the plumbing
is checked, never what it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lectern.speech.engines.base import RecognizerOptions
from lectern.speech.engines.whisper import WhisperEngine
from lectern.speech.engines.whisper_runner import WhisperRequest, WhisperRunner
from lectern.speech.models import ModelConfig, ModelRegistry
from tests.conftest import load_speech
from tests.speech import tiny_multilingual

FOX = load_speech("fox")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_multilingual.build(tmp_path_factory.mktemp("tiny-multilingual"))


@pytest.fixture(scope="module")
def runner(model_dir: Path) -> WhisperRunner:
    return WhisperRunner(model_dir)


def speech() -> np.ndarray:
    return np.frombuffer(FOX.pcm, np.int16).astype(np.float32) / 32768


def test_the_fixture_is_a_multilingual_model_of_99_languages(model_dir: Path, runner: WhisperRunner) -> None:
    codes = tiny_multilingual.languages(model_dir)
    assert runner.is_multilingual
    assert len(codes) == 99 and codes[:3] == ["en", "zh", "de"] and "yue" not in codes


def test_the_fixture_is_the_same_model_on_every_build(tmp_path: Path, model_dir: Path) -> None:
    again = tiny_multilingual.build(tmp_path / "again")
    assert (again / "model.bin").read_bytes() == (model_dir / "model.bin").read_bytes()


def test_a_request_without_a_language_detects_one_of_the_models(model_dir: Path, runner: WhisperRunner) -> None:
    result = runner.transcribe(WhisperRequest(speech()))
    assert result.language in tiny_multilingual.languages(model_dir)
    assert 0 < result.language_probability <= 1


def test_a_batch_detects_each_requests_language_and_keeps_the_given_ones(runner: WhisperRunner) -> None:
    alone = runner.transcribe(WhisperRequest(speech()))
    given, detected, short = runner.transcribe_batch([
        WhisperRequest(speech(), language="fr"),
        WhisperRequest(speech()),
        WhisperRequest(speech()[:16000], language="de", words=False),
    ])
    assert (given.language, given.language_probability) == ("fr", 1.0)
    assert (detected.language, short.language) == (alone.language, "de")
    assert detected.language_probability == pytest.approx(alone.language_probability, abs=1e-3)


def test_a_given_language_is_decoded_with_that_languages_prompt(runner: WhisperRunner) -> None:
    """The prompt is what makes a language "used": <|startoftranscript|> <|fr|> <|transcribe|>."""
    result = runner.transcribe(WhisperRequest(speech(), language="fr"))
    assert (result.language, result.language_probability) == ("fr", 1.0)
    tokenizer = runner._tokenizer("fr")
    assert tokenizer.sot_sequence == [50258, 50265, 50359]  # <|fr|> is Whisper's seventh language


@pytest.mark.parametrize("code", ["xx", "tlh", "yue"])
def test_a_language_the_model_lacks_is_refused(runner: WhisperRunner, code: str) -> None:
    """yue is a language faster-whisper knows (large-v3 has it) but this 99-language model does not."""
    with pytest.raises(ValueError, match=repr(code)):
        runner.transcribe(WhisperRequest(speech(), language=code))


def test_the_engine_reports_the_models_languages(model_dir: Path) -> None:
    engine = WhisperEngine(ModelConfig("multi", "whisper", str(model_dir)))
    assert engine.languages is not None and list(engine.languages) == tiny_multilingual.languages(model_dir)
    registry = ModelRegistry({}, "multi", languages={"multi": engine.languages})
    assert registry.serves_language("multi", "fr") and registry.serves_language("multi", "fra")
    assert not registry.english_only("multi")
    assert not any(registry.serves_language("multi", code) for code in ("xx", "tlh", "yue"))


def test_a_recognizer_without_a_language_reports_the_detected_one(model_dir: Path, runner: WhisperRunner) -> None:
    engine = WhisperEngine(ModelConfig("multi", "whisper", str(model_dir)))
    recognizer = engine.recognizer(RecognizerOptions())
    recognizer.start()
    recognizer.feed(FOX.pcm)
    recognizer.finish()
    assert recognizer.language == runner.transcribe(WhisperRequest(speech())).language
    french = engine.recognizer(RecognizerOptions(language="fr-FR"))
    french.start()
    french.feed(FOX.pcm)
    french.finish()
    assert french.language == "fr"
