"""The Transcriptions API (``/api/v1/speech-services/transcriptions``) on real servers: jobs over
uploaded files in every common container, upload-and-transcribe, transcriptions of finished
streaming sessions, results as JSON, SubRip, WebVTT and text, listing, cancel, delete, purge and
the retention sweeper, webhooks delivered to a real receiver (verified with `standardwebhooks`),
failures, scopes and ownership.

Servers (each on SQLite, and on PostgreSQL when configured):

- ``server``, the shared one: runs jobs; most tests. Tests that list have a user of their own.
- ``idle``: runs no job (``job_workers=0``), so its jobs stay PENDING as long as a test needs;
  its retention is ~1.7 s (``purge_after_days``) and it may send webhooks to 127.0.0.1 over http.
- ``hooks``: runs jobs and may send webhooks to 127.0.0.1 over http, retrying quickly.

A file that fails mid-way is an honest one: an M4A damaged in its middle, which the upload's probe
accepts (it reads the header and the first frames) and whose decoding then breaks off.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
import urllib.parse
import uuid
import wave
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
import soxr
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook
from websockets.asyncio.client import connect

from lectern.speech.decode import UnsupportedAudio, decode_pcm, probe
from tests.api.test_files_api import Stored, fresh_key, stored, uploaded
from tests.api.test_streams_api import assert_problem, auth, iso, media_type, start_server, stream_session
from tests.conftest import SPEECH, LecternServer, Speech, load_speech, word_error_rate
from tests.realtime.scribe_wire import expect_started, send_audio
from tests.speech.test_decode import _damage, write_audio
from tests.webhooks import Receiver, free_port

BASE = "/api/v1/speech-services/transcriptions"
FILES = "/api/v1/speech-services/files"
STREAMS = "/api/v1/speech-services/streams"
READ, WRITE, DELETE = (f"speech:transcriptions:{a}" for a in ("read", "write", "delete"))
FILES_READ, FILES_WRITE = "speech:files:read", "speech:files:write"
SESSIONS_READ = "speech:sessions:read"

JOB_FIELDS = {
    "id", "fileId", "sessionId", "status", "model", "resolvedModelName", "languageCode", "punctuation",
    "capitalization", "durationMilliseconds", "processedMilliseconds", "segmentCount", "wordsCount", "isDeleted",
    "isPurged", "creationDate", "startDate", "completionDate", "deletedAt", "purgedAt", "purgeAt", "result",
    "errorCode", "errors", "webhook",
}
RESULT_FIELDS = {"text", "languageCode", "durationMilliseconds", "segments", "words"}
SEGMENT_FIELDS = {"segmentIndex", "text", "startSeconds", "endSeconds", "confidence"}
WORD_FIELDS = {"word", "startSeconds", "endSeconds", "confidence", "segmentIndex"}
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")

TWO = load_speech("two_sentences")  # two sentences, 2 s apart: two segments
TWO_PARTS = json.loads((SPEECH / "two_sentences.json").read_text())["segments"]
FOX, COFFEE, TRAIN, WEATHER = (load_speech(n) for n in ("fox", "coffee", "train", "weather"))
MAX_WER = 0.08  # at most one word in 14: pocketsphinx recognizes the Festival fixtures word for word
RETENTION_DAYS = 0.00002  # the idle server's purge_after_days: 1.728 s
HOOK_SECRET = "correct horse battery staple"
SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)"


# -- helpers ----------------------------------------------------------------------------------------


def normalized(text_: str) -> str:
    return " ".join(w.strip(".,?!").lower() for w in text_.split())


def wav(pcm: bytes, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def create(http: httpx.Client, key: str, **body: Any) -> httpx.Response:
    return http.post(BASE, headers=auth(key), json={k: str(v) if isinstance(v, uuid.UUID) else v
                                                     for k, v in body.items()})


def created(http: httpx.Client, key: str, **body: Any) -> dict[str, Any]:
    response = create(http, key, **body)
    assert response.status_code == 201, response.text
    assert media_type(response) == "application/json"
    return response.json()


def submitted(http: httpx.Client, key: str, content: bytes, filename: str = "speech.wav", **body: Any) -> dict:
    """Upload ``content`` with the Files API, then create a job over it."""
    file = uploaded(http, key, content, filename=filename)
    return created(http, key, fileId=file["id"], **body)


def get_job(http: httpx.Client, key: str, job_id: str) -> dict[str, Any]:
    response = http.get(f"{BASE}/{job_id}", headers=auth(key))
    assert response.status_code == 200, response.text
    assert media_type(response) == "application/json"
    return response.json()


def wait_job(http: httpx.Client, key: str, job_id: str, statuses: tuple[str, ...] = TERMINAL,
             timeout: float = 120.0, seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The job once its status is one of ``statuses``; every body polled is appended to ``seen``."""
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(http, key, job_id)
        if seen is not None:
            seen.append(job)
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"the job never reached {statuses}: {job}"
        time.sleep(0.1)


def poll(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """``check()``'s first truthy result, looked for until a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def listed(http: httpx.Client, key: str, **params: Any) -> dict[str, Any]:
    response = http.get(BASE, headers=auth(key), params=params)
    assert response.status_code == 200, (params, response.text)
    return response.json()


def ids(page: dict[str, Any]) -> list[str]:
    return [t["id"] for t in page["transcriptions"]]


def db_id(srv: LecternServer, value: str) -> str:
    return uuid.UUID(value).hex if srv.backend == "sqlite" else value


def job_count(srv: LecternServer) -> int:
    with srv.db() as s:
        return s.execute(text("SELECT count(*) FROM transcriptions")).scalar_one()


def segment_rows(srv: LecternServer, job_id: str) -> int:
    with srv.db() as s:
        return s.execute(text("SELECT count(*) FROM transcription_segments WHERE transcription_id = :id"),
                         {"id": db_id(srv, job_id)}).scalar_one()


def job_row(srv: LecternServer, job_id: str) -> dict[str, Any]:
    with srv.db() as s:
        return dict(s.execute(text("SELECT * FROM transcriptions WHERE id = :id"),
                              {"id": db_id(srv, job_id)}).mappings().one())


def deliveries(srv: LecternServer, job_id: str) -> list[dict[str, Any]]:
    with srv.db() as s:
        rows = s.execute(text("SELECT * FROM webhook_deliveries WHERE resource_id = :id ORDER BY created_at"),
                         {"id": db_id(srv, job_id)}).mappings().all()
    return [dict(r) for r in rows]


def assert_result(job: dict[str, Any], speech: Speech, *, punctuation: bool = True, capitalization: bool = True,
                  max_wer: float = MAX_WER) -> dict[str, Any]:
    """A COMPLETED job's result: the speech's words, in segments and words with consistent times."""
    assert job["status"] == "COMPLETED", job
    result = job["result"]
    assert set(result) == RESULT_FIELDS
    assert result["languageCode"] == "en"
    assert result["durationMilliseconds"] == job["durationMilliseconds"]
    duration = job["durationMilliseconds"] / 1000
    segments, words = result["segments"], result["words"]
    assert segments and words
    assert (job["segmentCount"], job["wordsCount"]) == (len(segments), len(words))
    assert [s["segmentIndex"] for s in segments] == list(range(len(segments)))
    assert result["text"] == " ".join(s["text"] for s in segments)
    assert word_error_rate(speech.text, normalized(result["text"])) <= max_wer, (speech.text, result["text"])

    previous_end = 0.0
    for segment in segments:
        assert set(segment) == SEGMENT_FIELDS
        assert previous_end <= segment["startSeconds"] < segment["endSeconds"] <= duration + 0.01, segment
        previous_end = segment["endSeconds"]
        assert 0.0 <= segment["confidence"] <= 1.0
        shown = segment["text"]
        if capitalization:
            assert shown[0].isupper(), shown
        else:
            assert shown == shown.lower(), shown
        if punctuation:
            assert shown.endswith(".") and "." not in shown[:-1], shown
        else:
            assert not re.search(r"[.,?!]", shown), shown
        own = [w for w in words if w["segmentIndex"] == segment["segmentIndex"]]
        assert [w["word"].lower() for w in own] == normalized(shown).split()
        assert segment["startSeconds"] <= own[0]["startSeconds"] and own[-1]["endSeconds"] <= segment["endSeconds"]

    previous_end, previous_index = 0.0, 0
    for word in words:
        assert set(word) == WORD_FIELDS
        assert previous_end - 0.001 <= word["startSeconds"] <= word["endSeconds"] <= duration + 0.01, word
        assert word["segmentIndex"] >= previous_index
        assert 0.0 <= word["confidence"] <= 1.0
        previous_end, previous_index = word["endSeconds"], word["segmentIndex"]
    return result


def sentence(raw: str) -> str:
    """A raw transcript as written with capitalization and punctuation: "I", a capital, a full stop."""
    shown = re.sub(r"\bi\b", "I", raw)
    return shown[0].upper() + shown[1:] + "."


def seconds_of(match: tuple[str, ...]) -> float:
    h, m, s, ms = (int(x) for x in match)
    return round(h * 3600 + m * 60 + s + ms / 1000, 3)


def parse_srt(body: str) -> list[tuple[float, float, str]]:
    """SubRip cues, checked for syntax: blocks numbered from 1, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, text."""
    assert body.endswith("\n") and not body.endswith("\n\n\n"), repr(body[-10:])
    cues = []
    for number, block in enumerate(body.rstrip("\n").split("\n\n"), 1):
        lines = block.split("\n")
        assert lines[0] == str(number), block
        timing = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", lines[1])
        assert timing, block
        assert len(lines) >= 3 and all(line.strip() for line in lines[2:]), block
        cues.append((seconds_of(timing.groups()[:4]), seconds_of(timing.groups()[4:]), " ".join(lines[2:])))
    return cues


def parse_vtt(body: str) -> list[tuple[float, float, str]]:
    assert body.startswith("WEBVTT\n\n"), body[:20]
    cues = []
    for block in body[len("WEBVTT\n\n"):].rstrip("\n").split("\n\n"):
        lines = block.split("\n")
        timing = re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", lines[0])
        assert timing, block
        assert len(lines) >= 2 and all(line.strip() for line in lines[1:]), block
        cues.append((seconds_of(timing.groups()[:4]), seconds_of(timing.groups()[4:]), " ".join(lines[1:])))
    return cues


def assert_cues_follow_the_segments(cues: list[tuple[float, float, str]], result: dict[str, Any]) -> None:
    assert " ".join(c[2] for c in cues) == " ".join(s["text"] for s in result["segments"]) == result["text"]
    previous_end = 0.0
    for start, end, _ in cues:
        assert previous_end <= start < end <= result["durationMilliseconds"] / 1000 + 0.01, cues
        previous_end = end
    first, last = result["segments"][0], result["segments"][-1]
    assert cues[0][0] == round(first["startSeconds"], 3) and cues[-1][1] == round(last["endSeconds"], 3)


def trimmed(pcm: bytes) -> bytes:
    """Speech without the fixture's leading and trailing silence (50 ms kept either side)."""
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples) > 300)
    return samples[max(loud[0] - 800, 0): loud[-1] + 800].tobytes()


LONG_NAMES = ["fox", "coffee", "train", "weather"]
LONG = Speech("long", (b"\x00\x00" * 1600).join(trimmed(load_speech(n).pcm) for n in LONG_NAMES),
              " ".join(load_speech(n).text for n in LONG_NAMES))  # ~10 s without a pause: one long segment


def undecodable_m4a(directory: Path) -> bytes:
    """An M4A of the speech, damaged in its middle so that the upload's probe accepts it (header and
    first frames are whole) while decoding the whole of it fails; the damage is searched for here,
    so that another FFmpeg build still gets such a file."""
    good = write_audio(directory / "good.m4a", "ipod", "aac", np.frombuffer(TWO.pcm, dtype="<i2"),
                       bit_rate=32000).read_bytes()
    candidate = directory / "damaged.m4a"
    for seed in range(400):
        data = _damage(good, seed)
        candidate.write_bytes(data)
        try:
            probe(candidate)
        except UnsupportedAudio:
            continue
        try:
            for _ in decode_pcm(candidate):
                pass
        except UnsupportedAudio:
            return data
    pytest.fail("no damage found that probes as audio and fails to decode")


def verify(received: Any, secret: str | bytes) -> dict[str, Any]:
    """A delivered webhook, checked with the Standard Webhooks reference verifier."""
    headers = received.headers
    assert received.method == "POST" and received.path == "/hook"
    assert headers["content-type"] == "application/json"
    assert re.fullmatch(r"msg_[0-9a-f]{32}", headers["webhook-id"]), headers
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 300
    assert headers["webhook-signature"].startswith("v1,")
    payload = Webhook(secret).verify(received.body.decode(), {
        "webhook-id": headers["webhook-id"], "webhook-timestamp": headers["webhook-timestamp"],
        "webhook-signature": headers["webhook-signature"],
    })
    assert set(payload) == {"type", "timestamp", "data"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", payload["timestamp"]), payload
    return payload


def received_for(receiver: Receiver, job_id: str) -> list[Any]:
    return [r for r in receiver.received() if json.loads(r.body)["data"]["id"] == job_id]


# -- servers, keys, shared jobs ---------------------------------------------------------------------


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
        "write": server.create_key("acme", "alice", [WRITE, FILES_READ, FILES_WRITE, SESSIONS_READ]),
        "delete": server.create_key("acme", "alice", [DELETE]),
        "files": server.create_key("acme", "alice", [FILES_READ, FILES_WRITE, "speech:files:delete"]),
    }


@pytest.fixture(scope="module")
def idle(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    srv = start_server(tmp_path_factory, backend, job_workers=0, purge_after_days=RETENTION_DAYS,
                       sweep_interval_seconds=0.3, webhook_allow_insecure_hosts="127.0.0.1",
                       webhook_retry_seconds="0.2,0.2,0.5")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def idle_http(idle: LecternServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=idle.base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def idle_key(idle: LecternServer) -> str:
    return idle.create_key("acme", "alice")


@pytest.fixture(scope="module")
def hooks(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    srv = start_server(tmp_path_factory, backend, webhook_allow_insecure_hosts="127.0.0.1",
                       webhook_retry_seconds="0.2,0.2,0.5")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def hooks_http(hooks: LecternServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hooks.base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def hooks_key(hooks: LecternServer) -> str:
    return hooks.create_key("acme", "alice")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return undecodable_m4a(tmp_path_factory.mktemp("damaged"))


@pytest.fixture(scope="module")
def two_job(http: httpx.Client, api_key: str) -> dict[str, Any]:
    """A COMPLETED job over two_sentences.wav (read-only for the tests that share it)."""
    job = submitted(http, api_key, wav(TWO.pcm), "two.wav")
    return wait_job(http, api_key, job["id"])


@pytest.fixture(scope="module")
def long_job(http: httpx.Client, api_key: str) -> dict[str, Any]:
    job = submitted(http, api_key, wav(LONG.pcm), "long.wav")
    return wait_job(http, api_key, job["id"])


def completed_job(http: httpx.Client, key: str, speech: Speech = FOX) -> dict[str, Any]:
    job = submitted(http, key, wav(speech.pcm))
    done = wait_job(http, key, job["id"])
    assert done["status"] == "COMPLETED", done
    return done


# -- a job over an uploaded file ---------------------------------------------------------------------


def test_a_job_over_an_uploaded_file_is_pending_then_completed_with_its_result(http, api_key):
    file = uploaded(http, api_key, wav(TWO.pcm), filename="two.wav")
    response = create(http, api_key, fileId=file["id"])
    assert response.status_code == 201, response.text
    assert media_type(response) == "application/json"
    job = response.json()
    assert set(job) == JOB_FIELDS
    uuid.UUID(job["id"])
    assert {k: job[k] for k in JOB_FIELDS - {"id", "creationDate", "resolvedModelName"}} == {
        "fileId": file["id"], "sessionId": None, "status": "PENDING", "model": "general", "languageCode": "en",
        "punctuation": True, "capitalization": True, "durationMilliseconds": file["durationMilliseconds"],
        "processedMilliseconds": 0, "segmentCount": 0, "wordsCount": 0, "isDeleted": False, "isPurged": False,
        "startDate": None, "completionDate": None, "deletedAt": None, "purgedAt": None, "purgeAt": None,
        "result": None, "errorCode": None, "errors": None, "webhook": None,
    }
    assert isinstance(job["resolvedModelName"], str) and job["resolvedModelName"]
    assert iso(job["creationDate"]) >= iso(file["creationDate"])

    seen: list[dict[str, Any]] = []
    done = wait_job(http, api_key, job["id"], seen=seen)
    statuses = [j["status"] for j in seen]
    assert set(statuses) <= {"PENDING", "IN_PROGRESS", "COMPLETED"}, statuses
    assert statuses == sorted(statuses, key=["PENDING", "IN_PROGRESS", "COMPLETED"].index)
    processed = [j["processedMilliseconds"] for j in seen]
    assert processed == sorted(processed), processed
    for running in seen[:-1]:
        assert running["result"] is None and running["completionDate"] is None

    assert {k: done[k] for k in ("id", "fileId", "creationDate", "model", "resolvedModelName")} == {
        k: job[k] for k in ("id", "fileId", "creationDate", "model", "resolvedModelName")}
    assert iso(done["creationDate"]) <= iso(done["startDate"]) <= iso(done["completionDate"])
    assert done["processedMilliseconds"] == done["durationMilliseconds"] == file["durationMilliseconds"]
    assert (done["errorCode"], done["errors"], done["isDeleted"], done["purgeAt"]) == (None, None, False, None)
    result = assert_result(done, TWO)
    assert normalized(result["text"]) == TWO.text

    # The two sentences, 2 s apart, are the two segments, timed where the fixture says they are.
    assert len(result["segments"]) == len(TWO_PARTS)
    for segment, part in zip(result["segments"], TWO_PARTS, strict=True):
        assert normalized(segment["text"]) == part["text"]
        assert abs(segment["startSeconds"] - part["start_sample"] / 16000) <= 0.15, (segment, part)
        assert abs(segment["endSeconds"] - part["end_sample"] / 16000) <= 0.15, (segment, part)

    response = http.get(f"{BASE}/{job['id']}/result", headers=auth(api_key))
    assert response.status_code == 200 and media_type(response) == "application/json"
    assert response.json() == result
    assert get_job(http, api_key, job["id"]) == done


def test_without_punctuation_and_capitalization_the_text_is_lower_case_without_full_stops(http, api_key):
    options = {"model": "general", "language": {"defaultLanguageCode": "en"}, "punctuation": False,
               "capitalization": False}
    job = submitted(http, api_key, wav(TWO.pcm), transcription=options)
    assert (job["punctuation"], job["capitalization"]) == (False, False)
    done = wait_job(http, api_key, job["id"])
    result = assert_result(done, TWO, punctuation=False, capitalization=False)
    assert result["text"] == TWO.text  # recognized word for word, as the engine writes it


def test_capitalization_alone_capitalizes_and_punctuation_alone_ends_sentences(http, api_key):
    caps = submitted(http, api_key, wav(COFFEE.pcm), transcription={"punctuation": False})
    stops = submitted(http, api_key, wav(COFFEE.pcm), transcription={"capitalization": False})
    caps_text = assert_result(wait_job(http, api_key, caps["id"]), COFFEE, punctuation=False)["text"]
    stops_text = assert_result(wait_job(http, api_key, stops["id"]), COFFEE, capitalization=False)["text"]
    assert caps_text == "I would like a cup of coffee with sugar"  # "i" is the pronoun I
    assert stops_text == "i would like a cup of coffee with sugar."


@pytest.mark.parametrize("language", ["en", "en-US", "en_GB", "eng", "EN-au"])
def test_english_in_any_spelling_is_served(http, api_key, language):
    file = uploaded(http, api_key, wav(FOX.pcm[:16000]))
    job = created(http, api_key, fileId=file["id"], transcription={"language": {"defaultLanguageCode": language}})
    assert job["languageCode"] == "en"


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"transcription": {"language": {"defaultLanguageCode": "he"}}}, "transcription.language.defaultLanguageCode"),
        ({"transcription": {"language": {"defaultLanguageCode": "fr-FR"}}},
         "transcription.language.defaultLanguageCode"),
        ({"diarization": {"enabled": True}}, "diarization.enabled"),
        ({"transcription": {"model": ""}}, None),
        ({"transcription": {"punctuation": "sometimes"}}, None),
        ({"transcription": {"speed": "fast"}}, None),
        ({"extra": 1}, None),
    ],
    ids=["hebrew", "french", "diarization", "empty-model", "bad-bool", "unknown-option", "unknown-field"],
)
def test_options_this_server_cannot_honour_are_400_and_nothing_is_created(http, server, api_key, body, parameter):
    file = uploaded(http, api_key, wav(FOX.pcm[:16000]))
    before = job_count(server)
    assert_problem(create(http, api_key, fileId=file["id"], **body), 400, parameter)
    assert job_count(server) == before


@pytest.mark.parametrize(
    "body",
    [{}, {"fileId": str(uuid.uuid4()), "sessionId": str(uuid.uuid4())}, {"fileId": None, "sessionId": None}],
    ids=["neither", "both", "nulls"],
)
def test_exactly_one_of_file_id_and_session_id_is_required(http, api_key, body):
    assert_problem(http.post(BASE, headers=auth(api_key), json=body), 400, "fileId")


@pytest.mark.parametrize("body", ['{"fileId": ', "[]", "", '{"fileId": "not-a-uuid"}'])
def test_a_malformed_create_body_is_400(http, api_key, body):
    response = http.post(BASE, headers={**auth(api_key), "Content-Type": "application/json"}, content=body)
    assert_problem(response, 400)


def test_the_file_must_exist_be_the_callers_and_not_be_deleted(http, keys):
    alice = keys["alice"]
    file = uploaded(http, alice, wav(FOX.pcm[:16000]))
    assert_problem(create(http, keys["bob"], fileId=file["id"]), 403, "fileId")
    assert_problem(create(http, keys["carol"], fileId=file["id"]), 404, "fileId")
    assert_problem(create(http, alice, fileId=str(uuid.uuid4())), 404, "fileId")
    assert http.delete(f"{FILES}/{file['id']}", headers=auth(alice)).status_code == 204
    assert "deleted" in assert_problem(create(http, alice, fileId=file["id"]), 409, "fileId")["detail"]


def test_created_jobs_say_where_they_are(http, api_key):
    file = uploaded(http, api_key, wav(FOX.pcm[:16000]))
    response = create(http, api_key, fileId=file["id"])
    assert response.status_code == 201
    assert response.headers.get("location") == f"{BASE}/{response.json()['id']}", response.headers
    upload = http.post(f"{BASE}/upload", headers=auth(api_key), files={"file": ("a.wav", wav(FOX.pcm[:16000]))})
    assert upload.status_code == 201
    assert upload.headers.get("location") == f"{BASE}/{upload.json()['transcription']['id']}"


# -- every container ---------------------------------------------------------------------------------


CONTAINERS = [  # name, muxer, encoder, sample rate, layout, bit rate, content type
    ("wav", "wav", "pcm_s16le", 16000, "mono", None, "audio/wav"),
    ("flac", "flac", "flac", 16000, "mono", None, "audio/flac"),
    ("mp3", "mp3", "libmp3lame", 16000, "mono", 32000, "audio/mpeg"),
    ("ogg-opus", "ogg", "libopus", 16000, "mono", 24000, "audio/ogg"),
    ("m4a-aac", "ipod", "aac", 16000, "mono", 32000, "audio/mp4"),
    ("webm-opus", "webm", "libopus", 16000, "mono", 24000, "audio/webm"),
    ("wav-44k-stereo", "wav", "pcm_s16le", 44100, "stereo", None, "audio/wav"),
    ("m4a-aac-44k-stereo", "ipod", "aac", 44100, "stereo", 64000, "audio/mp4"),
]
EXTENSIONS = {"wav": "wav", "flac": "flac", "mp3": "mp3", "ogg": "ogg", "ipod": "m4a", "webm": "webm"}


@pytest.fixture(scope="module")
def container_jobs(http, api_key, tmp_path_factory) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Every container's file and job, all submitted first so that the server runs them side by side."""
    tmp = tmp_path_factory.mktemp("containers")
    mono = np.frombuffer(TWO.pcm, dtype="<i2")
    jobs = {}
    for name, muxer, encoder, rate, layout, bit_rate, content_type in CONTAINERS:
        samples = mono if rate == 16000 else soxr.resample(mono, 16000, rate, quality="HQ")
        if layout == "stereo":
            samples = np.repeat(samples.reshape(-1, 1), 2, axis=1)
        path = write_audio(tmp / f"two.{EXTENSIONS[muxer]}", muxer, encoder, samples, rate, layout, bit_rate)
        file = uploaded(http, api_key, path.read_bytes(), filename=path.name, content_type=content_type)
        jobs[name] = (file, created(http, api_key, fileId=file["id"]))
    return jobs


@pytest.mark.parametrize("name", [c[0] for c in CONTAINERS])
def test_every_common_container_and_codec_is_transcribed(http, api_key, container_jobs, name):
    file, job = container_jobs[name]
    channels = 2 if "stereo" in name else 1
    assert file["format"]["channels"] == channels
    assert abs(file["durationMilliseconds"] - TWO.seconds * 1000) <= 150, file
    done = wait_job(http, api_key, job["id"])
    assert_result(done, TWO)
    assert abs(done["processedMilliseconds"] - done["durationMilliseconds"]) <= 150, done
    assert [normalized(s["text"]) for s in done["result"]["segments"]] == [p["text"] for p in TWO_PARTS]


# -- upload and transcribe -----------------------------------------------------------------------------


def test_upload_and_transcribe_stores_the_file_and_queues_the_job(hooks_http, hooks, receiver):
    key = fresh_key(hooks)
    metadata = {"source": "upload", "type": "meeting-recording"}
    webhook = {"url": receiver.url(), "secret": HOOK_SECRET, "headers": {"X-Request-Source": "upload-test"}}
    options = {"model": "general", "language": {"defaultLanguageCode": "en"}, "punctuation": False,
               "capitalization": False}
    response = hooks_http.post(
        f"{BASE}/upload", headers=auth(key), files={"file": ("two.wav", wav(TWO.pcm), "audio/wav")},
        data={"name": "meeting-recording", "path": "/incoming-audio/", "metadata": json.dumps(metadata),
              "tags": json.dumps(["meeting", "transcription"]), "transcription": json.dumps(options),
              "diarization": json.dumps({"enabled": False}), "webhook": json.dumps(webhook)},
    )
    assert response.status_code == 201, response.text
    assert media_type(response) == "application/json"
    body = response.json()
    assert set(body) == {"file", "transcription"}
    file, job = body["file"], body["transcription"]
    assert (file["name"], file["filename"], file["path"]) == ("meeting-recording", "two.wav", "/incoming-audio/")
    assert (file["metadata"], file["tags"], file["contentType"]) == (metadata, ["meeting", "transcription"],
                                                                      "audio/wav")
    assert file["durationMilliseconds"] == round(TWO.seconds * 1000)
    assert set(job) == JOB_FIELDS
    assert (job["fileId"], job["status"], job["sessionId"]) == (file["id"], "PENDING", None)
    assert (job["model"], job["languageCode"], job["punctuation"], job["capitalization"]) == ("general", "en",
                                                                                              False, False)
    assert job["durationMilliseconds"] == file["durationMilliseconds"]
    assert job["webhook"] == {"url": receiver.url(), "headers": {"X-Request-Source": "upload-test"}, "hasSecret": True}
    assert HOOK_SECRET not in response.text

    assert hooks_http.get(f"{FILES}/{file['id']}", headers=auth(key)).json() == file
    assert [f["id"] for f in hooks_http.get(FILES, headers=auth(key)).json()["files"]] == [file["id"]]
    done = wait_job(hooks_http, key, job["id"])
    result = assert_result(done, TWO, punctuation=False, capitalization=False)
    assert result["text"] == TWO.text

    delivered = poll(lambda: received_for(receiver, job["id"]), "the completed webhook")
    payload = verify(delivered[0], HOOK_SECRET.encode())
    assert payload["type"] == "transcription.completed" and payload["data"]["id"] == job["id"]
    assert delivered[0].headers["x-request-source"] == "upload-test"


@pytest.mark.parametrize(
    ("fields", "parameter"),
    [
        ({"transcription": "{not json"}, "transcription"),
        ({"transcription": "[1, 2]"}, "transcription"),
        ({"transcription": '{"punctuation": "sometimes"}'}, "transcription"),
        ({"transcription": '{"model": "general", "speed": 2}'}, "transcription"),
        ({"transcription": '{"language": {"defaultLanguageCode": "he"}}'},
         "transcription.language.defaultLanguageCode"),
        ({"diarization": '{"enabled": true}'}, "diarization.enabled"),
        ({"diarization": "enabled"}, "diarization"),
        ({"webhook": '{"url": "http://example.com/hook"}'}, "webhook"),
        ({"webhook": '{"url": "https://10.1.2.3/hook"}'}, "webhook"),
        ({"webhook": '{"url": "https://example.com/hook", "headers": {"webhook-id": "x"}}'}, "webhook"),
        ({"webhook": '{"secret": "s"}'}, "webhook"),
        ({"webhook": "{"}, "webhook"),
        ({"tags": '"meeting"'}, "tags"),
        ({"metadata": "{not json"}, "metadata"),
    ],
    ids=lambda v: v if isinstance(v, str) else next(iter(v.values()))[:30],
)
def test_an_invalid_upload_field_is_400_naming_it_and_nothing_is_stored(http, server, api_key, fields, parameter):
    before, jobs_before = stored(server), job_count(server)
    response = http.post(f"{BASE}/upload", headers=auth(api_key),
                         files={"file": ("two.wav", wav(TWO.pcm), "audio/wav")}, data=fields)
    assert_problem(response, 400, parameter)
    assert stored(server) == Stored(before.rows, before.blobs, 0)  # no file row, no blob, no spooled upload
    assert job_count(server) == jobs_before


def test_upload_and_transcribe_needs_both_write_scopes(http, server):
    no_files = server.create_key("acme", "uploader", [WRITE, READ, FILES_READ])
    no_jobs = server.create_key("acme", "uploader", [FILES_WRITE, FILES_READ, READ])
    before = stored(server)
    for key, scope in ((no_files, FILES_WRITE), (no_jobs, WRITE)):
        response = http.post(f"{BASE}/upload", headers=auth(key), files={"file": ("a.wav", wav(FOX.pcm))})
        assert scope in assert_problem(response, 403)["detail"]
    assert stored(server) == Stored(before.rows, before.blobs, 0)
    assert_problem(http.post(f"{BASE}/upload", files={"file": ("a.wav", wav(FOX.pcm))}), 401)


def test_uploading_what_is_not_audio_is_415_and_queues_nothing(http, server, api_key):
    before, jobs_before = stored(server), job_count(server)
    response = http.post(f"{BASE}/upload", headers=auth(api_key),
                         files={"file": ("notes.wav", b"not audio at all\n" * 100, "audio/wav")})
    assert_problem(response, 415, "file")
    assert (stored(server), job_count(server)) == (Stored(before.rows, before.blobs, 0), jobs_before)


# -- from a finished streaming session ----------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def session_world(server: LecternServer, keys: dict[str, str]) -> dict[str, Any]:
    """alice's finished session of two utterances (fox, then coffee), and bob's."""
    alice = await stream_session(server, keys["alice"], [FOX.pcm, COFFEE.pcm])
    bob = await stream_session(server, keys["bob"], [TRAIN.pcm])
    return {"alice": alice, "bob": bob}


async def test_a_finished_session_becomes_a_completed_transcription_at_once(http, server, keys, session_world):
    alice, session = keys["alice"], session_world["alice"]
    response = await asyncio.to_thread(create, http, alice, sessionId=session.id)
    assert response.status_code == 201, response.text
    job = response.json()
    assert set(job) == JOB_FIELDS
    assert (job["status"], job["sessionId"], job["fileId"]) == ("COMPLETED", session.id, None)
    info = http.get(f"{STREAMS}/{session.id}", headers=auth(alice)).json()
    stream_segments = http.get(f"{STREAMS}/{session.id}/segments", headers=auth(alice)).json()
    assert job["durationMilliseconds"] == job["processedMilliseconds"] == info["durationMilliseconds"]
    assert job["startDate"] == job["completionDate"] and iso(job["completionDate"]) >= iso(info["endTime"])
    assert (job["errorCode"], job["errors"], job["isDeleted"]) == (None, None, False)

    speech = Speech("fox+coffee", FOX.pcm + COFFEE.pcm, f"{FOX.text} {COFFEE.text}")
    result = assert_result(job, speech, max_wer=0.15)  # fox's "jumps" may be heard as "jumped"
    assert [s["text"] for s in result["segments"]] == [sentence(t) for t in session.texts]
    assert len(result["segments"]) == len(stream_segments) == 2
    for mine, theirs in zip(result["segments"], stream_segments, strict=True):
        assert normalized(mine["text"]) == theirs["transcript"]
        assert (mine["segmentIndex"], mine["startSeconds"], mine["endSeconds"], mine["confidence"]) == (
            theirs["segmentIndex"], theirs["startSeconds"], theirs["endSeconds"], theirs["confidence"])
    assert result["words"] == [
        {"word": w["word"], "startSeconds": w["startSeconds"], "endSeconds": w["endSeconds"],
         "confidence": w["confidence"], "segmentIndex": s["segmentIndex"]}
        for s in stream_segments for w in s["words"]]
    assert get_job(http, alice, job["id"]) == job
    assert http.get(f"{BASE}/{job['id']}/result", headers=auth(alice)).json() == result


async def test_a_session_transcription_is_not_started_or_completed_before_it_was_created(http, keys, session_world):
    job = await asyncio.to_thread(created, http, keys["alice"], sessionId=session_world["alice"].id)
    assert iso(job["creationDate"]) <= iso(job["startDate"]) <= iso(job["completionDate"]), job


async def test_a_session_transcription_honours_punctuation_and_capitalization(http, keys, session_world):
    session = session_world["alice"]
    job = created(http, keys["alice"], sessionId=session.id,
                  transcription={"punctuation": False, "capitalization": False})
    assert [s["text"] for s in job["result"]["segments"]] == session.texts
    assert job["result"]["text"] == " ".join(session.texts)


async def test_a_live_session_is_409(http, server, keys):
    url = f"{server.ws_url}/v1/speech-to-text/realtime?model_id=scribe_v2_realtime"
    async with connect(url, additional_headers={"xi-api-key": keys["alice"]}, open_timeout=5) as ws:
        started = await expect_started(ws)
        await send_audio(ws, FOX.pcm[:32000])
        session_id = str(uuid.UUID(started["session_id"]))
        response = await asyncio.to_thread(create, http, keys["alice"], sessionId=session_id)
        assert "stream" in assert_problem(response, 409, "sessionId")["detail"]


async def test_a_session_must_be_the_callers_and_exist(http, server, keys, session_world):
    bobs = session_world["bob"].id
    assert_problem(create(http, keys["alice"], sessionId=bobs), 403, "sessionId")
    assert_problem(create(http, keys["carol"], sessionId=bobs), 404, "sessionId")
    assert_problem(create(http, keys["alice"], sessionId=str(uuid.uuid4())), 404, "sessionId")
    assert_problem(create(http, keys["alice"], sessionId="not-a-uuid"), 400)
    no_sessions = server.create_key("acme", "bob", [READ, WRITE])
    assert SESSIONS_READ in assert_problem(create(http, no_sessions, sessionId=bobs), 403)["detail"]


async def test_a_deleted_session_is_404(http, server, keys):
    session = await stream_session(server, keys["alice"], [WEATHER.pcm])
    assert http.delete(f"{STREAMS}/{session.id}", headers=auth(keys["alice"])).status_code == 204
    assert_problem(create(http, keys["alice"], sessionId=session.id), 404, "sessionId")


# -- the result as SubRip, WebVTT, text ------------------------------------------------------------------


def test_srt_vtt_and_txt_of_a_two_segment_result(http, api_key, two_job):
    url, result = f"{BASE}/{two_job['id']}/result", two_job["result"]
    srt = http.get(url, headers=auth(api_key), params={"format": "srt"})
    assert srt.status_code == 200 and media_type(srt) == "application/x-subrip"
    cues = parse_srt(srt.text)
    assert cues == [(round(s["startSeconds"], 3), round(s["endSeconds"], 3), s["text"]) for s in result["segments"]]
    assert_cues_follow_the_segments(cues, result)

    vtt = http.get(url, headers=auth(api_key), params={"format": "vtt"})
    assert vtt.status_code == 200 and media_type(vtt) == "text/vtt"
    assert parse_vtt(vtt.text) == cues

    txt = http.get(url, headers=auth(api_key), params={"format": "txt"})
    assert txt.status_code == 200 and media_type(txt) == "text/plain"
    assert txt.text == "".join(f"{s['text']}\n" for s in result["segments"])

    as_json = http.get(url, headers=auth(api_key), params={"format": "json"})
    assert media_type(as_json) == "application/json" and as_json.json() == result


def test_a_long_segment_is_cut_into_cues_at_word_boundaries(http, api_key, long_job):
    result = assert_result(long_job, LONG, max_wer=0.1)
    assert len(result["segments"]) == 1, "no pause: the whole file is one segment"
    srt = parse_srt(http.get(f"{BASE}/{long_job['id']}/result", headers=auth(api_key),
                             params={"format": "srt"}).text)
    vtt = parse_vtt(http.get(f"{BASE}/{long_job['id']}/result", headers=auth(api_key),
                             params={"format": "vtt"}).text)
    assert srt == vtt
    assert len(srt) >= 2
    assert_cues_follow_the_segments(srt, result)
    starts = {round(w["startSeconds"], 3) for w in result["words"]}
    ends = {round(w["endSeconds"], 3) for w in result["words"]}
    for start, end, cue in srt:
        assert start in starts and end in ends, (start, end)  # cut where words begin and end
        assert len(cue) <= 84 and end - start <= 7.0, (start, end, cue)  # two lines of 42, a few seconds


@pytest.mark.parametrize("fmt", ["pdf", "SRT", "", "json,srt"])
def test_an_unknown_format_is_400(http, api_key, two_job, fmt):
    response = http.get(f"{BASE}/{two_job['id']}/result", headers=auth(api_key), params={"format": fmt})
    assert_problem(response, 400, "format")


def test_no_result_before_completion(idle_http, idle_key):
    job = submitted(idle_http, idle_key, wav(FOX.pcm))
    for fmt in ("json", "srt", "vtt", "txt"):
        response = idle_http.get(f"{BASE}/{job['id']}/result", headers=auth(idle_key), params={"format": fmt})
        assert "PENDING" in assert_problem(response, 404)["detail"]


# -- listing ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def library(http, server, damaged) -> dict[str, Any]:
    """One user's jobs: a and b over file one, c (FAILED) over file two, d deleted and e purged over
    file three; created in this order, each after the previous one ended."""
    key = fresh_key(server)
    one = uploaded(http, key, wav(FOX.pcm), filename="one.wav")
    two = uploaded(http, key, damaged, filename="two.m4a", content_type="audio/mp4")
    three = uploaded(http, key, wav(COFFEE.pcm), filename="three.wav")
    jobs = {}
    for name, file in (("a", one), ("b", one), ("c", two), ("d", three), ("e", three)):
        job = created(http, key, fileId=file["id"])
        jobs[name] = wait_job(http, key, job["id"])
    assert [jobs[n]["status"] for n in "abcde"] == ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED", "COMPLETED"]
    assert http.delete(f"{BASE}/{jobs['d']['id']}", headers=auth(key)).status_code == 204
    assert http.delete(f"{BASE}/{jobs['e']['id']}", headers=auth(key), params={"purge": "true"}).status_code == 204
    jobs["d"], jobs["e"] = get_job(http, key, jobs["d"]["id"]), get_job(http, key, jobs["e"]["id"])
    return {"key": key, "files": {"one": one, "two": two, "three": three}, "jobs": jobs}


def names(library: dict[str, Any], page: dict[str, Any]) -> list[str]:
    by_id = {j["id"]: n for n, j in library["jobs"].items()}
    return [by_id[i] for i in ids(page)]


def test_list_defaults_newest_first_without_results(http, library):
    page = listed(http, library["key"])
    assert (page["page"], page["size"], page["total"]) == (0, 3, 3)
    assert names(library, page) == ["c", "b", "a"]
    assert page["filters"] == {"isDeleted": False}
    assert page["sort"] == {"field": "creationDate", "direction": "desc"}
    for item in page["transcriptions"]:
        assert set(item) <= JOB_FIELDS
        assert item.get("result") is None, "the result is never part of a listing"
        full = get_job(http, library["key"], item["id"])
        assert {**full, "result": None} == {**item, "result": None}


def test_paging(http, library):
    seen = []
    for number in range(3):
        page = listed(http, library["key"], page=number, size=2)
        assert (page["page"], page["total"]) == (number, 3)
        assert page["size"] == len(page["transcriptions"]) == [2, 1, 0][number]
        seen += names(library, page)
    assert seen == ["c", "b", "a"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "COMPLETED"}, ["b", "a"]),
        ({"status": "FAILED"}, ["c"]),
        ({"status": "COMPLETED,FAILED"}, ["c", "b", "a"]),
        ({"status": " FAILED , COMPLETED "}, ["c", "b", "a"]),
        ({"status": "PENDING,IN_PROGRESS,CANCELLED"}, []),
        ({"isDeleted": "true"}, ["e", "d"]),
        ({"isDeleted": "true", "isPurged": "true"}, ["e"]),
        ({"isDeleted": "true", "isPurged": "false"}, ["d"]),
        ({"isPurged": "false"}, ["c", "b", "a"]),
        ({"isDeleted": "true", "status": "FAILED"}, []),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_filters(http, library, params, expected):
    page = listed(http, library["key"], **params)
    assert names(library, page) == expected
    assert page["total"] == len(expected)


def test_file_filter(http, library, keys):
    key, files = library["key"], library["files"]
    assert names(library, listed(http, key, fileId=files["one"]["id"])) == ["b", "a"]
    assert names(library, listed(http, key, fileId=files["two"]["id"])) == ["c"]
    assert names(library, listed(http, key, fileId=files["three"]["id"])) == []
    assert names(library, listed(http, key, fileId=files["three"]["id"], isDeleted="true")) == ["e", "d"]
    page = listed(http, key, fileId=files["one"]["id"], status="COMPLETED")
    assert page["filters"] == {"fileId": files["one"]["id"], "status": ["COMPLETED"], "isDeleted": False}
    # Files are not shared: another user's file is theirs (403), another tenant's does not exist (404).
    assert_problem(http.get(BASE, headers=auth(keys["bob"]), params={"fileId": files["one"]["id"]}), 403, "fileId")
    assert_problem(http.get(BASE, headers=auth(keys["carol"]), params={"fileId": files["one"]["id"]}), 404, "fileId")
    assert_problem(http.get(BASE, headers=auth(key), params={"fileId": str(uuid.uuid4())}), 404, "fileId")


def test_creation_and_completion_windows_are_inclusive(http, library):
    key, jobs = library["key"], library["jobs"]
    b = jobs["b"]
    assert names(library, listed(http, key, createdAfter=b["creationDate"])) == ["c", "b"]
    assert names(library, listed(http, key, createdBefore=b["creationDate"])) == ["b", "a"]
    assert names(library, listed(http, key, createdAfter=b["creationDate"], createdBefore=b["creationDate"])) == ["b"]
    assert names(library, listed(http, key, completedAfter=b["completionDate"])) == ["c", "b"]
    assert names(library, listed(http, key, completedBefore=b["completionDate"])) == ["b", "a"]
    window = listed(http, key, completedAfter=b["completionDate"], completedBefore=b["completionDate"])
    assert names(library, window) == ["b"]
    assert window["filters"] == {"completedAfter": b["completionDate"], "completedBefore": b["completionDate"],
                                 "isDeleted": False}
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    assert listed(http, key, createdAfter=tomorrow)["total"] == 0
    assert names(library, listed(http, key, createdAfter="2020-01-01")) == ["c", "b", "a"]  # a date alone


SORT_VALUES = {"creationDate": lambda j: iso(j["creationDate"]), "completionDate": lambda j: iso(j["completionDate"]),
               "status": lambda j: j["status"]}


def sorted_jobs(library: dict[str, Any], field: str, descending: bool) -> list[str]:
    jobs = [library["jobs"][n] for n in "abc"]
    return [j["id"] for j in sorted(jobs, key=lambda j: (SORT_VALUES[field](j), j["id"]), reverse=descending)]


@pytest.mark.parametrize("field", list(SORT_VALUES))
@pytest.mark.parametrize("direction", ["asc", "desc", "ASC", "DESC"])
def test_sorting(http, library, field, direction):
    descending = direction.lower() == "desc"
    page = listed(http, library["key"], sort=f"{field},{direction}")
    assert ids(page) == sorted_jobs(library, field, descending)
    assert page["sort"] == {"field": field, "direction": direction.lower()}


def test_a_sort_without_a_direction_is_ascending_as_in_the_files_and_streams_apis(http, library):
    for field in SORT_VALUES:
        page = listed(http, library["key"], sort=field)
        assert (ids(page), page["sort"]) == (sorted_jobs(library, field, False), {"field": field, "direction": "asc"})


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"status": "DONE"}, "status"), ({"status": "COMPLETED,NOPE"}, "status"), ({"status": "completed"}, "status"),
        ({"status": ""}, "status"), ({"status": "COMPLETED,"}, "status"),
        ({"sort": "name"}, "sort"), ({"sort": "creationDate,up"}, "sort"), ({"sort": "createdAt"}, "sort"),
        ({"sort": ""}, "sort"),
        ({"size": 0}, "size"), ({"size": 101}, "size"), ({"page": -1}, "page"),
        ({"fileId": "nope"}, "fileId"), ({"isDeleted": "maybe"}, "isDeleted"), ({"isPurged": "2"}, "isPurged"),
        ({"createdAfter": "yesterday"}, "createdAfter"), ({"createdBefore": "2024-13-01"}, "createdBefore"),
        ({"completedAfter": "1700000000"}, "completedAfter"), ({"completedBefore": "soon"}, "completedBefore"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else v,
)
def test_invalid_list_parameters_are_400(http, library, params, parameter):
    assert_problem(http.get(BASE, headers=auth(library["key"]), params=params), 400, parameter)


def test_pending_and_cancelled_filters_and_unfinished_jobs_sort_last(idle_http, idle):
    key = fresh_key(idle)
    file = uploaded(idle_http, key, wav(FOX.pcm))
    first, second, third = (created(idle_http, key, fileId=file["id"]) for _ in range(3))
    assert idle_http.post(f"{BASE}/{second['id']}/cancel", headers=auth(key)).status_code == 204
    assert ids(listed(idle_http, key, status="PENDING")) == [third["id"], first["id"]]
    assert ids(listed(idle_http, key, status="CANCELLED")) == [second["id"]]
    assert ids(listed(idle_http, key, status="CANCELLED,PENDING")) == [third["id"], second["id"], first["id"]]
    assert listed(idle_http, key, status="IN_PROGRESS,COMPLETED,FAILED")["total"] == 0
    for direction in ("asc", "desc"):  # a job not completed has no completion date: last, either way
        page = listed(idle_http, key, sort=f"completionDate,{direction}")
        assert ids(page)[0] == second["id"], direction
    assert ids(listed(idle_http, key, sort="status,asc")) == [second["id"]] + sorted(
        [first["id"], third["id"]])


# -- cancel, delete, purge ---------------------------------------------------------------------------------


def test_cancelling_a_pending_job(idle_http, idle_key):
    job = submitted(idle_http, idle_key, wav(FOX.pcm))
    response = idle_http.post(f"{BASE}/{job['id']}/cancel", headers=auth(idle_key))
    assert (response.status_code, response.content) == (204, b"")
    cancelled = get_job(idle_http, idle_key, job["id"])
    assert cancelled["status"] == "CANCELLED"
    assert iso(cancelled["completionDate"]) >= iso(cancelled["creationDate"])
    assert (cancelled["startDate"], cancelled["result"], cancelled["errorCode"]) == (None, None, None)
    assert {k: v for k, v in cancelled.items() if k not in ("status", "completionDate")} == {
        k: v for k, v in job.items() if k not in ("status", "completionDate")}
    again = assert_problem(idle_http.post(f"{BASE}/{job['id']}/cancel", headers=auth(idle_key)), 409)
    assert "cannot be cancelled" in again["detail"]
    assert "CANCELLED" in assert_problem(idle_http.get(f"{BASE}/{job['id']}/result", headers=auth(idle_key)),
                                         404)["detail"]
    assert get_job(idle_http, idle_key, job["id"]) == cancelled


def test_cancelling_a_running_job_stops_it_here_at_once(http, server):
    key = fresh_key(server)
    pause = b"\x00\x00" * 16000
    rounds = [load_speech(n).pcm + pause for n in ("fox", "coffee", "train", "weather", "kitchen", "library")] * 6
    job = submitted(http, key, wav(b"".join(rounds)), "long.wav")  # about three minutes of speech
    running = poll(lambda: (j := get_job(http, key, job["id"]))["segmentCount"] >= 1 and j, "a first segment")
    assert running["status"] == "IN_PROGRESS", "the job must still be running when cancelled"
    assert 0 < running["processedMilliseconds"] < running["durationMilliseconds"]
    assert http.post(f"{BASE}/{job['id']}/cancel", headers=auth(key)).status_code == 204
    cancelled = get_job(http, key, job["id"])
    assert cancelled["status"] == "CANCELLED" and cancelled["result"] is None
    stored_segments = segment_rows(server, job["id"])
    assert stored_segments == cancelled["segmentCount"] >= 1
    # The server's recognizers are free again (a next job completes) and the cancelled job wrote nothing more.
    assert completed_job(http, key)["status"] == "COMPLETED"
    after = get_job(http, key, job["id"])
    assert (after["status"], after["segmentCount"], segment_rows(server, job["id"])) == (
        "CANCELLED", stored_segments, stored_segments)
    assert after["processedMilliseconds"] < after["durationMilliseconds"] / 2
    assert_problem(http.get(f"{BASE}/{job['id']}/result", headers=auth(key)), 404)


def test_a_completed_job_cannot_be_cancelled(http, api_key, two_job):
    assert_problem(http.post(f"{BASE}/{two_job['id']}/cancel", headers=auth(api_key)), 409)
    assert get_job(http, api_key, two_job["id"])["status"] == "COMPLETED"


def test_a_job_that_has_not_ended_cannot_be_deleted(idle_http, idle_key):
    job = submitted(idle_http, idle_key, wav(FOX.pcm))
    body = assert_problem(idle_http.delete(f"{BASE}/{job['id']}", headers=auth(idle_key)), 409)
    assert "cancel" in body["detail"]
    assert_problem(idle_http.delete(f"{BASE}/{job['id']}", headers=auth(idle_key), params={"purge": "true"}), 409)
    assert_problem(idle_http.post(f"{BASE}/{job['id']}/purge", headers=auth(idle_key)), 409)
    assert get_job(idle_http, idle_key, job["id"]) == job


def test_delete_is_soft_until_the_retention_ends_then_purge_removes_the_result(http, server):
    key = fresh_key(server)
    job = completed_job(http, key)
    url = f"{BASE}/{job['id']}"
    assert segment_rows(server, job["id"]) == job["segmentCount"] >= 1
    assert_problem(http.post(f"{url}/purge", headers=auth(key)), 409)  # not deleted yet

    response = http.delete(url, headers=auth(key))
    assert (response.status_code, response.content) == (204, b"")
    deleted = get_job(http, key, job["id"])
    assert deleted["isDeleted"] is True and deleted["isPurged"] is False
    assert iso(deleted["deletedAt"]) >= iso(job["completionDate"])
    assert abs(iso(deleted["purgeAt"]) - (iso(deleted["deletedAt"]) + timedelta(days=30))) <= timedelta(seconds=1)
    assert deleted["result"] == job["result"]  # kept until the retention ends
    assert {k: v for k, v in deleted.items() if k not in ("isDeleted", "deletedAt", "purgeAt")} == {
        k: v for k, v in job.items() if k not in ("isDeleted", "deletedAt", "purgeAt")}
    assert "already deleted" in assert_problem(http.delete(url, headers=auth(key)), 409)["detail"]
    assert listed(http, key)["total"] == 0
    assert ids(listed(http, key, isDeleted="true")) == [job["id"]]

    response = http.post(f"{url}/purge", headers=auth(key))
    assert (response.status_code, response.content) == (204, b"")
    purged = get_job(http, key, job["id"])
    assert (purged["isDeleted"], purged["isPurged"], purged["result"], purged["purgeAt"]) == (True, True, None, None)
    assert iso(purged["purgedAt"]) >= iso(purged["deletedAt"])
    assert purged["status"] == "COMPLETED" and purged["segmentCount"] == job["segmentCount"]  # kept for audit
    for fmt in ("json", "srt", "vtt", "txt"):
        assert_problem(http.get(f"{url}/result", headers=auth(key), params={"format": fmt}), 410)
    assert segment_rows(server, job["id"]) == 0
    assert job_row(server, job["id"])["text"] is None
    assert "already" in assert_problem(http.post(f"{url}/purge", headers=auth(key)), 409)["detail"]
    assert_problem(http.delete(url, headers=auth(key)), 409)
    assert ids(listed(http, key, isDeleted="true", isPurged="true")) == [job["id"]]


def test_delete_with_purge_removes_the_result_at_once(http, server):
    key = fresh_key(server)
    job = completed_job(http, key)
    assert http.delete(f"{BASE}/{job['id']}", headers=auth(key), params={"purge": "true"}).status_code == 204
    purged = get_job(http, key, job["id"])
    assert (purged["isDeleted"], purged["isPurged"], purged["result"], purged["purgeAt"]) == (True, True, None, None)
    assert iso(purged["purgedAt"]) >= iso(purged["deletedAt"])
    assert_problem(http.get(f"{BASE}/{job['id']}/result", headers=auth(key)), 410)
    assert segment_rows(server, job["id"]) == 0
    assert_problem(http.post(f"{BASE}/{job['id']}/purge", headers=auth(key)), 409)


def test_a_failed_or_cancelled_job_can_be_deleted_and_purged(idle_http, idle_key):
    job = submitted(idle_http, idle_key, wav(FOX.pcm))
    assert idle_http.post(f"{BASE}/{job['id']}/cancel", headers=auth(idle_key)).status_code == 204
    assert idle_http.delete(f"{BASE}/{job['id']}", headers=auth(idle_key), params={"purge": "true"}).status_code == 204
    gone = get_job(idle_http, idle_key, job["id"])
    assert (gone["status"], gone["isDeleted"], gone["isPurged"]) == ("CANCELLED", True, True)


async def test_the_sweeper_purges_a_deleted_job_once_its_retention_ends(idle_http, idle, idle_key):
    # The idle server runs no job, but a session's transcription is COMPLETED at once, with segments.
    session = await stream_session(idle, idle_key, [FOX.pcm])
    job = created(idle_http, idle_key, sessionId=session.id)
    assert job["status"] == "COMPLETED" and segment_rows(idle, job["id"]) == 1
    assert idle_http.delete(f"{BASE}/{job['id']}", headers=auth(idle_key)).status_code == 204
    deleted = get_job(idle_http, idle_key, job["id"])
    retention = timedelta(days=RETENTION_DAYS)
    assert abs(iso(deleted["purgeAt"]) - (iso(deleted["deletedAt"]) + retention)) <= timedelta(milliseconds=5)

    purged = await asyncio.to_thread(
        poll, lambda: (j := get_job(idle_http, idle_key, job["id"]))["isPurged"] and j, "the sweeper's purge")
    assert iso(purged["purgedAt"]) >= iso(deleted["purgeAt"])  # not before the retention ended
    assert (purged["result"], purged["purgeAt"], purged["isDeleted"]) == (None, None, True)
    assert_problem(idle_http.get(f"{BASE}/{job['id']}/result", headers=auth(idle_key)), 410)
    assert segment_rows(idle, job["id"]) == 0


# -- webhooks ------------------------------------------------------------------------------------------------


def test_a_pending_jobs_webhook_is_set_replaced_and_removed(idle_http, idle_key):
    job = submitted(idle_http, idle_key, wav(FOX.pcm))
    url = f"{BASE}/{job['id']}/webhook"
    hook = {"url": "https://hooks.example.com/lectern", "secret": "a-secret-never-shown",
            "headers": {"X-Trace": "abc", "Authorization": "Bearer t"}}
    response = idle_http.put(url, headers=auth(idle_key), json=hook)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == JOB_FIELDS and body["status"] == "PENDING"
    assert body["webhook"] == {"url": hook["url"], "headers": hook["headers"], "hasSecret": True}
    assert "a-secret-never-shown" not in response.text
    assert get_job(idle_http, idle_key, job["id"]) == body
    item = next(t for t in listed(idle_http, idle_key, status="PENDING", size=100)["transcriptions"]
                if t["id"] == job["id"])
    assert item["webhook"] == body["webhook"]

    replaced = idle_http.put(url, headers=auth(idle_key), json={"url": "https://other.example.com/h"}).json()
    assert replaced["webhook"] == {"url": "https://other.example.com/h", "headers": None, "hasSecret": False}

    response = idle_http.delete(url, headers=auth(idle_key))
    assert (response.status_code, response.content) == (204, b"")
    assert get_job(idle_http, idle_key, job["id"])["webhook"] is None


def test_an_ended_jobs_webhook_cannot_change(idle_http, idle_key, http, api_key, two_job):
    job = submitted(idle_http, idle_key, wav(FOX.pcm))
    assert idle_http.post(f"{BASE}/{job['id']}/cancel", headers=auth(idle_key)).status_code == 204
    for client, key, job_id in ((idle_http, idle_key, job["id"]), (http, api_key, two_job["id"])):
        url = f"{BASE}/{job_id}/webhook"
        assert_problem(client.put(url, headers=auth(key), json={"url": "https://hooks.example.com/x"}), 409)
        assert_problem(client.delete(url, headers=auth(key)), 409)
        assert get_job(client, key, job_id)["webhook"] is None


@pytest.mark.parametrize(
    "hook",
    [
        {"url": "http://hooks.example.com/x"},
        {"url": "ftp://hooks.example.com/x"},
        {"url": "hooks.example.com/x"},
        {"url": "https://10.0.0.5/x"},
        {"url": "https://192.168.1.10/x"},
        {"url": "https://127.0.0.2/x"},
        {"url": "https://[::1]/x"},
        {"url": "https://169.254.169.254/latest/meta-data"},
        {"url": "https://0x7f000001/x"},
        {"url": "https://user:pw@hooks.example.com/x"},
        {"url": "https://hooks.example.com/x", "headers": {"webhook-signature": "v1,forged"}},
        {"url": "https://hooks.example.com/x", "headers": {"X-Bad": "a\r\nInjected: 1"}},
        {"url": "https://hooks.example.com/x", "headers": {"bad name": "v"}},
        {"url": "https://hooks.example.com/x", "secret": "whsec_not base64!"},
        {"url": "https://hooks.example.com/x", "secret": ""},
        {"url": "https://hooks.example.com/x", "extra": True},
        {"secret": "s"},
    ],
    ids=lambda h: f"{h.get('url', '-')[:40]}|{sorted(set(h) - {'url'})}",
)
def test_a_webhook_that_may_not_be_sent_to_is_400(idle_http, idle_key, hook):
    job = submitted(idle_http, idle_key, wav(FOX.pcm[:16000]))
    assert_problem(idle_http.put(f"{BASE}/{job['id']}/webhook", headers=auth(idle_key), json=hook), 400)
    assert get_job(idle_http, idle_key, job["id"])["webhook"] is None


def test_http_and_loopback_only_for_the_allowed_hosts(http, api_key, idle_http, idle_key):
    # The shared server allows no insecure host; the idle one allows 127.0.0.1 (and only it).
    file = uploaded(http, api_key, wav(FOX.pcm[:16000]))
    body = assert_problem(create(http, api_key, fileId=file["id"], webhook={"url": "http://127.0.0.1:9/x"}), 400,
                          "webhook")
    assert "https" in body["detail"]
    job = submitted(idle_http, idle_key, wav(FOX.pcm[:16000]))
    ok = idle_http.put(f"{BASE}/{job['id']}/webhook", headers=auth(idle_key), json={"url": "http://127.0.0.1:9/x"})
    assert ok.status_code == 200, ok.text
    for refused in ("http://localhost:9/x", "http://127.0.0.2:9/x"):
        assert_problem(idle_http.put(f"{BASE}/{job['id']}/webhook", headers=auth(idle_key), json={"url": refused}),
                       400)


def test_a_completed_job_notifies_its_webhook_once_signed(hooks_http, hooks, hooks_key, receiver):
    file = uploaded(hooks_http, hooks_key, wav(TWO.pcm))
    hook = {"url": receiver.url(), "secret": HOOK_SECRET, "headers": {"X-Lectern-Test": "completed"}}
    job = created(hooks_http, hooks_key, fileId=file["id"], webhook=hook)
    assert job["webhook"] == {"url": receiver.url(), "headers": {"X-Lectern-Test": "completed"}, "hasSecret": True}
    done = wait_job(hooks_http, hooks_key, job["id"])
    assert done["status"] == "COMPLETED"

    row = poll(lambda: next((d for d in deliveries(hooks, job["id"]) if d["status"] != "PENDING"), None),
               "the delivery's outcome")
    assert (row["status"], row["attempts"], row["event_type"]) == ("DELIVERED", 1, "transcription.completed")
    assert len(deliveries(hooks, job["id"])) == 1
    mine = received_for(receiver, job["id"])
    assert len(mine) == 1, mine
    payload = verify(mine[0], HOOK_SECRET.encode())
    assert payload["type"] == "transcription.completed"
    data = payload["data"]
    assert (data["id"], data["status"], data["fileId"], data["sessionId"]) == (job["id"], "COMPLETED", file["id"], None)
    assert iso(data["completionDate"]) == iso(done["completionDate"])
    assert (data["errorCode"], data["errors"]) == (None, None)
    assert mine[0].headers["x-lectern-test"] == "completed"
    assert mine[0].headers["webhook-id"] == row["message_id"]
    assert mine[0].headers["user-agent"].startswith("Lectern-Webhooks/")


def test_a_failed_job_has_its_errors_and_notifies_its_webhook(hooks_http, hooks, receiver, damaged):
    key = fresh_key(hooks)
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    response = hooks_http.post(
        f"{BASE}/upload", headers=auth(key), files={"file": ("broken.m4a", damaged, "audio/mp4")},
        data={"webhook": json.dumps({"url": receiver.url(), "secret": secret})})
    assert response.status_code == 201, response.text  # it probes as audio: the damage is further in
    job = response.json()["transcription"]
    failed = wait_job(hooks_http, key, job["id"])
    assert failed["status"] == "FAILED", failed
    assert failed["errorCode"] == "AUDIO_DECODING_FAILED"
    assert len(failed["errors"]) == 1
    error = failed["errors"][0]
    assert set(error) == {"code", "message", "timestamp"}
    assert error["code"] == "AUDIO_DECODING_FAILED" and error["message"]
    assert iso(failed["startDate"]) <= iso(error["timestamp"]) <= iso(failed["completionDate"])
    assert failed["result"] is None
    assert_problem(hooks_http.get(f"{BASE}/{job['id']}/result", headers=auth(key)), 404)
    assert ids(listed(hooks_http, key, status="FAILED")) == [job["id"]]

    mine = poll(lambda: received_for(receiver, job["id"]), "the failed webhook")
    payload = verify(mine[0], secret)
    assert payload["type"] == "transcription.failed"
    assert (payload["data"]["id"], payload["data"]["status"]) == (job["id"], "FAILED")
    assert payload["data"]["errorCode"] == "AUDIO_DECODING_FAILED"
    assert [(e["code"], e["message"], iso(e["timestamp"])) for e in payload["data"]["errors"]] == [
        (e["code"], e["message"], iso(e["timestamp"])) for e in failed["errors"]]

    # Deleting and purging a failed job drops its errors, as its result would be.
    assert hooks_http.delete(f"{BASE}/{job['id']}", headers=auth(key), params={"purge": "true"}).status_code == 204
    purged = get_job(hooks_http, key, job["id"])
    assert (purged["status"], purged["errors"], purged["isPurged"]) == ("FAILED", None, True)


def test_a_cancelled_job_notifies_its_webhook(idle_http, idle, idle_key, receiver):
    job = submitted(idle_http, idle_key, wav(FOX.pcm), webhook={"url": receiver.url(), "secret": HOOK_SECRET,
                                                                  "headers": {"X-Why": "cancelled"}})
    assert idle_http.post(f"{BASE}/{job['id']}/cancel", headers=auth(idle_key)).status_code == 204
    mine = poll(lambda: received_for(receiver, job["id"]), "the cancelled webhook")
    payload = verify(mine[0], base64.b64encode(HOOK_SECRET.encode()).decode())  # the key's base64, as a string
    assert payload["type"] == "transcription.cancelled"
    assert (payload["data"]["id"], payload["data"]["status"], payload["data"]["fileId"]) == (
        job["id"], "CANCELLED", job["fileId"])
    assert mine[0].headers["x-why"] == "cancelled"
    poll(lambda: [d for d in deliveries(idle, job["id"]) if d["status"] == "DELIVERED"], "DELIVERED")
    assert len(received_for(receiver, job["id"])) == 1


def test_the_webhook_in_force_when_the_job_ends_is_the_one_notified(idle_http, idle, idle_key):
    first, second = Receiver().start(), Receiver().start()
    try:
        removed = submitted(idle_http, idle_key, wav(FOX.pcm), webhook={"url": first.url()})
        assert idle_http.delete(f"{BASE}/{removed['id']}/webhook", headers=auth(idle_key)).status_code == 204
        assert idle_http.post(f"{BASE}/{removed['id']}/cancel", headers=auth(idle_key)).status_code == 204
        assert deliveries(idle, removed["id"]) == []  # queued in the cancel's own transaction, if at all

        replaced = submitted(idle_http, idle_key, wav(FOX.pcm), webhook={"url": first.url()})
        put = idle_http.put(f"{BASE}/{replaced['id']}/webhook", headers=auth(idle_key), json={"url": second.url()})
        assert put.status_code == 200
        assert idle_http.post(f"{BASE}/{replaced['id']}/cancel", headers=auth(idle_key)).status_code == 204
        assert [d["url"] for d in deliveries(idle, replaced["id"])] == [second.url()]
        poll(lambda: received_for(second, replaced["id"]), "the replaced webhook")
        assert "webhook-signature" not in second.received()[0].headers  # no secret, no signature
        assert first.received() == []
    finally:
        first.stop(), second.stop()


def test_a_receiver_that_is_down_gets_the_event_once_it_is_up(hooks_http, hooks, hooks_key):
    down = Receiver(port=free_port())  # its URL exists, nothing listens yet
    try:
        job = submitted(hooks_http, hooks_key, wav(FOX.pcm), webhook={"url": down.url(), "secret": HOOK_SECRET})
        assert wait_job(hooks_http, hooks_key, job["id"])["status"] == "COMPLETED"
        failed_once = poll(lambda: next((d for d in deliveries(hooks, job["id"]) if d["attempts"] >= 1), None),
                           "a first, failed attempt")
        assert failed_once["status"] == "PENDING" and failed_once["last_error"], failed_once
        down.start()
        mine = poll(lambda: received_for(down, job["id"]), "the retried delivery")
        payload = verify(mine[0], HOOK_SECRET.encode())
        assert (payload["type"], payload["data"]["id"]) == ("transcription.completed", job["id"])
        row = poll(lambda: next((d for d in deliveries(hooks, job["id"]) if d["status"] != "PENDING"), None),
                   "the delivery's outcome")
        assert row["status"] == "DELIVERED" and row["attempts"] >= 2
        assert mine[0].headers["webhook-id"] == row["message_id"]  # the same message, retried
        assert len(received_for(down, job["id"])) == 1
    finally:
        down.stop()


async def test_a_session_transcription_notifies_its_webhook_at_once(hooks_http, hooks, hooks_key, receiver):
    session = await stream_session(hooks, hooks_key, [WEATHER.pcm])
    job = await asyncio.to_thread(created, hooks_http, hooks_key, sessionId=session.id,
                                  webhook={"url": receiver.url(), "secret": HOOK_SECRET})
    assert job["status"] == "COMPLETED"
    mine = await asyncio.to_thread(poll, lambda: received_for(receiver, job["id"]), "the completed webhook")
    payload = verify(mine[0], HOOK_SECRET.encode())
    assert payload["type"] == "transcription.completed"
    assert (payload["data"]["sessionId"], payload["data"]["fileId"]) == (session.id, None)


# -- a file that fails ---------------------------------------------------------------------------------------


def test_a_file_that_breaks_off_when_decoded_ends_failed_with_machine_readable_errors(http, api_key, damaged):
    file = uploaded(http, api_key, damaged, filename="broken.m4a", content_type="audio/mp4")
    job = created(http, api_key, fileId=file["id"])
    failed = wait_job(http, api_key, job["id"])
    assert failed["status"] == "FAILED"
    assert failed["errorCode"] == "AUDIO_DECODING_FAILED"
    assert [set(e) for e in failed["errors"]] == [{"code", "message", "timestamp"}]
    assert failed["errors"][0]["code"] == failed["errorCode"]
    assert "decod" in failed["errors"][0]["message"]
    iso(failed["errors"][0]["timestamp"])
    assert (failed["result"], failed["segmentCount"]) == (None, 0)
    assert_problem(http.post(f"{BASE}/{job['id']}/cancel", headers=auth(api_key)), 409)


# -- scopes and ownership ---------------------------------------------------------------------------------------


def operations(job_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", f"{BASE}/{job_id}", {}),
        ("GET", f"{BASE}/{job_id}/result", {}),
        ("PUT", f"{BASE}/{job_id}/webhook", {"json": {"url": "https://hooks.example.com/x"}}),
        ("DELETE", f"{BASE}/{job_id}/webhook", {}),
        ("POST", f"{BASE}/{job_id}/cancel", {}),
        ("DELETE", f"{BASE}/{job_id}", {}),
        ("POST", f"{BASE}/{job_id}/purge", {}),
    ]


READS, WRITES, DELETES = [0, 1], [2, 3, 4], [5, 6]


def test_each_operation_needs_its_scope(http, keys, two_job):
    ops = operations(two_job["id"])
    for number, (method, url, kwargs) in enumerate(ops):
        needed = READ if number in READS else WRITE if number in WRITES else DELETE
        for name in ("read", "write", "delete", "files"):
            if needed == {"read": READ, "write": WRITE, "delete": DELETE}.get(name):
                if number not in DELETES:  # the shared job is not deleted here: see the next test
                    response = http.request(method, url, headers=auth(keys[name]), **kwargs)
                    assert response.status_code in (200, 409), (name, method, url, response.text)
                continue
            response = http.request(method, url, headers=auth(keys[name]), **kwargs)
            assert needed in assert_problem(response, 403)["detail"], (name, method, url)
    assert get_job(http, keys["alice"], two_job["id"]) == two_job  # nothing changed it

    for name in ("write", "delete", "files"):
        assert_problem(http.get(BASE, headers=auth(keys[name])), 403)
    assert listed(http, keys["read"])["total"] >= 1
    file = uploaded(http, keys["alice"], wav(FOX.pcm[:16000]))
    for name in ("read", "delete", "files"):
        assert WRITE in assert_problem(create(http, keys[name], fileId=file["id"]), 403)["detail"]
    assert create(http, keys["write"], fileId=file["id"]).status_code == 201


def test_the_delete_scope_alone_deletes_and_purges(http, keys):
    job = completed_job(http, keys["alice"])
    assert http.delete(f"{BASE}/{job['id']}", headers=auth(keys["delete"])).status_code == 204
    assert http.post(f"{BASE}/{job['id']}/purge", headers=auth(keys["delete"])).status_code == 204
    assert get_job(http, keys["alice"], job["id"])["isPurged"] is True


def test_transcribing_a_file_needs_the_scope_to_read_it(http, server, keys):
    # As a session's transcription needs speech:sessions:read: the transcript is the file's content.
    file = uploaded(http, keys["alice"], wav(FOX.pcm[:16000]))
    jobs_only = server.create_key("acme", "alice", [READ, WRITE])
    body = assert_problem(create(http, jobs_only, fileId=file["id"]), 403)
    assert FILES_READ in body["detail"]
    assert_problem(http.get(BASE, headers=auth(jobs_only), params={"fileId": file["id"]}), 403)


def test_missing_or_unknown_credentials_are_401(http, two_job):
    for method, url, kwargs in operations(two_job["id"]) + [("GET", BASE, {}), ("POST", BASE, {"json": {}})]:
        assert_problem(http.request(method, url, **kwargs), 401)
        assert_problem(http.request(method, url, headers=auth("kk-" + "x" * 43), **kwargs), 401)


def test_another_users_job_is_403_and_another_tenants_is_404(http, keys, two_job):
    for method, url, kwargs in operations(two_job["id"]):
        assert_problem(http.request(method, url, headers=auth(keys["bob"]), **kwargs), 403)
        assert_problem(http.request(method, url, headers=auth(keys["carol"]), **kwargs), 404)
    assert two_job["id"] not in ids(listed(http, keys["bob"])) + ids(listed(http, keys["carol"]))
    assert get_job(http, keys["alice"], two_job["id"]) == two_job


@pytest.mark.parametrize("job_id", ["not-a-uuid", "123", str(uuid.uuid4()), urllib.parse.quote("a b")])
def test_an_unknown_or_malformed_id_is_404(http, api_key, job_id):
    for method, url, kwargs in operations(job_id):
        assert_problem(http.request(method, url, headers=auth(api_key), **kwargs), 404)
