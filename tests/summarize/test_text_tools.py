"""The pieces both backends stand on: the token count, prompt placeholders, sentence splitting,
chunking within a budget, and the retry schedule."""

from __future__ import annotations

import email.utils
from pathlib import Path

import pytest

from lectern.summarize import RetryPolicy, SummarizationError, count_tokens, render_prompt
from lectern.summarize.chunking import chunk_text
from lectern.summarize.prompts import render_user_prompt
from lectern.summarize.retry import Transient, retry_after
from lectern.summarize.sentences import MAX_WORDS, MIN_WORDS, split_sentences

FIXTURES = Path(__file__).parent.parent / "fixtures"
MEETING = (FIXTURES / "meeting_transcript.txt").read_text()
KICKOFF = (FIXTURES / "kickoff_transcript.txt").read_text()


def test_count_tokens_basics() -> None:
    assert count_tokens("") == 0
    assert count_tokens("Hello world!") == 3  # "Hello", " world", "!" as in GPT-2 and cl100k
    assert count_tokens("the") == 1 and count_tokens(" the") == 1  # a leading space is part of the word
    assert count_tokens("internationalization") > count_tokens("nation") == 1  # long words cost more
    assert count_tokens("123456") == 2 and count_tokens("1234567") == 3  # digits in threes
    assert count_tokens("we'll") == 2  # "we", "'ll"
    assert count_tokens("こんにちは") == 5 and count_tokens("привет") == 3  # other scripts: per letter, per two
    assert count_tokens("a\n\nb") == 4  # "a", "\n", "\n", "b": a run before a word gives up its last character
    assert count_tokens(MEETING) == count_tokens(MEETING)  # deterministic


def test_count_tokens_is_near_bpe_on_english() -> None:
    # about 1.25-1.3 tokens per word on plain English prose, the usual BPE rule of thumb
    for text in (MEETING, KICKOFF):
        ratio = count_tokens(text) / len(text.split())
        assert 1.1 < ratio < 1.45
    # and additive, up to the boundary between the parts
    assert count_tokens(MEETING + KICKOFF) <= count_tokens(MEETING) + count_tokens(KICKOFF) + 1


def test_render_prompt_fills_the_placeholders() -> None:
    template = "Language: {{language}}. Date: {{ date }}. {{  transcript  }}"
    assert render_prompt(template, transcript="Hi.", language="fr", date="2025-01-02") == (
        "Language: fr. Date: 2025-01-02. Hi.")


def test_render_prompt_leaves_other_braces_alone() -> None:
    template = 'Answer as {"summary": "..."} for {{speaker}}, not {{ Transcript }}: {{transcript}}'
    rendered = render_prompt(template, transcript="T", language="en", date="")
    assert rendered == 'Answer as {"summary": "..."} for {{speaker}}, not {{ Transcript }}: T'


def test_render_prompt_does_not_expand_what_it_inserts() -> None:
    rendered = render_prompt("{{transcript}} ({{language}})", transcript="say {{language}} {{date}}",
                             language="de", date="2025-01-02")
    assert rendered == "say {{language}} {{date}} (de)"


def test_a_template_without_the_transcript_gets_it_appended() -> None:
    assert render_user_prompt("Summarize in {{language}}.", transcript="Words.", language="en", date="") == (
        "Summarize in en.\n\nTranscript:\nWords.")
    assert render_user_prompt("", transcript="Words.", language="en", date="") == "Words."


def test_sentences_of_punctuated_text() -> None:
    text = "Dr. Chen joined at 9 a.m. today. Did it work? Yes! J. Smith sent v2.1 of the plan.\nNext line"
    assert split_sentences(text) == [
        "Dr. Chen joined at 9 a.m. today.", "Did it work?", "Yes!", "J. Smith sent v2.1 of the plan.", "Next line"]


def test_sentences_of_unpunctuated_text() -> None:
    words = ("okay so let's start with the budget we spent more than planned on hardware this quarter "
             "and the team wants to order more scanners next month so the question is whether we can "
             "move money from the training budget but I think we should wait for the audit first "
             "then we can decide how much is left for the rest of the year okay next item is hiring we have "
             "two open positions on the floor team").split()
    sentences = split_sentences(" ".join(words))
    assert len(sentences) >= 3
    assert all(MIN_WORDS <= len(s.split()) <= MAX_WORDS for s in sentences)
    assert " ".join(sentences).split() == words
    # cut where a new sentence starts, not inside a phrase
    assert "okay next item is hiring we have two open positions on the floor team" in sentences
    assert not any(s.split()[-1] in ("the", "and", "think") for s in sentences)


def test_chunks_fit_and_keep_the_text() -> None:
    text = f"{MEETING}\n{KICKOFF}"
    for budget in (40, 200, 1000):
        chunks = chunk_text(text, budget)
        assert all(count_tokens(c) <= budget for c in chunks)
        assert " ".join(chunks).split() == text.split()
    assert chunk_text("short text", 100) == ["short text"]
    blob = "x" * 5000  # no spaces at all
    chunks = chunk_text(blob, 50)
    assert all(count_tokens(c) <= 50 for c in chunks) and "".join("".join(c.split()) for c in chunks) == blob


def test_retry_after_headers() -> None:
    assert retry_after({"retry-after": "7"}) == 7.0
    assert retry_after({"retry-after": "1.5"}) == 1.5
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after({"retry-after": date}, now=lambda: 1_000_000) == 30.0
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None


def test_backoff_schedule() -> None:
    low = RetryPolicy(jitter=lambda: 0.0)
    high = RetryPolicy(jitter=lambda: 1.0)
    assert [low.backoff(k) for k in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert [high.backoff(k) for k in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert RetryPolicy(jitter=lambda: 1.0).backoff(10) == 30.0  # capped


async def test_the_retry_loop() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise Transient("Busy.", retry_after=0.25 if calls == 2 else None)
        return "done"

    policy = RetryPolicy(retries=2, base_seconds=1.0, jitter=lambda: 0.0, sleep=sleep)
    assert await policy.run(flaky) == "done" and waits == [0.5, 0.25]
    calls, waits[:] = -10, []
    with pytest.raises(SummarizationError, match=r"^Busy\. Gave up after 3 attempts\.$"):
        await policy.run(flaky)
    assert waits == [0.5, 1.0]
