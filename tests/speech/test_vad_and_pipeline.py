import json

import numpy as np
import pytest

from lectern.speech.audio import AudioFormat
from lectern.speech.endpointing import VadEndpointer, VadSettings
from lectern.speech.engines.base import RecognizerOptions
from lectern.speech.engines.pocketsphinx import PocketSphinxEngine
from lectern.speech.pipeline import StreamPipeline
from lectern.speech.vad import WINDOW, SileroVad
from tests.conftest import SPEECH, load_speech, word_error_rate


def _probabilities(vad_model, pcm: bytes, chunk: int = 3200) -> list[float]:
    vad = SileroVad(vad_model)
    samples = np.frombuffer(pcm, dtype="<i2")
    probs: list[float] = []
    for i in range(0, len(samples), chunk // 2):
        probs += vad.process(samples[i : i + chunk // 2])
    return probs


def test_silero_separates_speech_from_silence(vad_model):
    speech = load_speech("two_sentences")
    spans = json.loads((SPEECH / "two_sentences.json").read_text())
    probs = _probabilities(vad_model, speech.pcm)
    assert len(probs) == len(speech.pcm) // 2 // WINDOW

    def mean(start: int, end: int) -> float:
        return float(np.mean(probs[start // WINDOW : end // WINDOW]))

    (s1, e1), (s2, e2) = [(s["start_sample"], s["end_sample"]) for s in spans["segments"]]
    assert mean(s1, e1) > 0.6 and mean(s2, e2) > 0.6
    assert mean(e1 + 8000, s2 - 1600) < 0.1  # the 2 s gap, away from its edges


def test_chunking_does_not_change_probabilities(vad_model):
    pcm = load_speech("fox").pcm
    assert np.allclose(_probabilities(vad_model, pcm, 3200), _probabilities(vad_model, pcm, 1000), atol=1e-5)


def _stream(engine, vad_model, name: str, chunk: int = 3200) -> tuple[list, list[str]]:
    pipeline = StreamPipeline(AudioFormat("pcm_s16le", 16000), engine.recognizer(), vad_model)
    pcm = load_speech(name).pcm
    partials = []
    for i in range(0, len(pcm), chunk):
        pipeline.feed(pcm[i : i + chunk])
        partials.append(pipeline.partial())
    words = pipeline.close_segment("end").words
    pipeline.close()
    return words, partials


def test_pipeline_transcribes_and_times_words_from_stream_start(engine, vad_model):
    words, partials = _stream(engine, vad_model, "long_pause")
    text = " ".join(w.text for w in words)
    assert word_error_rate(load_speech("long_pause").text, text) <= 0.15
    assert [w.start for w in words] == sorted(w.start for w in words)
    # the second sentence starts after the 4 s pause: its words carry stream-global times
    assert any(w.start > 4.0 for w in words)
    assert partials[-1] == text or word_error_rate(text, partials[-1]) < 0.3


def test_pure_silence_yields_no_words(engine, vad_model):
    words, partials = _stream(engine, vad_model, "silence_3s")
    assert words == []
    assert set(partials) == {""}


@pytest.mark.parametrize("strategy_seconds", [0.5, 1.0])
def test_vad_endpointer_commits_once_per_pause(vad_model, strategy_seconds):
    endpointer = VadEndpointer(VadSettings(threshold=0.4, silence_seconds=strategy_seconds))
    pcm = load_speech("two_sentences").pcm + bytes(32000)
    fired = [endpointer.update([p]) for p in _probabilities(vad_model, pcm)]
    assert sum(fired) == 2


def test_vad_endpointer_ignores_speech_shorter_than_min_speech():
    endpointer = VadEndpointer(VadSettings(threshold=0.5, silence_seconds=0.3, min_speech_ms=200))
    blip = [0.9] * 3  # 96 ms of speech
    assert not any(endpointer.update([p]) for p in blip + [0.0] * 40)
    speech = [0.9] * 10  # 320 ms
    assert any(endpointer.update([p]) for p in speech + [0.0] * 40)


def test_vad_endpointer_waits_for_the_silence_threshold():
    endpointer = VadEndpointer(VadSettings(threshold=0.5, silence_seconds=1.0))
    endpointer.update([0.9] * 10)
    assert not endpointer.update([0.0] * 30)  # 0.96 s
    assert endpointer.update([0.0] * 2)


def test_a_reused_decoder_does_not_remember_earlier_streams(vad_model):
    engine = PocketSphinxEngine(ready_decoders=1, max_spare_decoders=1)
    first, _ = _stream(engine, vad_model, "fox")
    for name in ("weather", "numbers", "two_sentences", "coffee"):
        _stream(engine, vad_model, name)
    again, _ = _stream(engine, vad_model, "fox")
    assert [w.text for w in again] == [w.text for w in first]
    assert [(w.start, w.end) for w in again] == [(w.start, w.end) for w in first]


def test_narrowband_streams_match_the_engine_on_the_whole_file(engine, vad_model):
    from pocketsphinx import Decoder

    from lectern.speech.audio import AudioConverter
    from tests.conftest import load_wav

    pcm8, _ = load_wav("fox_8k")
    fmt = AudioFormat("pcm_s16le", 8000)
    decoder = Decoder(loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(AudioConverter(fmt).convert(pcm8, last=True).tobytes(), False, True)
    decoder.end_utt()
    pipeline = StreamPipeline(fmt, engine.recognizer(RecognizerOptions(source_rate=8000)), vad_model)
    for i in range(0, len(pcm8), 1600):
        pipeline.feed(pcm8[i : i + 1600])
    pipeline.feed(b"", last=True)
    words = pipeline.close_segment("end").words
    pipeline.close()
    assert " ".join(w.text for w in words) == decoder.hyp().hypstr
