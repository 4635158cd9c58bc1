"""Audio files of any common container and codec (WAV, FLAC, MP3, Ogg/Opus, M4A/AAC, WebM...),
read with PyAV as a stream of the engine's 16 kHz mono s16le: memory stays bounded by a few
codec frames, whatever the file's length."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error

from lectern.speech.audio import ENGINE_RATE

# Longest audio a file may hold unless the caller says otherwise (LECTERN_MAX_FILE_SECONDS).
DEFAULT_MAX_SECONDS = 10 * 3600.0


class UnsupportedAudio(ValueError):
    """Not a file this server can decode as audio; the message says why, for the client."""


class AudioTooLong(UnsupportedAudio):
    """The file decodes to more audio than the limit: decoding stopped there."""

    def __init__(self, max_seconds: float) -> None:
        super().__init__(f"the audio is longer than the limit of {max_seconds:g} s")
        self.max_seconds = max_seconds


@dataclass(frozen=True, slots=True)
class AudioInfo:
    container: str  # FFmpeg's name of the format, e.g. "wav", "mp3", "ogg", "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str  # e.g. "pcm_s16le", "mp3", "opus", "aac"
    sample_rate: int
    channels: int
    duration_seconds: float


def probe(path: Path, max_seconds: float = DEFAULT_MAX_SECONDS) -> AudioInfo:
    """Identify the file and measure its duration by decoding it (fast: no recognition, no
    resampling). A container's header and its packets' timestamps say what the file claims, not
    what it holds: a 51 KB FLAC can claim 10 hours, an MP4 any length per AAC frame. Decoding
    stops once it passes ``max_seconds`` (AudioTooLong), so a file that does hold that much costs
    no more than the limit."""
    with _open(path) as container:
        stream = _audio_stream(container, path)
        container_name, codec = container.format.name, stream.codec_context.name
        sample_rate, channels = stream.codec_context.sample_rate or 0, stream.codec_context.channels or 0
    samples: dict[int, int] = {}  # decoded samples per sample rate (a file may change rate midway)
    seconds = 0.0
    for frame in _frames(path):
        if frame.sample_rate <= 0:
            raise UnsupportedAudio("the audio has no sample rate")
        samples[frame.sample_rate] = samples.get(frame.sample_rate, 0) + frame.samples
        seconds += frame.samples / frame.sample_rate
        if seconds > max_seconds:
            raise AudioTooLong(max_seconds)
    if not samples:
        raise UnsupportedAudio("the file holds no decodable audio")
    duration = sum(count / rate for rate, count in samples.items())  # exact per rate, not a running float sum
    return AudioInfo(container_name, codec, sample_rate, channels, round(duration, 3))


def decode_pcm(path: Path, start_seconds: float = 0.0) -> Iterator[bytes]:
    """The file's first audio stream as 16 kHz mono s16le chunks (one per codec frame or so),
    from ``start_seconds`` on (a resumed job skips what it has done). A damaged packet is skipped,
    as players do (its audio is missing, not replaced by silence); UnsupportedAudio when nothing
    decodes, or when the file breaks off in a way FFmpeg cannot pass."""
    skip_bytes = max(0, round(start_seconds * ENGINE_RATE)) * 2
    for chunk in _decode(path):
        if skip_bytes:
            dropped = min(skip_bytes, len(chunk))
            skip_bytes -= dropped
            chunk = chunk[dropped:]
        if chunk:
            yield chunk


def _decode(path: Path) -> Iterator[bytes]:
    resampler, source = None, None
    for frame in _frames(path):
        # A resampler takes one input format: a file may change rate or channels midway.
        if (frame.format.name, frame.layout.name, frame.sample_rate) != source:
            if resampler is not None:
                yield from _pcm(resampler.resample(None))
            resampler = av.AudioResampler(format="s16", layout="mono", rate=ENGINE_RATE)
            source = (frame.format.name, frame.layout.name, frame.sample_rate)
        yield from _pcm(_resampled(resampler, frame))
    if resampler is None:
        raise UnsupportedAudio("the file holds no decodable audio")
    yield from _pcm(_resampled(resampler, None))


def _resampled(resampler: av.AudioResampler, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
    try:
        return resampler.resample(frame)
    except (av.error.FFmpegError, ValueError) as exc:
        raise UnsupportedAudio(f"the audio cannot be decoded: {exc}") from None


def _frames(path: Path) -> Iterator[av.AudioFrame]:
    """The decoded frames of the file's first audio stream, as FFmpeg makes them. A damaged packet
    is skipped, as players do; UnsupportedAudio when the file breaks off in a way FFmpeg cannot pass."""
    with _open(path) as container:
        stream = _audio_stream(container, path)
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    continue  # a damaged packet, or an ID3 tag between concatenated MP3s: skipped, as players do
                yield from frames
        except (av.error.FFmpegError, ValueError) as exc:
            raise UnsupportedAudio(f"the audio cannot be decoded: {exc}") from None


def _pcm(frames: list[av.AudioFrame]) -> Iterator[bytes]:
    for frame in frames:
        yield frame.to_ndarray().tobytes()


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except (FileNotFoundError, IsADirectoryError):
        raise  # the server's problem, not the client's file
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError):
        raise UnsupportedAudio("not an audio file this server can read (WAV, FLAC, MP3, Ogg, M4A, WebM...)") from None


def _audio_stream(container: av.container.InputContainer, path: Path) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise UnsupportedAudio("the file has no audio stream")
    return container.streams.audio[0]
