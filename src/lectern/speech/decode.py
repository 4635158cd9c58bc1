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

# Raw MP3 and ADTS AAC have no duration in a header (an MP3's Xing tag is optional): FFmpeg
# guesses one from the bitrate, 20 % off for a VBR MP3. Their packets are counted instead.
_GUESSED_DURATION = frozenset({"mp3", "aac"})


class UnsupportedAudio(ValueError):
    """Not a file this server can decode as audio; the message says why, for the client."""


@dataclass(frozen=True, slots=True)
class AudioInfo:
    container: str  # FFmpeg's name of the format, e.g. "wav", "mp3", "ogg", "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str  # e.g. "pcm_s16le", "mp3", "opus", "aac"
    sample_rate: int
    channels: int
    duration_seconds: float


def probe(path: Path) -> AudioInfo:
    """Identify the file and measure its duration; the container's own figure is trusted when it
    has one, otherwise the packets' durations are added up (demuxed, not decoded), and as a last
    resort the audio is decoded (fast: no recognition) and counted."""
    with _open(path) as container:
        stream = _audio_stream(container, path)
        duration = None
        if container.format.name not in _GUESSED_DURATION:
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
        info = AudioInfo(
            container=container.format.name,
            codec=stream.codec_context.name,
            sample_rate=stream.codec_context.sample_rate or 0,
            channels=stream.codec_context.channels or 0,
            duration_seconds=0.0,
        )
        if not duration:
            duration = _packet_seconds(container, stream)
    if not duration:
        duration = sum(len(chunk) for chunk in decode_pcm(path)) / (2 * ENGINE_RATE)
    elif next(decode_pcm(path), None) is None:  # a container that claims a duration must hold audio
        raise UnsupportedAudio("the file holds no decodable audio")
    return AudioInfo(info.container, info.codec, info.sample_rate, info.channels, round(duration, 3))


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
    with _open(path) as container:
        stream = _audio_stream(container, path)
        resampler, source = None, None
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    continue  # a damaged packet, or an ID3 tag between concatenated MP3s: skipped, as players do
                for frame in frames:
                    # A resampler takes one input format: a file may change rate or channels midway.
                    if (frame.format.name, frame.layout.name, frame.sample_rate) != source:
                        if resampler is not None:
                            yield from _pcm(resampler.resample(None))
                        resampler = av.AudioResampler(format="s16", layout="mono", rate=ENGINE_RATE)
                        source = (frame.format.name, frame.layout.name, frame.sample_rate)
                    yield from _pcm(resampler.resample(frame))
            if resampler is not None:
                yield from _pcm(resampler.resample(None))
        except (av.error.FFmpegError, ValueError) as exc:
            raise UnsupportedAudio(f"the audio cannot be decoded: {exc}") from None
        if resampler is None:
            raise UnsupportedAudio("the file holds no decodable audio")


def _pcm(frames: list[av.AudioFrame]) -> Iterator[bytes]:
    for frame in frames:
        yield frame.to_ndarray().tobytes()


def _packet_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float:
    seconds = 0.0
    try:
        for packet in container.demux(stream):
            if packet.duration and packet.time_base is not None:
                seconds += float(packet.duration * packet.time_base)
    except av.error.FFmpegError as exc:
        raise UnsupportedAudio(f"the audio cannot be read: {exc}") from None
    return seconds


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
