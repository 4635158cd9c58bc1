"""The Summaries API (``/api/v1/speech-services/summaries``, seed 001) on real servers: summaries,
minutes and action items of COMPLETED transcriptions through the built-in and users' own prompt
templates, written by the embedded extractive summarizer or by an OpenAI-compatible server (a real
one, in this process: ``tests.summarize.FakeLLM``); failures with the seed's error codes, listing,
cancel, webhooks, delete, purge and the retention sweeper, scopes and ownership.

Transcriptions are made honestly: speech uploaded through ``/transcriptions/upload`` and polled
until COMPLETED, or a finished streaming session's transcription (COMPLETED at once).

Servers (each on SQLite, and on PostgreSQL when configured):

- ``server``, the shared one: runs transcriptions and summaries with the extractive summarizer.
- ``idle``: runs no job at all (``job_workers=0``, ``summary_workers=0``), so its summaries stay
  PENDING as long as a test needs; its summary retention is a few seconds; it may send webhooks to
  127.0.0.1 over http.
- ``llm``: its summaries are written by the fake OpenAI-compatible server; retention of a few
  seconds, webhooks to 127.0.0.1 retried quickly.
- ``queue``: transcribes, runs no summary itself (``summary_workers=0``), allows one attempt per
  job, summary retention of a few seconds; ``lectern worker`` processes started by a test (sharing
  its database and data dir) run its summaries, against a fake model server of their own that
  answers nothing.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from lectern.summarize import ExtractiveSummarizer, SummaryOutput, SummaryRequest
from tests.api.test_files_api import fresh_key
from tests.api.test_streams_api import assert_problem, auth, iso, media_type, start_server, stream_session
from tests.api.test_transcriptions_api import deliveries, received_for, verify, wav
from tests.conftest import LecternServer, load_speech
from tests.jobs.test_job_workers import Worker
from tests.summarize import FakeLLM
from tests.summarize import Reply as LLMReply
from tests.webhooks import Receiver

BASE = "/api/v1/speech-services/summaries"
TRANSCRIPTIONS = "/api/v1/speech-services/transcriptions"
TEMPLATES = "/api/v1/session-history/summary-prompt-templates"
READ, WRITE, DELETE = (f"speech:summaries:{a}" for a in ("read", "write", "delete"))
TRANSCRIPTIONS_READ = "speech:transcriptions:read"
PROMPTS_ADMIN = "ai:prompts:admin"

SUMMARY_T = "00000000-0000-4000-8000-00000000a001"
MINUTES_T = "00000000-0000-4000-8000-00000000a002"
ACTIONS_T = "00000000-0000-4000-8000-00000000a003"
BUILT_IN = {SUMMARY_T: "summary", MINUTES_T: "minutes", ACTIONS_T: "action_items"}

SEED_FIELDS = {
    "id", "transcriptionId", "status", "isDeleted", "isPurged", "promptTemplateId", "creationDate",
    "completionDate", "deletedAt", "purgedAt", "purgeAt", "result", "errors", "webhook",
}
SUMMARY_FIELDS = SEED_FIELDS | {"fileId"}  # the implementation adds the transcription's file
RESULT_FIELDS = {"text", "promptTemplateId", "usage"}
USAGE_FIELDS = {"inputTokens", "outputTokens", "totalTokens"}
ERROR_FIELDS = {"code", "message", "timestamp"}
SEED_ERROR_CODES = {"SUMMARIZATION_FAILED", "PROMPT_TEMPLATE_NOT_FOUND", "TRANSCRIPTION_NOT_COMPLETED",
                    "INTERNAL_ERROR"}
LIST_KEYS = {"summaries", "size", "total", "filters", "sort"}
STATUS_ORDER = ["PENDING", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"]
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
RETENTION_DAYS = 0.00005  # summary_retention_days of the idle and llm servers: 4.32 s
HOOK_SECRET = "summaries are signed too"
MODEL = "fake-model"

FOX, COFFEE, SILENCE = load_speech("fox"), load_speech("coffee"), load_speech("silence_3s")
PAUSE = b"\x00\x00" * 16000  # 1 s
MEETING_NAMES = ["meeting", "numbers", "kitchen", "train", "weather", "directions", "library", "coffee"]
MEETING = PAUSE.join(load_speech(n).pcm for n in MEETING_NAMES)  # ~30 s: a short "meeting", one line each
CALL = PAUSE.join(load_speech(n).pcm for n in ("meeting", "fox", "coffee"))


# -- helpers ----------------------------------------------------------------------------------------


def poll(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """``check()``'s first truthy result, looked for until a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def transcribed(http: httpx.Client, key: str, pcm: bytes, filename: str = "meeting.wav") -> dict[str, Any]:
    """Upload-and-transcribe ``pcm``, then the COMPLETED transcription (with its result)."""
    response = http.post(f"{TRANSCRIPTIONS}/upload", headers=auth(key),
                         files={"file": (filename, wav(pcm), "audio/wav")})
    assert response.status_code == 201, response.text
    return wait_transcription(http, key, response.json()["transcription"]["id"])


def transcription_of(http: httpx.Client, key: str, file_id: str) -> dict[str, Any]:
    """Another transcription of an uploaded file, COMPLETED."""
    response = http.post(TRANSCRIPTIONS, headers=auth(key), json={"fileId": file_id})
    assert response.status_code == 201, response.text
    return wait_transcription(http, key, response.json()["id"])


def wait_transcription(http: httpx.Client, key: str, transcription_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = http.get(f"{TRANSCRIPTIONS}/{transcription_id}", headers=auth(key)).json()
        return job if job["status"] in TERMINAL else None

    job = poll(done, "the transcription to end", timeout=180)
    assert job["status"] == "COMPLETED", job
    return job


def create(http: httpx.Client, key: str, **body: Any) -> httpx.Response:
    return http.post(BASE, headers=auth(key), json=body)


def created(http: httpx.Client, key: str, transcription: dict[str, Any], template: str = SUMMARY_T,
            **body: Any) -> dict[str, Any]:
    response = create(http, key, transcriptionId=transcription["id"], promptTemplateId=template, **body)
    assert response.status_code == 201, response.text
    assert media_type(response) == "application/json"
    return response.json()


def get_summary(http: httpx.Client, key: str, summary_id: str) -> dict[str, Any]:
    response = http.get(f"{BASE}/{summary_id}", headers=auth(key))
    assert response.status_code == 200, response.text
    assert media_type(response) == "application/json"
    return response.json()


def wait_summary(http: httpx.Client, key: str, summary_id: str, statuses: tuple[str, ...] = TERMINAL,
                 timeout: float = 60.0, seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The summary once its status is one of ``statuses``; every body polled is appended to ``seen``."""
    deadline = time.monotonic() + timeout
    while True:
        summary = get_summary(http, key, summary_id)
        if seen is not None:
            seen.append(summary)
        if summary["status"] in statuses:
            return summary
        assert time.monotonic() < deadline, f"the summary never reached {statuses}: {summary}"
        time.sleep(0.05)


def summarized(http: httpx.Client, key: str, transcription: dict[str, Any], template: str = SUMMARY_T,
               status: str = "COMPLETED", **body: Any) -> dict[str, Any]:
    done = wait_summary(http, key, created(http, key, transcription, template, **body)["id"])
    assert done["status"] == status, done
    return done


def listed(http: httpx.Client, key: str, **params: Any) -> dict[str, Any]:
    response = http.get(BASE, headers=auth(key), params=params)
    assert response.status_code == 200, (params, response.text)
    assert media_type(response) == "application/json"
    return response.json()


def ids(page: dict[str, Any]) -> list[str]:
    return [s["id"] for s in page["summaries"]]


def db_id(srv: LecternServer, value: str) -> str:
    return uuid.UUID(value).hex if srv.backend == "sqlite" else value


def summary_row(srv: LecternServer, summary_id: str) -> dict[str, Any]:
    with srv.db() as s:
        return dict(s.execute(text("SELECT * FROM summaries WHERE id = :id"),
                              {"id": db_id(srv, summary_id)}).mappings().one())


def summary_count(srv: LecternServer) -> int:
    with srv.db() as s:
        return s.execute(text("SELECT count(*) FROM summaries")).scalar_one()


def template_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"t{uuid.uuid4().hex[:8]}",
        "description": "A template of a summaries test.",
        "systemPrompt": "You are the note taker of a small team. Be brief.",
        "userPrompt": "Summarize the call of {{ date }} in {{language}}, for the team:\n{{transcript}}\n(The end.)",
        "outputOptions": {"kind": "summary", "maxOutputTokens": 321, "temperature": 0.25},
    }
    body.update(fields)
    return body


def user_template(http: httpx.Client, key: str, **fields: Any) -> dict[str, Any]:
    response = http.post(TEMPLATES, headers=auth(key), json=template_body(**fields))
    assert response.status_code == 201, response.text
    assert response.json()["level"] == "USER"
    return response.json()


def get_template(http: httpx.Client, key: str, template_id: str) -> dict[str, Any]:
    response = http.get(f"{TEMPLATES}/{template_id}", headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


def day_of(transcription: dict[str, Any]) -> str:
    """The transcription's date, as ``{{date}}`` is filled: the UTC day it was created."""
    return iso(transcription["creationDate"]).astimezone(timezone.utc).date().isoformat()


def rendered(prompt: str, transcription: dict[str, Any]) -> str:
    """A template's prompt with its placeholders filled for ``transcription``."""
    values = {"transcript": transcription["result"]["text"], "language": "en", "date": day_of(transcription)}
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values[m.group(1)], prompt)


def extractive(template: dict[str, Any], transcription: dict[str, Any]) -> SummaryOutput:
    """What the embedded summarizer makes of ``transcription`` with ``template`` (as the API shows them)."""
    options = template["outputOptions"]
    request = SummaryRequest(
        transcript=transcription["result"]["text"], kind=options["kind"], system_prompt=template["systemPrompt"],
        user_prompt=template["userPrompt"], language="en", date=day_of(transcription),
        max_output_tokens=options.get("maxOutputTokens"), temperature=options.get("temperature"))
    with ThreadPoolExecutor(1) as pool:  # a loop of its own, away from the tests' event loop
        return pool.submit(asyncio.run, ExtractiveSummarizer().summarize(request)).result()


def sentences(value: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.?!])\s+", value) if s.strip()]


def assert_result(summary: dict[str, Any], template_id: str) -> dict[str, Any]:
    assert summary["status"] == "COMPLETED", summary
    result = summary["result"]
    assert set(result) == RESULT_FIELDS
    assert isinstance(result["text"], str) and result["text"].strip()
    assert result["promptTemplateId"] == template_id
    usage = result["usage"]
    assert set(usage) == USAGE_FIELDS
    assert all(isinstance(usage[k], int) and usage[k] > 0 for k in USAGE_FIELDS), usage
    assert usage["inputTokens"] + usage["outputTokens"] == usage["totalTokens"]
    return result


def assert_usage(result: dict[str, Any], inputs: int, outputs: int) -> None:
    assert result["usage"] == {"inputTokens": inputs, "outputTokens": outputs, "totalTokens": inputs + outputs}


def assert_failed(summary: dict[str, Any], code: str) -> dict[str, Any]:
    """A FAILED summary with exactly one error of ``code``, stamped while the job ran."""
    assert summary["status"] == "FAILED", summary
    assert summary["result"] is None
    assert isinstance(summary["errors"], list) and len(summary["errors"]) == 1, summary
    error = summary["errors"][0]
    assert set(error) == ERROR_FIELDS
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert iso(summary["creationDate"]) <= iso(error["timestamp"]) <= iso(summary["completionDate"])
    return error


def script(fake: FakeLLM, *replies: LLMReply) -> int:
    """Queue the fake model server's next answers; the number of requests it had before."""
    with fake._lock:
        fake.script.extend(replies)
        return len(fake.requests)


def the_request(fake: FakeLLM, before: int) -> dict[str, Any]:
    """The one request the fake model server received since ``before``."""
    received = fake.received()[before:]
    assert len(received) == 1, received
    return received[0]


def usage_of(answer: dict[str, int]) -> tuple[int, int]:
    return answer["prompt_tokens"], answer["completion_tokens"]


# -- servers, keys, shared transcriptions -----------------------------------------------------------


@pytest.fixture(scope="module")
def http(server: LecternServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def keys(server: LecternServer, api_key: str) -> dict[str, str]:
    return {
        "alice": api_key,
        "bob": server.create_key("acme", "bob"),
        "carol": server.create_key("globex", "carol"),
        "read": server.create_key("acme", "alice", [READ]),
        "write": server.create_key("acme", "alice", [WRITE]),
        "delete": server.create_key("acme", "alice", [DELETE]),
        "other": server.create_key("acme", "alice", [TRANSCRIPTIONS_READ, "speech:files:read"]),
    }


@pytest.fixture(scope="module")
def meeting(http: httpx.Client, api_key: str) -> dict[str, Any]:
    """alice's COMPLETED transcription of a ~30 s meeting (read-only for the tests that share it)."""
    return transcribed(http, api_key, MEETING)


@pytest.fixture(scope="module")
def finished(http: httpx.Client, api_key: str, meeting: dict[str, Any]) -> dict[str, Any]:
    """alice's COMPLETED summary of the meeting (read-only for the tests that share it)."""
    return summarized(http, api_key, meeting)


@pytest.fixture(scope="module")
def idle(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    srv = start_server(tmp_path_factory, backend, job_workers=0, summary_workers=0,
                       summary_retention_days=RETENTION_DAYS, sweep_interval_seconds=0.3,
                       webhook_allow_insecure_hosts="127.0.0.1", webhook_retry_seconds="0.2,0.2,0.5")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def idle_http(idle: LecternServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=idle.base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def idle_key(idle: LecternServer) -> str:
    return idle.create_key("acme", "alice")


async def session_transcription(srv: LecternServer, key: str, utterances: list[bytes]) -> dict[str, Any]:
    """The transcription of a finished streaming session: COMPLETED at once, no job worker needed."""
    session = await stream_session(srv, key, utterances)

    def make() -> dict[str, Any]:
        with httpx.Client(base_url=srv.base_url, timeout=60) as client:
            response = client.post(TRANSCRIPTIONS, headers=auth(key), json={"sessionId": session.id})
            assert response.status_code == 201, response.text
            assert response.json()["status"] == "COMPLETED", response.json()
            return response.json()

    return await asyncio.to_thread(make)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def idle_transcription(idle: LecternServer, idle_key: str) -> dict[str, Any]:
    return await session_transcription(idle, idle_key, [FOX.pcm, COFFEE.pcm])


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    llm = FakeLLM().start()
    yield llm
    llm.stop()


@pytest.fixture(scope="module")
def llm(backend: str, tmp_path_factory: pytest.TempPathFactory, fake: FakeLLM) -> Iterator[LecternServer]:
    srv = start_server(tmp_path_factory, backend, llm_base_url=fake.base_url, llm_model=MODEL,
                       summary_retention_days=RETENTION_DAYS, sweep_interval_seconds=0.3,
                       webhook_allow_insecure_hosts="127.0.0.1", webhook_retry_seconds="0.2,0.2,0.5")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def llm_http(llm: LecternServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=llm.base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def llm_key(llm: LecternServer) -> str:
    return llm.create_key("acme", "alice")


@pytest.fixture(scope="module")
def call(llm_http: httpx.Client, llm_key: str) -> dict[str, Any]:
    """alice's COMPLETED transcription of a short call, on the llm server."""
    return transcribed(llm_http, llm_key, CALL, "call.wav")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def queue_fake() -> Iterator[FakeLLM]:
    llm = FakeLLM(default=LLMReply(kind="hold")).start()  # the workers' model server: answers nothing
    yield llm
    llm.stop()


@pytest.fixture(scope="module")
def queue(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    srv = start_server(tmp_path_factory, backend, summary_workers=0, job_max_attempts=1, job_poll_seconds=0.2,
                       summary_retention_days=RETENTION_DAYS, sweep_interval_seconds=0.3)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def queue_http(queue: LecternServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=queue.base_url, timeout=60) as client:
        yield client


@pytest.fixture
def summary_workers(queue: LecternServer, queue_fake: FakeLLM) -> Iterator[Callable[[], Worker]]:
    """Start `lectern worker` processes running summaries only, for the queue server."""
    started: list[Worker] = []

    def start() -> Worker:
        worker = Worker(queue, engine_workers=1, job_workers=0, summary_workers=1, job_lease_seconds=2,
                        job_heartbeat_seconds=0.3, job_poll_seconds=0.2, llm_base_url=queue_fake.base_url,
                        llm_model=MODEL, llm_max_retries=0)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


# -- a summary with the embedded summarizer ------------------------------------------------------------


def test_a_summary_is_pending_then_completed_with_its_result(http, api_key, meeting):
    response = create(http, api_key, transcriptionId=meeting["id"], promptTemplateId=SUMMARY_T)
    assert response.status_code == 201, response.text
    assert media_type(response) == "application/json"
    summary = response.json()
    assert set(summary) == SUMMARY_FIELDS
    uuid.UUID(summary["id"])
    assert {k: summary[k] for k in SUMMARY_FIELDS - {"id", "creationDate"}} == {
        "transcriptionId": meeting["id"], "fileId": meeting["fileId"], "status": "PENDING", "isDeleted": False,
        "isPurged": False, "promptTemplateId": SUMMARY_T, "completionDate": None, "deletedAt": None,
        "purgedAt": None, "purgeAt": None, "result": None, "errors": None, "webhook": None,
    }
    assert iso(summary["creationDate"]) >= iso(meeting["completionDate"])

    seen: list[dict[str, Any]] = []
    done = wait_summary(http, api_key, summary["id"], seen=seen)
    statuses = [s["status"] for s in seen]
    assert set(statuses) <= {"PENDING", "IN_PROGRESS", "COMPLETED"}, statuses
    assert statuses == sorted(statuses, key=STATUS_ORDER.index)
    for running in seen[:-1]:
        assert running["result"] is None and running["completionDate"] is None
    assert set(done) == SUMMARY_FIELDS
    assert {k: done[k] for k in ("id", "transcriptionId", "fileId", "promptTemplateId", "creationDate")} == {
        k: summary[k] for k in ("id", "transcriptionId", "fileId", "promptTemplateId", "creationDate")}
    assert iso(done["completionDate"]) >= iso(done["creationDate"])
    assert (done["isDeleted"], done["isPurged"], done["errors"], done["purgeAt"]) == (False, False, None, None)
    result = assert_result(done, SUMMARY_T)

    # Extractive: sentences that were said, fewer than the whole meeting.
    transcript = meeting["result"]["text"]
    said = sentences(transcript)
    assert all(s in said for s in sentences(result["text"])), (result["text"], transcript)
    assert 1 <= len(sentences(result["text"])) < len(said)

    response = http.get(f"{BASE}/{summary['id']}/result", headers=auth(api_key))
    assert response.status_code == 200 and media_type(response) == "application/json"
    assert response.json() == result


@pytest.mark.parametrize("template_id", list(BUILT_IN), ids=list(BUILT_IN.values()))
def test_each_built_in_template_with_the_embedded_summarizer(http, api_key, meeting, template_id):
    done = summarized(http, api_key, meeting, template_id)
    result = assert_result(done, template_id)
    expected = extractive(get_template(http, api_key, template_id), meeting)
    assert result["text"] == expected.text
    assert_usage(result, expected.usage.input_tokens, expected.usage.output_tokens)

    lines = result["text"].splitlines()
    kind = BUILT_IN[template_id]
    if kind == "summary":
        assert not any(line.startswith(("#", "- ")) for line in lines), result["text"]
        assert set(sentences(result["text"])) <= set(sentences(meeting["result"]["text"]))
    elif kind == "minutes":
        assert lines[0] == f"# Minutes ({day_of(meeting)})"  # {{date}}: the transcription's day
        headings = [line for line in lines if line.startswith("## ")]
        assert headings == ["## Summary", "## Discussion", "## Decisions", "## Action items"], result["text"]
    else:
        assert lines == ["No action items were found."] or all(line.startswith("- ") for line in lines), lines


def test_a_users_own_template_writes_the_summary(http, server, meeting):
    key = server.create_key("acme", "alice")  # alice: she owns the meeting
    template = user_template(http, key, outputOptions={"kind": "minutes", "maxOutputTokens": 120})
    done = summarized(http, key, meeting, template["id"])
    result = assert_result(done, template["id"])
    assert done["promptTemplateId"] == template["id"]
    expected = extractive(template, meeting)
    assert result["text"] == expected.text
    assert_usage(result, expected.usage.input_tokens, expected.usage.output_tokens)
    assert result["text"].startswith(f"# Minutes ({day_of(meeting)})")


def test_a_transcript_without_words_fails_with_summarization_failed(http, api_key):
    silent = transcribed(http, api_key, SILENCE.pcm, "silence.wav")
    assert silent["result"]["text"] == "", silent["result"]
    failed = summarized(http, api_key, silent, status="FAILED")
    error = assert_failed(failed, "SUMMARIZATION_FAILED")
    assert "no text" in error["message"]
    assert_problem(http.get(f"{BASE}/{failed['id']}/result", headers=auth(api_key)), 404)
    assert_problem(http.post(f"{BASE}/{failed['id']}/cancel", headers=auth(api_key)), 409)


# -- what may be summarized ---------------------------------------------------------------------------


def test_a_transcription_that_has_not_completed_is_400(idle, idle_http):
    key = fresh_key(idle)
    response = idle_http.post(f"{TRANSCRIPTIONS}/upload", headers=auth(key),
                              files={"file": ("fox.wav", wav(FOX.pcm), "audio/wav")})
    assert response.status_code == 201, response.text
    pending = response.json()["transcription"]
    assert pending["status"] == "PENDING"
    before = summary_count(idle)
    body = assert_problem(create(idle_http, key, transcriptionId=pending["id"], promptTemplateId=SUMMARY_T), 400,
                          "transcriptionId")
    assert "PENDING" in body["detail"]
    assert idle_http.post(f"{TRANSCRIPTIONS}/{pending['id']}/cancel", headers=auth(key)).status_code == 204
    body = assert_problem(create(idle_http, key, transcriptionId=pending["id"], promptTemplateId=MINUTES_T), 400,
                          "transcriptionId")
    assert "CANCELLED" in body["detail"]
    assert summary_count(idle) == before
    assert listed(idle_http, key)["total"] == 0


def test_an_unknown_transcription_or_template_is_404(http, server, keys, meeting):
    before = summary_count(server)
    assert_problem(create(http, keys["alice"], transcriptionId=str(uuid.uuid4()), promptTemplateId=SUMMARY_T), 404,
                   "transcriptionId")
    assert_problem(create(http, keys["alice"], transcriptionId=meeting["id"], promptTemplateId=str(uuid.uuid4())),
                   404, "promptTemplateId")
    # A template is the caller's to use when they see it: bob's USER template is not alice's...
    bobs = user_template(http, keys["bob"])
    assert_problem(create(http, keys["alice"], transcriptionId=meeting["id"], promptTemplateId=bobs["id"]), 404,
                   "promptTemplateId")
    # ...nor carol's, in another tenant, nor one alice deleted.
    carols = user_template(http, keys["carol"])
    assert_problem(create(http, keys["alice"], transcriptionId=meeting["id"], promptTemplateId=carols["id"]), 404,
                   "promptTemplateId")
    mine = user_template(http, keys["alice"])
    assert http.delete(f"{TEMPLATES}/{mine['id']}", headers=auth(keys["alice"])).status_code == 204
    assert_problem(create(http, keys["alice"], transcriptionId=meeting["id"], promptTemplateId=mine["id"]), 404,
                   "promptTemplateId")
    assert summary_count(server) == before


def test_a_tenant_template_is_usable_in_its_tenant_only(http, server, keys, meeting):
    boss = server.create_key("acme", "boss", [READ, WRITE, PROMPTS_ADMIN])
    response = http.post(TEMPLATES, headers=auth(boss), json=template_body(level="TENANT"))
    assert response.status_code == 201, response.text
    ours = response.json()
    done = summarized(http, keys["alice"], meeting, ours["id"])
    assert_result(done, ours["id"])
    assert done["result"]["text"] == extractive(ours, meeting).text

    their_boss = server.create_key("globex", "boss", [READ, WRITE, PROMPTS_ADMIN])
    response = http.post(TEMPLATES, headers=auth(their_boss), json=template_body(level="TENANT"))
    assert response.status_code == 201, response.text
    before = summary_count(server)
    assert_problem(create(http, keys["alice"], transcriptionId=meeting["id"], promptTemplateId=response.json()["id"]),
                   404, "promptTemplateId")
    assert summary_count(server) == before


def test_another_users_transcription_is_403_and_another_tenants_is_404_as_in_the_transcriptions_api(
        http, server, keys, meeting):
    before = summary_count(server)
    body = {"transcriptionId": meeting["id"], "promptTemplateId": SUMMARY_T}
    assert_problem(create(http, keys["bob"], **body), 403, "transcriptionId")
    assert_problem(create(http, keys["carol"], **body), 404, "transcriptionId")
    # The same answers the transcriptions API gives them for that transcription.
    assert_problem(http.get(f"{TRANSCRIPTIONS}/{meeting['id']}", headers=auth(keys["bob"])), 403)
    assert_problem(http.get(f"{TRANSCRIPTIONS}/{meeting['id']}", headers=auth(keys["carol"])), 404)
    assert summary_count(server) == before


def test_a_deleted_transcription_is_404(http, server):
    key = fresh_key(server)
    job = transcribed(http, key, FOX.pcm[:48000], "short.wav")
    assert http.delete(f"{TRANSCRIPTIONS}/{job['id']}", headers=auth(key)).status_code == 204
    assert_problem(create(http, key, transcriptionId=job["id"], promptTemplateId=SUMMARY_T), 404, "transcriptionId")
    assert listed(http, key)["total"] == 0


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({}, None),
        ({"transcriptionId": "MEETING"}, "promptTemplateId"),
        ({"promptTemplateId": SUMMARY_T}, "transcriptionId"),
        ({"transcriptionId": "not-a-uuid", "promptTemplateId": SUMMARY_T}, "transcriptionId"),
        ({"transcriptionId": "MEETING", "promptTemplateId": "summary"}, "promptTemplateId"),
        ({"transcriptionId": "MEETING", "promptTemplateId": 42}, "promptTemplateId"),
        ({"transcriptionId": "MEETING", "promptTemplateId": SUMMARY_T, "language": "en"}, "language"),
        ({"transcriptionId": "MEETING", "promptTemplateId": SUMMARY_T, "webhook": "https://example.com/x"}, "webhook"),
        ({"transcriptionId": "MEETING", "promptTemplateId": SUMMARY_T, "webhook": {"secret": "s"}}, "webhook.url"),
        ({"transcriptionId": "MEETING", "promptTemplateId": SUMMARY_T,
          "webhook": {"url": "https://example.com/x", "extra": 1}}, "webhook.extra"),
        ({"transcriptionId": "MEETING", "promptTemplateId": SUMMARY_T, "webhook": {"url": "http://127.0.0.1:9/x"}},
         "webhook"),
        ({"transcriptionId": "MEETING", "promptTemplateId": SUMMARY_T, "webhook": {"url": "https://10.0.0.5/x"}},
         "webhook"),
        ([], None),
    ],
    ids=lambda v: json.dumps(v)[:60] if not isinstance(v, str) else v,
)
def test_a_malformed_create_body_is_400_and_creates_nothing(http, server, api_key, meeting, body, parameter):
    if isinstance(body, dict):
        body = {k: meeting["id"] if v == "MEETING" else v for k, v in body.items()}
    before = summary_count(server)
    problem = assert_problem(http.post(BASE, headers=auth(api_key), json=body), 400)
    if parameter is not None:
        assert problem.get("parameter") == parameter, problem
    assert summary_count(server) == before


def test_a_body_that_is_not_json_is_400(http, api_key):
    response = http.post(BASE, headers={**auth(api_key), "content-type": "application/json"}, content=b"{nope")
    assert_problem(response, 400)


# -- the OpenAI-compatible backend ----------------------------------------------------------------------


def test_an_openai_compatible_server_writes_the_summary_from_the_filled_template(llm_http, llm_key, fake, call):
    template = user_template(llm_http, llm_key)
    answer = "The team moved the meeting to Monday morning; coffee comes with sugar."
    before = script(fake, LLMReply(content=answer))
    done = summarized(llm_http, llm_key, call, template["id"])
    result = assert_result(done, template["id"])
    assert result["text"] == answer

    request = the_request(fake, before)
    assert request["model"] == MODEL
    assert request["messages"] == [
        {"role": "system", "content": template["systemPrompt"]},
        {"role": "user", "content": rendered(template["userPrompt"], call)},
    ]
    user = request["messages"][1]["content"]
    assert f"of {day_of(call)} in en, for the team:\n{call['result']['text']}\n(The end.)" in user
    assert "{{" not in user
    assert request["max_tokens"] == 321 and request["temperature"] == 0.25
    assert_usage(result, *usage_of(fake.usages[-1]))  # the server's own count, not ours
    response = llm_http.get(f"{BASE}/{done['id']}/result", headers=auth(llm_key))
    assert response.status_code == 200 and response.json() == result


def test_a_completed_summary_notifies_its_webhook_once_signed(llm_http, llm, llm_key, fake, call, receiver):
    before = script(fake, LLMReply())  # the fake's echo of the transcript
    hook = {"url": receiver.url(), "secret": HOOK_SECRET, "headers": {"X-Lectern-Test": "summary"}}
    summary = created(llm_http, llm_key, call, MINUTES_T, webhook=hook)
    assert summary["webhook"] == {"url": receiver.url(), "headers": {"X-Lectern-Test": "summary"}, "hasSecret": True}
    done = wait_summary(llm_http, llm_key, summary["id"])
    result = assert_result(done, MINUTES_T)

    request = the_request(fake, before)
    built_in = get_template(llm_http, llm_key, MINUTES_T)
    assert request["messages"] == [
        {"role": "system", "content": built_in["systemPrompt"]},
        {"role": "user", "content": rendered(built_in["userPrompt"], call)},
    ]
    assert f"meeting of {day_of(call)} in en" in request["messages"][1]["content"]
    assert result["text"] == fake.answer(request)
    assert_usage(result, *usage_of(fake.usages[-1]))

    row = poll(lambda: next((d for d in deliveries(llm, summary["id"]) if d["status"] != "PENDING"), None),
               "the delivery's outcome")
    assert (row["status"], row["attempts"], row["event_type"]) == ("DELIVERED", 1, "summary.completed")
    assert len(deliveries(llm, summary["id"])) == 1
    mine = received_for(receiver, summary["id"])
    assert len(mine) == 1, mine
    payload = verify(mine[0], HOOK_SECRET.encode())
    assert payload["type"] == "summary.completed"
    data = payload["data"]
    assert (data["id"], data["status"], data["transcriptionId"], data["promptTemplateId"]) == (
        summary["id"], "COMPLETED", call["id"], MINUTES_T)
    assert iso(data["completionDate"]) == iso(done["completionDate"])
    assert mine[0].headers["x-lectern-test"] == "summary"
    assert mine[0].headers["webhook-id"] == row["message_id"]


def test_a_refusal_by_the_model_server_fails_the_summary_and_notifies_its_webhook(
        llm_http, llm, llm_key, fake, call, receiver):
    refusal = "This model's maximum context length is 16 tokens; the request has 900."
    before = script(fake, LLMReply(kind="error", status=400, message=refusal))
    summary = created(llm_http, llm_key, call, ACTIONS_T, webhook={"url": receiver.url(), "secret": HOOK_SECRET})
    failed = wait_summary(llm_http, llm_key, summary["id"])
    error = assert_failed(failed, "SUMMARIZATION_FAILED")
    assert refusal in error["message"] and "400" in error["message"], error
    assert len(fake.received()) == before + 1  # a 400 is not retried (the server allows 3 retries)
    assert_problem(llm_http.get(f"{BASE}/{summary['id']}/result", headers=auth(llm_key)), 404)

    mine = poll(lambda: received_for(receiver, summary["id"]), "the failed webhook")
    payload = verify(mine[0], HOOK_SECRET.encode())
    assert payload["type"] == "summary.failed"
    assert (payload["data"]["id"], payload["data"]["status"]) == (summary["id"], "FAILED")
    assert [(e["code"], e["message"], iso(e["timestamp"])) for e in payload["data"]["errors"]] == [
        (e["code"], e["message"], iso(e["timestamp"])) for e in failed["errors"]]
    poll(lambda: [d for d in deliveries(llm, summary["id"]) if d["status"] == "DELIVERED"], "DELIVERED")
    assert len(received_for(receiver, summary["id"])) == 1

    # Deleting with purge=true drops the errors, as it would a result.
    response = llm_http.delete(f"{BASE}/{summary['id']}", headers=auth(llm_key), params={"purge": "true"})
    assert response.status_code == 204, response.text
    purged = get_summary(llm_http, llm_key, summary["id"])
    assert (purged["status"], purged["errors"], purged["isDeleted"], purged["isPurged"]) == ("FAILED", None, True,
                                                                                             True)
    assert_problem(llm_http.get(f"{BASE}/{summary['id']}/result", headers=auth(llm_key)), 410)


def test_cancelling_a_running_summary_aborts_the_models_request_and_notifies_its_webhook(
        llm_http, llm, llm_key, fake, call, receiver):
    before = script(fake, LLMReply(kind="hold"))
    disconnects = fake.disconnects
    summary = created(llm_http, llm_key, call, webhook={"url": receiver.url(), "secret": HOOK_SECRET,
                                                         "headers": {"X-Why": "cancelled"}})
    poll(lambda: len(fake.received()) > before, "the model server to get the request")
    assert get_summary(llm_http, llm_key, summary["id"])["status"] == "IN_PROGRESS"
    response = llm_http.post(f"{BASE}/{summary['id']}/cancel", headers=auth(llm_key))
    assert (response.status_code, response.content) == (204, b"")
    poll(lambda: fake.disconnects > disconnects, "the in-flight request to be closed", timeout=10)

    cancelled = get_summary(llm_http, llm_key, summary["id"])
    assert (cancelled["status"], cancelled["result"], cancelled["errors"]) == ("CANCELLED", None, None)
    assert iso(cancelled["completionDate"]) >= iso(cancelled["creationDate"])
    mine = poll(lambda: received_for(receiver, summary["id"]), "the cancelled webhook")
    payload = verify(mine[0], HOOK_SECRET.encode())
    assert payload["type"] == "summary.cancelled"
    assert (payload["data"]["id"], payload["data"]["status"]) == (summary["id"], "CANCELLED")
    assert mine[0].headers["x-why"] == "cancelled"
    poll(lambda: [d for d in deliveries(llm, summary["id"]) if d["status"] == "DELIVERED"], "DELIVERED")
    assert len(received_for(receiver, summary["id"])) == 1
    assert get_summary(llm_http, llm_key, summary["id"]) == cancelled  # the job did not come back to life
    assert_problem(llm_http.post(f"{BASE}/{summary['id']}/cancel", headers=auth(llm_key)), 409)


# -- what happens when the job runs (workers of another process) -----------------------------------


def test_a_deleted_template_or_purged_transcription_fails_the_summary_when_it_runs(
        queue, queue_http, summary_workers):
    key = fresh_key(queue)
    first = transcribed(queue_http, key, FOX.pcm, "fox.wav")
    second = transcribed(queue_http, key, COFFEE.pcm, "coffee.wav")
    template = user_template(queue_http, key)
    orphaned = created(queue_http, key, first, template["id"])
    unsourced = created(queue_http, key, second, SUMMARY_T)
    # Nothing runs summaries yet: both wait while their template and transcription go.
    assert queue_http.delete(f"{TEMPLATES}/{template['id']}", headers=auth(key)).status_code == 204
    response = queue_http.delete(f"{TRANSCRIPTIONS}/{second['id']}", headers=auth(key), params={"purge": "true"})
    assert response.status_code == 204, response.text
    for summary in (orphaned, unsourced):
        assert get_summary(queue_http, key, summary["id"])["status"] == "PENDING"

    summary_workers()
    no_template = wait_summary(queue_http, key, orphaned["id"])
    assert_failed(no_template, "PROMPT_TEMPLATE_NOT_FOUND")
    assert no_template["promptTemplateId"] == template["id"]
    no_transcript = wait_summary(queue_http, key, unsourced["id"])
    assert_failed(no_transcript, "TRANSCRIPTION_NOT_COMPLETED")
    for summary in (orphaned, unsourced):
        assert_problem(queue_http.get(f"{BASE}/{summary['id']}/result", headers=auth(key)), 404)
    page = listed(queue_http, key, status="FAILED")
    assert sorted(ids(page)) == sorted([orphaned["id"], unsourced["id"]])


def test_a_summary_running_in_a_worker_is_stopped_by_a_cancel_through_the_api(
        queue, queue_http, queue_fake, summary_workers):
    key = fresh_key(queue)
    job = transcribed(queue_http, key, FOX.pcm, "fox.wav")
    summary_workers()
    before, disconnects = len(queue_fake.received()), queue_fake.disconnects
    summary = created(queue_http, key, job)
    poll(lambda: len(queue_fake.received()) > before, "the worker's request to the model server")
    assert get_summary(queue_http, key, summary["id"])["status"] == "IN_PROGRESS"
    assert queue_http.post(f"{BASE}/{summary['id']}/cancel", headers=auth(key)).status_code == 204
    # The worker learns of it at its next heartbeat, and closes its request.
    poll(lambda: queue_fake.disconnects > disconnects, "the worker to close the model request", timeout=15)
    cancelled = get_summary(queue_http, key, summary["id"])
    assert (cancelled["status"], cancelled["result"], cancelled["errors"]) == ("CANCELLED", None, None)
    assert summary_row(queue, summary["id"])["worker_id"] is None


def test_a_summary_whose_worker_died_fails_with_one_of_the_seeds_error_codes(
        queue, queue_http, queue_fake, summary_workers):
    key = fresh_key(queue)
    job = transcribed(queue_http, key, COFFEE.pcm, "coffee.wav")
    first = summary_workers()
    before, disconnects = len(queue_fake.received()), queue_fake.disconnects
    summary = created(queue_http, key, job)
    poll(lambda: len(queue_fake.received()) > before, "the worker's request to the model server")
    first.kill()  # a machine lost mid-summary
    poll(lambda: queue_fake.disconnects > disconnects, "the dead worker's connection to close")
    # The queue server allows one attempt (job_max_attempts=1): once the lease lapses, its sweeper
    # fails the job.
    row = poll(lambda: (r := summary_row(queue, summary["id"]))["status"] == "FAILED" and r, "the job to fail",
               timeout=60)
    errors = json.loads(row["errors"]) if isinstance(row["errors"], str) else row["errors"]
    assert errors and len(errors) == 1, row

    assert errors[0]["code"] in SEED_ERROR_CODES, errors  # what the job stored...
    one = queue_http.get(f"{BASE}/{summary['id']}", headers=auth(key))
    page = queue_http.get(BASE, headers=auth(key))
    assert (one.status_code, page.status_code) == (200, 200), (one.text, page.text)  # ...and what the API shows
    failed = one.json()
    assert failed["status"] == "FAILED"
    assert failed["errors"][0]["code"] in SEED_ERROR_CODES, failed["errors"]
    assert ids(page.json()) == [summary["id"]]


# -- listing --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def library(http: httpx.Client, server: LecternServer) -> dict[str, Any]:
    """One user's summaries, created in this order, each after the previous one ended:
    a (summary) and b (minutes) of transcription one of file one, c (action items) of transcription
    two of file one, f (FAILED: a silent file's empty transcript), d deleted and e purged (summary)
    of transcription three of file two."""
    key = fresh_key(server)
    one = transcribed(http, key, FOX.pcm, "one.wav")
    two = transcription_of(http, key, one["fileId"])
    three = transcribed(http, key, COFFEE.pcm, "two.wav")
    silent = transcribed(http, key, SILENCE.pcm, "silent.wav")
    summaries = {}
    for name, transcription, template, status in (
        ("a", one, SUMMARY_T, "COMPLETED"), ("b", one, MINUTES_T, "COMPLETED"), ("c", two, ACTIONS_T, "COMPLETED"),
        ("f", silent, SUMMARY_T, "FAILED"), ("d", three, SUMMARY_T, "COMPLETED"), ("e", three, SUMMARY_T, "COMPLETED"),
    ):
        summaries[name] = summarized(http, key, transcription, template, status=status)
    assert http.delete(f"{BASE}/{summaries['d']['id']}", headers=auth(key)).status_code == 204
    assert http.delete(f"{BASE}/{summaries['e']['id']}", headers=auth(key), params={"purge": "true"}).status_code == 204
    summaries["d"], summaries["e"] = (get_summary(http, key, summaries[n]["id"]) for n in "de")
    return {"key": key, "transcriptions": {"one": one, "two": two, "three": three, "silent": silent},
            "summaries": summaries}


def names(library: dict[str, Any], page: dict[str, Any]) -> list[str]:
    by_id = {s["id"]: n for n, s in library["summaries"].items()}
    return [by_id[i] for i in ids(page)]


def test_list_defaults_to_the_callers_own_newest_first_without_results(http, library, keys):
    page = listed(http, library["key"])
    assert set(page) == LIST_KEYS
    assert (page["size"], page["total"]) == (4, 4)
    assert names(library, page) == ["f", "c", "b", "a"]
    assert page["filters"]["isDeleted"] is False
    assert page["sort"] == {"field": "creationDate", "direction": "desc"}
    for item in page["summaries"]:
        assert set(item) <= SUMMARY_FIELDS and SEED_FIELDS - {"result"} <= set(item)
        assert item.get("result") is None, "the result is never part of a listing"
        full = get_summary(http, library["key"], item["id"])
        assert {**full, "result": None} == {**item, "result": None}
    for other in ("alice", "bob", "carol"):  # nobody else's listing shows them
        assert not set(ids(listed(http, keys[other], size=100))) & {s["id"] for s in library["summaries"].values()}


def test_paging(http, library):
    seen = []
    for number in range(3):
        page = listed(http, library["key"], page=number, size=3)
        assert page["total"] == 4
        assert page["size"] == len(page["summaries"]) == [3, 1, 0][number]
        seen += names(library, page)
    assert seen == ["f", "c", "b", "a"]
    page = listed(http, library["key"], size=100)
    assert page["size"] == 4


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "COMPLETED"}, ["c", "b", "a"]),
        ({"status": "FAILED"}, ["f"]),
        ({"status": "COMPLETED,FAILED"}, ["f", "c", "b", "a"]),
        ({"status": " FAILED , COMPLETED "}, ["f", "c", "b", "a"]),
        ({"status": "PENDING,IN_PROGRESS,CANCELLED"}, []),
        ({"isDeleted": "false"}, ["f", "c", "b", "a"]),
        ({"isDeleted": "true"}, ["e", "d"]),
        ({"isDeleted": "true", "isPurged": "true"}, ["e"]),
        ({"isDeleted": "true", "isPurged": "false"}, ["d"]),
        ({"isPurged": "false"}, ["f", "c", "b", "a"]),
        ({"isPurged": "true"}, []),
        ({"isDeleted": "true", "status": "FAILED"}, []),
        ({"promptTemplateId": SUMMARY_T}, ["f", "a"]),
        ({"promptTemplateId": MINUTES_T}, ["b"]),
        ({"promptTemplateId": SUMMARY_T, "isDeleted": "true"}, ["e", "d"]),
        ({"promptTemplateId": SUMMARY_T, "status": "COMPLETED"}, ["a"]),
        ({"promptTemplateId": str(uuid.uuid4())}, []),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_filters(http, library, params, expected):
    page = listed(http, library["key"], **params)
    assert names(library, page) == expected
    assert page["total"] == page["size"] == len(expected)


def test_parent_filters_list_every_summary_of_the_resource(http, library):
    key, t = library["key"], library["transcriptions"]
    assert names(library, listed(http, key, transcriptionId=t["one"]["id"])) == ["b", "a"]
    assert names(library, listed(http, key, transcriptionId=t["two"]["id"])) == ["c"]
    assert names(library, listed(http, key, transcriptionId=t["three"]["id"])) == []
    assert names(library, listed(http, key, transcriptionId=t["three"]["id"], isDeleted="true")) == ["e", "d"]
    # Both transcriptions of file one: every summary of the file.
    assert names(library, listed(http, key, fileId=t["one"]["fileId"])) == ["c", "b", "a"]
    assert names(library, listed(http, key, fileId=t["three"]["fileId"], isDeleted="true")) == ["e", "d"]
    assert names(library, listed(http, key, fileId=t["one"]["fileId"], transcriptionId=t["two"]["id"])) == ["c"]
    assert names(library, listed(http, key, fileId=t["three"]["fileId"], transcriptionId=t["one"]["id"])) == []
    page = listed(http, key, transcriptionId=t["one"]["id"], status="COMPLETED", promptTemplateId=MINUTES_T)
    assert names(library, page) == ["b"]
    assert {k: page["filters"].get(k) for k in ("transcriptionId", "status", "promptTemplateId", "isDeleted")} == {
        "transcriptionId": t["one"]["id"], "status": ["COMPLETED"], "promptTemplateId": MINUTES_T,
        "isDeleted": False}
    assert listed(http, key, fileId=t["one"]["fileId"])["filters"]["fileId"] == t["one"]["fileId"]


def test_a_parent_the_caller_cannot_read_is_403_or_404(http, library, keys):
    t = library["transcriptions"]["one"]
    # The library's user owns these: alice and bob (same tenant) may not read them, carol's tenant
    # does not have them, as the transcriptions and files APIs say.
    for name in ("alice", "bob"):
        assert_problem(http.get(BASE, headers=auth(keys[name]), params={"transcriptionId": t["id"]}), 403,
                       "transcriptionId")
        assert_problem(http.get(BASE, headers=auth(keys[name]), params={"fileId": t["fileId"]}), 403, "fileId")
    assert_problem(http.get(BASE, headers=auth(keys["carol"]), params={"transcriptionId": t["id"]}), 404,
                   "transcriptionId")
    assert_problem(http.get(BASE, headers=auth(keys["carol"]), params={"fileId": t["fileId"]}), 404, "fileId")
    for parameter in ("transcriptionId", "fileId"):
        assert_problem(http.get(BASE, headers=auth(library["key"]), params={parameter: str(uuid.uuid4())}), 404,
                       parameter)


def test_the_summaries_of_a_deleted_transcription_can_still_be_listed_by_it(http, server):
    # A deleted transcription is still its owner's to read (shown as deleted), and so are its
    # summaries: the parent filters find them, as the fileId filter does for its file.
    key = fresh_key(server)
    job = transcribed(http, key, FOX.pcm, "fox.wav")
    done = summarized(http, key, job)
    assert http.delete(f"{TRANSCRIPTIONS}/{job['id']}", headers=auth(key)).status_code == 204
    shown = http.get(f"{TRANSCRIPTIONS}/{job['id']}", headers=auth(key))
    assert shown.status_code == 200 and shown.json()["isDeleted"] is True
    assert get_summary(http, key, done["id"]) == done
    assert ids(listed(http, key, fileId=job["fileId"])) == [done["id"]]
    response = http.get(BASE, headers=auth(key), params={"transcriptionId": job["id"]})
    assert response.status_code == 200, response.text
    assert ids(response.json()) == [done["id"]]


def test_creation_and_completion_windows_are_inclusive(http, library):
    key, s = library["key"], library["summaries"]
    b = s["b"]
    assert names(library, listed(http, key, createdAfter=b["creationDate"])) == ["f", "c", "b"]
    assert names(library, listed(http, key, createdBefore=b["creationDate"])) == ["b", "a"]
    assert names(library, listed(http, key, createdAfter=b["creationDate"], createdBefore=b["creationDate"])) == ["b"]
    assert names(library, listed(http, key, completedAfter=b["completionDate"])) == ["f", "c", "b"]
    assert names(library, listed(http, key, completedBefore=b["completionDate"])) == ["b", "a"]
    window = listed(http, key, completedAfter=b["completionDate"], completedBefore=b["completionDate"])
    assert names(library, window) == ["b"]
    assert (window["filters"]["completedAfter"], window["filters"]["completedBefore"]) == (
        b["completionDate"], b["completionDate"])
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    assert listed(http, key, createdAfter=tomorrow)["total"] == 0
    assert listed(http, key, completedAfter=tomorrow)["total"] == 0
    assert names(library, listed(http, key, createdAfter="2020-01-01")) == ["f", "c", "b", "a"]


SORT_VALUES = {"creationDate": lambda s: iso(s["creationDate"]),
               "completionDate": lambda s: iso(s["completionDate"]), "status": lambda s: s["status"]}


def sorted_summaries(library: dict[str, Any], field: str, descending: bool) -> list[str]:
    items = [library["summaries"][n] for n in "abcf"]
    return [s["id"] for s in sorted(items, key=lambda s: (SORT_VALUES[field](s), s["id"]), reverse=descending)]


@pytest.mark.parametrize("field", list(SORT_VALUES))
@pytest.mark.parametrize("direction", ["asc", "desc", "ASC", "DESC"])
def test_sorting(http, library, field, direction):
    descending = direction.lower() == "desc"
    page = listed(http, library["key"], sort=f"{field},{direction}")
    assert ids(page) == sorted_summaries(library, field, descending)
    assert page["sort"] == {"field": field, "direction": direction.lower()}


def test_a_sort_without_a_direction_is_ascending(http, library):
    for field in SORT_VALUES:
        page = listed(http, library["key"], sort=field)
        assert (ids(page), page["sort"]) == (sorted_summaries(library, field, False),
                                             {"field": field, "direction": "asc"})


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"status": "DONE"}, "status"), ({"status": "COMPLETED,NOPE"}, "status"), ({"status": "completed"}, "status"),
        ({"status": ""}, "status"), ({"status": "COMPLETED,"}, "status"),
        ({"sort": "name"}, "sort"), ({"sort": "creationDate,up"}, "sort"), ({"sort": "createdAt"}, "sort"),
        ({"sort": "promptTemplateId,asc"}, "sort"), ({"sort": ""}, "sort"), ({"sort": "status,asc,desc"}, "sort"),
        ({"size": 0}, "size"), ({"size": 101}, "size"), ({"page": -1}, "page"), ({"page": "first"}, "page"),
        ({"transcriptionId": "nope"}, "transcriptionId"), ({"fileId": "nope"}, "fileId"),
        ({"promptTemplateId": "summary"}, "promptTemplateId"),
        ({"isDeleted": "maybe"}, "isDeleted"), ({"isPurged": "2"}, "isPurged"),
        ({"createdAfter": "yesterday"}, "createdAfter"), ({"createdBefore": "2024-13-01"}, "createdBefore"),
        ({"completedAfter": "1700000000"}, "completedAfter"), ({"completedBefore": "soon"}, "completedBefore"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else v,
)
def test_invalid_list_parameters_are_400(http, library, params, parameter):
    assert_problem(http.get(BASE, headers=auth(library["key"]), params=params), 400, parameter)


async def test_pending_and_cancelled_filters_and_unfinished_summaries_sort_last(idle_http, idle):
    key = fresh_key(idle)
    transcription = await session_transcription(idle, key, [FOX.pcm])
    first, second, third = (created(idle_http, key, transcription, t) for t in (SUMMARY_T, MINUTES_T, SUMMARY_T))
    assert idle_http.post(f"{BASE}/{second['id']}/cancel", headers=auth(key)).status_code == 204
    assert ids(listed(idle_http, key, status="PENDING")) == [third["id"], first["id"]]
    assert ids(listed(idle_http, key, status="CANCELLED")) == [second["id"]]
    assert ids(listed(idle_http, key, status="CANCELLED,PENDING")) == [third["id"], second["id"], first["id"]]
    assert listed(idle_http, key, status="IN_PROGRESS,COMPLETED,FAILED")["total"] == 0
    for direction in ("asc", "desc"):  # no completion date yet: last, either way
        assert ids(listed(idle_http, key, sort=f"completionDate,{direction}"))[0] == second["id"], direction
    assert ids(listed(idle_http, key, sort="status,asc")) == [second["id"]] + sorted([first["id"], third["id"]])
    assert ids(listed(idle_http, key, promptTemplateId=SUMMARY_T, status="PENDING")) == [third["id"], first["id"]]
    assert transcription["fileId"] is None and first["fileId"] is None  # a session's: no file


# -- cancel, webhook, delete, purge -------------------------------------------------------------------------


def test_no_result_before_completion(idle_http, idle_key, idle_transcription):
    summary = created(idle_http, idle_key, idle_transcription)
    assert summary["status"] == "PENDING"
    body = assert_problem(idle_http.get(f"{BASE}/{summary['id']}/result", headers=auth(idle_key)), 404)
    assert "PENDING" in body["detail"]
    assert idle_http.post(f"{BASE}/{summary['id']}/cancel", headers=auth(idle_key)).status_code == 204


def test_cancelling_a_pending_summary(idle_http, idle_key, idle_transcription):
    summary = created(idle_http, idle_key, idle_transcription, MINUTES_T)
    response = idle_http.post(f"{BASE}/{summary['id']}/cancel", headers=auth(idle_key))
    assert (response.status_code, response.content) == (204, b"")
    cancelled = get_summary(idle_http, idle_key, summary["id"])
    assert cancelled["status"] == "CANCELLED"
    assert iso(cancelled["completionDate"]) >= iso(cancelled["creationDate"])
    assert {k: v for k, v in cancelled.items() if k not in ("status", "completionDate")} == {
        k: v for k, v in summary.items() if k not in ("status", "completionDate")}
    again = assert_problem(idle_http.post(f"{BASE}/{summary['id']}/cancel", headers=auth(idle_key)), 409)
    assert "cannot be cancelled" in again["detail"]
    assert_problem(idle_http.get(f"{BASE}/{summary['id']}/result", headers=auth(idle_key)), 404)
    assert get_summary(idle_http, idle_key, summary["id"]) == cancelled


def test_a_completed_summary_cannot_be_cancelled_nor_its_webhook_changed(http, api_key, finished):
    url = f"{BASE}/{finished['id']}"
    assert "cannot be cancelled" in assert_problem(http.post(f"{url}/cancel", headers=auth(api_key)), 409)["detail"]
    assert_problem(http.put(f"{url}/webhook", headers=auth(api_key), json={"url": "https://hooks.example.com/x"}),
                   409)
    assert_problem(http.delete(f"{url}/webhook", headers=auth(api_key)), 409)
    assert get_summary(http, api_key, finished["id"]) == finished


def test_a_pending_summarys_webhook_is_set_replaced_and_removed(idle_http, idle_key, idle_transcription):
    first = {"url": "https://hooks.example.com/first", "secret": HOOK_SECRET, "headers": {"X-Team": "a"}}
    summary = created(idle_http, idle_key, idle_transcription, webhook=first)
    assert summary["webhook"] == {"url": first["url"], "headers": {"X-Team": "a"}, "hasSecret": True}
    url = f"{BASE}/{summary['id']}/webhook"

    response = idle_http.put(url, headers=auth(idle_key), json={"url": "http://127.0.0.1:9/second"})
    assert response.status_code == 200, response.text
    assert media_type(response) == "application/json"
    body = response.json()
    assert set(body) == SUMMARY_FIELDS
    assert body["webhook"] == {"url": "http://127.0.0.1:9/second", "headers": None, "hasSecret": False}
    assert {k: v for k, v in body.items() if k != "webhook"} == {k: v for k, v in summary.items() if k != "webhook"}
    assert get_summary(idle_http, idle_key, summary["id"]) == body
    assert HOOK_SECRET not in response.text and HOOK_SECRET not in idle_http.get(
        f"{BASE}/{summary['id']}", headers=auth(idle_key)).text

    assert_problem(idle_http.put(url, headers=auth(idle_key), json={"url": "https://10.0.0.5/x"}), 400)
    assert_problem(idle_http.put(url, headers=auth(idle_key), json={"secret": "s"}), 400)
    response = idle_http.delete(url, headers=auth(idle_key))
    assert (response.status_code, response.content) == (204, b"")
    assert get_summary(idle_http, idle_key, summary["id"])["webhook"] is None

    assert idle_http.post(f"{BASE}/{summary['id']}/cancel", headers=auth(idle_key)).status_code == 204
    body = assert_problem(idle_http.put(url, headers=auth(idle_key), json=first), 409)
    assert "terminal" in body["detail"]
    assert_problem(idle_http.delete(url, headers=auth(idle_key)), 409)
    assert get_summary(idle_http, idle_key, summary["id"])["webhook"] is None


def test_the_webhook_in_force_when_the_summary_ends_is_the_one_notified(idle_http, idle, idle_key,
                                                                         idle_transcription, receiver):
    other = Receiver().start()
    try:
        summary = created(idle_http, idle_key, idle_transcription, webhook={"url": other.url()})
        put = idle_http.put(f"{BASE}/{summary['id']}/webhook", headers=auth(idle_key),
                            json={"url": receiver.url(), "secret": HOOK_SECRET})
        assert put.status_code == 200, put.text
        assert idle_http.post(f"{BASE}/{summary['id']}/cancel", headers=auth(idle_key)).status_code == 204
        mine = poll(lambda: received_for(receiver, summary["id"]), "the cancelled webhook")
        payload = verify(mine[0], HOOK_SECRET.encode())
        assert payload["type"] == "summary.cancelled"
        assert (payload["data"]["id"], payload["data"]["status"]) == (summary["id"], "CANCELLED")
        assert [d["url"] for d in deliveries(idle, summary["id"])] == [receiver.url()]
        assert other.received() == []

        removed = created(idle_http, idle_key, idle_transcription, webhook={"url": receiver.url()})
        assert idle_http.delete(f"{BASE}/{removed['id']}/webhook", headers=auth(idle_key)).status_code == 204
        assert idle_http.post(f"{BASE}/{removed['id']}/cancel", headers=auth(idle_key)).status_code == 204
        assert deliveries(idle, removed["id"]) == []  # queued in the cancel's own transaction, if at all
    finally:
        other.stop()


def test_a_summary_that_has_not_ended_cannot_be_deleted_or_purged(idle_http, idle_key, idle_transcription):
    summary = created(idle_http, idle_key, idle_transcription)
    url = f"{BASE}/{summary['id']}"
    body = assert_problem(idle_http.delete(url, headers=auth(idle_key)), 409)
    assert "terminal" in body["detail"]
    assert_problem(idle_http.delete(url, headers=auth(idle_key), params={"purge": "true"}), 409)
    assert_problem(idle_http.post(f"{url}/purge", headers=auth(idle_key)), 409)
    assert get_summary(idle_http, idle_key, summary["id"]) == summary
    assert idle_http.post(f"{url}/cancel", headers=auth(idle_key)).status_code == 204


def test_delete_keeps_the_record_until_it_is_purged(http, server, meeting):
    key = server.create_key("acme", "alice")
    done = summarized(http, key, meeting, MINUTES_T)
    url = f"{BASE}/{done['id']}"
    body = assert_problem(http.post(f"{url}/purge", headers=auth(key)), 409)  # not deleted yet
    assert "not deleted" in body["detail"]

    response = http.delete(url, headers=auth(key))
    assert (response.status_code, response.content) == (204, b"")
    deleted = get_summary(http, key, done["id"])
    assert (deleted["isDeleted"], deleted["isPurged"], deleted["purgedAt"]) == (True, False, None)
    assert iso(deleted["deletedAt"]) >= iso(done["completionDate"])
    # The shared server's retention is the default summary_retention_days: 30 days.
    assert abs(iso(deleted["purgeAt"]) - (iso(deleted["deletedAt"]) + timedelta(days=30))) <= timedelta(milliseconds=1)
    assert deleted["result"] == done["result"]  # kept until the retention ends
    assert http.get(f"{url}/result", headers=auth(key)).json() == done["result"]
    assert {k: v for k, v in deleted.items() if k not in ("isDeleted", "deletedAt", "purgeAt")} == {
        k: v for k, v in done.items() if k not in ("isDeleted", "deletedAt", "purgeAt")}
    assert "already deleted" in assert_problem(http.delete(url, headers=auth(key)), 409)["detail"]
    assert_problem(http.delete(url, headers=auth(key), params={"purge": "true"}), 409)
    assert done["id"] not in ids(listed(http, key, size=100))
    assert done["id"] in ids(listed(http, key, isDeleted="true", size=100))

    response = http.post(f"{url}/purge", headers=auth(key))
    assert (response.status_code, response.content) == (204, b"")
    purged = get_summary(http, key, done["id"])
    assert (purged["isDeleted"], purged["isPurged"], purged["result"], purged["purgeAt"], purged["errors"]) == (
        True, True, None, None, None)
    assert iso(purged["purgedAt"]) >= iso(purged["deletedAt"])
    assert (purged["status"], purged["completionDate"]) == ("COMPLETED", done["completionDate"])  # kept for audit
    assert_problem(http.get(f"{url}/result", headers=auth(key)), 410)
    assert summary_row(server, done["id"])["text"] is None
    assert "already" in assert_problem(http.post(f"{url}/purge", headers=auth(key)), 409)["detail"]
    assert_problem(http.delete(url, headers=auth(key)), 409)
    assert done["id"] in ids(listed(http, key, isDeleted="true", isPurged="true", size=100))


def test_delete_with_purge_removes_the_result_at_once(http, server, meeting):
    key = server.create_key("acme", "alice")
    done = summarized(http, key, meeting, ACTIONS_T)
    response = http.delete(f"{BASE}/{done['id']}", headers=auth(key), params={"purge": "true"})
    assert (response.status_code, response.content) == (204, b"")
    purged = get_summary(http, key, done["id"])
    assert (purged["isDeleted"], purged["isPurged"], purged["result"], purged["purgeAt"]) == (True, True, None, None)
    assert iso(purged["purgedAt"]) >= iso(purged["deletedAt"])
    assert_problem(http.get(f"{BASE}/{done['id']}/result", headers=auth(key)), 410)
    assert summary_row(server, done["id"])["text"] is None
    assert_problem(http.post(f"{BASE}/{done['id']}/purge", headers=auth(key)), 409)
    assert_problem(http.delete(f"{BASE}/{done['id']}", headers=auth(key)), 409)


def test_the_sweeper_purges_a_deleted_summary_once_its_retention_ends(llm_http, llm, llm_key, call):
    done = summarized(llm_http, llm_key, call)
    assert llm_http.delete(f"{BASE}/{done['id']}", headers=auth(llm_key)).status_code == 204
    deleted = get_summary(llm_http, llm_key, done["id"])
    if not deleted["isPurged"]:  # read before the sweeper came by: the purge is scheduled
        retention = timedelta(days=RETENTION_DAYS)
        assert abs(iso(deleted["purgeAt"]) - (iso(deleted["deletedAt"]) + retention)) <= timedelta(milliseconds=1)
    due = iso(deleted["deletedAt"]) + timedelta(days=RETENTION_DAYS)

    purged = poll(lambda: (s := get_summary(llm_http, llm_key, done["id"]))["isPurged"] and s, "the sweeper")
    assert (purged["isDeleted"], purged["result"], purged["purgeAt"], purged["errors"]) == (True, None, None, None)
    assert iso(purged["purgedAt"]) >= due  # on time, not before
    assert_problem(llm_http.get(f"{BASE}/{done['id']}/result", headers=auth(llm_key)), 410)
    assert summary_row(llm, done["id"])["text"] is None
    assert_problem(llm_http.post(f"{BASE}/{done['id']}/purge", headers=auth(llm_key)), 409)


def test_a_server_that_runs_no_summaries_still_purges_deleted_ones_on_time(idle_http, idle_key, idle_transcription):
    # The idle server runs no job of any kind; its retention is a few seconds.
    summary = created(idle_http, idle_key, idle_transcription)
    assert idle_http.post(f"{BASE}/{summary['id']}/cancel", headers=auth(idle_key)).status_code == 204
    assert idle_http.delete(f"{BASE}/{summary['id']}", headers=auth(idle_key)).status_code == 204
    deleted = get_summary(idle_http, idle_key, summary["id"])
    due = iso(deleted["deletedAt"]) + timedelta(days=RETENTION_DAYS)
    purged = poll(lambda: (s := get_summary(idle_http, idle_key, summary["id"]))["isPurged"] and s,
                  "the sweeper to purge the summary", timeout=30)
    assert iso(purged["purgedAt"]) >= due


def test_a_node_that_transcribes_but_runs_no_summaries_still_purges_deleted_ones_on_time(queue, queue_http):
    # The queue server transcribes (job_workers by default) and runs no summary (summary_workers=0);
    # its summary retention is a few seconds, and no worker is running now.
    key = fresh_key(queue)
    job = transcribed(queue_http, key, FOX.pcm[:48000], "short.wav")
    summary = created(queue_http, key, job)
    assert queue_http.post(f"{BASE}/{summary['id']}/cancel", headers=auth(key)).status_code == 204
    assert queue_http.delete(f"{BASE}/{summary['id']}", headers=auth(key)).status_code == 204
    deleted = get_summary(queue_http, key, summary["id"])
    due = iso(deleted["deletedAt"]) + timedelta(days=RETENTION_DAYS)
    purged = poll(lambda: (s := get_summary(queue_http, key, summary["id"]))["isPurged"] and s,
                  "the sweeper to purge the summary", timeout=30)
    assert iso(purged["purgedAt"]) >= due


# -- scopes and ownership -----------------------------------------------------------------------------------


def operations(summary_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", f"{BASE}/{summary_id}", {}),
        ("GET", f"{BASE}/{summary_id}/result", {}),
        ("PUT", f"{BASE}/{summary_id}/webhook", {"json": {"url": "https://hooks.example.com/x"}}),
        ("DELETE", f"{BASE}/{summary_id}/webhook", {}),
        ("POST", f"{BASE}/{summary_id}/cancel", {}),
        ("DELETE", f"{BASE}/{summary_id}", {}),
        ("POST", f"{BASE}/{summary_id}/purge", {}),
    ]


READS, WRITES, DELETES = [0, 1], [2, 3, 4], [5, 6]


def test_each_operation_needs_its_scope(http, keys, meeting, finished):
    for number, (method, url, kwargs) in enumerate(operations(finished["id"])):
        needed = READ if number in READS else WRITE if number in WRITES else DELETE
        for name in ("read", "write", "delete", "other"):
            scope = {"read": READ, "write": WRITE, "delete": DELETE}.get(name)
            if scope == needed:
                if number not in DELETES:  # the shared summary is not deleted here: see the next test
                    response = http.request(method, url, headers=auth(keys[name]), **kwargs)
                    assert response.status_code in (200, 409), (name, method, url, response.text)
                continue
            response = http.request(method, url, headers=auth(keys[name]), **kwargs)
            assert needed in assert_problem(response, 403)["detail"], (name, method, url)
    assert get_summary(http, keys["alice"], finished["id"]) == finished  # nothing changed it

    for name in ("write", "delete", "other"):
        assert READ in assert_problem(http.get(BASE, headers=auth(keys[name])), 403)["detail"]
    assert finished["id"] in ids(listed(http, keys["read"], size=100))
    body = {"transcriptionId": meeting["id"], "promptTemplateId": SUMMARY_T}
    for name in ("read", "delete", "other"):
        assert WRITE in assert_problem(create(http, keys[name], **body), 403)["detail"]
    assert create(http, keys["write"], **body).status_code == 201


def test_the_delete_scope_alone_deletes_and_purges(http, keys, meeting):
    done = summarized(http, keys["alice"], meeting)
    assert http.delete(f"{BASE}/{done['id']}", headers=auth(keys["delete"])).status_code == 204
    assert http.post(f"{BASE}/{done['id']}/purge", headers=auth(keys["delete"])).status_code == 204
    assert get_summary(http, keys["alice"], done["id"])["isPurged"] is True


def test_missing_or_unknown_credentials_are_401(http, finished):
    for method, url, kwargs in operations(finished["id"]) + [("GET", BASE, {}), ("POST", BASE, {"json": {}})]:
        assert_problem(http.request(method, url, **kwargs), 401)
        assert_problem(http.request(method, url, headers=auth("kk-" + "x" * 43), **kwargs), 401)


def test_another_users_summary_is_403_and_another_tenants_is_404(http, keys, finished):
    for method, url, kwargs in operations(finished["id"]):
        assert_problem(http.request(method, url, headers=auth(keys["bob"]), **kwargs), 403)
        assert_problem(http.request(method, url, headers=auth(keys["carol"]), **kwargs), 404)
    assert finished["id"] not in ids(listed(http, keys["bob"], size=100)) + ids(listed(http, keys["carol"], size=100))
    assert get_summary(http, keys["alice"], finished["id"]) == finished


@pytest.mark.parametrize("summary_id", ["not-a-uuid", "123", str(uuid.uuid4()), urllib.parse.quote("a b")])
def test_an_unknown_or_malformed_id_is_404(http, api_key, summary_id):
    for method, url, kwargs in operations(summary_id):
        assert_problem(http.request(method, url, headers=auth(api_key), **kwargs), 404)
