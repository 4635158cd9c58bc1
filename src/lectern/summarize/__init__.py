"""Summaries of transcripts: one interface (``Summarizer``), two backends.

``openai_compatible``: any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp),
with map-reduce for transcripts longer than its context, retries and cancellation. ``extractive``:
the embedded default, no model and no network, which ranks the transcript's own sentences
(``analysis``, ``ranking``, ``topics``) and finds decisions and action items by their wording
(``cues``, ``actions``). ``tokens`` counts tokens for both; ``prompts`` fills templates.
"""

from lectern.summarize.backends import summarizer_from_settings
from lectern.summarize.extractive import ExtractiveSummarizer
from lectern.summarize.interface import (
    EMPTY_TRANSCRIPT,
    KINDS,
    Kind,
    SummarizationError,
    Summarizer,
    SummaryOutput,
    SummaryRequest,
    TokenUsage,
)
from lectern.summarize.openai_compatible import OpenAICompatibleSummarizer
from lectern.summarize.prompts import render_prompt
from lectern.summarize.retry import RetryPolicy
from lectern.summarize.tokens import count_tokens

__all__ = [
    "EMPTY_TRANSCRIPT",
    "KINDS",
    "ExtractiveSummarizer",
    "Kind",
    "OpenAICompatibleSummarizer",
    "RetryPolicy",
    "SummarizationError",
    "Summarizer",
    "SummaryOutput",
    "SummaryRequest",
    "TokenUsage",
    "count_tokens",
    "render_prompt",
    "summarizer_from_settings",
]
