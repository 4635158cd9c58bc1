"""The embedded summarizer on two realistic meetings in different styles: a product team's weekly
sync written in punctuated sentences, and a project kickoff as Lectern's engine writes it (lower
case, one full stop per segment). Behaviour is asserted, not wording: the summary draws from the
whole meeting within its budget, the minutes have their sections, the action items are the
commitments that were made and none that were not."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from lectern.summarize import (
    ExtractiveSummarizer,
    SummarizationError,
    SummaryOutput,
    SummaryRequest,
    TokenUsage,
    count_tokens,
)
from lectern.summarize.analysis import show
from lectern.summarize.extractive import NO_ACTION_ITEMS, Stopped, compose, output_budget
from lectern.summarize.prompts import render_user_prompt
from lectern.summarize.sentences import MAX_WORDS, split_sentences

FIXTURES = Path(__file__).parent.parent / "fixtures"
MEETING = (FIXTURES / "meeting_transcript.txt").read_text()
KICKOFF = (FIXTURES / "kickoff_transcript.txt").read_text()
SYSTEM = "You write concise, faithful meeting notes."
TEMPLATE = "Write {{kind}} in {{language}} for the meeting of {{date}}:\n\n{{transcript}}"


def request(transcript: str, kind: str = "summary", **overrides: Any) -> SummaryRequest:
    values: dict[str, Any] = {"transcript": transcript, "kind": kind, "system_prompt": SYSTEM,
                              "user_prompt": TEMPLATE, "language": "en", "date": "2025-03-03"}
    return SummaryRequest(**{**values, **overrides})


async def summarize(transcript: str, kind: str = "summary", **overrides: Any) -> SummaryOutput:
    return await ExtractiveSummarizer().summarize(request(transcript, kind, **overrides))


def source_positions(text: str, transcript: str) -> list[int]:
    """Where each sentence of ``text`` was said: its index among the transcript's sentences
    (every sentence must be one of them, as written by the summarizer)."""
    shown = [show(s, True) for s in split_sentences(transcript)]
    positions = []
    for paragraph in text.split("\n\n"):
        rest = paragraph
        while rest:
            match = next((i for i, s in enumerate(shown) if rest.startswith(s)), None)
            assert match is not None, f"not a sentence of the transcript: {rest[:80]!r}"
            positions.append(match)
            rest = rest[len(shown[match]):].lstrip()
    return positions


def action_lines(text: str) -> list[str]:
    return [line[2:] for line in text.splitlines() if line.startswith("- ")]


@pytest.mark.parametrize("transcript", [MEETING, KICKOFF], ids=["weekly-sync", "kickoff"])
async def test_the_summary_draws_from_the_whole_meeting(transcript: str) -> None:
    out = await summarize(transcript)
    n = len(split_sentences(transcript))
    positions = source_positions(out.text, transcript)
    assert positions == sorted(positions) and len(positions) >= 4
    assert positions[0] > 0 or positions[1] > 3  # not the opening of the transcript, truncated
    assert min(positions) < n / 3 and max(positions) > 2 * n / 3
    assert count_tokens(out.text) <= output_budget(request(transcript), count_tokens(transcript))
    assert count_tokens(out.text) < count_tokens(transcript) / 4


async def test_the_summary_says_what_was_decided() -> None:
    out = await summarize(MEETING)
    assert "we agreed to push the 4.2 launch from March 7 to March 14" in out.text
    out = await summarize(KICKOFF)
    assert "we agreed to start with the north warehouse as the pilot site" in out.text


async def test_max_output_tokens_bounds_the_summary() -> None:
    out = await summarize(MEETING, max_output_tokens=80)
    assert 0 < count_tokens(out.text) <= 80
    assert out.usage.output_tokens == count_tokens(out.text)
    one = await summarize(MEETING, max_output_tokens=5)  # too small for any sentence: still one
    assert len(source_positions(one.text, MEETING)) == 1


async def test_usage_counts_the_prompt_and_the_text() -> None:
    out = await summarize(MEETING, "minutes")
    prompt = render_user_prompt(TEMPLATE, transcript=MEETING, language="en", date="2025-03-03")
    assert prompt.startswith("Write {{kind}} in en for the meeting of 2025-03-03:\n\nOkay, I think")
    assert out.usage == TokenUsage(count_tokens(SYSTEM) + count_tokens(prompt), count_tokens(out.text))


async def test_minutes_have_their_sections() -> None:
    out = await summarize(MEETING, "minutes")
    headings = re.findall(r"^## (.+)$", out.text, re.MULTILINE)
    assert headings == ["Summary", "Discussion", "Decisions", "Action items"]
    assert out.text.startswith("# Minutes (2025-03-03)\n")
    sections = dict(zip(headings, re.split(r"^## .+$", out.text, flags=re.MULTILINE)[1:]))
    assert len(re.findall(r"^### ", sections["Discussion"], re.MULTILINE)) >= 3  # grouped by topic
    assert len(action_lines(sections["Discussion"])) >= 5
    decisions = action_lines(sections["Decisions"])
    assert any("push the 4.2 launch from March 7 to March 14" in d for d in decisions)
    assert any("budget for the user study is approved" in d for d in decisions)
    assert any("twenty percent discount on the annual plan" in d for d in decisions)
    assert any("go with the patch" in d for d in decisions)
    assert not any("?" in d for d in decisions)
    assert "Daniel: finish the migration script with the index change (due Thursday)" in action_lines(
        sections["Action items"])
    # no sentence is said twice across the sections
    bullets = action_lines(out.text)
    assert len(bullets) == len(set(bullets))


async def test_minutes_of_an_unpunctuated_kickoff() -> None:
    out = await summarize(KICKOFF, "minutes")
    sections = dict(zip(re.findall(r"^## (.+)$", out.text, re.MULTILINE),
                        re.split(r"^## .+$", out.text, flags=re.MULTILINE)[1:]))
    decisions = action_lines(sections["Decisions"])
    assert any("keep the old system running in parallel for 2 weeks" in d for d in decisions)
    assert any("budget for the handheld scanners was approved" in d for d in decisions)
    assert not any("vendor will probably send" in d for d in decisions)


async def test_minutes_within_max_output_tokens() -> None:
    out = await summarize(MEETING, "minutes", max_output_tokens=400)
    assert count_tokens(out.text) <= 400
    assert "## Action items\n- Daniel: finish the migration script" in out.text


async def test_action_items_of_the_weekly_sync() -> None:
    out = await summarize(MEETING, "action_items")
    items = action_lines(out.text)
    assert len(items) == len(out.text.splitlines())  # nothing but items
    for expected in [
        "Daniel: finish the migration script with the index change (due Thursday)",
        "Priya: update the onboarding mockups (due before the design review next Tuesday)",
        "Lena: review the copy for the workspace explanation (due Monday)",
        "Tom: write the regression test plan for the 4.2 release (due end of week)",
        "Ana: prepare the hotfix build for the preview crash (due Wednesday)",
        "Lena: draft the launch announcement and share it in the marketing channel (due Friday)",
    ]:
        assert expected in items
    # owner and task, the due date from the answer ("I can have that list by tomorrow afternoon")
    assert any(i.startswith("Sam: collect the top ten billing tickets") and i.endswith("(due tomorrow afternoon)")
               for i in items)
    assert any(i.startswith("Speaker: send the updated timeline to the leadership team") and
               i.endswith("(due tomorrow)") for i in items)
    # "Daniel, can you...? Yes, I'll have it done by Thursday. And I'll write the rollback...": Daniel's
    assert any(i.startswith("Daniel: write the rollback procedure") for i in items)
    text = out.text.lower()
    for not_an_action in ["refund", "out on monday", "dashboard", "retro", "webinar", "start with the release"]:
        assert not_an_action not in text
    assert not any(i.startswith("Team:") for i in items)


async def test_action_items_of_the_lower_case_kickoff() -> None:
    out = await summarize(KICKOFF, "action_items")
    items = action_lines(out.text)
    for expected in [
        "Jordan: set up the staging environment (due next Wednesday)",
        "Mei: export the product catalog and the bin locations from the old system (due April 15)",
        "Rachel: run the training sessions for the floor supervisors (due in the first week of May)",
        "Omar: schedule a weekly call with the vendor project team for the whole rollout",
        "Speaker: send the vendor the signed statement of work (due tomorrow)",
    ]:
        assert expected in items
    assert any(i.startswith("Omar: confirm with the vendor that the newer scanner model works") for i in items)
    text = out.text.lower()
    assert "vacation" not in text and "updated quote" not in text and "walk us through" not in text


async def test_no_commitments_no_action_items() -> None:
    talk = ("The quarterly numbers look better than expected. Revenue grew in every region. "
            "The new pricing page will be live soon, I think. Support volume went down after the redesign. "
            "Churn is still higher than we would like. Can you hear me? Yes, loud and clear.")
    out = await summarize(talk, "action_items")
    assert out.text == NO_ACTION_ITEMS
    minutes = await summarize(talk, "minutes")
    assert f"## Action items\n- {NO_ACTION_ITEMS}" in minutes.text
    assert "## Decisions\n- No decisions were recorded." in minutes.text


async def test_unpunctuated_lower_case_text_still_has_sentences() -> None:
    flat = " ".join(re.sub(r"[^\w\s']", "", MEETING.lower()).split())
    sentences = split_sentences(flat)
    assert len(sentences) >= 40 and all(len(s.split()) <= MAX_WORDS for s in sentences)
    assert " ".join(sentences) == flat  # cut, never changed
    out = await summarize(flat)
    positions = source_positions(out.text, flat)
    assert len(positions) >= 4 and max(positions) > 2 * len(sentences) / 3
    assert all(p[0].isupper() and p.endswith(".") for p in out.text.split("\n\n"))


async def test_another_language_is_ranked_too() -> None:
    french = (
        "Bonjour à tous, merci d'être venus. Le premier sujet est le budget du projet de la bibliothèque. "
        "Le budget du projet a augmenté de dix pour cent à cause des travaux de toiture. "
        "La toiture de la bibliothèque doit être réparée avant l'hiver. "
        "Le deuxième sujet est le calendrier des travaux de la bibliothèque. "
        "Les travaux de la bibliothèque commenceront en septembre si le budget est voté. "
        "Le conseil votera le budget de la bibliothèque le mois prochain. "
        "Enfin, la mairie souhaite organiser une réunion publique sur le projet. "
        "La réunion publique sur le projet aura lieu au printemps. Merci et bonne journée."
    )
    out = await summarize(french, language="fr")
    assert 1 <= len(source_positions(out.text, french)) < len(split_sentences(french))
    items = await summarize(french, "action_items", language="fr")
    assert items.text == NO_ACTION_ITEMS  # the cue lists are English


async def test_a_single_sentence_is_its_own_summary() -> None:
    out = await summarize("we moved the release to friday")
    assert out.text == "We moved the release to friday."


@pytest.mark.parametrize("empty", ["", "   \n\t", "... ?"])
async def test_an_empty_transcript_is_an_error(empty: str) -> None:
    with pytest.raises(SummarizationError, match="no text to summarize"):
        await summarize(empty)


async def test_cancelling_stops_the_work() -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        compose(request(MEETING), stop)
    task = asyncio.create_task(summarize("\n".join([MEETING, KICKOFF] * 5)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
