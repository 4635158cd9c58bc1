"""Request bodies are admitted within bounds before any route reads them.

A pure ASGI middleware, between the server and the routes:

- a body larger than its route allows is refused with 413: at once when its Content-Length says
  so, and, when it streams (chunked), as soon as the bytes received pass the limit, so a body
  costs at most one network chunk past its limit, never its whole size;
- a body that stalls or trickles is cut off with 408: each wait for more of it is bounded by a read
  timeout that grows with the bytes received at a minimum rate (Apache's ``mod_reqtimeout``
  rule), so a slow upload that keeps moving continues and one byte every few seconds does not;
- a route that takes a JSON body gets no body at all from a caller whose credentials do not
  authenticate: FastAPI reads JSON bodies before it resolves dependencies (so before the auth
  dependency), which let anyone without a key make the server read a body whole. The route then
  answers its own 401 (the auth dependency, with its rate-limit accounting) from an empty body.

Which operations take JSON bodies and which take uploads is read from the app's OpenAPI document,
so a new route is classified by what it declares. Uploads (multipart) have their size limit in
``uploads.py``, enforced while they stream and answered in each route's own error shape; here they
only get the read timeout. Refusals made here close the connection: the rest of the body is never
read.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lectern.api.errors import problem
from lectern.api.scribe_errors import ScribeError
from lectern.auth.principal import AuthError
from lectern.auth.principals import authenticate
from lectern.settings import Settings

# ElevenLabs' REST routes answer in its error shape, every other route in problem+json.
_ELEVENLABS_PREFIX = "/v1/"
_CLOSE = {"Connection": "close"}
_DISCONNECT: Message = {"type": "http.disconnect"}
_NO_BODY: Message = {"type": "http.request", "body": b"", "more_body": False}


class BodyKind(enum.Enum):
    JSON = "json"  # the route parses a JSON body: size limit, credentials first
    UPLOAD = "upload"  # a streaming multipart upload: uploads.py bounds its size
    OTHER = "other"  # no body is expected: it gets the JSON limit, should anything read one


@dataclass(frozen=True, slots=True)
class _Operation:
    method: str
    path: re.Pattern[str]
    kind: BodyKind


def body_operations(openapi: dict[str, Any]) -> list[_Operation]:
    """The operations that declare a request body, and what kind, from an OpenAPI document."""
    operations = []
    for template, methods in openapi.get("paths", {}).items():
        path, _, _ = compile_path(template)
        for method, operation in methods.items():
            content = (operation.get("requestBody") or {}).get("content", {})
            if "multipart/form-data" in content:
                operations.append(_Operation(method.upper(), path, BodyKind.UPLOAD))
            elif any(media == "application/json" or media.endswith("+json") for media in content):
                operations.append(_Operation(method.upper(), path, BodyKind.JSON))
    return operations


def _kind(operations: list[_Operation], method: str, path: str) -> BodyKind:
    for operation in operations:
        if operation.method == method and operation.path.match(path):
            return operation.kind
    return BodyKind.OTHER


def _refusal(path: str, status: int, detail: str) -> Response:
    if path.startswith(_ELEVENLABS_PREFIX):
        code = "request_timeout" if status == 408 else "payload_too_large"
        response: Response = ScribeError(status, detail, type="invalid_request", code=code).response()
        response.headers.update(_CLOSE)
        return response
    return problem(status, detail, headers=_CLOSE)


class BodyLimits:
    """The middleware; ``settings`` gives the JSON body limit, the read timeout and minimum rate."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_json_bytes = settings.max_json_body_bytes
        self.read_timeout = settings.body_read_timeout_seconds
        self.min_rate = settings.body_min_bytes_per_second
        self._operations: list[_Operation] | None = None

    def _operations_of(self, scope: Scope) -> list[_Operation]:
        # Read once, at the first request: by then every route is registered.
        if self._operations is None:
            self._operations = body_operations(scope["app"].openapi())
        return self._operations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind = _kind(self._operations_of(scope), scope["method"], scope["path"])
        limit = None if kind is BodyKind.UPLOAD else self.max_json_bytes
        headers = Headers(scope=scope)
        declared = _content_length(headers)
        if limit is not None and declared is not None and declared > limit:
            await _refusal(scope["path"], 413, _too_large(limit))(scope, receive, send)
            return
        has_body = bool(declared) or "chunked" in headers.get("transfer-encoding", "").lower()
        withheld = kind is BodyKind.JSON and has_body and not await _authenticates(scope, headers)
        body = _Body(receive, limit, self.read_timeout, self.min_rate, has_body, withheld)
        try:
            await self.app(scope, body.receive, body.guard(send))
        except ClientDisconnect:
            # What the app makes of the disconnect we told it of, when we cut the body off.
            if body.refused is None:
                raise
        if body.refused is not None and not body.response_started:
            status, detail = body.refused
            await _refusal(scope["path"], status, detail)(scope, receive, send)


class _Body:
    """The request body as the app receives it: counted, timed, or withheld."""

    def __init__(
        self, receive: Receive, limit: int | None, timeout: float, min_rate: float, has_body: bool, withheld: bool
    ) -> None:
        self._receive = receive
        self._limit = limit
        self._timeout = timeout
        self._min_rate = min_rate
        self._withheld = withheld
        self._withheld_given = False
        self._started = time.monotonic()
        self._received = 0
        self._complete = not has_body  # the whole body has come in from the client
        self.refused: tuple[int, str] | None = None  # (status, detail) once the body was cut off
        self.response_started = False

    async def receive(self) -> Message:
        if self.refused is not None:
            return _DISCONNECT
        if self._withheld:
            # The caller cannot authenticate: the route sees an empty body and answers 401. The
            # body stays unread; should the app wait for a disconnect, its pieces are dropped.
            if not self._withheld_given:
                self._withheld_given = True
                return _NO_BODY
            while (message := await self._receive())["type"] == "http.request":
                pass
            return message
        if self._complete:
            return await self._receive()  # after the body: only http.disconnect, which may take long
        # The body may take the timeout, plus a second for every min_rate bytes it has delivered.
        deadline = self._started + self._timeout + self._received / self._min_rate
        try:
            message = await asyncio.wait_for(self._receive(), max(deadline - time.monotonic(), 0))
        except TimeoutError:
            self.refused = (408, f"the request body did not arrive in time (at least {self._min_rate:g} "
                                 f"bytes a second after the first {self._timeout:g} s)")
            return _DISCONNECT
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            self._complete = not message.get("more_body", False)
            if self._limit is not None and self._received > self._limit:
                self.refused = (413, _too_large(self._limit))
                return _DISCONNECT
        return message

    def guard(self, send: Send) -> Send:
        """``send``, except that once the body was cut off the app's own answer is dropped (ours
        follows), and that a response leaving the body unread closes the connection."""

        async def guarded(message: Message) -> None:
            if self.refused is not None and not self.response_started:
                return
            if message["type"] == "http.response.start":
                self.response_started = True
                if not self._complete:
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        return guarded


async def _authenticates(scope: Scope, headers: Headers) -> bool:
    """Whether the request's credentials authenticate, read as the auth dependency reads them
    (``deps.require``). Only a definite no withholds the body: on any other failure (the database
    away, say) the route reads the body within its limit and answers as it does."""
    services = scope["app"].state.services
    try:
        async with services.db() as db:
            await authenticate(db, services.jwt, headers.get("x-api-key"), headers.get("authorization"))
    except AuthError:
        return False
    except Exception:  # noqa: BLE001 - the route meets the same failure and answers it
        return True
    return True


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def _too_large(limit: int) -> str:
    return f"the request body is larger than the limit of {limit} bytes"
