"""A real OpenAI-compatible server for the summarizer tests: a Starlette app implementing
``POST /v1/chat/completions``, served by uvicorn on 127.0.0.1 in a thread.

It records every request body, answers with the next scripted ``Reply`` (``default`` once the
script is spent) and counts the connections its clients closed while it held a request. A
normal answer is deterministic: "ECHO" and the first ``echo_words`` words of the transcript
(the user message after its first line), with ``usage`` computed by ``count_tokens``."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lectern.summarize import count_tokens

ReplyKind = Literal["ok", "error", "hold", "no_usage", "empty", "raw"]


@dataclass(frozen=True)
class Reply:
    kind: ReplyKind = "ok"
    status: int = 200
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    content: str | None = None  # the answer's text instead of the echo
    raw: Any = None  # for "raw": this JSON body, as is


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class FakeLLM:
    def __init__(self, script: list[Reply] | None = None, default: Reply = Reply(), echo_words: int = 8) -> None:
        self.port = free_port()
        self.script = list(script or [])
        self.default = default
        self.echo_words = echo_words
        self.requests: list[dict[str, Any]] = []  # request bodies, in arrival order
        self.usages: list[dict[str, int]] = []  # the usage of each answer that had one
        self.disconnects = 0  # held requests whose client closed the connection
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    def answer(self, body: dict[str, Any]) -> str:
        user = body["messages"][-1]["content"]
        transcript = user.split("\n", 1)[1] if "\n" in user else user
        return "ECHO " + " ".join(transcript.split()[: self.echo_words])

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            reply = self.script.pop(0) if self.script else self.default
        if reply.kind == "error":
            error = {"message": reply.message, "type": "invalid_request_error", "code": reply.status}
            return JSONResponse({"error": error}, status_code=reply.status, headers=reply.headers)
        if reply.kind == "hold":  # answer nothing until the client goes away
            while (await request.receive())["type"] != "http.disconnect":
                pass
            with self._lock:
                self.disconnects += 1
            return Response(status_code=499)
        if reply.kind == "raw":
            return JSONResponse(reply.raw)
        content = "" if reply.kind == "empty" else reply.content if reply.content is not None else self.answer(body)
        answer: dict[str, Any] = {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        }
        if reply.kind != "no_usage":
            prompt = sum(count_tokens(m["content"]) for m in body["messages"]) + 5
            usage = {"prompt_tokens": prompt, "completion_tokens": count_tokens(content) + 1,
                     "total_tokens": prompt + count_tokens(content) + 1}
            with self._lock:
                self.usages.append(usage)
            answer["usage"] = usage
        return JSONResponse(answer)

    def start(self) -> FakeLLM:
        app = Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the fake LLM server did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
