"""Which summarizer a server uses: the configured OpenAI-compatible model, else the embedded one."""

from __future__ import annotations

import logging

from lectern.settings import Settings
from lectern.summarize.extractive import ExtractiveSummarizer
from lectern.summarize.interface import Summarizer
from lectern.summarize.openai_compatible import OpenAICompatibleSummarizer

log = logging.getLogger(__name__)


def summarizer_from_settings(settings: Settings) -> Summarizer:
    """OpenAI-compatible when both ``LECTERN_LLM_BASE_URL`` and ``LECTERN_LLM_MODEL`` are set,
    else extractive. Half a configuration is logged, not an error: summaries still work."""
    if settings.llm_base_url and settings.llm_model:
        return OpenAICompatibleSummarizer.from_settings(settings)
    if settings.llm_base_url or settings.llm_model:
        missing = "LECTERN_LLM_MODEL" if settings.llm_base_url else "LECTERN_LLM_BASE_URL"
        log.warning("%s is not set: summaries use the embedded extractive summarizer", missing)
    return ExtractiveSummarizer()
