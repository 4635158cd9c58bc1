"""What every summarizer takes and gives: the request a summary job makes from its transcription
and prompt template, the text and token usage it stores, and the error it reports to the user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Kind = Literal["summary", "minutes", "action_items"]
KINDS: tuple[Kind, ...] = ("summary", "minutes", "action_items")
# Both backends refuse an empty transcript: there is nothing to summarize, and a model asked to
# would invent something (or say so in words that look like a result).
EMPTY_TRANSCRIPT = "The transcription has no text to summarize."


@dataclass(frozen=True, slots=True)
class SummaryRequest:
    transcript: str  # the transcription's text (segments joined; may be hours long)
    kind: Kind
    system_prompt: str
    user_prompt: str  # the template's, placeholders not yet filled (see prompts.render_prompt)
    language: str = "en"
    date: str = ""  # ISO date of the recording or transcription
    max_output_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)


@dataclass(frozen=True, slots=True)
class SummaryOutput:
    text: str
    usage: TokenUsage


class SummarizationError(Exception):
    """A summary could not be made. The message is shown to the user as is (a job's
    ``errors[].message``): it says what went wrong in words, never a traceback."""


@runtime_checkable
class Summarizer(Protocol):
    name: str

    async def summarize(self, request: SummaryRequest) -> SummaryOutput:
        """The summary of ``request``; raises SummarizationError. Cancelling the awaiting task
        stops the work (the extractive ranking at its next step, an LLM's HTTP request at once)."""
        ...

    async def aclose(self) -> None:
        """Release what the backend holds (an HTTP connection pool)."""
        ...
