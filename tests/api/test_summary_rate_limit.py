"""Creating summaries is rate limited per user (seed 001: 429 Too Many Requests), at its edge."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.conftest import SPEECH, LecternServer

API = "/api/v1/speech-services"
ACTION_ITEMS = "00000000-0000-4000-8000-00000000a003"


def _completed_transcription(server: LecternServer, key: str) -> str:
    with (SPEECH / "fox.wav").open("rb") as f:
        created = httpx.post(f"{server.base_url}{API}/transcriptions/upload", headers={"X-API-Key": key},
                             files={"file": f}, timeout=60)
    assert created.status_code == 201, created.text
    job_id = created.json()["transcription"]["id"]
    deadline = time.monotonic() + 120
    while (status := httpx.get(f"{server.base_url}{API}/transcriptions/{job_id}", headers={"X-API-Key": key},
                               timeout=30).json()["status"]) != "COMPLETED":
        assert status in ("PENDING", "IN_PROGRESS") and time.monotonic() < deadline, status
        time.sleep(0.1)
    return job_id


def _create(server: LecternServer, key: str, transcription_id: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}{API}/summaries", headers={"X-API-Key": key}, timeout=30,
                      json={"transcriptionId": transcription_id, "promptTemplateId": ACTION_ITEMS})


def test_a_user_past_the_limit_gets_429_with_retry_after_and_others_do_not(make_server: Any) -> None:
    server = make_server(summary_create_per_minute=3)
    alice, bob = server.create_key("acme", "alice"), server.create_key("acme", "bob")
    alices, bobs = _completed_transcription(server, alice), _completed_transcription(server, bob)

    assert [_create(server, alice, alices).status_code for _ in range(3)] == [201, 201, 201]
    refused = _create(server, alice, alices)
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["title"] == "Too Many Requests" and "3 a minute" in refused.json()["detail"]
    # A sliding one-minute window: the burst's first request leaves it within the minute.
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-limit"] == "3" and refused.headers["ratelimit-remaining"] == "0"
    listed = httpx.get(f"{server.base_url}{API}/summaries", headers={"X-API-Key": alice}, timeout=30).json()
    assert listed["total"] == 3, "a refused request creates nothing"

    assert _create(server, bob, bobs).status_code == 201, "another user's bucket is his own"


def test_zero_disables_the_limit(make_server: Any) -> None:
    server = make_server(summary_create_per_minute=0)
    key = server.create_key("acme", "carol")
    transcription = _completed_transcription(server, key)
    assert {_create(server, key, transcription).status_code for _ in range(40)} == {201}
