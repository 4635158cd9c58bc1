"""ElevenLabs Scribe realtime (``/v1/speech-to-text/realtime``): frames in, frames out.

Translation only; the stream itself is ``StreamSession``. Wire details follow
shared/spec/elevenlabs-realtime.md: every error is ``{"message_type", "error"}`` followed by a
close with code 1000 whose reason is the error type.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from lectern.auth import keys
from lectern.auth.principal import AuthError, Principal
from lectern.auth.scopes import SESSIONS_WRITE
from lectern.json_input import JsonInputError, parse_json
from lectern.param_values import is_language_code
from lectern.realtime import admission
from lectern.realtime.config import StreamConfig, VadSettings
from lectern.realtime.errors import ErrorKind, StreamError, database_required
from lectern.realtime.protocols.params import ParamError, QueryParams, model_alias
from lectern.realtime.protocols.sockets import client_info, close_quietly, disconnected
from lectern.realtime.segment import Segment
from lectern.realtime.session import AudioIn, ClientEvent, CommitIn, StreamSession
from lectern.scribe_words import word_entries
from lectern.services import Services
from lectern.speech.audio import AudioFormat
from lectern.speech.models import ModelRegistry, normalize_language

AUDIO_FORMATS = {
    **{f"pcm_{rate}": AudioFormat("pcm_s16le", rate) for rate in (8000, 16000, 22050, 24000, 44100, 48000)},
    "ulaw_8000": AudioFormat("ulaw", 8000),
}
MAX_KEYTERMS = 50
MAX_KEYTERM_CHARS = 20
AUTH_FAILED = "You must be authenticated to use this endpoint."

MESSAGE_TYPES = {
    ErrorKind.AUTH: "auth_error",
    ErrorKind.INVALID_REQUEST: "invalid_request",
    ErrorKind.INPUT: "input_error",
    ErrorKind.CHUNK_TOO_LARGE: "chunk_size_exceeded",
    ErrorKind.QUEUE_OVERFLOW: "queue_overflow",
    ErrorKind.COMMIT_THROTTLED: "commit_throttled",
    ErrorKind.RESOURCE_EXHAUSTED: "resource_exhausted",
    # The account's limits: the service's 429s (concurrent requests, request rate) are rate_limited.
    ErrorKind.CONCURRENCY_LIMIT: "rate_limited",
    ErrorKind.RATE_LIMITED: "rate_limited",
    ErrorKind.QUOTA_EXCEEDED: "quota_exceeded",
    ErrorKind.TIME_LIMIT: "session_time_limit_exceeded",
    ErrorKind.ENGINE: "transcriber_error",
    ErrorKind.UNAVAILABLE: "error",  # no specific type: the generic server error
    ErrorKind.INTERNAL: "error",
}
# Accepted and echoed, but this server has no such feature: the client is told with a warning.
_UNSUPPORTED_LISTS = ("secondary_languages", "entity_detection", "entity_redaction")


@dataclass(frozen=True, slots=True)
class ScribeOptions:
    """What only this protocol's rendering needs, beside the core's StreamConfig."""

    include_timestamps: bool
    include_language_detection: bool
    warnings: tuple[str, ...]


def parse_request(
    params: QueryParams, max_metadata_bytes: int, models: ModelRegistry
) -> tuple[StreamConfig, ScribeOptions]:
    model_id = params.one("model_id")
    if not model_id:
        raise ParamError("model_id is required")
    model = models.resolve(model_alias(model_id, "model_id"))
    audio_format_name = params.one("audio_format") or params.one("encoding") or "pcm_16000"
    audio_format = AUDIO_FORMATS.get(audio_format_name)
    if audio_format is None:
        raise ParamError(f"audio_format must be one of {', '.join(AUDIO_FORMATS)}, not {audio_format_name!r}")
    legacy_rate = params.integer("sample_rate", None, 1, 384000)
    if legacy_rate is not None and legacy_rate != audio_format.sample_rate:
        raise ParamError(f"sample_rate {legacy_rate} does not match audio_format {audio_format_name}")
    language = params.one("language_code") or None
    if language is not None and not is_language_code(language):
        raise ParamError(f"language_code must be an ISO 639-1 or 639-3 code, not {language!r}")
    if not models.serves_language(model.name, language):
        raise ParamError(models.language_error(model.name, language or ""))
    if language is None and models.english_only(model.name):
        language = "en"  # an English-only model: nothing to detect
    strategy = (params.one("commit_strategy") or "manual").lower()
    if strategy not in ("manual", "vad"):
        raise ParamError(f"commit_strategy must be manual or vad, not {strategy!r}")
    vad = VadSettings(
        threshold=params.number("vad_threshold", 0.4, 0.1, 0.9),
        silence_seconds=params.number("vad_silence_threshold_secs", 1.5, 0.3, 3.0),
        min_speech_ms=params.integer("min_speech_duration_ms", 100, 50, 2000) or 100,
        min_silence_ms=params.integer("min_silence_duration_ms", 100, 50, 2000) or 100,
    )
    keyterms = params.many("keyterms")
    if len(keyterms) > MAX_KEYTERMS:
        raise ParamError(f"at most {MAX_KEYTERMS} keyterms are allowed, {len(keyterms)} were given")
    for term in keyterms:
        if not term.strip() or len(term) > MAX_KEYTERM_CHARS:
            raise ParamError(f"each keyterm must have 1 to {MAX_KEYTERM_CHARS} characters: {term!r}")
    keepalive = params.integer("keepalive_interval_ms", None, 500, 10000)
    enable_logging = params.boolean("enable_logging", True)
    recording = params.boolean("recording", False)
    if recording and not enable_logging:
        raise ParamError("recording=true cannot be combined with enable_logging=false (zero retention)")
    include_timestamps = params.boolean("include_timestamps", False)
    include_language_detection = params.boolean("include_language_detection", False)
    no_verbatim = params.boolean("no_verbatim", False)
    filter_background_audio = params.boolean("filter_background_audio", False)
    metadata = params.json_object("metadata", max_metadata_bytes)

    warnings = [f"{name} is not supported by this server and was ignored"
                for name in _UNSUPPORTED_LISTS if params.many(name)]
    if filter_background_audio:
        warnings.append("filter_background_audio is not supported by this server and was ignored")
    if keepalive is not None:
        warnings.append("keepalive_interval_ms is accepted, but this server sends no keepalive messages")

    echo: dict[str, Any] = {
        "sample_rate": audio_format.sample_rate,
        "audio_format": audio_format_name,
        "language_code": normalize_language(language),
        "secondary_languages": params.many("secondary_languages"),
        "timestamps_granularity": "word",
        "vad_commit_strategy": strategy == "vad",
        "vad_silence_threshold_secs": vad.silence_seconds,
        "vad_threshold": vad.threshold,
        "min_speech_duration_ms": vad.min_speech_ms,
        "min_silence_duration_ms": vad.min_silence_ms,
        "max_tokens_to_recompute": 5,
        "model_id": model_id,
        "disable_logging": not enable_logging,
        "include_timestamps": include_timestamps,
        "include_language_detection": include_language_detection,
        "filter_background_audio": filter_background_audio,
        "keyterms": keyterms,
        "no_verbatim": no_verbatim,
        "entity_detection": params.many("entity_detection") or None,
        "commit_strategy": strategy,
        "enable_logging": enable_logging,
        "keepalive_interval_ms": keepalive,
        "recording": recording,
    }
    config = StreamConfig(
        protocol="elevenlabs",
        model=model,
        audio_format=audio_format,
        language_code=normalize_language(language),
        commit_strategy=strategy,  # type: ignore[arg-type]
        vad=vad,
        keyterms=tuple(keyterms),
        no_verbatim=no_verbatim,
        keep_transcript=enable_logging,
        recording=recording,
        metadata=metadata,
        echo=echo,
    )
    return config, ScribeOptions(include_timestamps, include_language_detection, tuple(warnings))


async def authenticate(services: Services, websocket: WebSocket) -> Principal:
    token = websocket.query_params.get("token")
    try:
        async with (admission.authentication_attempt(services, client_info(websocket).address),
                    database_required(), services.db() as db):
            if token:
                principal = await keys.redeem_single_use_token(db, token, "realtime_scribe")
            else:
                principal = await keys.authenticate_api_key(db, websocket.headers.get("xi-api-key"))
    except AuthError:
        raise StreamError(ErrorKind.AUTH, AUTH_FAILED) from None
    if not principal.has(SESSIONS_WRITE):
        raise StreamError(ErrorKind.AUTH, f"This API key lacks the {SESSIONS_WRITE} scope.")
    return principal


def words_payload(segment: Segment) -> list[dict[str, Any]]:
    """Word and spacing entries whose texts concatenate to the segment text; words carry characters."""
    return word_entries(segment.words, word_characters=True, spacing_characters=False)


class ScribeEvents:
    """Renders core events as Scribe messages."""

    def __init__(self, websocket: WebSocket, options: ScribeOptions) -> None:
        self.websocket = websocket
        self._options = options
        self.close_reason = ""

    async def send(self, message: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(message))

    async def partial(self, text: str) -> None:
        await self.send({"message_type": "partial_transcript", "text": text})

    async def committed(self, segment: Segment) -> None:
        await self.send({"message_type": "committed_transcript", "text": segment.text})
        # As the service: either option brings this message (clients such as LiveKit's and
        # pipecat's take it as the final whenever they turned one on).
        if self._options.include_timestamps or self._options.include_language_detection:
            message: dict[str, Any] = {
                "message_type": "committed_transcript_with_timestamps",
                "text": segment.text,
                "words": words_payload(segment),
            }
            if self._options.include_language_detection:
                message["language_code"] = segment.language_code
            await self.send(message)

    async def error(self, error: StreamError) -> None:
        if error.kind is ErrorKind.IDLE_TIMEOUT:
            # The real service closes an idle socket without a message.
            self.close_reason = "idle_timeout"
            return
        message_type = MESSAGE_TYPES[error.kind]
        self.close_reason = "" if error.kind is ErrorKind.AUTH else message_type
        await self.send({"message_type": message_type, "error": error.message})


async def client_events(websocket: WebSocket, fmt: AudioFormat, max_chunk_bytes: int) -> AsyncIterator[ClientEvent]:
    first = True
    while True:
        message = await websocket.receive()
        if closed := disconnected(message):
            yield closed
            return
        text = message.get("text")
        if text is None:
            raise StreamError(ErrorKind.INPUT, "Binary frames are not accepted: send input_audio_chunk JSON messages.")
        chunk = _parse_chunk(text, fmt, max_chunk_bytes, first)
        first = False
        if chunk.audio:
            yield AudioIn(chunk.audio)
        if chunk.commit:
            yield CommitIn()


@dataclass(frozen=True, slots=True)
class _Chunk:
    audio: bytes
    commit: bool


def _parse_chunk(text: str, fmt: AudioFormat, max_chunk_bytes: int, first: bool) -> _Chunk:
    try:
        payload = parse_json(text)
    except JsonInputError as exc:
        raise StreamError(ErrorKind.INPUT, f"Messages must be JSON objects: {exc}.") from None
    if not isinstance(payload, dict):
        raise StreamError(ErrorKind.INPUT, "Messages must be JSON objects.")
    message_type = payload.get("message_type")
    if message_type != "input_audio_chunk":
        raise StreamError(ErrorKind.INPUT, f"Unknown message_type {message_type!r}: expected input_audio_chunk.")
    encoded = payload.get("audio_base_64")
    if not isinstance(encoded, str):
        raise StreamError(ErrorKind.INPUT, "audio_base_64 must be a base64 string.")
    commit = payload.get("commit", False)
    if not isinstance(commit, bool):
        raise StreamError(ErrorKind.INPUT, "commit must be true or false.")
    sample_rate = payload.get("sample_rate")
    if sample_rate is not None and sample_rate != fmt.sample_rate:
        raise StreamError(
            ErrorKind.INPUT,
            f"sample_rate {sample_rate} does not match the session's {fmt.sample_rate} Hz audio_format.",
        )
    previous_text = payload.get("previous_text")
    if previous_text is not None:
        if not isinstance(previous_text, str):
            raise StreamError(ErrorKind.INPUT, "previous_text must be a string.")
        if not first:
            raise StreamError(ErrorKind.INPUT, "previous_text is only allowed on the first audio chunk.")
    # Refuse what is surely oversize before decoding it; the core checks the exact decoded size.
    if len(encoded) > (max_chunk_bytes // 3 + 1) * 4:
        raise StreamError(ErrorKind.CHUNK_TOO_LARGE, f"Audio chunk exceeds the limit of {max_chunk_bytes} bytes.")
    try:
        audio = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise StreamError(ErrorKind.INPUT, "audio_base_64 is not valid base64.") from None
    return _Chunk(audio, commit)


async def realtime_endpoint(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    await websocket.accept()
    try:
        principal = await authenticate(services, websocket)
        try:
            config, options = parse_request(
                QueryParams(websocket.query_params.multi_items()), services.settings.max_metadata_bytes,
                services.models,
            )
        except ParamError as exc:
            raise StreamError(ErrorKind.INVALID_REQUEST, str(exc)) from None
        if config.recording and not principal.recording_allowed:
            raise StreamError(ErrorKind.INVALID_REQUEST, "Recording is disabled for this tenant.")
        if not config.keep_transcript and not principal.zero_retention_allowed:
            raise StreamError(ErrorKind.INVALID_REQUEST, "Zero retention (enable_logging=false) is not allowed "
                              "for this tenant.")
        await admission.spend_stream_start(services, principal)
        session = await StreamSession.open(services, config, principal, client_info(websocket))
    except StreamError as exc:
        await _fail(ScribeEvents(websocket, ScribeOptions(False, False, ())), exc)
        return
    events = ScribeEvents(websocket, options)
    try:
        await events.send({"message_type": "session_started", "session_id": session.id.hex, "config": config.echo})
        for warning in options.warnings:
            await events.send({"message_type": "warning", "warning": warning})
    except (WebSocketDisconnect, RuntimeError):
        await session.abandon()
        return
    await session.run(client_events(websocket, config.audio_format, services.settings.max_chunk_bytes), events)
    await close_quietly(websocket, 1000, events.close_reason)


async def _fail(events: ScribeEvents, error: StreamError) -> None:
    try:
        await events.error(error)
    except (WebSocketDisconnect, RuntimeError):
        return
    await close_quietly(events.websocket, 1000, events.close_reason)
