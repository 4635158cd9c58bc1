import numpy as np
import pytest

from lectern.speech.audio import AudioConverter, AudioFormat
from tests.conftest import SPEECH, load_speech, load_wav


def test_pcm_16000_passes_through_unchanged():
    speech = load_speech("fox")
    out = AudioConverter(AudioFormat("pcm_s16le", 16000)).convert(speech.pcm)
    assert out.tobytes() == speech.pcm


@pytest.mark.parametrize("name,rate", [("fox_8k", 8000), ("fox_22050", 22050), ("fox_44100", 44100), ("fox_48000", 48000)])
def test_resampling_in_chunks_keeps_duration_and_signal(name, rate):
    pcm, file_rate = load_wav(name)
    assert file_rate == rate
    converter = AudioConverter(AudioFormat("pcm_s16le", rate))
    step = rate // 10 * 2  # 100 ms chunks
    parts = [converter.convert(pcm[i : i + step]) for i in range(0, len(pcm), step)]
    parts.append(converter.convert(b"", last=True))
    out = np.concatenate(parts)
    expected = len(pcm) // 2 * 16000 / rate
    assert abs(len(out) - expected) <= 2
    reference = np.frombuffer(load_speech("fox").pcm, dtype="<i2").astype(np.float64)
    n = min(len(reference), len(out))
    correlation = np.corrcoef(reference[:n], out[:n].astype(np.float64))[0, 1]
    assert correlation > 0.9


def test_ulaw_decodes_to_the_same_speech():
    ulaw = (SPEECH / "fox_ulaw_8k.raw").read_bytes()
    linear, _ = load_wav("fox_8k")
    assert len(linear) == len(ulaw) * 2
    out = AudioConverter(AudioFormat("ulaw", 8000)).convert(ulaw, last=True)
    assert abs(len(out) - len(ulaw) * 2) <= 2  # 8 kHz bytes -> 16 kHz samples
    reference = np.frombuffer(load_speech("fox").pcm, dtype="<i2").astype(np.float64)
    n = min(len(reference), len(out))
    assert np.corrcoef(reference[:n], out[:n].astype(np.float64))[0, 1] > 0.9


def test_ulaw_table_matches_g711_reference_points():
    out = AudioConverter(AudioFormat("ulaw", 16000)).convert(bytes([0xFF, 0x7F, 0x00, 0x80]))
    assert out.tolist() == [0, 0, -32124, 32124]


def test_odd_byte_count_is_not_whole_samples():
    with pytest.raises(ValueError, match="whole number of 16-bit samples"):
        AudioFormat("pcm_s16le", 16000).check_chunk(b"\x00\x01\x02")
    AudioFormat("ulaw", 8000).check_chunk(b"\x00\x01\x02")
