import pytest

from lectern.speech.engines.pocketsphinx import PocketSphinxEngine
from lectern.speech.vad import load_vad_model


@pytest.fixture(scope="module")
def vad_model():
    return load_vad_model()


@pytest.fixture(scope="module")
def engine():
    """pocketsphinx, as the engine the pipeline tests run (the light one: these test the pipeline)."""
    return PocketSphinxEngine()
