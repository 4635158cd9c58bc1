"""The embedded summarizer, used when no LLM is configured: no model, no download, no network.

It writes only sentences that were said (extractive), chosen by centrality (analysis.py) from
every part of the meeting, within a token budget: the template's ``max_output_tokens`` if lower,
else a share of the transcript (``SHARES``), never less than ``MIN_BUDGET``. Per template kind:

- ``summary``: the chosen sentences as prose, one paragraph per topic the meeting moved through;
- ``minutes``: "Summary" (a few sentences), "Discussion" (key points per topic block, headed by
  the block's distinctive words), "Decisions" (sentences with decision cues), "Action items";
- ``action_items``: one line per commitment found, "Owner: action (due ...)", or a line saying
  there were none.

The prompts themselves cannot be followed without a language model; the kind, the language and
the date are. Ranking works in any language; the cues for decisions and action items and the
clean-up of hesitations are English. Usage counts the prompt a model would have been sent and the
text returned, with ``tokens.count_tokens``. An empty transcript is an error (there is nothing to
summarize, and a summary saying so would look like a result).
"""

from __future__ import annotations

import asyncio
import threading

from lectern.summarize.actions import ActionItem, find_action_items
from lectern.summarize.analysis import Analysis, analyse, pick
from lectern.summarize.cues import is_decision
from lectern.summarize.interface import SummarizationError, SummaryOutput, SummaryRequest, TokenUsage
from lectern.summarize.prompts import render_user_prompt
from lectern.summarize.tokens import count_tokens

SHARES = {"summary": 0.12, "minutes": 0.3, "action_items": 1.0}  # default budget, of the transcript's tokens
MIN_BUDGET = 60
MAX_DEFAULT_BUDGET = 2000
MINUTES_SUMMARY_SHARE = 0.3  # of what the minutes have left after decisions and action items
MAX_DECISIONS_SHARE = 0.35
NO_ACTION_ITEMS = "No action items were found."
NO_DECISIONS = "No decisions were recorded."
EMPTY_TRANSCRIPT = "The transcription has no text to summarize."


class _Cancelled(Exception):
    pass


class ExtractiveSummarizer:
    name = "extractive"

    async def summarize(self, request: SummaryRequest) -> SummaryOutput:
        if not any(ch.isalnum() for ch in request.transcript):
            raise SummarizationError(EMPTY_TRANSCRIPT)
        stop = threading.Event()
        try:
            text = await asyncio.to_thread(compose, request, stop)
        except asyncio.CancelledError:
            stop.set()  # the thread ends at its next check instead of ranking on for nobody
            raise
        prompt = render_user_prompt(request.user_prompt, transcript=request.transcript,
                                    language=request.language, date=request.date)
        usage = TokenUsage(count_tokens(request.system_prompt) + count_tokens(prompt), count_tokens(text))
        return SummaryOutput(text, usage)

    async def aclose(self) -> None:
        pass


def compose(request: SummaryRequest, stop: threading.Event | None = None) -> str:
    """The output for ``request`` (runs in a worker thread; ``stop`` cancels it)."""
    def check() -> None:
        if stop is not None and stop.is_set():
            raise _Cancelled

    a = analyse(request.transcript, request.language, check)
    budget = output_budget(request, count_tokens(request.transcript))
    if request.kind == "action_items":
        return _action_items(find_action_items(a.sentences), budget)
    if request.kind == "minutes":
        return _minutes(a, request, budget)
    return _summary(a, budget)


def output_budget(request: SummaryRequest, transcript_tokens: int) -> int:
    share = SHARES.get(request.kind, SHARES["summary"])
    default = min(MAX_DEFAULT_BUDGET, max(MIN_BUDGET, round(share * transcript_tokens)))
    return min(default, request.max_output_tokens) if request.max_output_tokens else default


def _summary(a: Analysis, budget: int) -> str:
    chosen = pick(a, range(len(a.sentences)), budget)
    paragraphs: dict[int, list[str]] = {}
    for i in chosen:
        paragraphs.setdefault(a.block_of[i], []).append(a.shown[i])
    return "\n\n".join(" ".join(p) for p in paragraphs.values())


def _action_items(items: list[ActionItem], budget: int) -> str:
    if not items:
        return NO_ACTION_ITEMS
    lines: list[str] = []
    for item in items:
        line = f"- {item.render()}"
        if lines and count_tokens("\n".join([*lines, line])) > budget:
            break
        lines.append(line)
    return "\n".join(lines)


def _minutes(a: Analysis, request: SummaryRequest, budget: int) -> str:
    items = find_action_items(a.sentences)
    actions = "\n".join(f"- {item.render()}" for item in items) or f"- {NO_ACTION_ITEMS}"
    decided = [i for i in range(len(a.sentences)) if is_decision(a.sentences[i])]
    if sum(a.costs[i] for i in decided) > budget * MAX_DECISIONS_SHARE:
        decided = pick(a, decided, round(budget * MAX_DECISIONS_SHARE))
    decisions = "\n".join(f"- {a.shown[i]}" for i in decided) or f"- {NO_DECISIONS}"
    title = "# Minutes" + (f" ({request.date})" if request.date else "")
    frame = f"{title}\n\n## Summary\n\n\n## Discussion\n\n## Decisions\n{decisions}\n\n## Action items\n{actions}"
    left = max(0, budget - count_tokens(frame))

    used = set(decided) | {item.sentence for item in items}
    overview = pick(a, [i for i in range(len(a.sentences)) if i not in used], round(left * MINUTES_SUMMARY_SHARE))
    left -= sum(a.costs[i] for i in overview)
    used |= set(overview)

    sections = []
    for b, block in enumerate(a.blocks):
        share = round(left * len(block) / len(a.sentences))
        bullets = pick(a, [i for i in block if i not in used], share) if share > 0 else []
        if not bullets:
            continue
        points = "\n".join(f"- {a.shown[i]}" for i in bullets)
        sections.append(f"### {a.labels[b]}\n{points}" if len(a.blocks) > 1 else points)
    discussion = "\n\n".join(sections) or "- " + " ".join(a.shown[i] for i in overview[:1])
    summary = " ".join(a.shown[i] for i in overview) or a.shown[0]
    return (f"{title}\n\n## Summary\n{summary}\n\n## Discussion\n{discussion}\n\n"
            f"## Decisions\n{decisions}\n\n## Action items\n{actions}")
