"""The OpenAI-compatible backend against a real local chat-completions server (tests/summarize):
one request, retries (5xx, 429 with Retry-After, timeouts, refused connections), errors that are
not retried, answers without usage or content, map-reduce within the context, cancellation."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from lectern.settings import Settings
from lectern.summarize import (
    ExtractiveSummarizer,
    OpenAICompatibleSummarizer,
    RetryPolicy,
    SummarizationError,
    SummaryRequest,
    TokenUsage,
    count_tokens,
    summarizer_from_settings,
)
from lectern.summarize.openai_compatible import GROUP_NOTE, PART_NOTE, REDUCE_NOTE, estimate_prompt_tokens
from tests.summarize import FakeLLM, Reply, eventually, free_port

FIXTURES = Path(__file__).parent.parent / "fixtures"
MEETING = (FIXTURES / "meeting_transcript.txt").read_text()
KICKOFF = (FIXTURES / "kickoff_transcript.txt").read_text()
SYSTEM = "You are a meticulous assistant who writes meeting summaries."
TEMPLATE = "Summarize this meeting in {{language}} (recorded {{ date }}):\n{{transcript}}"


def request(transcript: str = MEETING, **overrides: Any) -> SummaryRequest:
    values: dict[str, Any] = {"transcript": transcript, "kind": "summary", "system_prompt": SYSTEM,
                              "user_prompt": TEMPLATE, "language": "English", "date": "2025-03-03"}
    return SummaryRequest(**{**values, **overrides})


class Sleeps:
    """RetryPolicy's sleep: records each wait and yields without waiting it."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make(server_url: str, sleeps: Sleeps, *, retries: int = 2, **settings: Any) -> OpenAICompatibleSummarizer:
    values: dict[str, Any] = {"llm_base_url": server_url, "llm_model": "test-model", "llm_timeout_seconds": 30.0,
                              "llm_max_retries": retries, **settings}
    policy = RetryPolicy(retries=retries, base_seconds=0.01, jitter=lambda: 0.0, sleep=sleeps)
    return OpenAICompatibleSummarizer.from_settings(Settings(**values), retry=policy)


@pytest.fixture
async def summarizer(llm: FakeLLM, sleeps: Sleeps) -> AsyncIterator[OpenAICompatibleSummarizer]:
    s = make(llm.base_url, sleeps, llm_context_tokens=8192)
    yield s
    await s.aclose()


def test_settings_choose_the_backend() -> None:
    assert isinstance(summarizer_from_settings(Settings()), ExtractiveSummarizer)
    assert isinstance(summarizer_from_settings(Settings(llm_base_url="http://127.0.0.1:9/v1")), ExtractiveSummarizer)
    chosen = summarizer_from_settings(Settings(llm_base_url="http://127.0.0.1:9/v1", llm_model="m"))
    assert isinstance(chosen, OpenAICompatibleSummarizer) and chosen.name == "openai-compatible:m"
    assert ExtractiveSummarizer().name == "extractive"


async def test_one_request_when_the_transcript_fits(llm: FakeLLM, summarizer: OpenAICompatibleSummarizer) -> None:
    out = await summarizer.summarize(request(max_output_tokens=300, temperature=0.2))
    [body] = llm.received()
    assert body["model"] == "test-model" and body["max_tokens"] == 300 and body["temperature"] == 0.2
    system, user = body["messages"]
    assert system == {"role": "system", "content": SYSTEM}
    assert user["role"] == "user"
    assert user["content"] == f"Summarize this meeting in English (recorded 2025-03-03):\n{MEETING}"
    assert out.text == "ECHO " + " ".join(MEETING.split()[:8])
    [usage] = llm.usages
    assert out.usage == TokenUsage(usage["prompt_tokens"], usage["completion_tokens"])
    assert out.usage.total_tokens == usage["total_tokens"]


async def test_defaults_and_an_empty_system_prompt(llm: FakeLLM, summarizer: OpenAICompatibleSummarizer) -> None:
    await summarizer.summarize(request(system_prompt="  ", user_prompt="Key points, please."))
    [body] = llm.received()
    assert "temperature" not in body and body["max_tokens"] == 1024
    # no system message; a template without {{transcript}} gets the transcript after it
    assert body["messages"] == [{"role": "user", "content": f"Key points, please.\n\nTranscript:\n{MEETING}"}]


async def test_a_server_error_is_retried(llm: FakeLLM, summarizer: OpenAICompatibleSummarizer, sleeps: Sleeps) -> None:
    llm.script = [Reply("error", 500, "CUDA out of memory")]
    out = await summarizer.summarize(request())
    assert len(llm.received()) == 2 and out.text.startswith("ECHO")
    assert sleeps.waits == [0.005]  # the first backoff, jitter pinned to the low end: base / 2
    assert out.usage == TokenUsage(llm.usages[0]["prompt_tokens"], llm.usages[0]["completion_tokens"])


async def test_backoff_doubles_until_the_retries_are_spent(
    llm: FakeLLM, summarizer: OpenAICompatibleSummarizer, sleeps: Sleeps,
) -> None:
    llm.default = Reply("error", 503, "loading model")
    with pytest.raises(SummarizationError) as failure:
        await summarizer.summarize(request())
    assert len(llm.received()) == 3  # the first attempt and llm_max_retries=2
    assert sleeps.waits == [0.005, 0.01]
    assert str(failure.value) == ("The language model server failed (HTTP 503): loading model "
                                  "Gave up after 3 attempts.")


async def test_rate_limits_honour_retry_after(
    llm: FakeLLM, summarizer: OpenAICompatibleSummarizer, sleeps: Sleeps,
) -> None:
    llm.script = [Reply("error", 429, "slow down", {"Retry-After": "2"})]
    out = await summarizer.summarize(request())
    assert out.text.startswith("ECHO") and len(llm.received()) == 2
    assert sleeps.waits == [2.0]


async def test_a_retry_after_beyond_the_limit_fails_at_once(
    llm: FakeLLM, summarizer: OpenAICompatibleSummarizer, sleeps: Sleeps,
) -> None:
    llm.script = [Reply("error", 503, "maintenance", {"Retry-After": "3600"})]
    with pytest.raises(SummarizationError, match="asked to wait 3600 s"):
        await summarizer.summarize(request())
    assert len(llm.received()) == 1 and sleeps.waits == []


@pytest.mark.parametrize("status, message", [
    (400, "max_tokens must be at most 4096"),
    (401, "Incorrect API key provided"),
    (404, "The model `test-model` does not exist"),
])
async def test_client_errors_are_not_retried(
    llm: FakeLLM, summarizer: OpenAICompatibleSummarizer, sleeps: Sleeps, status: int, message: str,
) -> None:
    llm.script = [Reply("error", status, message)]
    with pytest.raises(SummarizationError) as failure:
        await summarizer.summarize(request())
    assert str(failure.value) == f"The language model server refused the request (HTTP {status}): {message}"
    assert len(llm.received()) == 1 and sleeps.waits == []


async def test_a_slow_server_times_out_on_every_attempt(llm: FakeLLM, sleeps: Sleeps) -> None:
    llm.default = Reply("hold")
    summarizer = make(llm.base_url, sleeps, retries=1, llm_timeout_seconds=0.3)
    try:
        with pytest.raises(SummarizationError) as failure:
            await summarizer.summarize(request())
    finally:
        await summarizer.aclose()
    assert str(failure.value) == ("The language model server did not answer within 0.3 s. "
                                  "Gave up after 2 attempts.")
    assert len(llm.received()) == 2
    await eventually(lambda: llm.disconnects == 2)  # each timed-out request's connection was closed


async def test_an_unreachable_server(sleeps: Sleeps) -> None:
    summarizer = make(f"http://127.0.0.1:{free_port()}/v1", sleeps, retries=1)
    try:
        with pytest.raises(SummarizationError) as failure:
            await summarizer.summarize(request())
    finally:
        await summarizer.aclose()
    assert str(failure.value) == "Could not connect to the language model server. Gave up after 2 attempts."
    assert len(sleeps.waits) == 1


async def test_an_answer_without_usage_is_counted(llm: FakeLLM, summarizer: OpenAICompatibleSummarizer) -> None:
    llm.script = [Reply("no_usage")]
    out = await summarizer.summarize(request())
    [body] = llm.received()
    system, user = (m["content"] for m in body["messages"])
    assert out.usage == TokenUsage(estimate_prompt_tokens(system, user, margin=1.0), count_tokens(out.text))
    assert out.usage.input_tokens == count_tokens(system) + count_tokens(user) + 16  # 8 per message


async def test_an_empty_answer_fails(llm: FakeLLM, summarizer: OpenAICompatibleSummarizer) -> None:
    llm.script = [Reply("empty")]
    with pytest.raises(SummarizationError, match="empty answer"):
        await summarizer.summarize(request())


async def test_a_reasoning_preamble_is_not_the_answer(llm: FakeLLM, summarizer: OpenAICompatibleSummarizer) -> None:
    llm.script = [Reply(content="<think>\nThe user wants a summary.\n</think>\n\nThe launch moved to March 14.")]
    out = await summarizer.summarize(request())
    assert out.text == "The launch moved to March 14."


@pytest.mark.parametrize("raw", [{"status": "ok"}, ["not", "an", "object"], {"choices": []}])
async def test_an_answer_that_is_no_chat_completion_fails(
    llm: FakeLLM, summarizer: OpenAICompatibleSummarizer, raw: Any,
) -> None:
    llm.script = [Reply("raw", raw=raw)]
    with pytest.raises(SummarizationError, match="not a chat completion|empty answer"):
        await summarizer.summarize(request())


async def test_an_empty_transcript_sends_nothing(llm: FakeLLM, summarizer: OpenAICompatibleSummarizer) -> None:
    with pytest.raises(SummarizationError, match="no text to summarize"):
        await summarizer.summarize(request(transcript=" \n "))
    assert llm.received() == []


def _transcript_part(body: dict[str, Any]) -> str:
    user = body["messages"][-1]["content"]
    return re.sub(r"\n\n\(Note: .*\)$", "", user.split("\n", 1)[1], flags=re.DOTALL)


async def test_a_long_transcript_is_mapped_then_reduced(llm: FakeLLM, sleeps: Sleeps) -> None:
    context, answer = 1024, 64
    summarizer = make(llm.base_url, sleeps, llm_context_tokens=context)
    try:
        out = await summarizer.summarize(request(max_output_tokens=answer))
    finally:
        await summarizer.aclose()
    bodies = llm.received()
    *parts, final = bodies
    n = len(parts)
    assert n >= 3
    for i, body in enumerate(parts, 1):
        assert body["messages"][-1]["content"].endswith(PART_NOTE.format(i=i, n=n))
    assert final["messages"][-1]["content"].endswith(REDUCE_NOTE.format(n=n))
    for body in bodies:  # every request fits the context with room for the answer
        system, user = (m["content"] for m in body["messages"])
        assert body["max_tokens"] == answer
        assert estimate_prompt_tokens(system, user) <= context - answer
    # the parts are the transcript, in order, nothing lost or repeated
    assert " ".join(_transcript_part(b) for b in parts).split() == MEETING.split()
    # the reduce request carries the parts' answers in place of the transcript
    reduce_input = _transcript_part(final)
    assert reduce_input.startswith("[Part 1]\nECHO ") and f"[Part {n}]\nECHO " in reduce_input
    assert out.text == llm.answer(final)
    assert out.usage == TokenUsage(sum(u["prompt_tokens"] for u in llm.usages),
                                   sum(u["completion_tokens"] for u in llm.usages))


async def test_results_that_do_not_fit_together_are_reduced_in_groups(sleeps: Sleeps) -> None:
    llm = FakeLLM(echo_words=60).start()
    context, answer = 1024, 100
    summarizer = make(llm.base_url, sleeps, llm_context_tokens=context)
    long_meeting = "\n".join([MEETING, KICKOFF] * 3)
    try:
        out = await summarizer.summarize(request(transcript=long_meeting, max_output_tokens=answer))
    finally:
        await summarizer.aclose()
        llm.stop()
    bodies = llm.received()
    notes = [b["messages"][-1]["content"] for b in bodies]
    maps = [u for u in notes if "this is part" in u]
    groups = [u for u in notes if "of a long transcript" in u]
    assert len(maps) >= 10 and len(groups) >= 2
    assert len(bodies) == len(maps) + len(groups) + 1 and notes[-1].endswith(REDUCE_NOTE.format(n=len(groups)))
    assert notes[len(maps)].endswith(GROUP_NOTE.format(first=1, last=notes[len(maps)].count("[Part "), n=len(maps)))
    for body in bodies:
        system, user = (m["content"] for m in body["messages"])
        assert estimate_prompt_tokens(system, user) <= context - answer
    assert out.usage.input_tokens == sum(u["prompt_tokens"] for u in llm.usages)


async def test_a_template_that_leaves_no_room(llm: FakeLLM, sleeps: Sleeps) -> None:
    summarizer = make(llm.base_url, sleeps, llm_context_tokens=512)
    try:
        with pytest.raises(SummarizationError, match="leaves no room for the transcript"):
            await summarizer.summarize(request(system_prompt="Be brief. " * 200, max_output_tokens=64))
    finally:
        await summarizer.aclose()
    assert llm.received() == []


async def test_cancelling_aborts_the_request_in_flight(llm: FakeLLM, summarizer: OpenAICompatibleSummarizer) -> None:
    llm.default = Reply("hold")
    task = asyncio.create_task(summarizer.summarize(request()))
    await eventually(lambda: len(llm.received()) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: llm.disconnects == 1)  # the server saw the connection closed
    assert len(llm.received()) == 1  # and nothing was retried
