"""Batch transcription benchmark, for either engine (``--model``): the real-time factor of one
file alone and of several at once through a real server, the RSS of an engine worker with the model
loaded, the engine's own RTF beside it, and the server's peak memory on a long file.

* Audio: long speech files made of the committed Festival fixtures (``realtime.FIXTURES``, 16 kHz
  mono), each file a seeded shuffle of them cycled until it is long enough, every utterance after
  a pause of 0.4-1.2 s of low noise (Gaussian, ~-60 dBFS). Its reference text is the fixtures'
  texts in that order. Files are encoded as users upload them, compressed (``--format``, default
  MP3 16 kHz mono 48 kb/s; the long file ``--long-format``, default Ogg Opus 24 kb/s), into a
  temporary directory (deleted at the end; never committed). ``--files`` files (default: one per
  engine worker) of ``--file-minutes`` (default 10).
* Servers: ``realtime.Server`` (``lectern serve``, free port, throwaway data dir, API key) with
  ``LECTERN_DEFAULT_MODEL=--model`` (default whisper-tiny.en, ``--smoke`` too),
  ``LECTERN_ENGINE_WORKERS=--workers`` (default os.cpu_count(); job slots default to one per
  worker), ``LECTERN_STREAMS_PER_WORKER`` and ``LECTERN_WHISPER_STREAMS_PER_WORKER`` both
  ``--streams-per-worker``. Its ``/healthz`` must name the model as its engine, and every job's
  ``resolvedModelName`` must be the model. Every worker loads every configured model at start
  (Whisper tiny.en and pocketsphinx), whichever is the default.
* Engine RTF: in this process, on one core, before any server runs: the first ``--engine-files``
  files, decoded as the server decodes them (``speech.decode.decode_pcm``). raw: a recognizer of
  the chosen engine (as a worker builds it; Whisper int8, one thread), each utterance (its pause
  and its fixture) one start/feed/finish, fed in 1 s blocks, no VAD: every sample decoded.
  pipeline: what an engine worker runs for a batch job, ``Segmenter`` over ``StreamPipeline`` (VAD
  gating, segments at pauses, ``BATCH_RULES``), fed in 1 s blocks as ``FileTranscription`` sends
  them, no partials. RTF = CPU s (process_time) per audio s; wall RTF beside it. decode: CPU per
  audio s of decoding the compressed file, which the server process does for every job.
* Real-time factor through the server (one server for both runs): the files are uploaded (``POST
  /api/v1/speech-services/files``, not timed); the server settles; its RSS is sampled for
  ``--idle-seconds`` (idle, models loaded). alone: one transcription of the first file (``POST
  /api/v1/speech-services/transcriptions`` with ``fileId``), polled (``GET .../{id}``, every
  0.5 s) until it ends. together: after the server settles, a transcription of each of the
  ``--files`` files created at once (>= workers: every worker busy), polled likewise. wall: first
  create sent -> last end seen (the server's own stamps, first creationDate -> last
  completionDate, beside it). RTF = audio s / wall s (together: all files' audio over the common
  wall); target >= 8x each. Beside it, what the engine alone predicts with every worker busy:
  0.85 x cores / raw engine CPU RTF (cores: min(workers, os.cpu_count()); one core for alone).
  WER of each job's text against its file's reference (lowercase, punctuation dropped, digits read
  one by one): speed must not come from skipping audio. Where the time goes, per server process
  during the run, in cores (s per wall s): running (CPU), waiting for a CPU (runnable while the
  CPUs were busy: Linux schedstat) and, for an engine worker, idle (nothing to do: starved of
  audio by the server process, which decodes, pickles and stores segments); "other": cores other
  processes kept busy meanwhile (the box is shared: if not ~0, the numbers are not the server's
  alone).
* Worker RSS: the RSS of the server process and of every child is sampled every 0.1 s from the
  server's start to its stop (psutil). Per process: idle (median of the idle samples: the model
  loaded, no job), and the peak during alone and during together; the worker that ran the alone
  job is the one whose CPU grew most.
* Memory (long file): a fresh server, one ``--long-minutes`` file (default 60; a few minutes are
  enough for a quick Whisper run) transcribed alone, RSS sampled the same way: idle (after the
  upload, before the job: the baseline, median of its samples), during the upload, during the job,
  and the peak of each and of their sum at one instant. Quarters: the peak in each quarter of the
  job's wall time; flat quarters are bounded memory. For scale: the file as 16 kHz s16le PCM is
  115 MB per hour.

Usage: .venv/bin/python bench/batch.py [--model whisper-tiny.en|pocketsphinx-en-us] [--files 2]
           [--file-minutes 10] [--long-minutes 60] [--engine-files 1] [--workers N] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is no package: import its siblings
from protocols import table
from realtime import FIXTURES, MODELS, ROOT, SPEECH, Server, busy_cpu_seconds, engine_for, fmt, serving, wer

RATE = 16000
BLOCK_SAMPLES = RATE  # FileTranscription sends 1 s blocks; the engine-alone runs feed the same
PAUSE_SECONDS = (0.4, 1.2)
NOISE_RMS = 30.0  # int16 units: ~-60 dBFS
TARGET_FRACTION = 0.85
TARGET_RTF = 8.0  # issue F: a file through the server at least 8x real time
FILES_API = "/api/v1/speech-services/files"
JOBS_API = "/api/v1/speech-services/transcriptions"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
POLL_SECONDS = 0.5
SAMPLE_SECONDS = 0.1
FORMATS = {  # name: (container, codec, bit rate, suffix, content type)
    "mp3": ("mp3", "libmp3lame", 48000, "mp3", "audio/mpeg"),
    "opus": ("ogg", "libopus", 24000, "ogg", "audio/ogg"),
    "wav": ("wav", "pcm_s16le", None, "wav", "audio/wav"),
}


# -- audio ---------------------------------------------------------------------------------------


@dataclass
class Fixture:
    name: str
    text: str
    pcm: np.ndarray  # int16


@dataclass
class LongAudio:
    name: str
    path: Path
    content_type: str
    samples: int
    spans: list[tuple[int, int]]  # one utterance each: its pause, then its fixture
    text: str

    @property
    def seconds(self) -> float:
        return self.samples / RATE


def load_fixtures() -> list[Fixture]:
    out = []
    for name in FIXTURES:
        with wave.open(str(SPEECH / f"{name}.wav")) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2), name
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        out.append(Fixture(name, (SPEECH / f"{name}.txt").read_text().strip(), pcm))
    return out


def build(name: str, seconds: float, fixtures: list[Fixture], rng: random.Random, directory: Path,
          fmt_name: str) -> LongAudio:
    """Fixtures in a seeded order (each shuffled round says every one once), pauses of low noise
    between them, until ``seconds`` of audio; written in ``fmt_name``."""
    noise = np.random.default_rng(rng.randrange(2**32))
    parts: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []
    texts: list[str] = []
    total = 0
    target = int(seconds * RATE)
    while total < target:
        order = fixtures[:]
        rng.shuffle(order)
        for fixture in order:
            pause = noise.normal(0.0, NOISE_RMS, int(rng.uniform(*PAUSE_SECONDS) * RATE))
            piece = np.concatenate([np.clip(pause, -32768, 32767).astype(np.int16), fixture.pcm])
            parts.append(piece)
            spans.append((total, total + len(piece)))
            texts.append(fixture.text)
            total += len(piece)
            if total >= target:
                break
    container, codec, bit_rate, suffix, content_type = FORMATS[fmt_name]
    path = directory / f"{name}.{suffix}"
    encode(np.concatenate(parts), path, container, codec, bit_rate)
    return LongAudio(name, path, content_type, total, spans, " ".join(texts))


def encode(pcm: np.ndarray, path: Path, container: str, codec: str, bit_rate: int | None) -> None:
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=RATE, layout="mono")
        if bit_rate:
            stream.bit_rate = bit_rate
        for start in range(0, len(pcm), RATE):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[start : start + RATE]).reshape(1, -1),
                                               format="s16", layout="mono")
            frame.sample_rate = RATE
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


# -- the engine alone ----------------------------------------------------------------------------


def engine_alone(model: str, files: list[LongAudio]) -> dict:
    """raw engine and the worker's batch pipeline over the same decoded audio, one process, one
    core; and what decoding the compressed files costs."""
    from lectern.speech.audio import AudioFormat
    from lectern.speech.decode import decode_pcm
    from lectern.speech.segmenter import BATCH_RULES, Segmenter
    from lectern.speech.vad import load_vad_model

    engine, vad_model = engine_for(model), load_vad_model()
    audio = sum(f.seconds for f in files)
    decoded: list[bytes] = []
    cpu0 = time.process_time()
    for f in files:
        decoded.append(b"".join(decode_pcm(f.path)))
    decode_cpu = time.process_time() - cpu0

    def blocks(pcm: bytes) -> list[bytes]:
        return [pcm[i : i + 2 * BLOCK_SAMPLES] for i in range(0, len(pcm), 2 * BLOCK_SAMPLES)]

    def raw(f: LongAudio, pcm: bytes) -> Callable[[], str]:
        rec = engine.recognizer()  # loaded (a fresh decoder) before timing

        def run() -> str:
            out = []
            for start, end in f.spans:
                rec.start()
                for block in blocks(pcm[2 * start : 2 * end]):
                    rec.feed(block)
                out += [w.text for w in rec.finish()]
            rec.close()
            return " ".join(out)
        return run

    def pipelined(f: LongAudio, pcm: bytes) -> Callable[[], str]:
        segmenter = Segmenter(engine.recognizer(), vad_model, AudioFormat("pcm_s16le", RATE), BATCH_RULES)

        def run() -> str:
            segments = []
            for block in blocks(pcm):
                segments += segmenter.feed(block, partial=False).segments
            segments += segmenter.finish()[0]
            segmenter.close()
            return " ".join(w.text for s in segments for w in s.words)
        return run

    out: dict[str, Any] = {"model": model, "files": [f.name for f in files], "audio_seconds": round(audio, 2),
                           "decode_cpu_per_audio_second": decode_cpu / audio}
    for name, make in (("raw", raw), ("pipeline", pipelined)):
        cpu = wall = 0.0
        pairs = []
        for f, pcm in zip(files, decoded):
            run = make(f, pcm)
            cpu0, wall0 = time.process_time(), time.monotonic()
            text = run()
            cpu, wall = cpu + time.process_time() - cpu0, wall + time.monotonic() - wall0
            pairs.append((f.text, text))
        out |= {f"{name}_rtf": cpu / audio, f"{name}_wall_rtf": wall / audio, f"{name}_wer": wer(pairs)}
        print(f"  {name:<8} CPU RTF {cpu / audio:.4f}, wall RTF {wall / audio:.4f}, WER {wer(pairs):.3f}")
    return out


# -- the server ----------------------------------------------------------------------------------


def server_processes(server: Server) -> dict[int, tuple[str, psutil.Process]]:
    """pid -> (role, process): the server, its engine workers, any other child."""
    root = psutil.Process(server.proc.pid)
    out = {root.pid: ("server", root)}
    workers = 0
    for p in root.children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" in cmd:
            role = "resource tracker"
        elif "multiprocessing" in cmd:
            role, workers = f"worker {workers}", workers + 1
        else:
            role = "child"
        out[p.pid] = (role, p)
    return out


def cpu_by_process(procs: dict[int, tuple[str, psutil.Process]]) -> dict[int, float]:
    out = {}
    for pid, (_, p) in procs.items():
        try:
            out[pid] = sum(p.cpu_times()[:2])
        except psutil.Error:
            pass
    return out


def run_queue_waits(procs: dict[int, tuple[str, psutil.Process]]) -> dict[int, float]:
    """Seconds each process's threads have spent runnable but waiting for a CPU (Linux
    /proc/<pid>/task/*/schedstat, field 2): time lost to other processes, not to a lack of work."""
    out = {}
    for pid in procs:
        total = 0
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[1])
        except OSError:
            continue
        out[pid] = total / 1e9
    return out


def time_split(procs: dict[int, tuple[str, psutil.Process]], cpu: tuple[dict, dict], waits: tuple[dict, dict],
               wall: float) -> dict[str, dict[str, float]]:
    """Per process, in cores (s per wall s): running, runnable but waiting for a CPU, and (engine
    workers: one thread) the rest, idle: waiting for audio from the server process."""
    out = {}
    for pid, (role, _) in procs.items():
        if pid not in cpu[0] or pid not in cpu[1]:
            continue
        running = (cpu[1][pid] - cpu[0][pid]) / wall
        waiting = max(0.0, waits[1].get(pid, 0.0) - waits[0].get(pid, 0.0)) / wall
        out[role] = {"running": round(running, 3), "waiting_for_cpu": round(waiting, 3)}
        if role.startswith("worker"):
            out[role]["idle"] = round(max(0.0, 1.0 - running - waiting), 3)
    return out


def api(server: Server) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{server.port}", headers={"X-API-Key": server.key},
                        timeout=httpx.Timeout(60.0, read=600.0))


class ServerError(RuntimeError):
    """A request the server answered wrongly: what was asked, and what came back."""


def checked(response: httpx.Response, expect: int, what: str) -> dict:
    if response.status_code != expect:
        raise ServerError(f"{what}: {response.request.method} {response.request.url.path} -> "
                          f"{response.status_code} {response.text[:2000]}")
    return response.json()


def upload(client: httpx.Client, f: LongAudio) -> dict:
    with open(f.path, "rb") as fh:
        return checked(client.post(FILES_API, files={"file": (f.path.name, fh, f.content_type)}),
                       201, f"uploading {f.path.name}")


def create_job(client: httpx.Client, file_id: str) -> dict:
    return checked(client.post(JOBS_API, json={"fileId": file_id}), 201, f"creating a transcription of {file_id}")


def wait_jobs(client: httpx.Client, jobs: dict[str, dict], limit: float) -> dict[str, float]:
    """Poll every unfinished job until all have ended; job id -> when its end was seen (monotonic).
    ``jobs`` is updated with each job's last response."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + limit
    while len(seen) < len(jobs):
        if time.monotonic() > deadline:
            raise ServerError(f"{len(jobs) - len(seen)} transcription(s) not ended after {limit:.0f} s: "
                              + ", ".join(f"{i} {jobs[i]['status']} processed {jobs[i]['processedMilliseconds']} ms"
                                          for i in jobs if i not in seen))
        for job_id in [i for i in jobs if i not in seen]:
            body = checked(client.get(f"{JOBS_API}/{job_id}"), 200, f"polling transcription {job_id}")
            jobs[job_id] = body
            if body["status"] in TERMINAL:
                seen[job_id] = time.monotonic()
        time.sleep(POLL_SECONDS)
    return seen


def settle(server: Server, limit: float = 60.0) -> None:
    """Until the server and its workers are idle (< 5 % of a core for 1 s)."""
    start, quiet, last = time.monotonic(), 0, sum(server.cpu_seconds())
    while time.monotonic() - start < limit and quiet < 2:
        time.sleep(0.5)
        now = sum(server.cpu_seconds())
        quiet, last = (quiet + 1 if now - last < 0.025 else 0), now


def stamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def run_jobs(server: Server, client: httpx.Client, files: list[LongAudio], uploaded: list[dict], cores: int,
             engine: dict, limit: float, model: str, sampler: Sampler, phase: str) -> dict:
    """One transcription per file, all created at once; the real-time factor over the common wall."""
    settle(server)
    procs = server_processes(server)
    cpu0, box0, self0 = cpu_by_process(procs), busy_cpu_seconds(), time.process_time()
    waits0 = run_queue_waits(procs)
    sampler.phase = phase
    start = time.monotonic()
    created = [create_job(client, u["id"]) for u in uploaded]
    jobs = {c["id"]: c for c in created}
    print(f"  {phase}: {len(jobs)} transcription(s) of {sum(f.seconds for f in files):.0f} s created; waiting")
    ended = wait_jobs(client, jobs, limit)
    sampler.phase = f"after {phase}"
    wall = max(ended.values()) - start
    cpu1, box1, self1 = cpu_by_process(procs), busy_cpu_seconds(), time.process_time()
    waits1 = run_queue_waits(procs)
    # The last jobs' end was seen up to one poll late: the server's stamps bound it closer.
    bodies = [jobs[c["id"]] for c in created]
    audio = sum(f.seconds for f in files)
    per_process = {procs[pid][0]: cpu1[pid] - cpu0[pid] for pid in cpu0 if pid in cpu1}
    grew = {pid: cpu1[pid] - cpu0[pid] for pid in cpu0 if pid in cpu1}
    busiest = max((pid for pid in grew if procs[pid][0].startswith("worker")), key=grew.__getitem__, default=None)
    server_cpu = sum(per_process.values())
    server_wall = (max(stamp(b["completionDate"]) for b in bodies if b.get("completionDate"))
                   - min(stamp(b["creationDate"]) for b in bodies)) if all(b.get("completionDate") for b in bodies) \
        else None
    per_job = []
    for f, u, b in zip(files, uploaded, bodies):
        result = b.get("result") or {}
        job_wall = (stamp(b["completionDate"]) - stamp(b["startDate"])) if b.get("completionDate") and \
            b.get("startDate") else None
        per_job.append({"file": f.name, "audio_seconds": round(f.seconds, 2),
                        "file_duration_seconds": u["durationMilliseconds"] / 1000, "status": b["status"],
                        "model": b.get("resolvedModelName"),
                        "wait_seconds": round(max(0.0, stamp(b["startDate"]) - stamp(b["creationDate"])), 2)
                        if b.get("startDate") else None,
                        "run_seconds": None if job_wall is None else round(job_wall, 2),
                        "audio_per_run_second": None if not job_wall else f.seconds / job_wall,
                        "segments": len(result.get("segments", [])), "words": len(result.get("words", [])),
                        "wer": wer([(f.text, result["text"])]) if "text" in result else None,
                        "errors": b.get("errors")})
    done = [j for j, b in zip(per_job, bodies) if b["status"] == "COMPLETED" and b.get("resolvedModelName") == model]
    rtf = audio / wall
    expected = TARGET_FRACTION * min(cores, len(files)) / engine["raw_rtf"]
    other = max(0.0, (box1 - box0) - server_cpu - (self1 - self0)) / wall
    return {
        "phase": phase, "files": len(files), "audio_seconds": round(audio, 2), "completed": len(done),
        "wall_seconds": round(wall, 2), "server_stamped_wall_seconds": None if server_wall is None
        else round(server_wall, 2),
        "rtf": rtf, "server_stamped_rtf": None if not server_wall else audio / server_wall,
        "target_rtf": TARGET_RTF, "pass": rtf >= TARGET_RTF and len(done) == len(files),
        "engine_expected_rtf": expected, "ratio_to_engine_expected": rtf / expected,
        "wer": wer([(f.text, b["result"]["text"]) for f, b in zip(files, bodies) if b["status"] == "COMPLETED"]),
        "cores_busy": {role: round(cpu / wall, 3) for role, cpu in per_process.items()},
        "cpu_per_audio_second": {role: cpu / audio for role, cpu in per_process.items()},
        "server_cpu_per_audio_second": server_cpu / audio,
        "time_split_cores": time_split(procs, (cpu0, cpu1), (waits0, waits1), wall),
        "busiest_worker": procs[busiest][0] if busiest is not None else None,
        "other_cpu_cores": round(other, 2),
        "jobs": per_job,
    }


def phase_rss(sampler: Sampler, phase: str, pids: list[int]) -> list[int]:
    """The summed RSS of ``pids`` in each sample of ``phase``."""
    return [sum(rss.get(pid, 0) for pid in pids) for _, ph, rss in sampler.samples if ph == phase]


def throughput(server: Server, files: list[LongAudio], cores: int, engine: dict, limit: float, model: str,
               idle_seconds: float) -> dict:
    """alone (the first file), then together (every file at once), on one server whose RSS is
    sampled throughout."""
    sampler = Sampler(server)
    sampler.start()
    try:
        with api(server) as client:
            print(f"  uploading {len(files)} files")
            sampler.phase = "upload"
            uploaded = [upload(client, f) for f in files]
            settle(server)
            sampler.phase = "idle"
            time.sleep(idle_seconds)
            alone = run_jobs(server, client, files[:1], uploaded[:1], 1, engine, limit, model, sampler, "alone")
            print(f"    {alone['rtf']:.2f}x real time")
            together = run_jobs(server, client, files, uploaded, cores, engine, limit, model, sampler, "together")
            print(f"    {together['rtf']:.2f}x real time")
    finally:
        sampler.stop()
    rows: dict[str, dict[str, float | None]] = {}
    main = server.proc.pid
    pids = sorted(sampler.roles, key=lambda pid: (pid != main, sampler.roles[pid]))
    for label, group in [*((sampler.roles[pid], [pid]) for pid in pids if sampler.roles[pid] != "resource tracker"),
                         ("total (all processes)", pids)]:
        idle = phase_rss(sampler, "idle", group)
        rows[label] = {"idle_mb": mb(statistics.median(idle)) if idle else None,
                       "alone_peak_mb": mb(max(phase_rss(sampler, "alone", group), default=None)),
                       "together_peak_mb": mb(max(phase_rss(sampler, "together", group), default=None))}
    return {"alone": alone, "together": together, "rss": rows, "rss_samples": len(sampler.samples),
            "idle_seconds": idle_seconds}


# -- memory --------------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """RSS of the server and all its children every SAMPLE_SECONDS, each sample tagged with the
    phase the benchmark says it is in."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.server = server
        self.phase = "start"
        self.samples: list[tuple[float, str, dict[int, int]]] = []  # (monotonic, phase, pid -> rss)
        self.roles: dict[int, str] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            procs = server_processes(self.server)
            for pid, (role, _) in procs.items():
                self.roles.setdefault(pid, role)
            rss = {}
            for pid, (_, p) in procs.items():
                try:
                    rss[pid] = p.memory_info().rss
                except psutil.Error:
                    pass
            self.samples.append((time.monotonic(), self.phase, rss))
            self._halt.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def memory(server: Server, f: LongAudio, idle_seconds: float, limit: float) -> dict:
    sampler = Sampler(server)
    sampler.start()
    try:
        with api(server) as client:
            settle(server)
            sampler.phase = "upload"
            t_upload = time.monotonic()
            uploaded = upload(client, f)
            upload_seconds = time.monotonic() - t_upload
            settle(server)
            sampler.phase = "idle"
            time.sleep(idle_seconds)
            procs = server_processes(server)
            cpu0, box0, self0 = cpu_by_process(procs), busy_cpu_seconds(), time.process_time()
            waits0 = run_queue_waits(procs)
            sampler.phase = "job"
            start = time.monotonic()
            job = create_job(client, uploaded["id"])
            jobs = {job["id"]: job}
            print(f"  transcription of {f.seconds / 60:.0f} min created; waiting")
            ended = wait_jobs(client, jobs, limit)
            sampler.phase = "after"
            end = max(ended.values())
            cpu1, box1, self1 = cpu_by_process(procs), busy_cpu_seconds(), time.process_time()
            waits1 = run_queue_waits(procs)
            time.sleep(min(idle_seconds, 3.0))
    finally:
        sampler.stop()
    body = jobs[job["id"]]
    result = body.get("result") or {}
    grew = {pid: cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0) for pid in cpu0}
    ran = max((pid for pid in grew if sampler.roles.get(pid, "").startswith("worker")), key=grew.__getitem__)
    main = server.proc.pid
    workers = sorted(pid for pid, role in sampler.roles.items() if role.startswith("worker"))
    groups = {"server process": [main], "worker that ran the job": [ran],
              **{f"other worker ({sampler.roles[pid]})": [pid] for pid in workers if pid != ran},
              "total (all processes)": list(sampler.roles)}

    def of(phase: str, pids: list[int]) -> list[int]:
        return [sum(rss.get(pid, 0) for pid in pids) for _, ph, rss in sampler.samples if ph == phase]

    rows = {}
    for label, pids in groups.items():
        idle, job_rss, up = of("idle", pids), of("job", pids), of("upload", pids)
        baseline = statistics.median(idle) if idle else None
        peak = max(job_rss, default=None)
        rows[label] = {"idle_mb": mb(baseline), "upload_peak_mb": mb(max(up, default=None)),
                       "job_peak_mb": mb(peak),
                       "increment_mb": mb(peak - baseline) if peak is not None and baseline is not None else None}
    # Peak in each quarter of the job's wall time: flat when memory is bounded.
    job_samples = [(t, rss) for t, ph, rss in sampler.samples if ph == "job"]
    quarters: dict[str, list[float | None]] = {}
    for label, pids in (("server process", [main]), ("worker that ran the job", [ran])):
        quarters[label] = []
        for q in range(4):
            lo, hi = start + q * (end - start) / 4, start + (q + 1) * (end - start) / 4
            values = [sum(rss.get(pid, 0) for pid in pids) for t, rss in job_samples if lo <= t <= hi]
            quarters[label].append(mb(max(values, default=None)))
    job_wall = end - start
    # Per second of the job: the largest RSS of the server process and of its worker (MB).
    series: dict[str, list[float | None]] = {"server process": [], "worker that ran the job": []}
    for second in range(math.ceil(job_wall)):
        window = [rss for t, rss in job_samples if start + second <= t < start + second + 1]
        for label, pid in (("server process", main), ("worker that ran the job", ran)):
            series[label].append(mb(max((rss.get(pid, 0) for rss in window), default=None)))
    other = max(0.0, (box1 - box0) - sum(grew.values()) - (self1 - self0)) / job_wall
    return {
        "file": f.name, "format": f.path.suffix.lstrip("."), "size_mb": round(f.path.stat().st_size / 1e6, 2),
        "audio_seconds": round(f.seconds, 2), "pcm_mb": round(f.samples * 2 / 1e6, 1),
        "status": body["status"], "model": body.get("resolvedModelName"), "errors": body.get("errors"),
        "upload_seconds": round(upload_seconds, 2),
        "job_wall_seconds": round(job_wall, 2), "audio_per_wall_second": f.seconds / job_wall,
        "wer": wer([(f.text, result["text"])]) if "text" in result else None,
        "segments": len(result.get("segments", [])),
        "samples": len(sampler.samples), "sample_seconds": SAMPLE_SECONDS,
        "cpu_seconds": {sampler.roles.get(pid, str(pid)): round(cpu, 2) for pid, cpu in grew.items()},
        "cores_busy": {sampler.roles.get(pid, str(pid)): round(cpu / job_wall, 3) for pid, cpu in grew.items()},
        "time_split_cores": time_split(procs, (cpu0, cpu1), (waits0, waits1), end - start),
        "worker": sampler.roles[ran], "worker_cpu_per_audio_second": grew[ran] / f.seconds, "other_cpu_cores": round(other, 2),
        "rss": rows, "job_quarter_peaks_mb": quarters, "job_rss_per_second_mb": series,
        "job_peak_at_second": {label: max(range(len(v)), key=lambda i: v[i] or 0.0) if v else None
                               for label, v in series.items()},
    }


def mb(value: float | None) -> float | None:
    return None if value is None else round(value / 1e6, 1)


# -- report --------------------------------------------------------------------------------------


def report(engine: dict, thr: dict | None, mem: dict | None, cores: int, workers: int, settings: dict) -> str:
    lines = [(f"engine alone ({settings['model']}): 1 process, 1 core, {engine['audio_seconds']:.0f} s of audio "
              f"({', '.join(engine['files'])}), decoded from {settings['format']}")]
    lines += ["  " + s for s in table(("", "CPU RTF", "wall RTF", "x real time", "WER"), [
        ("raw engine (every sample, 1 utterance per fixture)", f"{engine['raw_rtf']:.4f}",
         f"{engine['raw_wall_rtf']:.4f}", f"{1 / engine['raw_wall_rtf']:.1f}", f"{engine['raw_wer']:.3f}"),
        ("worker pipeline (VAD + Segmenter)", f"{engine['pipeline_rtf']:.4f}", f"{engine['pipeline_wall_rtf']:.4f}",
         f"{1 / engine['pipeline_wall_rtf']:.1f}", f"{engine['pipeline_wer']:.3f}"),
        (f"decoding {settings['format']} to 16 kHz PCM", f"{engine['decode_cpu_per_audio_second']:.4f}", "-", "-",
         "-")])]
    lines.append(f"  VAD gating: pipeline CPU / raw CPU = {engine['pipeline_rtf'] / engine['raw_rtf']:.3f}")
    if thr:
        runs = [thr["alone"], thr["together"]]
        lines += ["", (f"real-time factor through the server: {settings['model']}, {workers} engine worker(s), "
                       f"{cores} core(s); {settings['file_minutes']:g} min {settings['format']} files")]
        lines += ["  " + s for s in table(
            ("run", "files", "audio s", "wall s", "server-stamped", "RTF (x real time)", "target", "engine predicts",
             "WER", "completed", "other", "verdict"),
            [(r["phase"], str(r["files"]), f"{r['audio_seconds']:.0f}", f"{r['wall_seconds']:.1f}",
              fmt(r["server_stamped_wall_seconds"], ".1f"), f"{r['rtf']:.2f}", f">= {r['target_rtf']:g}",
              f"{r['engine_expected_rtf']:.2f}", f"{r['wer']:.3f}", f"{r['completed']}/{r['files']}",
              f"{r['other_cpu_cores']:.2f}", "PASS" if r["pass"] else "FAIL") for r in runs])]
        lines.append(f"  (RTF = audio s / wall s, first create sent -> last end seen, polled every {POLL_SECONDS:g} s; "
                     f"together: all files at once, their audio over the common wall; engine predicts: "
                     f"{TARGET_FRACTION} x busy cores / raw engine CPU RTF {engine['raw_rtf']:.4f}; other: cores busy "
                     "with other processes)")
        lines += ["  " + s for s in table(("run: process", "running", "waiting for a CPU", "idle", "CPU s per audio s"), [
            (f"{r['phase']}: {role}", f"{split[role]['running']:.3f}", f"{split[role]['waiting_for_cpu']:.3f}",
             fmt(split[role].get("idle"), ".3f"), f"{r['cpu_per_audio_second'][role]:.4f}")
            for r in runs for split in [r["time_split_cores"]] for role in split if role != "resource tracker"] + [
            (f"{r['phase']}: server, all", f"{sum(v['running'] for v in r['time_split_cores'].values()):.3f}",
             f"{sum(v['waiting_for_cpu'] for v in r['time_split_cores'].values()):.3f}", "-",
             f"{r['server_cpu_per_audio_second']:.4f}") for r in runs])]
        lines.append("  (cores, i.e. s per wall s; waiting for a CPU: runnable, but the CPUs were busy (schedstat);"
                     " idle: a worker with nothing to do, waiting for audio from the server process)")
        for r in runs:
            worker_cpu = sum(v for k, v in r["cpu_per_audio_second"].items() if k.startswith("worker"))
            lines.append(f"  {r['phase']}: engine workers' CPU per audio s {worker_cpu:.4f} = "
                         f"{worker_cpu / engine['pipeline_rtf']:.3f} x the pipeline alone, "
                         f"{worker_cpu / engine['raw_rtf']:.3f} x the raw engine")
        lines += ["  " + s for s in table(("run: job", "audio s", "waited s", "ran s", "x real time", "segments",
                                           "words", "WER", "model", "status"),
                                          [(f"{r['phase']}: {j['file']}", f"{j['audio_seconds']:.0f}",
                                            fmt(j["wait_seconds"], ".1f"), fmt(j["run_seconds"], ".1f"),
                                            fmt(j["audio_per_run_second"], ".2f"), str(j["segments"]), str(j["words"]),
                                            fmt(j["wer"], ".3f"), str(j["model"]), j["status"])
                                           for r in runs for j in r["jobs"]])]
        ran = thr["alone"]["busiest_worker"]
        lines += ["", "  RSS of the server's processes (MB): idle with the models loaded, and peaks"]
        lines += ["  " + s for s in table(("process", "idle", "alone peak", "together peak"), [
            (label + (" (ran the alone job)" if label == ran else ""), fmt(r["idle_mb"], ".1f"),
             fmt(r["alone_peak_mb"], ".1f"), fmt(r["together_peak_mb"], ".1f")) for label, r in thr["rss"].items()])]
        lines.append(f"  (sampled every {SAMPLE_SECONDS:g} s, {thr['rss_samples']} samples; idle: median over "
                     f"{thr['idle_seconds']:g} s after the upload, before any job; each worker hosts every "
                     "configured model; total: the sum over processes at one instant)")
    if mem:
        lines += ["", (f"memory: one {mem['audio_seconds'] / 60:.3g} min {mem['format']} file ({mem['size_mb']} MB; "
                       f"{mem['pcm_mb']} MB as 16 kHz PCM), alone on a fresh server ({mem['model']}): {mem['status']} "
                       f"in {mem['job_wall_seconds']:.0f} s ({mem['audio_per_wall_second']:.2f}x real time), "
                       f"WER {fmt(mem['wer'], '.3f')}, {mem['segments']} segments")]
        ran = mem["worker"]
        split = mem["time_split_cores"]
        lines.append(f"  cores: server process {split['server']['running']:.3f} running, "
                     f"{split['server']['waiting_for_cpu']:.3f} waiting for a CPU; its worker "
                     f"{split[ran]['running']:.3f} running ({mem['worker_cpu_per_audio_second']:.4f} CPU s per audio s), "
                     f"{split[ran]['waiting_for_cpu']:.3f} waiting for a CPU, {split[ran]['idle']:.3f} idle; "
                     f"other processes {mem['other_cpu_cores']:.2f}")
        lines += ["  " + s for s in table(("RSS MB", "idle", "upload peak", "job peak", "job - idle"), [
            (label, fmt(r["idle_mb"], ".1f"), fmt(r["upload_peak_mb"], ".1f"), fmt(r["job_peak_mb"], ".1f"),
             fmt(r["increment_mb"], "+.1f")) for label, r in mem["rss"].items()])]
        for label, values in mem["job_quarter_peaks_mb"].items():
            lines.append(f"  {label}, peak per quarter of the job: " + " / ".join(fmt(v, ".1f") for v in values)
                         + f" (peak at second {mem['job_peak_at_second'][label]} of {mem['job_wall_seconds']:.0f})")
        lines.append(f"  (RSS sampled every {SAMPLE_SECONDS:g} s, {mem['samples']} samples; idle: median before the "
                     "job, after the upload; total: the sum over processes at one instant)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODELS, default="whisper-tiny.en", help="LECTERN_DEFAULT_MODEL")
    parser.add_argument("--files", type=int, default=None, help="files transcribed together (default: --workers)")
    parser.add_argument("--file-minutes", type=float, default=10.0, help="length of each file")
    parser.add_argument("--long-minutes", type=float, default=60.0, help="length of the memory run's file")
    parser.add_argument("--engine-files", type=int, default=1, help="files the engine alone decodes")
    parser.add_argument("--format", choices=FORMATS, default="mp3", help="encoding of the files")
    parser.add_argument("--long-format", choices=FORMATS, default="opus", help="encoding of the long file")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="LECTERN_ENGINE_WORKERS")
    parser.add_argument("--streams-per-worker", type=int, default=8,
                        help="LECTERN_STREAMS_PER_WORKER and LECTERN_WHISPER_STREAMS_PER_WORKER")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle RSS sampling before the jobs")
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "memory"], help="parts not to run")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fixture order and the pauses")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batch.json")
    parser.add_argument("--smoke", action="store_true",
                        help="CI: 2 files of 30 s, a 2-minute long file; fails on any failed job")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if args.smoke:
        args.files, args.file_minutes, args.long_minutes, args.engine_files = 2, 0.5, 2.0, 1
        args.idle_seconds = min(args.idle_seconds, 2.0)
    if args.files is None:
        args.files = args.workers
    cores = min(args.workers, os.cpu_count() or 1)
    if args.files < args.workers and not args.smoke:
        print(f"note: {args.files} files < {args.workers} workers: the workers will not all be busy together")
    fixtures, rng = load_fixtures(), random.Random(args.seed)
    started = time.monotonic()
    problems: list[str] = []
    thr = mem = health = None

    with tempfile.TemporaryDirectory(prefix="lectern-batch-audio-") as tmp:
        t0 = time.monotonic()
        files = [build(f"speech-{i:02d}", args.file_minutes * 60, fixtures, rng, Path(tmp), args.format)
                 for i in range(args.files)]
        long = build("long", args.long_minutes * 60, fixtures, rng, Path(tmp), args.long_format) \
            if "memory" not in args.skip else None
        print(f"audio: {len(files)} x {files[0].seconds:.0f} s {args.format}"
              + (f", 1 x {long.seconds:.0f} s {args.long_format} ({long.path.stat().st_size / 1e6:.1f} MB)"
                 if long else "") + f", made in {time.monotonic() - t0:.1f} s")

        phases = {"audio": round(time.monotonic() - t0, 1)}
        print(f"{args.model} alone on {min(args.engine_files, len(files))} file(s)")
        t0 = time.monotonic()
        engine = engine_alone(args.model, files[: max(1, args.engine_files)])
        phases["engine"] = round(time.monotonic() - t0, 1)
        # Generous: real time for all the audio on one worker.
        limit = max(300.0, sum(f.seconds for f in files))

        if "throughput" not in args.skip:
            t0 = time.monotonic()
            print(f"real-time factor: server ({args.model}) with {args.workers} engine worker(s)")
            server = Server(args.workers, args.streams_per_worker, model=args.model)
            try:
                health = serving(server, args.model)
                thr = throughput(server, files, cores, engine, limit, args.model, args.idle_seconds)
            except (ServerError, httpx.HTTPError, RuntimeError) as exc:
                problems.append(f"throughput: {exc}")
                print(f"  FAILED: {exc}")
            finally:
                server.stop()
                phases["throughput"] = round(time.monotonic() - t0, 1)
        if long is not None:
            t0 = time.monotonic()
            print(f"memory: fresh server ({args.model}) with {args.workers} engine worker(s)")
            server = Server(args.workers, args.streams_per_worker, model=args.model)
            try:
                health = serving(server, args.model)
                mem = memory(server, long, idle_seconds=args.idle_seconds, limit=max(300.0, long.seconds))
                print(f"  job {mem['status']} in {mem['job_wall_seconds']:.0f} s")
            except (ServerError, httpx.HTTPError, RuntimeError) as exc:
                problems.append(f"memory: {exc}")
                print(f"  FAILED: {exc}")
            finally:
                server.stop()
                phases["memory"] = round(time.monotonic() - t0, 1)
    elapsed = time.monotonic() - started

    print("\n" + report(engine, thr, mem, cores, args.workers, vars(args)))
    print(f"\ntotal run time {elapsed:.1f} s (" + ", ".join(f"{k} {v:g} s" for k, v in phases.items()) + ")")
    for run in (thr["alone"], thr["together"]) if thr else ():
        if run["completed"] < run["files"]:
            problems.append(f"{run['phase']}: {run['completed']}/{run['files']} transcriptions completed with "
                            f"{args.model}: " + "; ".join(f"{j['file']} {j['status']} {j['model']} {j['errors']}"
                                                          for j in run["jobs"]
                                                          if j["status"] != "COMPLETED" or j["model"] != args.model))
    if mem and (mem["status"] != "COMPLETED" or mem["model"] != args.model):
        problems.append(f"memory: the transcription ended {mem['status']} ({mem['model']}): {mem['errors']}")

    machine = {"cpu_count": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
               "platform": platform.platform(), "python": platform.python_version(),
               "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
               "load_average": [round(x, 2) for x in os.getloadavg()]}
    settings = {**vars(args), "out": str(args.out), "cores": cores, "fixtures": FIXTURES,
                "pause_seconds": PAUSE_SECONDS, "noise_rms": NOISE_RMS, "target_fraction": TARGET_FRACTION,
                "target_rtf": TARGET_RTF, "formats": {k: FORMATS[k][:3] for k in (args.format, args.long_format)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                                    "model": args.model, "healthz": health, "machine": machine, "settings": settings,
                                    "run_seconds": round(elapsed, 1), "phase_seconds": phases,
                                    "engine": engine, "throughput": thr, "memory": mem, "problems": problems},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")
    if problems:
        print("problems:\n  " + "\n  ".join(problems))
    # Smoke: a failed or missing job fails the run (the numbers are not judged: CI boxes vary).
    return 1 if args.smoke and problems else 0


if __name__ == "__main__":
    sys.exit(main())
