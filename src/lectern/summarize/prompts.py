"""Filling a prompt template's placeholders.

A template writes ``{{transcript}}``, ``{{language}}`` and ``{{date}}``, with or without spaces
inside the braces (``{{ date }}``). Names are matched exactly (lower case). Any other
``{{name}}`` is left as written: templates are checked where they are saved, and a summary should
not fail because a prompt quotes braces (a JSON example, a mail-merge field meant for the model).
Substitution is one pass over the template, so a transcript that happens to contain
``{{language}}`` is inserted verbatim and never expanded.
"""

from __future__ import annotations

import re

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def render_prompt(template: str, *, transcript: str, language: str, date: str) -> str:
    values = {"transcript": transcript, "language": language, "date": date}
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def has_placeholder(template: str, name: str) -> bool:
    return any(m.group(1) == name for m in _PLACEHOLDER.finditer(template))


def render_user_prompt(template: str, *, transcript: str, language: str, date: str) -> str:
    """The user message for ``transcript``. A template without ``{{transcript}}`` would send the
    model nothing to summarize, so the transcript then follows the template's text."""
    rendered = render_prompt(template, transcript=transcript, language=language, date=date)
    if has_placeholder(template, "transcript"):
        return rendered
    return f"{rendered.rstrip()}\n\nTranscript:\n{transcript}" if rendered.strip() else transcript
