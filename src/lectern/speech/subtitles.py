"""Transcripts as SubRip (srt), WebVTT (vtt) and plain text.

A segment can run 30 s; a subtitle cue should not, so cues are cut at word boundaries to at most
two lines' worth of text and a few seconds each, timed by their words.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAX_CUE_CHARS = 84  # two lines of 42, the usual broadcast limit
MAX_CUE_SECONDS = 7.0


@dataclass(frozen=True, slots=True)
class TimedWord:
    text: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class TimedText:
    """A segment: its display text, its span, and its words (the words may be empty)."""

    text: str
    start: float
    end: float
    words: Sequence[TimedWord] = ()


def cues(segments: Sequence[TimedText]) -> Iterator[tuple[float, float, str]]:
    for segment in segments:
        if len(segment.text) <= MAX_CUE_CHARS and segment.end - segment.start <= MAX_CUE_SECONDS:
            yield segment.start, segment.end, segment.text
            continue
        # Cut by the words' times; the cue's text is the display text's tokens, which match the
        # words one for one (capitals and a final stop do not change the count).
        tokens = segment.text.split()
        if len(tokens) != len(segment.words):
            yield segment.start, segment.end, segment.text
            continue
        first = 0
        for i in range(1, len(tokens) + 1):
            last = i == len(tokens)
            text = " ".join(tokens[first:i + 1]) if not last else ""
            too_long = not last and (len(text) > MAX_CUE_CHARS
                                     or segment.words[i].end - segment.words[first].start > MAX_CUE_SECONDS)
            if last or too_long:
                yield segment.words[first].start, segment.words[i - 1].end, " ".join(tokens[first:i])
                first = i


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(segments: Sequence[TimedText]) -> str:
    blocks = [f"{n}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n"
              for n, (start, end, text) in enumerate(cues(segments), 1)]
    return "\n".join(blocks)


def to_vtt(segments: Sequence[TimedText]) -> str:
    blocks = [f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n" for start, end, text in cues(segments)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_txt(segments: Sequence[TimedText]) -> str:
    return "".join(f"{segment.text}\n" for segment in segments)
