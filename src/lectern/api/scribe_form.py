"""The multipart form of ElevenLabs' batch speech-to-text, read into a ``ScribeRequest``.

Every field the SDK can send (``speech_to_text/raw_client.py``) is either honoured or refused with
a 400 that says why, all before anything is stored. ``REQUEST_BODY`` documents the form in OpenAPI.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

from lectern.api.scribe_answer import EXPORTS
from lectern.api.scribe_errors import invalid
from lectern.api.uploads import Upload
from lectern.json_input import JsonInputError, parse_json
from lectern.param_values import boolean as spelled_boolean
from lectern.param_values import is_language_code

MAX_MODEL_ID = 200  # the transcriptions table's column
MAX_KEYTERMS, MAX_KEYTERM_CHARS, MAX_KEYTERM_WORDS = 1000, 50, 5  # ElevenLabs' documented limits
_KEYTERM_FORBIDDEN = re.compile(r"[<>{}\[\]\\]")
_EXPORT_FORMATS = ("docx", "html", "pdf", "segmented_json", "srt", "txt")  # all ElevenLabs knows

# The form as OpenAPI shows it: the fields that matter; the route reads the body itself.
_FIELDS_DOC: dict[str, dict[str, Any]] = {
    "model_id": {"type": "string", "description": "Any alias (e.g. `scribe_v1`, `scribe_v2`)."},
    "file": {"type": "string", "format": "binary", "description": "The audio (any common container)."},
    "file_format": {"type": "string", "enum": ["pcm_s16le_16", "other"], "default": "other",
                    "description": "`pcm_s16le_16`: raw 16 kHz mono 16-bit little-endian PCM, no header."},
    "language_code": {"type": "string", "description": "What the model serves: English (`en`, `eng`, `en-US`...) on the embedded models."},
    "timestamps_granularity": {"type": "string", "enum": ["none", "word", "character"], "default": "word"},
    "tag_audio_events": {"type": "boolean", "description": "Accepted; no audio events are detected."},
    "no_verbatim": {"type": "boolean", "description": "Drop fillers and immediate repetitions."},
    "keyterms": {"type": "array", "items": {"type": "string"},
                 "description": "Accepted and recorded; batch recognition does not use them yet."},
    "diarize": {"type": "boolean", "description": "Only `false`: diarization is not available."},
    "num_speakers": {"type": "integer", "description": "Only 1: diarization is not available."},
    "additional_formats": {"type": "string", "description": "JSON list; `srt` and `txt` are rendered."},
    "webhook": {"type": "boolean", "description": "Only `false`: the answer always carries the transcript."},
}
REQUEST_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["model_id", "file"], "properties": _FIELDS_DOC,
    "description": "The fields ElevenLabs' SDKs send; the others are accepted or refused with a 400 saying why.",
}}}}


@dataclasses.dataclass(frozen=True, slots=True)
class ScribeRequest:
    model_id: str
    language_code: str | None  # whether the model serves these is the job's check
    secondary_language_codes: tuple[str, ...]
    granularity: Literal["none", "word", "character"]
    pcm: bool
    no_verbatim: bool
    keyterms: tuple[str, ...]
    exports: tuple[str, ...]


class _Form:
    def __init__(self, upload: Upload) -> None:
        self.upload = upload

    def text(self, name: str) -> str | None:
        value = self.upload.fields.get(name)
        return value if value not in (None, "") else None

    def boolean(self, name: str, default: bool = False) -> bool:
        return boolean(self.text(name), name, default)

    def number(self, name: str, low: float, high: float, integer: bool = False) -> float | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise invalid(f"{name} must be {kind}, not {raw[:50]!r}", name) from None
        if not low <= value <= high:  # NaN fails too
            raise invalid(f"{name} must be between {low:g} and {high:g}, not {raw[:50]}", name)
        return value

    def json(self, name: str) -> Any:
        """A JSON-encoded field; the SDK sends ``null`` for the ones the caller left out."""
        raw = self.text(name)
        if raw is None:
            return None
        try:
            return parse_json(raw)
        except JsonInputError as exc:
            raise invalid(f"{name} must be JSON: {exc}", name) from None

    def refuse_true(self, name: str, why: str) -> None:
        if self.boolean(name):
            raise invalid(f"{name}=true is not supported: {why}", name)

    def refuse_given(self, name: str, why: str) -> None:
        """A JSON-or-text field that must ask for nothing (absent, ``null``, ``[]``)."""
        raw = self.text(name)
        try:
            value = parse_json(raw) if raw is not None else None
        except JsonInputError:
            value = raw
        if value not in (None, [], {}, ""):
            raise invalid(f"{name} is not supported: {why}", name)


def boolean(raw: str | None, name: str, default: bool) -> bool:
    """A boolean field or query parameter; an empty one is refused (form fields come here as None)."""
    if raw is None:
        return default
    value = spelled_boolean(raw)
    if value is None:
        raise invalid(f"{name} must be true or false, not {raw[:50]!r}", name)
    return value


def _language(code: str, name: str) -> None:
    if not is_language_code(code):
        raise invalid(f"{name} must be an ISO 639-1 or ISO 639-3 code, not {code[:50]!r}", name)


def parse_form(upload: Upload) -> ScribeRequest:
    """Every field the SDK can send, checked before anything is stored."""
    form = _Form(upload)
    model_id = form.text("model_id")
    if model_id is None:
        raise invalid("model_id is required (e.g. scribe_v1)", "model_id")
    if len(model_id) > MAX_MODEL_ID or not model_id.isprintable():
        raise invalid(f"model_id must be at most {MAX_MODEL_ID} printable characters", "model_id")
    for name in ("source_url", "cloud_storage_url"):
        if form.text(name) is not None:
            raise invalid(f"{name} is not supported: this server does not fetch audio from the network; "
                          "upload the audio itself as 'file'", name)

    language = form.text("language_code")
    if language is not None:
        _language(language, "language_code")
    for code in upload.getlist("secondary_language_codes"):
        if code:
            _language(code, "secondary_language_codes")

    granularity = form.text("timestamps_granularity") or "word"
    if granularity not in ("none", "word", "character"):
        raise invalid(f"timestamps_granularity must be none, word or character, not {granularity[:50]!r}",
                      "timestamps_granularity")
    file_format = form.text("file_format") or "other"
    if file_format not in ("pcm_s16le_16", "other"):
        raise invalid(f"file_format must be pcm_s16le_16 or other, not {file_format[:50]!r}", "file_format")

    # Speakers and channels: one voice, one (mixed) channel.
    form.refuse_true("diarize", "speaker diarization is not available on this server")
    speakers = form.number("num_speakers", 1, 32, integer=True)
    if speakers is not None and speakers > 1:
        raise invalid(f"num_speakers={int(speakers)} asks for speaker separation, which this server does not do "
                      "(no diarization); leave it out or send 1", "num_speakers")
    if form.text("diarization_threshold") is not None:
        raise invalid("diarization_threshold can only be set with diarize=true, and diarization is not available "
                      "on this server", "diarization_threshold")
    form.refuse_true("detect_speaker_roles", "it needs diarization, which is not available on this server")
    form.boolean("use_speaker_library")  # only meaningful with diarization: accepted, no effect
    form.refuse_true("use_multi_channel", "channels are mixed into one transcript on this server")
    style = form.text("multichannel_output_style")
    if style is not None and style not in ("separate", "combined"):
        raise invalid(f"multichannel_output_style must be separate or combined, not {style[:50]!r}",
                      "multichannel_output_style")

    # Asynchronous delivery: the answer always carries the transcript.
    form.refuse_true("webhook", "this server answers with the transcript itself; poll "
                     "GET /api/v1/speech-services/transcriptions or use its webhooks instead")
    if form.text("webhook_id") is not None:
        raise invalid("webhook_id is only valid with webhook=true, which this server does not support", "webhook_id")
    form.json("webhook_metadata")  # only delivered with a webhook: accepted when it is JSON

    # Features the engine does not have.
    form.refuse_given("entity_detection", "entity detection is not available on this server")
    form.refuse_given("entity_redaction", "entity redaction is not available on this server")
    mode = form.text("entity_redaction_mode")
    if mode is not None and mode not in ("redacted", "entity_type", "enumerated_entity_type"):
        raise invalid("entity_redaction_mode must be redacted, entity_type or enumerated_entity_type",
                      "entity_redaction_mode")
    if form.text("transcript_edit") is not None:
        raise invalid("transcript_edit is not supported: this server does not edit transcripts", "transcript_edit")
    numbers = form.text("numbers_format")
    if numbers == "digits":
        raise invalid("numbers_format=digits is not supported: numbers are written as words", "numbers_format")
    if numbers not in (None, "words"):
        raise invalid(f"numbers_format must be digits or words, not {numbers[:50]!r}", "numbers_format")

    # Sampling knobs of a generative model: the engine is deterministic, so they change nothing.
    form.number("temperature", 0.0, 2.0)
    form.number("seed", 0, 2_147_483_647, integer=True)
    form.boolean("tag_audio_events", True)  # accepted: the engine detects no audio events, none are tagged
    form.boolean("enable_logging", True)  # a query parameter; tolerated in the form as well

    return ScribeRequest(
        model_id=model_id,
        language_code=language,
        secondary_language_codes=tuple(code for code in upload.getlist("secondary_language_codes") if code),
        granularity=granularity,  # type: ignore[arg-type]
        pcm=file_format == "pcm_s16le_16",
        no_verbatim=form.boolean("no_verbatim"),
        keyterms=_keyterms(upload.getlist("keyterms")),
        exports=_exports(form.json("additional_formats")),
    )


def _keyterms(values: list[str]) -> tuple[str, ...]:
    terms = [v for v in values if v != ""]
    if len(terms) > MAX_KEYTERMS:
        raise invalid(f"at most {MAX_KEYTERMS} keyterms are allowed, {len(terms)} were given", "keyterms")
    for term in terms:
        if not term.strip() or len(term) > MAX_KEYTERM_CHARS:
            raise invalid(f"keyterms: each term has 1 to {MAX_KEYTERM_CHARS} characters, not {term[:60]!r}",
                          "keyterms")
        if len(term.split()) > MAX_KEYTERM_WORDS:
            raise invalid(f"keyterms: each term holds at most {MAX_KEYTERM_WORDS} words, not {term!r}", "keyterms")
        if _KEYTERM_FORBIDDEN.search(term):
            raise invalid(f"keyterms: a term may not contain < > {{ }} [ ] or \\, as {term!r} does", "keyterms")
    return tuple(terms)


def _exports(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise invalid("additional_formats must be a JSON list of objects such as {\"format\": \"srt\"}",
                      "additional_formats")
    formats = []
    for item in value:
        name = item.get("format")
        if name not in EXPORTS:
            known = name in _EXPORT_FORMATS
            raise invalid(f"additional_formats: {name!r} is {'not rendered by this server' if known else 'unknown'};"
                          f" this server renders {', '.join(EXPORTS)}", "additional_formats")
        formats.append(name)
    return tuple(formats)

