"""Job workers: transcription jobs claimed from the database by separate `lectern worker` processes.

The server here runs no jobs itself (``job_workers=0``): it only takes uploads and API calls, and
the workers share its database and data directory, as worker machines share PostgreSQL and the
blob store. A worker is killed mid-job (SIGKILL, with its engine processes: a machine lost) and
another takes the job over once the lease lapses, resuming after the last stored segment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import text

from tests.conftest import LecternServer, load_speech, word_error_rate

API = "/api/v1/speech-services"
LEASE_SECONDS = 3
UTTERANCES = ["fox", "coffee", "train", "kitchen", "library", "meeting", "directions", "numbers"]


def _normalized(text_: str) -> str:
    return " ".join(w.strip(".,?!").lower() for w in text_.split())


def _long_speech(path: Path, rounds: int) -> str:
    """The fixtures one after another with pauses, ``rounds`` times: a long file and its text."""
    pause = b"\x00\x00" * 16000  # 1 s
    pcm, words = [], []
    for _ in range(rounds):
        for name in UTTERANCES:
            speech = load_speech(name)
            pcm += [speech.pcm, pause]
            words.append(speech.text)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"".join(pcm))
    return " ".join(words)


class Worker:
    """One `lectern worker` process sharing ``server``'s database and data directory."""

    def __init__(self, server: LecternServer, **settings: Any) -> None:
        env = {**server.env, **{f"LECTERN_{k.upper()}": str(v) for k, v in settings.items()}}
        env.setdefault("LECTERN_DATABASE_URL", server.database_url)
        self.log = open(server.data_dir / f"worker-{uuid.uuid4().hex[:6]}.log", "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "lectern", "worker"], env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """As a machine dies: the worker and its engine processes at once, nothing cleaned up."""
        family = [self.process.pid] + [c.pid for c in psutil.Process(self.process.pid).children(recursive=True)]
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@pytest.fixture
def api_server(make_server: Any) -> LecternServer:
    return make_server(job_workers=0, job_lease_seconds=LEASE_SECONDS, job_heartbeat_seconds=0.5,
                       job_poll_seconds=0.2, sweep_interval_seconds=0.5)


@pytest.fixture
def workers(api_server: LecternServer) -> Iterator[Any]:
    started: list[Worker] = []

    def start(**settings: Any) -> Worker:
        worker = Worker(api_server, **{"engine_workers": 1, "job_workers": 1, **settings})
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def _submit(server: LecternServer, key: str, path: Path) -> str:
    with path.open("rb") as f:
        upload = httpx.post(f"{server.base_url}{API}/files", headers={"X-API-Key": key}, files={"file": f}, timeout=60)
    assert upload.status_code == 201, upload.text
    job = httpx.post(f"{server.base_url}{API}/transcriptions", headers={"X-API-Key": key},
                     json={"fileId": upload.json()["id"]}, timeout=30)
    assert job.status_code == 201, job.text
    return job.json()["id"]


def _job_row(server: LecternServer, job_id: str) -> dict[str, Any]:
    value = uuid.UUID(job_id).hex if server.backend == "sqlite" else job_id
    with server.db() as s:
        return dict(s.execute(text("SELECT * FROM transcriptions WHERE id = :id"), {"id": value}).mappings().one())


def _wait_job(server: LecternServer, job_id: str, until: Any, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = _job_row(server, job_id)
        if until(row):
            return row
        assert time.monotonic() < deadline, f"job never reached the expected state: {row}"
        time.sleep(0.05)


def _result(server: LecternServer, key: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.base_url}{API}/transcriptions/{job_id}", headers={"X-API-Key": key}, timeout=30)
    assert response.status_code == 200
    return response.json()


def test_a_killed_workers_job_is_taken_over_and_resumed(api_server, workers, tmp_path):
    key = api_server.create_key("acme", "alice")
    expected = _long_speech(tmp_path / "long.wav", rounds=6)  # ~3 minutes of speech
    job_id = _submit(api_server, key, tmp_path / "long.wav")

    first = workers()
    row = _wait_job(api_server, job_id, lambda r: r["segment_count"] >= 3)
    assert row["status"] == "IN_PROGRESS" and row["attempts"] == 1, "the job must still be running when killed"
    first.kill()
    stored_before = row["segment_count"]
    row = _job_row(api_server, job_id)
    assert row["status"] == "IN_PROGRESS"  # nobody has noticed yet: the lease still runs

    second = workers()
    row = _wait_job(api_server, job_id, lambda r: r["status"] not in ("PENDING", "IN_PROGRESS"))
    assert row["status"] == "COMPLETED", row
    assert row["attempts"] == 2
    job = _result(api_server, key, job_id)
    segments = job["result"]["segments"]
    assert [s["segmentIndex"] for s in segments] == list(range(len(segments)))
    assert len(segments) > stored_before
    starts = [s["startSeconds"] for s in segments]
    assert starts == sorted(starts), "the resumed part continues the timeline, it does not restart it"
    assert segments[-1]["endSeconds"] <= job["durationMilliseconds"] / 1000 + 0.05
    assert word_error_rate(_normalized(expected), _normalized(job["result"]["text"])) < 0.05
    assert second.process.poll() is None


def test_workers_claim_each_job_exactly_once(api_server, workers, tmp_path):
    key = api_server.create_key("acme", "bob")
    speech = load_speech("two_sentences")
    path = tmp_path / "two.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(speech.pcm)
    ids = [_submit(api_server, key, path) for _ in range(8)]
    workers(), workers()
    rows = [_wait_job(api_server, i, lambda r: r["status"] == "COMPLETED") for i in ids]
    assert [r["attempts"] for r in rows] == [1] * len(ids)
    for job_id in ids:
        assert _normalized(_result(api_server, key, job_id)["result"]["text"]) == _normalized(speech.text)


def test_a_cancelled_job_stops_on_the_worker_running_it(api_server, workers, tmp_path):
    key = api_server.create_key("acme", "carl")
    _long_speech(tmp_path / "long.wav", rounds=6)
    job_id = _submit(api_server, key, tmp_path / "long.wav")
    worker = workers()
    _wait_job(api_server, job_id, lambda r: r["segment_count"] >= 1)
    cancel = httpx.post(f"{api_server.base_url}{API}/transcriptions/{job_id}/cancel", headers={"X-API-Key": key})
    assert cancel.status_code == 204
    cancelled = _job_row(api_server, job_id)
    assert cancelled["status"] == "CANCELLED"
    # The worker notices within a heartbeat and writes nothing more: the stored segments stop growing
    # while the worker lives on and takes the next job.
    follow_up = _submit(api_server, key, Path(__file__).parents[1] / "fixtures" / "speech" / "fox.wav")
    _wait_job(api_server, follow_up, lambda r: r["status"] == "COMPLETED")
    row = _job_row(api_server, job_id)
    assert row["status"] == "CANCELLED" and row["segment_count"] == cancelled["segment_count"]
    assert row["processed_seconds"] < row["duration_seconds"] / 2
    assert worker.process.poll() is None
    again = httpx.post(f"{api_server.base_url}{API}/transcriptions/{job_id}/cancel", headers={"X-API-Key": key})
    assert again.status_code == 409


def _speech_file(tmp_path: Path, name: str = "two_sentences") -> Path:
    path = tmp_path / f"{name}.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(load_speech(name).pcm)
    return path


def test_a_tenant_with_a_long_queue_does_not_delay_another_tenants_job(api_server, workers, tmp_path):
    """Claims go round robin between tenants: B's one job, queued after A's five, runs second."""
    path = _speech_file(tmp_path)
    busy, quiet = api_server.create_key("busyco", "ann"), api_server.create_key("quietco", "ben")
    busy_jobs = [_submit(api_server, busy, path) for _ in range(5)]
    quiet_job = _submit(api_server, quiet, path)
    # One job at a time, all six already waiting; a long lease, so that no job of a stalled (loaded)
    # machine is taken over and runs out of turn.
    workers(job_lease_seconds=60)
    rows = {i: _wait_job(api_server, i, lambda r: r["status"] == "COMPLETED") for i in [*busy_jobs, quiet_job]}
    started = sorted(rows, key=lambda i: rows[i]["started_at"])
    assert started[0] == busy_jobs[0], "the oldest job of the two tenants, neither running anything, goes first"
    assert started[1] == quiet_job, f"B's job waited behind A's queue: start order {started}"
    assert started[2:] == busy_jobs[1:], "A's own jobs keep their order"


def test_a_tenant_never_runs_more_jobs_than_its_cap(api_server, workers, tmp_path):
    path = _speech_file(tmp_path)
    capped, other = api_server.create_key("cappedco", "cat"), api_server.create_key("otherco", "dan")
    subprocess.run([sys.executable, "-m", "lectern", "admin", "tenants", "update", "cappedco",
                    "--max-running-jobs", "1"], env=api_server.env, check=True, capture_output=True)
    capped_jobs = [_submit(api_server, capped, path) for _ in range(3)]
    other_job = _submit(api_server, other, path)
    workers(job_workers=2, job_lease_seconds=60)  # a lapsed lease would rightly not count as running
    rows = [_wait_job(api_server, i, lambda r: r["status"] == "COMPLETED") for i in capped_jobs]
    spans = sorted((r["started_at"], r["completed_at"]) for r in rows)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, f"two of the capped tenant's jobs ran at once: {spans}"
    other_row = _wait_job(api_server, other_job, lambda r: r["status"] == "COMPLETED")
    assert other_row["started_at"] < spans[0][1], "the second slot went to the other tenant at once"
