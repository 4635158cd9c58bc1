"""Reverie streaming STT (``/stream``): frames in, frames out.

Translation only; the stream itself is ``StreamSession``. Wire details follow
shared/spec/reverie-stream.md: every message carries the seven keys of ``ReverieMessage``, the
stream ends with one final message (``EOF received``, ``silence detected``, ``timeout``,
``audio too short`` or an error with ``success: false``) and then a close.

Credentials: ``apikey`` is a Lectern API key and ``appid`` the name of its tenant. Errors carry
two keys beyond the seven, ``code`` (the HTTP-like code of Reverie's message table) and
``message`` (what to fix), which Reverie's clients keep as extra fields.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from lectern.auth import keys
from lectern.auth.principal import AuthError, Principal
from lectern.auth.scopes import SESSIONS_WRITE
from lectern.realtime import admission
from lectern.realtime.config import StreamConfig, VadSettings
from lectern.realtime.errors import ErrorKind, StreamError, database_required
from lectern.realtime.protocols.params import ParamError, QueryParams
from lectern.realtime.protocols.sockets import client_info, close_quietly, disconnected
from lectern.realtime.segment import Segment
from lectern.realtime.session import AudioIn, ClientClosed, ClientEvent, StreamSession
from lectern.services import Services
from lectern.settings import Settings
from lectern.speech.audio import AudioFormat
from lectern.speech.models import ModelRegistry, normalize_language
from lectern.speech.opus import OggOpusDecoder, OpusError, OpusPacketDecoder
from lectern.speech.text import display_text

EOF_MARKER = b"--EOF--"
SERVED = "this server decodes src_lang=en with domain=generic only"
MAX_TIMEOUT_SECONDS = 180.0
MAX_SILENCE_SECONDS = 30.0
# Reverie's domains map onto models; this server has one general English model.
MODEL_ALIAS = "reverie-en-generic"

Decoder = Callable[[], "OpusPacketDecoder | OggOpusDecoder"]
FORMATS: dict[str, tuple[AudioFormat, Decoder | None]] = {
    "16k_int16": (AudioFormat("pcm_s16le", 16000), None),
    "8k_int16": (AudioFormat("pcm_s16le", 8000), None),
    "16k_uint8": (AudioFormat("pcm_u8", 16000), None),
    "8k_uint8": (AudioFormat("pcm_u8", 8000), None),
    "16k_ulaw": (AudioFormat("ulaw", 16000), None),
    "8k_ulaw": (AudioFormat("ulaw", 8000), None),
    # Opus reaches the core decoded: one packet per message for opus_*, any slicing for Ogg.
    "opus_16k": (AudioFormat("pcm_s16le", 16000), lambda: OpusPacketDecoder(16000)),
    "opus_8k": (AudioFormat("pcm_s16le", 8000), lambda: OpusPacketDecoder(8000)),
    "ogg_opus": (AudioFormat("pcm_s16le", 16000), lambda: OggOpusDecoder(16000)),
}
# What ``logging`` keeps: (transcript, audio). Audio also needs the tenant to allow recordings.
LOGGING = {"true": (True, True), "no_audio": (True, False), "no_transcript": (False, True), "false": (False, False)}

ERROR_CAUSES = {
    ErrorKind.INPUT: (400, "invalid audio"),
    ErrorKind.CHUNK_TOO_LARGE: (400, "audio chunk too large"),
    ErrorKind.QUEUE_OVERFLOW: (429, "audio arriving too fast"),
    ErrorKind.RESOURCE_EXHAUSTED: (503, "server busy"),
    ErrorKind.ENGINE: (500, "transcriber error"),
    ErrorKind.INTERNAL: (500, "internal error"),
    ErrorKind.UNAVAILABLE: (503, "service unavailable"),
    ErrorKind.AUTH: (403, "Forbidden"),  # the stream's key revoked or expired while it ran
    ErrorKind.QUOTA_EXCEEDED: (403, "Forbidden"),  # Reverie's "The provided credit limit is exhausted."
    ErrorKind.CONCURRENCY_LIMIT: (429, "too many streams"),
    ErrorKind.RATE_LIMITED: (429, "too many requests"),
}
# Reverie's own words for a spent quota (its API messages table), before ours.
CREDIT_EXHAUSTED = "The provided credit limit is exhausted."


class ReverieError(Exception):
    """Refuses the stream before it starts: ``cause`` is Reverie's, ``message`` says why."""

    def __init__(self, code: int, cause: str, message: str) -> None:
        super().__init__(message)
        self.code, self.cause, self.message = code, cause, message


def message(stream_id: str, cause: str, *, final: bool, text: str = "", shown: str = "", success: bool = True,
            confidence: float = 1.0, **extra: Any) -> dict[str, Any]:
    return {"id": stream_id, "success": success, "final": final, "cause": cause, "text": text,
            "confidence": confidence, "display_text": shown, **extra}


def error_message(stream_id: str, code: int, cause: str, why: str) -> dict[str, Any]:
    return message(stream_id, cause, final=True, success=False, code=code, message=why)


@dataclass(frozen=True, slots=True)
class ReverieRequest:
    app_id: str
    api_key: str
    config: StreamConfig
    decoder: Decoder | None
    punctuate: bool
    continuous: bool


def _required(params: QueryParams, name: str) -> str:
    value = (params.one(name) or "").strip()
    if not value:
        raise ReverieError(400, f"no `{name}` given", f"the {name} query parameter is required")
    return value


def _seconds(params: QueryParams, name: str, default: float, high: float) -> float:
    raw = params.one(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= high:  # also refuses nan and inf
        raise ReverieError(400, f"invalid `{name}` value", f"{name} must be a number of seconds in (0, {high:g}]")
    return value


def parse_request(params: QueryParams, models: ModelRegistry) -> ReverieRequest:
    """Validate in the order a client fixes things: presence, the API, language, format, values."""
    try:
        app_name = _required(params, "appname")
        api_key = _required(params, "apikey")
        app_id = _required(params, "appid")
        src_lang = _required(params, "src_lang").lower()
        domain = _required(params, "domain").lower()
        if app_name != "stt_stream":
            raise ReverieError(403, "Forbidden", f"appname must be stt_stream for this API, not {app_name!r}")
        model = models.resolve(MODEL_ALIAS)
        if domain != "generic" or not models.serves_language(model.name, src_lang):
            served = SERVED if models.english_only(model.name) else (
                models.language_error(model.name, src_lang, "src_lang") if domain == "generic"
                else f"model {model.name} serves domain=generic only")
            raise ReverieError(400, "no decoder for given args", f"src_lang={src_lang} domain={domain}: {served}")
        format_name = params.one("format") or "16k_int16"
        if format_name not in FORMATS:
            raise ReverieError(200, "unsupported audio format", f"format must be one of {', '.join(FORMATS)}")
        timeout = _seconds(params, "timeout", 15.0, MAX_TIMEOUT_SECONDS)
        silence = _seconds(params, "silence", 1.0, MAX_SILENCE_SECONDS)
        logging = (params.one("logging") or "true").lower()
        if logging not in LOGGING:
            raise ReverieError(400, "invalid `logging` value", f"logging must be one of {', '.join(LOGGING)}")
        punctuate = params.boolean("punctuate", True)
        continuous = params.boolean("continuous", False)
    except ParamError as exc:
        raise ReverieError(400, "invalid parameter", str(exc)) from None
    audio_format, decoder = FORMATS[format_name]
    keep_transcript, keep_audio = LOGGING[logging]
    echo = {"src_lang": src_lang, "domain": domain, "format": format_name, "timeout": timeout, "silence": silence,
            "logging": logging, "punctuate": punctuate, "continuous": continuous}
    config = StreamConfig(
        protocol="reverie",
        model=model,
        audio_format=audio_format,
        language_code=normalize_language(src_lang),
        commit_strategy="vad",
        vad=VadSettings(silence_seconds=silence),
        keep_transcript=keep_transcript,
        recording=keep_audio,
        single_utterance=not continuous,
        time_limit_seconds=timeout,
        echo=echo,
    )
    return ReverieRequest(app_id, api_key, config, decoder, punctuate, continuous)


async def authenticate(services: Services, request: ReverieRequest, address: str) -> Principal:
    try:
        async with admission.authentication_attempt(services, address), database_required(), services.db() as db:
            principal = await keys.authenticate_api_key(db, request.api_key)
    except AuthError:
        raise ReverieError(403, "Forbidden", "invalid credentials: apikey is not a valid API key") from None
    if principal.tenant_name != request.app_id:
        await admission.count_failed_authentication(services, address)
        raise ReverieError(403, "Forbidden", "invalid credentials: appid is not the API key's tenant")
    if not principal.has(SESSIONS_WRITE):
        raise ReverieError(403, "Forbidden", f"not authorized to use the STT API: the key lacks {SESSIONS_WRITE}")
    return principal


class ReverieEvents:
    """Renders core events as Reverie messages. Reverie's text grows until a final: segments the
    core commits on its own (the automatic length bound) become part of the running text."""

    def __init__(self, websocket: WebSocket, stream_id: str, request: ReverieRequest) -> None:
        self.websocket = websocket
        self.stream_id = stream_id
        self._request = request
        self._committed = ""  # text of this utterance's segments committed before its final
        self._confidences: list[float] = []
        self.failure: StreamError | None = None
        self.ended = False  # the final message went out

    async def send(self, payload: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(payload))

    def _running(self, text: str) -> str:
        return f"{self._committed} {text}".strip()

    async def partial(self, text: str) -> None:
        if not self.ended:
            await self.send(message(self.stream_id, "partial", final=False, text=self._running(text)))

    async def committed(self, segment: Segment) -> None:
        self._confidences.extend(word.confidence for word in segment.words)
        if segment.trigger != "vad":
            self._committed = self._running(segment.text)
            return
        if not self._request.continuous:
            await self.final("silence detected", segment)
            self.ended = True
            await close_quietly(self.websocket)
        elif segment.text or self._committed:
            # Reverie's clients stop at final=true whatever the mode; in continuous mode an
            # utterance's end is its complete text with cause "silence detected", final=false.
            await self.final("silence detected", segment, final=False)

    async def final(self, cause: str, segment: Segment | None = None, final: bool = True) -> None:
        text = self._running(segment.text if segment else "")
        confidence = round(sum(self._confidences) / len(self._confidences), 4) if self._confidences else 1.0
        await self.send(message(self.stream_id, cause, final=final, text=text, confidence=confidence,
                                shown=display_text(text, self._request.punctuate)))
        self._committed = ""
        self._confidences = []

    async def error(self, error: StreamError) -> None:
        self.failure = error


class OpusInput:
    """Opus messages decoded within the stream's bounds, off the event loop.

    A few bytes of Opus can hold hours of audio (a one-byte packet decodes to 120 ms), so each
    message's decoded length is read from its packets first and refused when it passes the limit
    of one message (``max_chunk_bytes`` of PCM) or would put the stream further ahead of real time
    than ``max_buffered_audio_seconds``: the limits the core applies to PCM, here before decoding.
    """

    def __init__(self, decoder: OpusPacketDecoder | OggOpusDecoder, settings: Settings, bytes_per_second: int) -> None:
        self._decoder = decoder
        self._max_message = settings.max_chunk_bytes
        self._max_ahead = settings.max_buffered_audio_seconds
        self._bytes_per_second = bytes_per_second
        self._started = time.monotonic()
        self._decoded = 0  # bytes of PCM decoded (or about to be) since the stream started

    async def decode(self, data: bytes) -> bytes:
        size = _opus(self._decoder.parse, data)
        seconds = size / self._bytes_per_second
        if size > self._max_message:
            raise StreamError(
                ErrorKind.CHUNK_TOO_LARGE,
                f"An audio message of {len(data)} bytes decodes to {seconds:.1f} s of audio ({size} bytes of PCM), "
                f"more than the limit of {self._max_message} bytes a message.",
            )
        ahead = (self._decoded + size) / self._bytes_per_second - (time.monotonic() - self._started)
        if ahead > self._max_ahead:
            raise StreamError(
                ErrorKind.QUEUE_OVERFLOW,
                f"Audio is arriving faster than real time: this message ({seconds:.1f} s of audio) would put the "
                f"stream {ahead:.0f} s ahead, more than the {self._max_ahead:g} s allowed.",
            )
        self._decoded += size
        if not self._decoder.pending_packets:
            return b""
        return await asyncio.to_thread(_opus, self._decoder.decode_pending)

    def finish(self) -> bytes:
        """The end of an Ogg stream: what the decoder still holds (a few ms)."""
        if isinstance(self._decoder, OggOpusDecoder):
            return _opus(self._decoder.finish)
        return b""


async def client_events(
    websocket: WebSocket, opus: OpusInput | None, bytes_per_sample: int
) -> AsyncIterator[ClientEvent]:
    carry = b""  # a sample cut between two messages: SDKs send fixed-size byte chunks
    while True:
        received = await websocket.receive()
        if closed := disconnected(received):
            yield closed
            return
        data = received.get("bytes")
        if data == b"":
            continue
        if data is None:
            if received.get("text") != EOF_MARKER.decode():
                raise StreamError(ErrorKind.INPUT, "text messages other than --EOF-- are not accepted")
            data = EOF_MARKER
        if data == EOF_MARKER:
            if opus is not None:
                yield AudioIn(opus.finish())
            yield ClientClosed(normal=True)
            return
        if opus is not None:
            yield AudioIn(await opus.decode(data))
            continue
        data, carry = carry + data, b""
        if cut := len(data) % bytes_per_sample:
            data, carry = data[:-cut], data[-cut:]
        yield AudioIn(data)


def _opus(step: Callable[..., Any], *data: bytes) -> Any:
    try:
        return step(*data)
    except OpusError as exc:
        raise StreamError(ErrorKind.INPUT, str(exc)) from None


async def stream_endpoint(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    await websocket.accept()
    try:
        request = parse_request(QueryParams(websocket.query_params.multi_items()), services.models)
        principal = await authenticate(services, request, client_info(websocket).address)
        config = request.config
        if config.recording and not principal.recording_allowed:  # logging keeps what the tenant allows
            config = replace(config, recording=False)
        if not config.keep_transcript and not principal.zero_retention_allowed:
            raise ReverieError(400, "invalid `logging` value", "logging that keeps no transcript is not allowed "
                               "for this tenant")
        await admission.spend_stream_start(services, principal)
        session = await StreamSession.open(services, config, principal, client_info(websocket))
    except ReverieError as exc:
        await _refuse(websocket, exc)
        return
    except StreamError as exc:
        code, cause = ERROR_CAUSES.get(exc.kind, (500, "internal error"))
        await _refuse(websocket, ReverieError(code, cause, _explained(exc)))
        return
    events = ReverieEvents(websocket, session.id.hex, request)
    try:
        await events.send(message(events.stream_id, "ready", final=False))
    except (WebSocketDisconnect, RuntimeError):
        await session.abandon()
        return
    fmt = config.audio_format
    opus = OpusInput(request.decoder(), services.settings, fmt.sample_rate * fmt.bytes_per_sample) if request.decoder \
        else None
    received = client_events(websocket, opus, fmt.bytes_per_sample)
    await session.run(received, events)
    await _finish(events, config.audio_format.seconds(session.received_bytes), services.settings.min_commit_seconds)


async def _finish(events: ReverieEvents, audio_seconds: float, min_seconds: float) -> None:
    """The one final message a stream that did not end at a pause gets, then the close."""
    try:
        if events.ended:
            return
        error = events.failure
        if error is None:
            await events.final("audio too short" if audio_seconds < min_seconds else "EOF received")
        elif error.kind in (ErrorKind.TIME_LIMIT, ErrorKind.IDLE_TIMEOUT):
            await events.final("timeout")
        else:
            code, cause = ERROR_CAUSES.get(error.kind, (500, "internal error"))
            await events.send(error_message(events.stream_id, code, cause, _explained(error)))
    except (WebSocketDisconnect, RuntimeError):  # the client left first
        return
    await close_quietly(events.websocket)


def _explained(error: StreamError) -> str:
    return f"{CREDIT_EXHAUSTED} {error.message}" if error.kind is ErrorKind.QUOTA_EXCEEDED else error.message


async def _refuse(websocket: WebSocket, error: ReverieError) -> None:
    try:
        await websocket.send_text(json.dumps(error_message(uuid.uuid4().hex, error.code, error.cause, error.message)))
    except (WebSocketDisconnect, RuntimeError):
        return
    await close_quietly(websocket)
