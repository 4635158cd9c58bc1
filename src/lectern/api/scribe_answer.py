"""The answer of ElevenLabs' batch speech-to-text: a finished job's segments as a Scribe transcript.

Word, spacing and (with ``timestamps_granularity=character``) character entries with times in
milliseconds, each word's ``logprob`` from its confidence, and the ``additional_formats`` this
server renders; the pydantic models document that shape (the route answers with plain JSON).
Fields follow the SDK's ``SpeechToTextChunkResponseModel``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from lectern.scribe_words import word_entries
from lectern.speech.models import iso639_3
from lectern.speech.subtitles import TimedText, TimedWord, to_srt, to_txt
from lectern.speech.text import as_sentence, remove_disfluencies
from lectern.store.batch_models import FileRow, TranscriptionRow, TranscriptionSegmentRow

if TYPE_CHECKING:
    from lectern.api.scribe_form import ScribeRequest

EXPORTS = {  # additional_formats this server renders: format -> (extension, media type, renderer)
    "srt": ("srt", "application/x-subrip", to_srt),
    "txt": ("txt", "text/plain", to_txt),
}


# -- the documented shapes (OpenAPI only: the route answers with JSONResponse) ---------------------


class ScribeCharacter(BaseModel):
    text: str
    start: float
    end: float


class ScribeWord(BaseModel):
    text: str
    start: float
    end: float
    type: Literal["word", "spacing", "audio_event"]
    speaker_id: str | None = None
    logprob: float = Field(description="log of the word's confidence; 0 for spacing")
    characters: list[ScribeCharacter] | None = Field(default=None, description="with timestamps_granularity=character")


class ScribeAdditionalFormat(BaseModel):
    requested_format: str
    file_extension: str
    content_type: str
    is_base64_encoded: bool
    content: str


class ScribeTranscript(BaseModel):
    language_code: str = Field(description="ISO 639-3 where known (`eng`, `fra`...), else ISO 639-1: the language "
                               "asked for, or the one detected by a multilingual model")
    language_probability: float = Field(description="1 for a language asked for (or an English-only model); for a "
                                        "detected one, the share of the words decoded in it")
    text: str
    words: list[ScribeWord]
    channel_index: int | None = None
    additional_formats: list[ScribeAdditionalFormat] | None = None
    transcription_id: str = Field(description="The platform's transcription job id")
    entities: list[Any] | None = None
    audio_duration_secs: float | None = None


# -- the answer ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Word:
    text: str  # as written in the transcript (capitals, final stop)
    start: float
    end: float
    confidence: float | None

    @property
    def logprob(self) -> float:
        return _logprob(self.confidence)


def _segment_words(segment: TranscriptionSegmentRow, no_verbatim: bool) -> tuple[str, list[_Word]]:
    """The segment's text and its words, written as the text is: the stored transcript is the raw
    words made a sentence, token for token, so each word takes its token (``The``, ``dog.``)."""
    words = list(segment.words)
    text = segment.transcript
    if no_verbatim:
        words = remove_disfluencies(words, lambda w: w["word"])
        text = as_sentence(" ".join(w["word"] for w in words), True, True) if words else ""
    tokens = text.split(" ") if text else []
    if len(tokens) != len(words):  # not token for token (never expected): the engine's words as they are
        tokens = [w["word"] for w in words]
    return text, [_Word(t, w["startSeconds"], w["endSeconds"], w.get("confidence")) for t, w in zip(tokens, words)]


def _logprob(confidence: float | None) -> float:
    if confidence is None:
        return 0.0
    return min(0.0, round(math.log(min(max(confidence, 1e-6), 1.0)), 4))


def _words_payload(words: Sequence[_Word], granularity: str) -> list[dict[str, Any]]:
    """Word and spacing entries whose texts concatenate to the transcript, times in milliseconds."""
    if granularity == "none":
        return []
    rounded = [dataclasses.replace(w, start=round(w.start, 3), end=round(w.end, 3)) for w in words]
    characters = granularity == "character"
    return word_entries(rounded, word_characters=characters, spacing_characters=characters)


def answer(row: TranscriptionRow, segments: list[TranscriptionSegmentRow], file: FileRow,
           scribe: ScribeRequest) -> dict[str, Any]:
    texts: list[str] = []
    words: list[_Word] = []
    timed: list[TimedText] = []
    for segment in segments:
        text, segment_words = _segment_words(segment, scribe.no_verbatim)
        if not text:
            continue
        texts.append(text)
        words.extend(segment_words)
        timed.append(TimedText(text, segment.start_seconds, segment.end_seconds,
                               [TimedWord(w.text, w.start, w.end) for w in segment_words]))
    exports = None
    if scribe.exports:
        exports = []
        for name in scribe.exports:
            extension, media_type, render = EXPORTS[name]
            exports.append({"requested_format": name, "file_extension": extension, "content_type": media_type,
                            "is_base64_encoded": False, "content": render(timed)})
    return {
        "language_code": iso639_3(row.language_code),
        "language_probability": float(row.options.get("language_probability", 1.0)),
        "text": " ".join(texts),
        "words": _words_payload(words, scribe.granularity),
        "channel_index": None,
        "additional_formats": exports,
        "transcription_id": str(row.id),
        "entities": None,
        "audio_duration_secs": file.duration_seconds,
    }
