"""Lectern's own streaming protocol (``/api/v1/speech-services/stream``): frames in, frames out.

Browser-friendly: credentials travel in the first JSON message, audio in binary frames of
16 kHz s16le mono PCM. A client whose connection drops may resume the same session within
``resume_grace_seconds`` (see ``realtime/resume.py``). The full message schema is in
docs/streaming-protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from lectern.auth.principal import AuthError, Principal
from lectern.auth.principals import authenticate
from lectern.auth.scopes import SESSIONS_WRITE
from lectern.json_input import JsonInputError, parse_json
from lectern.realtime import admission
from lectern.realtime.config import StreamConfig, VadSettings
from lectern.realtime.errors import ErrorKind, StreamError, database_required
from lectern.realtime.protocols.params import MAX_MODEL_ALIAS
from lectern.realtime.protocols.sockets import client_info, close_quietly
from lectern.realtime.resume import SEND_TIMEOUT_SECONDS, ResumableClient, ResumableStreams
from lectern.realtime.segment import Segment
from lectern.realtime.session import AudioIn, ClientClosed, StreamSession
from lectern.services import Services
from lectern.speech.audio import AudioFormat
from lectern.speech.models import ModelRegistry, normalize_language

AUDIO_FORMAT = AudioFormat("pcm_s16le", 16000)
DEFAULT_MODEL = "default"
ENDPOINT_SILENCE_MS = (300, 3000, 1500)  # low, high, default

# Error codes, after gRPC's, and the close code that follows each.
CODES = {
    ErrorKind.AUTH: "UNAUTHENTICATED",
    ErrorKind.INVALID_REQUEST: "INVALID_ARGUMENT",
    ErrorKind.INPUT: "INVALID_ARGUMENT",
    ErrorKind.CHUNK_TOO_LARGE: "INVALID_ARGUMENT",
    ErrorKind.COMMIT_THROTTLED: "INVALID_ARGUMENT",
    ErrorKind.QUEUE_OVERFLOW: "RESOURCE_EXHAUSTED",
    ErrorKind.RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
    ErrorKind.CONCURRENCY_LIMIT: "RESOURCE_EXHAUSTED",  # gRPC's code for a per-tenant or per-user limit too
    ErrorKind.QUOTA_EXCEEDED: "QUOTA_EXCEEDED",
    ErrorKind.RATE_LIMITED: "RATE_LIMITED",
    ErrorKind.TIME_LIMIT: "DEADLINE_EXCEEDED",
    ErrorKind.IDLE_TIMEOUT: "DEADLINE_EXCEEDED",
    ErrorKind.ENGINE: "UNAVAILABLE",
    ErrorKind.UNAVAILABLE: "UNAVAILABLE",
    ErrorKind.INTERNAL: "INTERNAL",
}
CLOSE_CODES = {"INTERNAL": 1011, "UNAVAILABLE": 1011, "RESOURCE_EXHAUSTED": 1013, "RATE_LIMITED": 1013,
               "QUOTA_EXCEEDED": 1008}
POLICY_CLOSE = 1008  # refused before a session existed: credentials, arguments, unknown session
REPLACED_CLOSE = 4000  # another connection resumed this session


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True, slots=True)
class StartRequest:
    api_key: str | None
    token: str | None
    config: StreamConfig


def _field(message: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = message.get(name, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ProtocolError("INVALID_ARGUMENT", f"{name} must be a {_JSON_NAMES.get(names, names)}")
    if isinstance(value, str) and "\x00" in value:  # no database column takes it
        raise ProtocolError("INVALID_ARGUMENT", f"{name} must not contain NUL characters")
    return value


_JSON_NAMES = {"str": "string", "bool": "boolean", "int": "integer", "dict": "JSON object"}


def parse_start(message: dict[str, Any], max_metadata_bytes: int, models: ModelRegistry) -> StartRequest:
    credentials = message.get("authentication")
    if not isinstance(credentials, dict) or not (credentials.get("token") or credentials.get("apiKey")):
        raise ProtocolError("UNAUTHENTICATED", "session.start needs authentication: {token} or {apiKey}")
    api_key, token = credentials.get("apiKey"), credentials.get("token")
    if not isinstance(api_key, str | None) or not isinstance(token, str | None):
        raise ProtocolError("UNAUTHENTICATED", "authentication.token and authentication.apiKey must be strings")
    model = _field(message, "model", str, DEFAULT_MODEL)
    if len(model) > MAX_MODEL_ALIAS:
        raise ProtocolError("INVALID_ARGUMENT", f"model must be at most {MAX_MODEL_ALIAS} characters, not {len(model)}")
    resolved = models.resolve(model)
    language = _field(message, "language", str, None)
    if not models.serves_language(resolved.name, language):
        raise ProtocolError("INVALID_ARGUMENT", models.language_error(resolved.name, language or "", "language"))
    # No language: a multilingual model detects it, the others hear English.
    language_code = normalize_language(language) or ("en" if models.english_only(resolved.name) else None)
    sample_rate = _field(message, "sampleRate", int, AUDIO_FORMAT.sample_rate)
    if sample_rate != AUDIO_FORMAT.sample_rate:
        raise ProtocolError("INVALID_ARGUMENT", "sampleRate must be 16000: audio is 16 kHz s16le mono PCM")
    endpointing = _field(message, "enableEndpointDetection", bool, True)
    low, high, default = ENDPOINT_SILENCE_MS
    silence_ms = _field(message, "endpointSilenceMs", int, default)
    if not low <= silence_ms <= high:
        raise ProtocolError("INVALID_ARGUMENT", f"endpointSilenceMs must be between {low} and {high}")
    recording = _field(message, "recordingRequested", bool, False)
    metadata = _field(message, "metadata", dict, None)
    # Measured as a browser's JSON.stringify sends it: compact UTF-8.
    if metadata is not None and len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode()) > (
        max_metadata_bytes
    ):
        raise ProtocolError("INVALID_ARGUMENT", f"metadata is larger than {max_metadata_bytes} bytes")
    echo = {
        "model": model,
        "resolvedModel": resolved.name,
        "usedFallback": resolved.used_fallback,
        "language": language_code,
        "sampleRate": AUDIO_FORMAT.sample_rate,
        "encoding": AUDIO_FORMAT.encoding,
        "enableEndpointDetection": endpointing,
        "endpointSilenceMs": silence_ms,
        "recordingRequested": recording,
        "metadata": metadata,
    }
    config = StreamConfig(
        protocol="native",
        model=resolved,
        audio_format=AUDIO_FORMAT,
        language_code=language_code,
        commit_strategy="vad" if endpointing else "manual",
        vad=VadSettings(silence_seconds=silence_ms / 1000),
        recording=recording,
        metadata=metadata,
        echo=echo,
    )
    return StartRequest(api_key, token, config)


async def _principal(services: Services, request: StartRequest, address: str) -> Principal:
    try:
        async with admission.authentication_attempt(services, address), database_required(), services.db() as db:
            authorization = f"Bearer {request.token}" if request.token else None
            principal = await authenticate(db, services.jwt, request.api_key, authorization)
    except AuthError as exc:
        raise ProtocolError("UNAUTHENTICATED", str(exc)) from None
    except StreamError as exc:  # the database is unreachable, or the address is rate limited
        raise ProtocolError(CODES[exc.kind], exc.message) from None
    if not principal.has(SESSIONS_WRITE):
        raise ProtocolError("PERMISSION_DENIED", f"the credentials lack the {SESSIONS_WRITE} scope")
    if request.config.recording and not principal.recording_allowed:
        raise ProtocolError("PERMISSION_DENIED", "recording is disabled for this tenant")
    return principal


class NativeEvents:
    """Renders core events on one connection."""

    def __init__(self, websocket: WebSocket, client: ResumableClient) -> None:
        self.websocket = websocket
        self._client = client

    async def send(self, payload: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(payload))

    async def partial(self, text: str) -> None:
        await self.send({"type": "result.partial", "segmentIndex": self._client.next_segment_index, "transcript": text})

    async def committed(self, segment: Segment) -> None:
        if segment.index is None:  # a commit that heard no words
            return
        row = segment.as_row()
        await self.send({
            "type": "result.final",
            "segmentIndex": segment.index,
            "transcript": segment.text,
            "startSeconds": segment.start,
            "endSeconds": segment.end,
            "confidence": row["confidence"],
            "words": row["words"],
        })

    async def error(self, error: StreamError) -> None:
        await send_error(self.websocket, CODES[error.kind], error.message)


async def send_error(websocket: WebSocket, code: str, message: str) -> None:
    await websocket.send_text(json.dumps({"type": "error", "code": code, "message": message}))


async def _first_message(websocket: WebSocket, timeout: float) -> dict[str, Any]:
    try:
        received = await asyncio.wait_for(websocket.receive(), timeout)
    except TimeoutError:
        raise ProtocolError("DEADLINE_EXCEEDED", f"no session.start or session.resume in {timeout:g} s") from None
    if received["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(received.get("code", 1000))
    return _json_message(received)


def _json_message(received: dict[str, Any]) -> dict[str, Any]:
    text = received.get("text")
    if text is None:
        raise ProtocolError("INVALID_ARGUMENT", "send session.start (or session.resume) before any audio")
    try:
        message = parse_json(text)
    except JsonInputError as exc:
        raise ProtocolError("INVALID_ARGUMENT", f"text messages must be JSON objects: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("INVALID_ARGUMENT", "text messages must be JSON objects with a type")
    return message


async def stream_endpoint(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    streams: ResumableStreams = websocket.app.state.resumable_streams
    await websocket.accept()
    try:
        first = await _first_message(websocket, services.settings.idle_timeout_seconds)
        if first["type"] == "session.start":
            client, link = await _start(services, streams, websocket, first)
        elif first["type"] == "session.resume":
            client, link = await _resume(streams, websocket, first)
        else:
            raise ProtocolError("INVALID_ARGUMENT", f"unknown message type {first['type']!r}: start with session.start")
    except ProtocolError as exc:
        await _refuse(websocket, exc)
        return
    except (WebSocketDisconnect, RuntimeError):
        return
    await _read(websocket, client, link)


async def _start(
    services: Services, streams: ResumableStreams, websocket: WebSocket, message: dict[str, Any]
) -> tuple[ResumableClient, NativeEvents]:
    request = parse_start(message, services.settings.max_metadata_bytes, services.models)
    principal = await _principal(services, request, client_info(websocket).address)
    try:
        await admission.spend_stream_start(services, principal)
        session = await StreamSession.open(services, request.config, principal, client_info(websocket))
    except StreamError as exc:
        raise ProtocolError(CODES[exc.kind], exc.message) from None
    client = ResumableClient(session.id, request.config, services.settings.resume_grace_seconds)
    link = NativeEvents(websocket, client)
    try:
        await client.attach(link, lambda: link.send(_info(client, resumed=False)), -1)
    except (WebSocketDisconnect, RuntimeError):
        await session.abandon()
        raise
    streams.serve(client, _serve(session, client, streams))
    return client, link


async def _resume(
    streams: ResumableStreams, websocket: WebSocket, message: dict[str, Any]
) -> tuple[ResumableClient, NativeEvents]:
    session_id, token = message.get("sessionId"), message.get("resumeToken")
    after = message.get("lastSegmentIndex", -1)
    after = -1 if after is None else after
    if not isinstance(after, int) or isinstance(after, bool):
        raise ProtocolError("INVALID_ARGUMENT", "lastSegmentIndex must be an integer or null")
    try:
        client = streams.find(uuid.UUID(str(session_id)), str(token or ""))
    except ValueError:
        client = None
    if client is None:
        raise ProtocolError("NOT_FOUND", "no resumable session with that sessionId and resumeToken")
    link = NativeEvents(websocket, client)
    try:
        replaced = await client.attach(link, lambda: link.send(_info(client, resumed=True)), after)
    except LookupError:
        raise ProtocolError("NOT_FOUND", "no resumable session with that sessionId and resumeToken") from None
    if isinstance(replaced, NativeEvents):  # bounded: the old connection may be half-open
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                close_quietly(replaced.websocket, REPLACED_CLOSE, "session resumed on another connection"),
                SEND_TIMEOUT_SECONDS,
            )
    return client, link


def _info(client: ResumableClient, resumed: bool) -> dict[str, Any]:
    return {
        "type": "session.info",
        "sessionId": str(client.session_id),
        "resumeToken": client.token if client.grace_seconds > 0 else None,
        "resumeGraceSeconds": client.grace_seconds,
        "resumed": resumed,
        "audioReceivedBytes": client.received_bytes,
        "nextSegmentIndex": client.next_segment_index,
        "config": client.config.echo,
    }


async def _read(websocket: WebSocket, client: ResumableClient, link: NativeEvents) -> None:
    """This connection's client events, into the session, until the socket closes or another
    connection takes over. After session.end (or an error) it only waits for the session to
    close the socket, so the handler, and with it the connection, lives until then."""
    ending = False
    while True:
        try:
            received = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            received = {"type": "websocket.disconnect", "code": 1006}
        if received["type"] == "websocket.disconnect":
            client.dropped(link)
            return
        if ending:
            continue
        data = received.get("bytes")
        try:
            event = AudioIn(data) if data is not None else _control(_json_message(received))
        except ProtocolError as exc:
            event = StreamError(ErrorKind.INPUT, exc.message)
        if not client.put(link, event):
            return  # resumed on another connection, which closed this one
        ending = isinstance(event, ClientClosed | StreamError)


def _control(message: dict[str, Any]) -> ClientClosed:
    if message["type"] == "session.end":
        return ClientClosed(normal=True)
    raise ProtocolError("INVALID_ARGUMENT", f"unexpected message type {message['type']!r} during a session")


async def _serve(session: StreamSession, client: ResumableClient, streams: ResumableStreams) -> None:
    """Run the session to its end, then tell whichever connection carries it and close that."""
    try:
        error = await session.run(client.client_events(), client)
    finally:
        streams.remove(client)
        link = await client.finish()
    if not isinstance(link, NativeEvents):
        return
    try:
        if error is None:
            await link.send({
                "type": "session.completed",
                "sessionId": str(session.id),
                "segmentCount": session.segment_count,
                "wordsCount": session.words_count,
                "durationMilliseconds": session.duration_ms,
            })
    except (WebSocketDisconnect, RuntimeError):
        return
    code = CLOSE_CODES.get(CODES[error.kind], 1000) if error else 1000
    await close_quietly(link.websocket, code, CODES[error.kind] if error else "")


async def _refuse(websocket: WebSocket, error: ProtocolError) -> None:
    try:
        await send_error(websocket, error.code, error.message)
    except (WebSocketDisconnect, RuntimeError):
        return
    code = 1000 if error.code == "DEADLINE_EXCEEDED" else CLOSE_CODES.get(error.code, POLICY_CLOSE)
    await close_quietly(websocket, code, error.code)
