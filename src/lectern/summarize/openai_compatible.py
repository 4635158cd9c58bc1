"""Summaries by a model behind an OpenAI-compatible chat-completions API: vLLM, Ollama
(``http://host:11434/v1``), llama.cpp's server, or OpenAI itself, through the official client.

One request when the prompt fits the model's context (``LECTERN_LLM_CONTEXT_TOKENS``) with room
for the answer; otherwise map-reduce: the transcript is cut between segments or sentences into
parts that fit, each part is sent with the same template and a note saying which part it is, and
the parts' results are then sent together, in place of the transcript, to be combined (in groups,
level by level, if even they do not fit). Prompt sizes are estimated with ``tokens.count_tokens``
times ``SIZING_MARGIN``, since the server's tokenizer may count more than ours.

Requests are made one at a time: a local server often has a single slot, and parts sent at once
would wait in its queue, their timeouts running. Failures worth another attempt (timeouts,
refused connections, 429, 5xx) are retried ``LECTERN_LLM_MAX_RETRIES`` times (retry.py); others
(400, 401, 404...) fail the summary with the server's message. Cancelling the task closes the
HTTP connection of the request in flight, which is how a server learns to stop generating.

Usage is the sum of the server's ``usage`` over every request. A server that leaves it out (some
older llama.cpp and Ollama builds do) is charged by ``count_tokens``: the messages sent and the
text received.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import openai
from openai import AsyncOpenAI

from lectern.settings import Settings
from lectern.summarize.chunking import chunk_text
from lectern.summarize.interface import EMPTY_TRANSCRIPT, SummarizationError, SummaryOutput, SummaryRequest, TokenUsage
from lectern.summarize.prompts import render_user_prompt
from lectern.summarize.retry import RetryPolicy, Transient, retry_after
from lectern.summarize.tokens import count_tokens

log = logging.getLogger(__name__)

SIZING_MARGIN = 1.25  # our count times this must fit: Llama/Mistral tokenizers count ~20-30 % more than cl100k
MESSAGE_OVERHEAD = 8  # tokens a chat template adds around each message
DEFAULT_OUTPUT_TOKENS = 1024  # the answer's room when the template sets no max_output_tokens
MAX_OUTPUT_SHARE = 0.5  # of the context; a larger max_output_tokens is lowered to this
MIN_PART_TOKENS = 64  # a template leaving less room than this for the transcript cannot be used
MAX_ERROR_CHARS = 300

PART_NOTE = ("\n\n(Note: the transcript is too long for one request, so it is sent in {n} parts and this is "
             "part {i}. Work on this part only; the results of all parts are combined afterwards.)")
REDUCE_NOTE = ("\n\n(Note: the transcript was too long for one request, so it was processed in {n} consecutive "
               "parts. In place of the transcript above are the results for those parts, in order. Combine them "
               "into one result for the whole transcript, as asked, without repeating points.)")
GROUP_NOTE = ("\n\n(Note: in place of the transcript above are the results for consecutive parts {first} to "
              "{last} of {n} of a long transcript. Combine them into one result for these parts; it will be "
              "combined with the results for the other parts afterwards.)")
_REASONING = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)  # reasoning models' preamble, not the answer


class OpenAICompatibleSummarizer:
    def __init__(
        self, *, base_url: str, model: str, api_key: str | None = None, context_tokens: int = 8192,
        timeout_seconds: float = 120.0, retry: RetryPolicy | None = None,
    ) -> None:
        self.name = f"openai-compatible:{model}"  # stored with each summary: the backend and its model
        self.model = model
        self.context_tokens = context_tokens
        self._timeout = timeout_seconds
        self._retry = retry or RetryPolicy()
        # The client's own retries are off: ours honour Retry-After, log, and word the final error.
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_seconds,
                                   max_retries=0)

    @classmethod
    def from_settings(cls, settings: Settings, retry: RetryPolicy | None = None) -> OpenAICompatibleSummarizer:
        assert settings.llm_base_url and settings.llm_model
        return cls(base_url=settings.llm_base_url, model=settings.llm_model, api_key=settings.llm_api_key,
                   context_tokens=settings.llm_context_tokens, timeout_seconds=settings.llm_timeout_seconds,
                   retry=retry or RetryPolicy(retries=settings.llm_max_retries))

    async def aclose(self) -> None:
        await self._client.close()

    async def summarize(self, request: SummaryRequest) -> SummaryOutput:
        if not any(ch.isalnum() for ch in request.transcript):
            raise SummarizationError(EMPTY_TRANSCRIPT)
        run = _Run(self, request)
        text = await run.summarize()
        return SummaryOutput(text, run.usage)

    async def complete(
        self, system: str, user: str, *, max_tokens: int, temperature: float | None,
    ) -> tuple[str, TokenUsage]:
        """One chat completion, retried as configured: the answer's text and its usage."""
        messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system.strip() else []
        messages.append({"role": "user", "content": user})
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens}
        if temperature is not None:
            kwargs["temperature"] = temperature
        response = await self._retry.run(lambda: self._attempt(kwargs))
        try:  # the client does not validate answers: a server may send anything with a 200
            choice = response.choices[0] if response.choices else None
            content = choice.message.content if choice is not None and choice.message is not None else None
            finish = choice.finish_reason if choice is not None else None
            usage = response.usage
            prompt_tokens = usage.prompt_tokens if usage is not None else None
            completion_tokens = usage.completion_tokens if usage is not None else None
        except (AttributeError, TypeError, IndexError):
            raise SummarizationError("The language model server's answer is not a chat completion.") from None
        text = _REASONING.sub("", content if isinstance(content, str) else "").strip()
        if not text:
            reason = f" (finish reason: {finish})" if finish else ""
            raise SummarizationError(f"The language model returned an empty answer{reason}.")
        if isinstance(prompt_tokens, int) and isinstance(completion_tokens, int):
            return text, TokenUsage(prompt_tokens, completion_tokens)
        return text, TokenUsage(estimate_prompt_tokens(system, user, margin=1.0), count_tokens(text))

    async def _attempt(self, kwargs: dict[str, Any]) -> Any:
        try:
            return await self._client.chat.completions.create(**kwargs)
        except openai.APITimeoutError:
            log.warning("LLM request to %s timed out after %s s", self._client.base_url, self._timeout)
            raise Transient(f"The language model server did not answer within {self._timeout:g} s.") from None
        except openai.APIConnectionError as exc:
            log.warning("LLM server at %s unreachable: %s", self._client.base_url, exc.__cause__ or exc)
            raise Transient("Could not connect to the language model server.") from None
        except openai.APIStatusError as exc:
            status, message = exc.status_code, _server_message(exc.body)
            log.warning("LLM server answered %s: %s", status, message)
            if status == 429:
                raise Transient(f"The language model server is rate limiting requests (HTTP 429): {message}",
                                retry_after(exc.response.headers)) from None
            if status >= 500 or status == 408:
                raise Transient(f"The language model server failed (HTTP {status}): {message}",
                                retry_after(exc.response.headers)) from None
            raise SummarizationError(f"The language model server refused the request (HTTP {status}): "
                                     f"{message}") from None
        except openai.APIError as exc:  # an answer that is not a chat completion
            raise SummarizationError(f"The language model server gave an unreadable answer: {exc.message}") from None


class _Run:
    """One summary: the sizing of its requests, map-reduce when needed, and its usage so far."""

    def __init__(self, summarizer: OpenAICompatibleSummarizer, request: SummaryRequest) -> None:
        self.summarizer, self.request = summarizer, request
        context = summarizer.context_tokens
        wanted = request.max_output_tokens or DEFAULT_OUTPUT_TOKENS
        self.max_tokens = max(1, min(wanted, int(context * MAX_OUTPUT_SHARE)))
        self.prompt_budget = context - self.max_tokens  # what the messages may take
        self.usage = TokenUsage(0, 0)

    def user_prompt(self, text: str, note: str = "") -> str:
        r = self.request
        return render_user_prompt(r.user_prompt, transcript=text, language=r.language, date=r.date) + note

    def fits(self, user: str) -> bool:
        return estimate_prompt_tokens(self.request.system_prompt, user) <= self.prompt_budget

    def room(self, note: str) -> int:
        """Tokens of text a request with ``note`` can carry in place of the transcript."""
        fixed = estimate_prompt_tokens(self.request.system_prompt, self.user_prompt("", note))
        room = math.floor((self.prompt_budget - fixed) / SIZING_MARGIN) - 2
        if room < MIN_PART_TOKENS:
            raise SummarizationError(
                f"The prompt template leaves no room for the transcript: it takes about {fixed} tokens and the "
                f"answer {self.max_tokens}, of the model's context of {self.summarizer.context_tokens} tokens.")
        return room

    async def ask(self, user: str) -> str:
        text, usage = await self.summarizer.complete(self.request.system_prompt, user, max_tokens=self.max_tokens,
                                                     temperature=self.request.temperature)
        self.usage += usage
        return text

    async def summarize(self) -> str:
        transcript = self.request.transcript
        user = self.user_prompt(transcript)
        if self.fits(user):
            return await self.ask(user)
        longest_note = PART_NOTE.format(i=999, n=999)
        parts = chunk_text(transcript, self.room(longest_note))
        results = [await self.ask(self.user_prompt(part, PART_NOTE.format(i=i, n=len(parts))))
                   for i, part in enumerate(parts, 1)]
        return await self.reduce(results)

    async def reduce(self, results: list[str]) -> str:
        """One result from the parts' ``results``; in groups first if they do not fit together."""
        while True:
            user = self.user_prompt(_numbered(results), REDUCE_NOTE.format(n=len(results)))
            if self.fits(user) or len(results) == 1:
                return await self.ask(user)
            room = self.room(GROUP_NOTE.format(first=999, last=999, n=999))
            groups = _groups(results, room)
            if len(groups) >= len(results):
                raise SummarizationError(
                    "The transcript is too long for the model's context: the results of its parts do not fit "
                    "together, even two at a time. Use a model with a larger context or a lower max_output_tokens.")
            combined = []
            for group in groups:
                first, last = group[0][0], group[-1][0]
                texts = [text for _, text in group]
                note = GROUP_NOTE.format(first=first, last=last, n=len(results))
                if len(texts) == 1:
                    combined.append(texts[0])
                else:
                    combined.append(await self.ask(self.user_prompt(_numbered(texts, first), note)))
            results = combined


def _numbered(results: list[str], first: int = 1) -> str:
    return "\n\n".join(f"[Part {i}]\n{text}" for i, text in enumerate(results, first))


def _groups(results: list[str], room: int) -> list[list[tuple[int, str]]]:
    """Consecutive results packed into groups of at most ``room`` tokens (numbered from 1)."""
    groups: list[list[tuple[int, str]]] = []
    cost = 0
    for i, text in enumerate(results, 1):
        size = count_tokens(f"[Part {i}]\n{text}\n\n")
        if not groups or cost + size > room:
            groups.append([])
            cost = 0
        groups[-1].append((i, text))
        cost += size
    return groups


def estimate_prompt_tokens(system: str, user: str, *, margin: float = SIZING_MARGIN) -> int:
    """What the messages may take of the context: ``count_tokens`` of their text times ``margin``,
    plus a chat template's tokens per message."""
    messages = 2 if system.strip() else 1
    return math.ceil((count_tokens(system) + count_tokens(user)) * margin) + MESSAGE_OVERHEAD * messages


def _server_message(body: object) -> str:
    """The error message in a server's answer, whichever of the usual shapes it has."""
    message: object = body
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or body.get("error") or body
        if isinstance(message, dict):
            message = message.get("message") or message
    text = " ".join(str(message).split()) if message else "no message"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "…"
