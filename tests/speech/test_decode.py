"""probe() and decode_pcm() on the real speech fixture in every container a user may upload,
encoded here with PyAV (the same FFmpeg that decodes them)."""

from __future__ import annotations

import io
import random
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import av.codec.context
import numpy as np
import psutil
import pytest
import soxr

from lectern.speech.decode import AudioTooLong, UnsupportedAudio, decode_pcm, probe
from tests.conftest import load_wav

RATE = 16000
SPEECH = np.frombuffer(load_wav("two_sentences")[0], dtype="<i2")  # 16 kHz mono
SECONDS = len(SPEECH) / RATE  # 6.13


@dataclass(frozen=True)
class Format:
    name: str
    muxer: str
    encoder: str
    container: str  # what probe() reports
    codec: str
    rate: int = RATE
    layout: str = "mono"
    bit_rate: int | None = None
    probe_rate: int | None = None  # the decoder's rate, when it is not the encoder's input rate
    slack: float = 0.0  # how far probe()'s duration and the decoded length may stray from 6.13 s
    exact: bool = False  # lossless at 16 kHz: the decoded samples are the fixture's, bit for bit
    min_correlation: float = 0.99

    @property
    def channels(self) -> int:
        return 2 if self.layout == "stereo" else 1


OPUS_FRAME, MP3_FRAME, AAC_FRAME = 0.02, 576 / RATE, 1024 / RATE  # MPEG-2 layer III: 576 samples a frame

FORMATS = [
    Format("wav", "wav", "pcm_s16le", "wav", "pcm_s16le", exact=True),
    Format("wav-24bit", "wav", "pcm_s24le", "wav", "pcm_s24le", exact=True),
    Format("wav-float", "wav", "pcm_f32le", "wav", "pcm_f32le", exact=True),
    # Resampled by soxr on the way in and by FFmpeg's swresample on the way out, and downmixed:
    # measured 0.99999.
    Format(
        "wav-44k-stereo", "wav", "pcm_s16le", "wav", "pcm_s16le", rate=44100, layout="stereo", min_correlation=0.999
    ),
    Format("flac", "flac", "flac", "flac", "flac", exact=True),
    # Lossy codecs at speech bitrates correlate at 0.998-0.999 on this clean fixture (MP3 0.9987,
    # Opus 0.9978, AAC 0.9985); 0.99 leaves room for another libmp3lame/libopus build.
    # LAME's Xing/LAME tag makes the decoded length exact (gapless), but probe() adds up MP3
    # packets (see decode.py), which counts the encoder delay and the last frame's padding: 6.228 s.
    Format("mp3", "mp3", "libmp3lame", "mp3", "mp3float", bit_rate=32000, slack=3 * MP3_FRAME),
    # Opus decodes at 48 kHz whatever the input rate; the containers' durations include the 6.5 ms
    # pre-skip (Ogg: 6.136 s) or codec delay (WebM: 6.138 s).
    Format("ogg-opus", "ogg", "libopus", "ogg", "opus", bit_rate=24000, probe_rate=48000, slack=OPUS_FRAME),
    Format("webm-opus", "webm", "libopus", "matroska,webm", "opus", bit_rate=24000, probe_rate=48000, slack=OPUS_FRAME),
    # The MP4 edit list trims the AAC encoder's priming, but the last frame's padding still
    # decodes (6.144 s at 16 kHz) while the container says 6.13 s.
    Format("m4a-aac", "ipod", "aac", "mov,mp4,m4a,3gp,3g2,mj2", "aac", bit_rate=32000, slack=AAC_FRAME),
    Format(
        "mp4-aac-44k-stereo",
        "mp4",
        "aac",
        "mov,mp4,m4a,3gp,3g2,mj2",
        "aac",
        rate=44100,
        layout="stereo",
        bit_rate=64000,
        slack=1024 / 44100,
    ),
]
FORMAT_IDS = [f.name for f in FORMATS]


def write_audio(
    path: Path,
    muxer: str,
    encoder: str,
    samples: np.ndarray,
    rate: int = RATE,
    layout: str = "mono",
    bit_rate: int | None = None,
    options: dict[str, str] | None = None,
    vbr_quality: int | None = None,
) -> Path:
    """Encode 16-bit samples (frames x channels, or mono) in 1024-sample frames, as a client's tool would."""
    samples = samples.reshape(len(samples), -1)
    with av.open(str(path), "w", format=muxer, options=options or {}) as container:
        stream = container.add_stream(encoder, rate=rate)
        stream.codec_context.layout = layout
        if bit_rate:
            stream.codec_context.bit_rate = bit_rate
        if vbr_quality is not None:  # libmp3lame's -q:a
            stream.codec_context.flags |= av.codec.context.Flags.qscale
            stream.codec_context.global_quality = vbr_quality * 118  # FF_QP2LAMBDA
        for start in range(0, len(samples), 1024):
            chunk = np.ascontiguousarray(samples[start : start + 1024]).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def speech_as(fmt: Format) -> np.ndarray:
    samples = SPEECH if fmt.rate == RATE else soxr.resample(SPEECH, RATE, fmt.rate, quality="HQ")
    return np.repeat(samples.reshape(-1, 1), fmt.channels, axis=1)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("decode")
    return {
        fmt.name: write_audio(
            tmp / f"speech.{fmt.name}", fmt.muxer, fmt.encoder, speech_as(fmt), fmt.rate, fmt.layout, fmt.bit_rate
        )
        for fmt in FORMATS
    }


def decoded(path: Path, start_seconds: float = 0.0) -> np.ndarray:
    return np.frombuffer(b"".join(decode_pcm(path, start_seconds)), dtype="<i2")


def best_alignment(expected: np.ndarray, actual: np.ndarray, max_lag: int) -> tuple[int, float]:
    """The delay of ``actual`` behind ``expected`` (in samples, within ``max_lag``) at which they
    correlate best, and their normalized correlation over the overlap at that delay."""
    x, y = expected.astype(np.float64), actual.astype(np.float64)
    size = 1 << (len(x) + len(y)).bit_length()
    cross = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)  # [k]: sum x[i] y[i + k]
    lags = np.arange(-max_lag, max_lag + 1)
    lag = int(lags[np.argmax(cross[lags])])  # a negative lag indexes from the end: circular, zero-padded
    a, b = x[max(0, -lag) :], y[max(0, lag) :]
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    return lag, float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_probe_identifies_the_file(fmt: Format, encoded: dict[str, Path]) -> None:
    info = probe(encoded[fmt.name])
    assert (info.container, info.codec) == (fmt.container, fmt.codec)
    assert (info.sample_rate, info.channels) == (fmt.probe_rate or fmt.rate, fmt.channels)
    assert info.duration_seconds == pytest.approx(SECONDS, abs=fmt.slack + 0.001)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_decodes_to_16k_mono_pcm_of_the_same_speech(fmt: Format, encoded: dict[str, Path]) -> None:
    pcm = decoded(encoded[fmt.name])
    if fmt.exact:
        assert np.array_equal(pcm, SPEECH)
        return
    assert len(pcm) == pytest.approx(len(SPEECH), abs=fmt.slack * RATE)
    lag, correlation = best_alignment(SPEECH, pcm, max_lag=RATE // 20)  # 50 ms of codec delay at most
    assert correlation > fmt.min_correlation, (lag, correlation)
    # Every decoder here compensates its codec's delay (Opus pre-skip, MP4 edit list, LAME tag).
    assert abs(lag) <= 1


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_start_seconds_skips_exactly_that_many_samples(fmt: Format, encoded: dict[str, Path]) -> None:
    path = encoded[fmt.name]
    whole = decoded(path)
    # 1.001 * 16000 is 16015.999...: the skip is rounded to the nearest sample, not truncated.
    for start in (1.001, 2.0, 3.3335):
        assert np.array_equal(decoded(path, start), whole[round(start * RATE) :]), start
    assert len(decoded(path, SECONDS + 1)) == 0  # past the end: nothing left, and no error


@pytest.fixture(scope="module")
def without_duration(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files whose container states no duration, or only one FFmpeg guesses from the bitrate."""
    tmp = tmp_path_factory.mktemp("no-duration")
    return {
        # Raw AAC in ADTS frames: no header at all; FFmpeg guesses 6.28 s from the bitrate.
        "adts-aac": write_audio(tmp / "speech.aac", "adts", "aac", SPEECH, bit_rate=32000),
        # A VBR MP3 without the Xing tag (as streamed): FFmpeg's guess from the first frames'
        # bitrate is 4.96 s.
        "vbr-mp3-no-xing": write_audio(
            tmp / "speech.mp3", "mp3", "libmp3lame", SPEECH, options={"write_xing": "0"}, vbr_quality=5
        ),
        # A live WebM (as MediaRecorder writes) has no Duration element and no cues.
        "live-webm-opus": write_audio(tmp / "speech.webm", "webm", "libopus", SPEECH, options={"live": "1"}),
    }


@pytest.mark.parametrize("name", ["adts-aac", "vbr-mp3-no-xing", "live-webm-opus"])
def test_a_file_without_a_stated_duration_still_gets_its_real_one(name: str, without_duration) -> None:
    path = without_duration[name]
    info = probe(path)
    # Counted from the packets: the encoder's priming (ADTS AAC: 1024 samples, MP3: LAME's delay)
    # and the last frame's padding are in it, since no header says to trim them.
    assert info.duration_seconds == pytest.approx(SECONDS, abs=3 * MP3_FRAME)
    pcm = decoded(path)
    # The same, but for the 6.5 ms of Opus pre-skip the decoder drops and the packets count.
    assert len(pcm) / RATE == pytest.approx(info.duration_seconds, abs=0.007)
    # Nor is the codec delay trimmed: ADTS keeps AAC's 1024 priming samples, an MP3 without a LAME
    # tag the encoder's 576 and the decoder's 529 (69 ms); Opus's pre-skip is in its header and goes.
    lag, correlation = best_alignment(SPEECH, pcm, max_lag=int(0.08 * RATE))
    assert abs(lag - {"adts-aac": 1024, "vbr-mp3-no-xing": 1105, "live-webm-opus": 0}[name]) <= 1
    assert correlation > 0.99, (lag, correlation)


def tone(seconds: float, rate: int, channels: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    return np.repeat(mono.reshape(-1, 1), channels, axis=1)


def test_concatenated_mp3s_that_change_rate_and_channels_decode_whole(tmp_path: Path) -> None:
    # `cat a.mp3 b.mp3`: the second file's ID3 tag sits between the two as one undecodable packet,
    # and then rate and channels change; players skip the tag and follow the change.
    first = write_audio(tmp_path / "a.mp3", "mp3", "libmp3lame", tone(2, 16000, 1), 16000, "mono")
    second = write_audio(tmp_path / "b.mp3", "mp3", "libmp3lame", tone(2, 44100, 2, 330), 44100, "stereo")
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    assert probe(joined).duration_seconds == pytest.approx(4.0, abs=0.2)
    pcm = decoded(joined)
    assert len(pcm) / RATE == pytest.approx(4.0, abs=0.2)
    # The first file's 440 Hz, then the second's 330 Hz at full level (its channels are the same).
    for second, hz in ((pcm[:RATE], 440), (pcm[-RATE:], 330)):
        spectrum = np.abs(np.fft.rfft(second.astype(np.float64)))
        assert np.argmax(spectrum) == pytest.approx(hz, abs=2)  # 1 s of samples: 1 Hz per bin
        assert np.abs(second).max() > 6000


def _png() -> bytes:
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = 16, 16, "rgb24"
    frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), dtype=np.uint8), format="rgb24")
    return b"".join(bytes(p) for p in codec.encode(frame) + codec.encode(None))


def _video_only(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _wav_bytes(frames: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(SPEECH[:frames].tobytes())
    return buffer.getvalue()


NOT_AUDIO = {
    "text": (lambda p: p.write_text("Minutes of the meeting.\nNot audio at all.\n" * 50), "not an audio file"),
    # FFmpeg reads WebVTT as a subtitle stream: a file it opens, without audio in it.
    "webvtt-subtitles": (lambda p: p.write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n"), "no audio stream"),
    "png": (lambda p: p.write_bytes(_png()), "no audio stream"),
    "empty": (lambda p: p.write_bytes(b""), "not an audio file"),
    "truncated-wav-header": (lambda p: p.write_bytes(_wav_bytes(RATE)[:20]), "not an audio file"),
    "wav-without-samples": (lambda p: p.write_bytes(_wav_bytes(0)), "no decodable audio"),
    "video-only-mp4": (_video_only, "no audio stream"),
}


@pytest.mark.parametrize("name", list(NOT_AUDIO))
def test_a_file_that_is_not_audio_is_unsupported_audio_with_a_reason(name: str, tmp_path: Path) -> None:
    write, reason = NOT_AUDIO[name]
    path = tmp_path / "upload.bin"
    write(path)
    with pytest.raises(UnsupportedAudio, match=reason):
        probe(path)
    with pytest.raises(UnsupportedAudio, match=reason):
        list(decode_pcm(path))


def test_a_missing_file_is_the_servers_problem_not_unsupported_audio(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        probe(tmp_path / "gone.wav")
    assert not isinstance(raised.value, UnsupportedAudio)
    with pytest.raises(FileNotFoundError):
        list(decode_pcm(tmp_path / "gone.wav"))


def _damage(data: bytes, seed: int) -> bytes:
    """Bytes overwritten somewhere between 20 % and 80 % of the file: random, zeros, short or long."""
    rng = random.Random(seed)
    out = bytearray(data)
    size = rng.choice([16, 256, 2048, len(data) // 4])
    start = rng.randrange(len(data) // 5, len(data) * 4 // 5)
    end = min(start + size, len(data))
    out[start:end] = rng.randbytes(end - start) if seed % 2 else bytes(end - start)
    return bytes(out)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_a_damaged_middle_decodes_what_it_can_or_is_unsupported_audio(
    fmt: Format, encoded: dict[str, Path], tmp_path: Path
) -> None:
    data = encoded[fmt.name].read_bytes()
    path = tmp_path / "damaged"
    for seed in range(12):
        path.write_bytes(_damage(data, seed))
        for read in (probe, lambda p: list(decode_pcm(p))):
            try:
                read(path)
            except UnsupportedAudio:
                pass  # anything else propagates and fails the test


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.muxer in ("mp3", "flac", "ogg", "wav")], ids=lambda f: f.name)
def test_a_small_damage_costs_a_few_frames_not_the_file(fmt: Format, encoded: dict[str, Path], tmp_path: Path) -> None:
    # 600 random bytes at 60 % (0.15 s of the MP3, whose decoder refuses the damaged frames): in
    # these framed formats decoding resumes at the next frame (Ogg: the next page, and FFmpeg's Ogg
    # muxer writes a page a second). What is lost is dropped, not replaced by silence.
    data = bytearray(encoded[fmt.name].read_bytes())
    at = len(data) * 3 // 5
    data[at : at + 600] = random.Random(1).randbytes(600)
    path = tmp_path / "damaged"
    path.write_bytes(bytes(data))
    pcm = decoded(path)
    lost = 1.0 if fmt.muxer == "ogg" else 0.25
    assert len(pcm) >= len(SPEECH) - lost * RATE
    assert best_alignment(SPEECH[: RATE * 3], pcm[: RATE * 3], max_lag=RATE // 20)[1] > fmt.min_correlation


# --- a 60-minute file -----------------------------------------------------------------------------

LONG_RATE, LONG_MINUTES = 8000, 60  # telephone-rate FLAC: small to write, and decoding resamples it


@pytest.fixture(scope="session")
def sixty_minutes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 minutes of tone, silence and noise in 10-second stretches, written 10 s at a time."""
    path = tmp_path_factory.mktemp("long") / "sixty_minutes.flac"
    rng = np.random.default_rng(0)
    step = LONG_RATE * 10
    t = np.arange(step) / LONG_RATE
    with av.open(str(path), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=LONG_RATE)
        stream.codec_context.layout = "mono"
        for i, start in enumerate(range(0, LONG_RATE * 60 * LONG_MINUTES, step)):
            kind = i % 3
            if kind == 0:
                chunk = 6000 * np.sin(2 * np.pi * (200 + 10 * (i % 50)) * t)
            elif kind == 1:
                chunk = np.zeros(step)
            else:
                chunk = rng.normal(0, 2000, step)
            frame = av.AudioFrame.from_ndarray(chunk.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts = LONG_RATE, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def test_sixty_minutes_decode_in_bounded_memory(sixty_minutes: Path) -> None:
    pcm_bytes = LONG_MINUTES * 60 * RATE * 2  # 115 MB, were it held
    assert probe(sixty_minutes).duration_seconds == LONG_MINUTES * 60
    process = psutil.Process()
    baseline = peak = process.memory_info().rss
    total = 0
    for i, chunk in enumerate(decode_pcm(sixty_minutes)):
        total += len(chunk)
        if i % 10 == 0:  # every 1.4 s of audio: a decoder that kept its output would show
            peak = max(peak, process.memory_info().rss)
    assert total == pcm_bytes
    assert peak - baseline < 30_000_000, f"RSS grew {(peak - baseline) / 1e6:.1f} MB"


# --- what a file claims is not what it holds ------------------------------------------------------


def flac_claiming(pcm: bytes, seconds: int) -> bytes:
    """A real FLAC of ``pcm`` (16 kHz mono s16le) whose STREAMINFO says it holds ``seconds`` of audio."""
    out = io.BytesIO()
    samples = np.frombuffer(pcm, dtype="<i2")
    with av.open(out, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=RATE)
        stream.codec_context.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, 0
        for packet in stream.encode(frame) + stream.encode(None):
            container.mux(packet)
    data = bytearray(out.getvalue())
    # "fLaC", a 4-byte block header, then STREAMINFO: 10 bytes of block and frame sizes, then 64
    # bits of sample rate (20), channels - 1 (3), bits per sample - 1 (5) and total samples (36).
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0
    packed = int.from_bytes(data[18:26], "big")
    data[18:26] = ((packed & ~((1 << 36) - 1)) | seconds * RATE).to_bytes(8, "big")
    return bytes(data)


def test_a_flac_whose_header_claims_ten_hours_is_measured_at_its_real_length(tmp_path: Path) -> None:
    path = tmp_path / "lying.flac"
    path.write_bytes(flac_claiming(SPEECH.tobytes(), 10 * 3600))
    with av.open(str(path)) as container:  # what the header claims, as FFmpeg reads it
        assert container.streams.audio[0].duration == 10 * 3600 * RATE
    assert probe(path).duration_seconds == round(SECONDS, 3)
    assert probe(path, max_seconds=SECONDS + 0.01).duration_seconds == round(SECONDS, 3)  # the claim is not the bound


def test_decoding_stops_at_the_limit(sixty_minutes: Path, encoded: dict[str, Path]) -> None:
    with pytest.raises(AudioTooLong, match="longer than the limit of 600 s"):
        probe(sixty_minutes, max_seconds=600)
    with pytest.raises(AudioTooLong):
        probe(encoded["mp3"], max_seconds=6)  # 6.13 s
    assert isinstance(AudioTooLong(1), UnsupportedAudio)  # callers that know only UnsupportedAudio refuse it too
