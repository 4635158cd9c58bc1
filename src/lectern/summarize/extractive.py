"""The embedded summarizer, used when no LLM is configured: no model, no download, no network.

It writes only sentences that were said (extractive), chosen by centrality (analysis.py) from
every part of the meeting, within a token budget: the template's ``max_output_tokens`` if lower,
else a share of the transcript (``SHARES``), never less than ``MIN_BUDGET``. Per template kind:

- ``summary``: the chosen sentences as prose, in the order they were said, a new paragraph where
  the topic changes once a paragraph has a few sentences; decisions and commitments weigh more
  than what was merely discussed;
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
from lectern.summarize.interface import EMPTY_TRANSCRIPT, SummarizationError, SummaryOutput, SummaryRequest, TokenUsage
from lectern.summarize.prompts import render_user_prompt
from lectern.summarize.sentences import split_sentences
from lectern.summarize.tokens import count_tokens

SHARES = {"summary": 0.12, "minutes": 0.2, "action_items": 1.0}  # default budget, of the transcript's tokens
MIN_BUDGET = 60
MAX_DEFAULT_BUDGET = 2000
DECISION_BOOST = 1.5  # a summary should say what was decided...
ACTION_BOOST = 1.25  # ...and who does what, more than what was merely discussed
PARAGRAPH_SENTENCES = 4  # a summary starts a new paragraph at a new topic once it has this many
MINUTES_SUMMARY_SHARE = 0.3  # of the minutes' prose (summary and discussion)
# Under a template's max_output_tokens, the most the minutes' lists may take of it:
ACTIONS_SHARE, DECISIONS_SHARE = 0.4, 0.25
NO_ACTION_ITEMS = "No action items were found."
NO_DECISIONS = "No decisions were recorded."


class Stopped(Exception):
    """compose() was told to stop (its summary was cancelled)."""


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
            raise Stopped

    budget = output_budget(request, count_tokens(request.transcript))
    if request.kind == "action_items":  # found by their wording: no ranking needed
        return _action_items(find_action_items(split_sentences(request.transcript)), budget)
    a = analyse(request.transcript, request.language, check)
    if request.kind == "minutes":
        return _minutes(a, request, budget)
    return _summary(a, budget)


def output_budget(request: SummaryRequest, transcript_tokens: int) -> int:
    share = SHARES.get(request.kind, SHARES["summary"])
    default = min(MAX_DEFAULT_BUDGET, max(MIN_BUDGET, round(share * transcript_tokens)))
    return min(default, request.max_output_tokens) if request.max_output_tokens else default


def _summary(a: Analysis, budget: int) -> str:
    chosen = pick(a, range(len(a.sentences)), budget, boost=_importance(a))
    paragraphs: list[list[int]] = []
    for i in chosen:
        if paragraphs and (len(paragraphs[-1]) < PARAGRAPH_SENTENCES
                           or a.block_of[i] == a.block_of[paragraphs[-1][-1]]):
            paragraphs[-1].append(i)
        else:
            paragraphs.append([i])
    return "\n\n".join(" ".join(a.shown[i] for i in p) for p in paragraphs)


def _importance(a: Analysis) -> dict[int, float]:
    boost = {i: DECISION_BOOST for i, s in enumerate(a.sentences) if is_decision(s)}
    for item in find_action_items(a.sentences):
        boost.setdefault(item.sentence, ACTION_BOOST)
    return boost


def _action_items(items: list[ActionItem], budget: int) -> str:
    lines = _fit([f"- {item.render()}" for item in items], budget)
    return "\n".join(lines) if lines else NO_ACTION_ITEMS


def _fit(lines: list[str], budget: float) -> list[str]:
    """The first lines whose tokens fit ``budget`` (at least one: a list is never cut to nothing)."""
    kept: list[str] = []
    for line in lines:
        if kept and count_tokens("\n".join([*kept, line])) > budget:
            break
        kept.append(line)
    return kept


def _minutes(a: Analysis, request: SummaryRequest, budget: int) -> str:
    """Decisions and action items are listed in full unless the template's max_output_tokens
    forces a cut; the prose (summary and discussion) gets the proportional budget."""
    items = find_action_items(a.sentences)
    decided = [i for i in range(len(a.sentences)) if is_decision(a.sentences[i])]
    limit = request.max_output_tokens
    if limit is not None and sum(a.costs[i] for i in decided) > limit * DECISIONS_SHARE:
        decided = pick(a, decided, round(limit * DECISIONS_SHARE))
    actions = [f"- {item.render()}" for item in items]
    actions = _fit(actions, limit * ACTIONS_SHARE) if limit is not None else actions
    title = "# Minutes" + (f" ({request.date})" if request.date else "")
    decisions = "\n".join(f"- {a.shown[i]}" for i in decided) or f"- {NO_DECISIONS}"
    actions_text = "\n".join(actions) or f"- {NO_ACTION_ITEMS}"
    lists = f"## Decisions\n{decisions}\n\n## Action items\n{actions_text}"
    frame = f"{title}\n\n## Summary\n\n## Discussion\n{lists}"
    prose = budget if limit is None else max(0, budget - count_tokens(frame))

    used = set(decided) | {item.sentence for item in items}
    everything = [i for i in range(len(a.sentences)) if i not in used] or list(range(len(a.sentences)))
    overview = pick(a, everything, round(prose * MINUTES_SUMMARY_SHARE))
    left = prose - sum(a.costs[i] for i in overview)
    used |= set(overview)
    points = {b: pick(a, [i for i in block if i not in used], left * len(block) // len(a.sentences), required=False)
              for b, block in enumerate(a.blocks)}
    summary = " ".join(a.shown[i] for i in overview)
    while True:
        text = f"{title}\n\n## Summary\n{summary}\n\n## Discussion\n{_discussion(a, points)}\n\n{lists}"
        if limit is None or count_tokens(text) <= limit or not any(points.values()):
            return text
        # headings and bullet marks cost a little more than their sentences: drop the weakest point
        weakest = min((i for bullets in points.values() for i in bullets), key=lambda i: a.scores[i])
        points = {b: [i for i in bullets if i != weakest] for b, bullets in points.items()}


def _discussion(a: Analysis, points: dict[int, list[int]]) -> str:
    sections = []
    for b, bullets in points.items():
        if bullets:
            lines = "\n".join(f"- {a.shown[i]}" for i in bullets)
            sections.append(f"### {a.labels[b]}\n{lines}" if len(a.blocks) > 1 else lines)
    return "\n\n".join(sections) or "- No further points."
