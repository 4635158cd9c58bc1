"""An engine worker process killed under a running batch job: the pool starts a replacement and the
job resumes there after its last stored segment, instead of failing. Its transcript has every
segment once: no duplicate from re-recognized audio, no gap where the worker died."""

from __future__ import annotations

import os
import signal
from typing import Any

from tests.conftest import LecternServer
from tests.jobs.test_job_workers import _long_speech, _normalized, _result, _submit, _wait_job
from tests.conftest import word_error_rate


def test_a_batch_job_resumes_on_the_replacement_engine_worker(make_server: Any, tmp_path: Any) -> None:
    srv: LecternServer = make_server(engine_workers=1, job_workers=1, job_heartbeat_seconds=0.5)
    key = srv.create_key("acme", "alice")
    expected = _long_speech(tmp_path / "long.wav", rounds=3)  # ~100 s of speech
    job_id = _submit(srv, key, tmp_path / "long.wav")

    row = _wait_job(srv, job_id, lambda r: r["segment_count"] >= 3)
    assert row["status"] == "IN_PROGRESS", "the job must still be running when its worker is killed"
    [engine_worker] = srv.worker_pids()
    os.kill(engine_worker, signal.SIGKILL)

    # A generous bound: the replacement loads its models first, on a machine that may be busy.
    row = _wait_job(srv, job_id, lambda r: r["status"] not in ("PENDING", "IN_PROGRESS"), timeout=600)
    assert row["status"] == "COMPLETED", row
    assert row["attempts"] == 1, "resumed within the same claim, not failed and retried"
    assert srv.worker_pids() and srv.worker_pids() != [engine_worker]  # the replacement did the rest
    job = _result(srv, key, job_id)
    segments = job["result"]["segments"]
    assert [s["segmentIndex"] for s in segments] == list(range(len(segments)))
    for before, after in zip(segments, segments[1:]):  # once each, in order: no overlap, no repeat
        assert before["endSeconds"] <= after["startSeconds"] + 1e-6, (before, after)
    assert segments[-1]["endSeconds"] <= job["durationMilliseconds"] / 1000 + 0.05
    # No gap: every utterance of the file is in the transcript, once.
    hypothesis = _normalized(job["result"]["text"])
    assert len(hypothesis.split()) <= len(_normalized(expected).split()) * 1.05
    assert word_error_rate(_normalized(expected), hypothesis) < 0.05
    log = (srv.data_dir / "server.log").read_text()
    assert "resuming" in log and "Traceback" not in log, log[-3000:]
