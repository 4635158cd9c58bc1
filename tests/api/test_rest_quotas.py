"""Quotas on the REST side (issue G): batch transcription minutes, summaries and summary tokens,
storage bytes, and zero retention, each refused in its API's own error shape."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
import uuid
import wave
from typing import Any

import httpx

from tests.api.test_files_api import BASE as FILES
from tests.api.test_files_api import Stored, stored
from tests.api.test_streams_api import assert_problem, auth
from tests.api.test_summaries_api import SUMMARY_T, transcribed
from tests.api.test_uploads import FILE_HEAD, MULTIPART
from tests.conftest import LecternServer, load_speech

TRANSCRIPTIONS = "/api/v1/speech-services/transcriptions"
SUMMARIES = "/api/v1/speech-services/summaries"
SCRIBE = "/v1/speech-to-text"
VOICES = [load_speech(name) for name in ("fox", "coffee", "directions", "kitchen", "library")]


def speech_wav(seconds: float) -> bytes:
    """Real speech, the fixtures one after another, ``seconds`` long."""
    pcm = b""
    while len(pcm) < seconds * 32000:
        pcm += b"".join(v.pcm for v in VOICES)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(pcm[: int(seconds * 16000) * 2])
    return out.getvalue()


def set_tenant(server: LecternServer, tenant: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "lectern", "admin", "tenants", "update", tenant, *args],
                   env=server.env, check=True, capture_output=True, text=True)


def tenant_key(server: LecternServer, *settings: str) -> tuple[str, str]:
    tenant = f"quota-{uuid.uuid4().hex[:8]}"
    key = server.create_key(tenant, "alice")
    if settings:
        set_tenant(server, tenant, *settings)
    return tenant, key


def upload_file(server: LecternServer, key: str, content: bytes) -> dict[str, Any]:
    response = httpx.post(f"{server.base_url}{FILES}", headers=auth(key),
                          files={"file": ("speech.wav", content, "audio/wav")}, timeout=60)
    assert response.status_code == 201, response.text
    return response.json()


def upload_and_transcribe(server: LecternServer, key: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{server.base_url}{TRANSCRIPTIONS}/upload", headers=auth(key),
                      files={"file": ("speech.wav", content, "audio/wav")}, timeout=60)


def scribe(server: LecternServer, key: str, content: bytes, **params: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}{SCRIBE}", headers={"xi-api-key": key}, params=params,
                      data={"model_id": "scribe_v1"}, files={"file": ("speech.wav", content, "audio/wav")},
                      timeout=120)


def scribe_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """ElevenLabs' REST error shape (api/scribe_errors.py)."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail["code"] == code and detail["status"] == code, detail
    assert detail["message"] and detail["request_id"], detail
    return detail


def quotas(server: LecternServer, key: str) -> dict[str, Any]:
    response = httpx.get(f"{server.base_url}/api/v1/quotas", headers=auth(key), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["speech-service"]


def wait_job(server: LecternServer, key: str, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{server.base_url}{TRANSCRIPTIONS}/{job_id}", headers=auth(key), timeout=30).json()
        if job["status"] not in ("PENDING", "IN_PROGRESS"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def same_files(server: LecternServer, before: Stored) -> bool:
    return stored(server) == Stored(before.rows, before.blobs, 0)


# -- batch transcription minutes -----------------------------------------------------------------------


def test_every_batch_route_refuses_a_job_once_the_months_minutes_are_spent(server: LecternServer) -> None:
    _, key = tenant_key(server, "--quota-transcription-minutes", "0")
    file = upload_file(server, key, speech_wav(2))  # storing is not transcribing
    before = stored(server)

    body = assert_problem(httpx.post(f"{server.base_url}{TRANSCRIPTIONS}", headers=auth(key),
                                     json={"fileId": file["id"]}, timeout=30), 403)
    assert body["detail"] == "monthly transcription quota exhausted: 0 of 0 minutes used", body
    body = assert_problem(upload_and_transcribe(server, key, speech_wav(2)), 403)
    assert "monthly transcription quota exhausted" in body["detail"], body
    detail = scribe_error(scribe(server, key, speech_wav(2)), 403, "quota_exceeded")
    assert "monthly transcription quota exhausted: 0 of 0 minutes used" in detail["message"], detail

    assert same_files(server, before), "a refused job keeps no file"
    jobs = httpx.get(f"{server.base_url}{TRANSCRIPTIONS}", headers=auth(key), timeout=30).json()
    assert jobs["total"] == 0, jobs


def test_a_file_longer_than_the_minutes_left_is_refused_at_once(server: LecternServer) -> None:
    _, key = tenant_key(server, "--quota-transcription-minutes", "1")
    long = speech_wav(70)
    file = upload_file(server, key, long)
    before = stored(server)

    body = assert_problem(httpx.post(f"{server.base_url}{TRANSCRIPTIONS}", headers=auth(key),
                                     json={"fileId": file["id"]}, timeout=30), 403)
    assert body["detail"] == ("the audio's 1.2 minutes pass the 1.0 minutes left of the monthly transcription "
                              "quota (0 of 1 minutes used)"), body
    body = assert_problem(upload_and_transcribe(server, key, long), 403, "file")
    assert "pass the 1.0 minutes left" in body["detail"], body
    assert "pass the 1.0 minutes left" in scribe_error(scribe(server, key, long), 403, "quota_exceeded")["message"]

    assert same_files(server, before), "the refused uploads are not kept"
    assert quotas(server, key)["transcription"]["used"] == 0
    accepted = upload_and_transcribe(server, key, speech_wav(3))  # what fits is accepted
    assert accepted.status_code == 201, accepted.text


def test_a_job_claimed_after_other_jobs_spent_the_minutes_fails_with_quota_exceeded(make_server: Any) -> None:
    """Two 35 s jobs are accepted against 1 minute (each fits when it is made); they are run one
    after the other by a second node, and the second to be claimed finds 25 s left."""
    api_node = make_server(job_workers=0)  # makes jobs, runs none
    _, key = tenant_key(api_node, "--quota-transcription-minutes", "1")
    ids = []
    for _ in range(2):
        created = upload_and_transcribe(api_node, key, speech_wav(35))
        assert created.status_code == 201, created.text
        ids.append(created.json()["transcription"]["id"])

    worker_node = LecternServer(api_node.data_dir, api_node.backend, {"job_workers": 1},
                                database_url=api_node.env.get("LECTERN_DATABASE_URL", ""))
    try:
        ended = sorted((wait_job(worker_node, key, i) for i in ids), key=lambda job: job["status"])
    finally:
        worker_node.stop()
    completed, failed = ended
    assert completed["status"] == "COMPLETED", completed
    assert failed["status"] == "FAILED" and failed["errorCode"] == "QUOTA_EXCEEDED", failed
    assert failed["errors"][0]["code"] == "QUOTA_EXCEEDED", failed
    assert "pass the 0.4 minutes left of the monthly transcription quota" in failed["errors"][0]["message"], failed


# -- summaries --------------------------------------------------------------------------------------------


def test_a_summary_is_refused_once_the_months_summaries_or_tokens_are_spent(server: LecternServer) -> None:
    tenant, key = tenant_key(server, "--quota-summaries", "0")
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        transcription = transcribed(http, key, VOICES[0].pcm)

        def create() -> httpx.Response:
            return http.post(SUMMARIES, headers=auth(key),
                             json={"transcriptionId": transcription["id"], "promptTemplateId": SUMMARY_T})

        body = assert_problem(create(), 403)
        assert body["detail"] == "monthly summary quota exhausted: 0 of 0 summaries used", body
        set_tenant(server, tenant, "--quota-summaries", "none", "--quota-summary-tokens", "0")
        body = assert_problem(create(), 403)
        assert body["detail"] == "monthly summary token quota exhausted: 0 of 0 tokens used", body
        set_tenant(server, tenant, "--quota-summary-tokens", "none")
        assert create().status_code == 201
    assert quotas(server, key)["summaries"]["used"] == 1, "refused requests are not counted"


# -- storage -------------------------------------------------------------------------------------------------


def test_an_upload_past_the_storage_quota_is_refused_as_it_streams_and_nothing_is_kept(
        server: LecternServer) -> None:
    """The client sends the head of a 3 MB upload and then waits: the answer comes as soon as the
    bytes pass the quota (were the server to read on, the exchange would time out)."""
    _, key = tenant_key(server, "--quota-storage-bytes", "150000")
    kept = upload_file(server, key, speech_wav(2))  # 64,044 bytes: 85,956 left
    before = stored(server)

    sent = FILE_HEAD + b"\x00" * 100_000
    head = (f"POST {FILES} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nContent-Type: {MULTIPART}\r\n"
            f"Content-Length: {len(sent) + 3_000_000}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + sent)
        received = b""
        while b"}" not in received:
            data = sock.recv(65536)
            assert data, received
            received += data
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.split(b" ")[1] == b"413", received
    assert b"storage quota exceeded: the upload is larger than the 85956 bytes left (64044 of 150000 bytes " \
           b"stored)" in rest, received

    for response in (httpx.post(f"{server.base_url}{FILES}", headers=auth(key), timeout=60,
                                files={"file": ("speech.wav", speech_wav(3), "audio/wav")}),
                     upload_and_transcribe(server, key, speech_wav(3))):
        assert "storage quota exceeded" in assert_problem(response, 413, "file")["detail"]
    scribe_error(scribe(server, key, speech_wav(3)), 413, "quota_exceeded")
    assert same_files(server, before), "nothing of the refused uploads is kept"
    assert quotas(server, key)["storage"]["used"] == kept["size"]


# -- zero retention -----------------------------------------------------------------------------------------


def test_zero_retention_is_refused_to_a_tenant_not_allowed_it(server: LecternServer) -> None:
    _, key = tenant_key(server, "--zero-retention-allowed", "no")
    before = stored(server)
    detail = scribe_error(scribe(server, key, speech_wav(2), enable_logging="false"), 403,
                          "zero_retention_not_allowed")
    assert detail["param"] == "enable_logging" and "zero retention" in detail["message"], detail
    assert same_files(server, before)
    assert scribe(server, key, speech_wav(2)).status_code == 200, "with logging, the request is served"
