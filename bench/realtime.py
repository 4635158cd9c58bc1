"""Realtime streaming benchmark: latency, capacity, CPU overhead and accuracy of a real server.

* A real ``lectern serve`` runs as a subprocess (free port, throwaway data dir, key made with
  ``lectern admin create-key``). For each N of the ramp, N asyncio clients speak the raw
  ElevenLabs Scribe realtime protocol over ``websockets`` (manual commits): each starts at a
  random moment in the first second, then streams single-sentence speech fixtures in 100 ms
  chunks at real-time pace, each chunk sent when its audio would have been "recorded"
  (t0 + audio time, a monotonic schedule, no drift), and a commit after each utterance while
  it goes on with the next: ``--rounds`` utterances on one socket.
* commit: time from sending a commit to receiving its ``committed_transcript``. partial: from
  an utterance's first chunk to its first non-empty ``partial_transcript`` (fixtures open with
  ~0.33 s of silence, and partials come once the server's VAD hears speech). late: how far
  behind schedule the sender was, per chunk. errors: error messages, failed connects, early
  closes, unanswered commits. WER: committed texts vs the fixture transcripts, aggregated.
* CPU: user+system of the server and all its children (engine workers) during a level, per
  second of audio. At N=8 (or the largest N run) it is compared with the raw engine decoding
  the same utterances in this process (feed + partial per chunk, finish per utterance,
  ``time.process_time``), and with the worker's engine+VAD ``StreamPipeline``; the raw
  engine's WER on that audio is the baseline (no accuracy may be lost to streaming).
* sustained: commit p95 <= 500 ms, no errors, sender p99 late <= 100 ms. Clients and server
  share the box; "other" is the cores other processes kept busy meanwhile: if not ~0, the
  numbers are not the server's alone.

Usage: .venv/bin/python bench/realtime.py [--streams 1 2 4 8] [--rounds 6] [--smoke]
"""


from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
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
from datetime import datetime, timezone
from pathlib import Path

import psutil
import websockets

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "tests" / "fixtures" / "speech"
FIXTURES = "fox weather meeting numbers kitchen train coffee directions library".split()
CHUNK_BYTES = 3200  # 100 ms of 16 kHz s16le
BYTES_PER_SECOND = 32000
SUSTAIN_P95_MS, SUSTAIN_LATE_P99_MS = 500.0, 100.0
TARGETS = {"streams": 8, "commit_p50_ms": 100.0, "commit_p95_ms": 200.0, "cpu_ratio": 1.10}
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

    @property
    def seconds(self) -> float:
        return sum(map(len, self.chunks)) / BYTES_PER_SECOND


def load_fixtures() -> list[Fixture]:
    out = []
    for name in FIXTURES:
        with wave.open(str(SPEECH / f"{name}.wav")) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2), name
            pcm = w.readframes(w.getnframes())
        chunks = [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]
        text = (SPEECH / f"{name}.txt").read_text().strip()
        out.append(Fixture(name, text, chunks, [chunk_message(c) for c in chunks]))
    return out


def plan_for(client: int, rounds: int, fixtures: list[Fixture]) -> list[Fixture]:
    """Client i speaks fixtures i, i+1, ...: concurrent streams say different things."""
    return [fixtures[(client + r) % len(fixtures)] for r in range(rounds)]


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


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
    def __init__(self, workers: int, streams_per_worker: int) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="lectern-bench-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "LECTERN_DATA_DIR": self.dir.name, "LECTERN_CREATE_DEV_KEY": "false",
               "LECTERN_LOG_LEVEL": "warning", "LECTERN_ENGINE_WORKERS": str(workers),
               "LECTERN_STREAMS_PER_WORKER": str(streams_per_worker)}
        self.log_path = Path(self.dir.name) / "server.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "lectern", "serve", "--port", str(self.port)],
                                         env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log_path.read_text().splitlines()[-30:])
                self.stop()
                raise RuntimeError(f"the server did not come up:\n{tail}")
            time.sleep(0.2)
        created = subprocess.run([sys.executable, "-m", "lectern", "admin", "create-key", "--tenant", "bench",
                                  "--user", "bench"], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
        self.key = created.stdout.strip().splitlines()[-1]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

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


@dataclass
class Utterance:  # monotonic times
    fixture: Fixture
    first_sent: float
    first_partial: float | None = None
    commit_sent: float = 0.0
    committed: float | None = None
    text: str = ""


@dataclass
class ClientResult:
    utterances: list[Utterance] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)  # seconds behind schedule, per chunk
    errors: list[str] = field(default_factory=list)


async def run_client(url: str, key: str, plan: list[Fixture], delay: float, drain_timeout: float) -> ClientResult:
    result = ClientResult()
    pending: list[Utterance] = []  # begun, not yet committed, oldest first: what a message is about
    done = asyncio.Event()

    async def receive(ws: websockets.ClientConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                now, msg = time.monotonic(), json.loads(raw)
                kind = msg.get("message_type")
                if kind == "partial_transcript" and msg.get("text") and pending and pending[0].first_partial is None:
                    pending[0].first_partial = now
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
        async with websockets.connect(url, additional_headers={"xi-api-key": key}, max_size=None,
                                      compression=None, open_timeout=30) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if first.get("message_type") != "session_started":
                result.errors.append(f"{first.get('message_type')}: {first.get('error', first)}")
                return result
            receiver = asyncio.create_task(receive(ws))
            t0, sent = time.monotonic(), 0
            for fixture in plan:
                for i, (chunk, message) in enumerate(zip(fixture.chunks, fixture.messages)):
                    sent += len(chunk)
                    due = t0 + sent / BYTES_PER_SECOND  # when this chunk's audio has been "recorded"
                    if (wait := due - time.monotonic()) > 0:
                        await asyncio.sleep(wait)
                    result.lateness.append((now := time.monotonic()) - due)
                    if i == 0:
                        pending.append(utt := Utterance(fixture, now))
                        result.utterances.append(utt)
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


def busy_cpu_seconds() -> float:  # the whole box (guest time is already in user time)
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


async def run_level(server: Server, n: int, rounds: int, fixtures: list[Fixture], rng: random.Random) -> dict:
    url = (f"ws://127.0.0.1:{server.port}/v1/speech-to-text/realtime"
           "?model_id=scribe_v2_realtime&audio_format=pcm_16000&commit_strategy=manual")
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
    partial_ms = [1000 * (u.first_partial - u.first_sent) for u in utts if u.first_partial is not None]
    late_ms = [1000 * x for r in results for x in r.lateness]
    errors = [e for r in results for e in r.errors]
    audio = sum(f.seconds for plan in plans for f in plan)
    level = {
        "streams": n, "utterances": len(utts), "committed": len(done), "audio_seconds": round(audio, 2),
        "wall_seconds": round(wall, 2),
        "commit_ms": {"p50": pct(commit_ms, 50), "p95": pct(commit_ms, 95), "max": max(commit_ms, default=None)},
        "first_partial_ms": {"p50": pct(partial_ms, 50), "p95": pct(partial_ms, 95),
                             "missing": len(utts) - len(partial_ms)},
        "lateness_ms": {"p99": pct(late_ms, 99), "max": max(late_ms, default=None)},
        "errors": len(errors), "error_samples": sorted(set(errors))[:10],
        "wer": wer([(u.fixture.text, u.text) for u in done]),
        "server_cpu_seconds": round(cpu, 3), "server_cpu_per_audio_second": cpu / audio,
        "server_main_cpu_per_audio_second": main_cpu / audio, "workers_cpu_per_audio_second": workers_cpu / audio,
        "client_cpu_seconds": round(client_cpu, 3),
        "other_cpu_cores": round(max(0.0, box - cpu - client_cpu) / wall, 2),  # load from other processes
    }
    level["sustained"] = bool(not errors and len(done) == n * rounds and commit_ms
                              and level["commit_ms"]["p95"] <= SUSTAIN_P95_MS
                              and level["lateness_ms"]["p99"] <= SUSTAIN_LATE_P99_MS)
    return level


def engine_baseline(plans: list[list[Fixture]], per_process: int) -> dict:
    """CPU and WER of the engine alone on the same utterances, one recognizer per stream as in the
    server: raw and serial (the reference); raw with ``per_process`` streams interleaved chunk by
    chunk in one process, as a worker hosts them; the worker's engine+VAD pipeline, interleaved;
    and raw interleaved at real-time pace (one worker's share of the streams only: it takes their
    audio's duration), which is what a worker's engine does, idle gaps and cold caches included.
    Each stream gets a fresh decoder (a reused one keeps its CMN estimate from the audio it heard)."""
    from lectern.speech.audio import AudioFormat
    from lectern.speech.engines.pocketsphinx import PocketSphinxEngine
    from lectern.speech.pipeline import StreamPipeline, StreamSpec
    from lectern.speech.vad import load_vad_model

    engine, vad_model = PocketSphinxEngine(max_spare_decoders=0), load_vad_model()

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
        pipeline = StreamPipeline(StreamSpec(AudioFormat("pcm_s16le", 16000)), engine.recognizer(), vad_model)
        yield
        for fixture in plan:
            for chunk in fixture.chunks:
                pipeline.feed(chunk)
                yield
            pairs.append((fixture.text, " ".join(w.text for w in pipeline.finish())))
        pipeline.close()

    out: dict = {"audio_seconds": round(sum(f.seconds for p in plans for f in p), 2),
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
    return out


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def report(levels: list[dict], cpu: dict, best: int | None) -> str:
    head = ("streams", "utts", "commit p50", "p95", "max", "partial p50", "p95", "late p99", "max", "errors",
            "WER", "CPU/audio-s", "other", "ok")
    rows = [head] + [(
        str(v["streams"]), str(v["utterances"]), *(fmt(v["commit_ms"][k]) for k in ("p50", "p95", "max")),
        fmt(v["first_partial_ms"]["p50"]), fmt(v["first_partial_ms"]["p95"]), fmt(v["lateness_ms"]["p99"]),
        fmt(v["lateness_ms"]["max"]), str(v["errors"]), f"{v['wer']:.3f}", f"{v['server_cpu_per_audio_second']:.4f}",
        f"{v['other_cpu_cores']:.2f}", "yes" if v["sustained"] else "NO") for v in levels]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines[1:1] = ["-" * len(lines[0])]
    lines += ["(ms; commit: commit sent -> committed_transcript; partial: first chunk -> first non-empty partial,",
              " each fixture opening with ~0.33 s of silence; late: sender behind its real-time schedule;",
              " CPU/audio-s: server CPU s per audio s; other: cores busy with other processes meanwhile)", "",
              f"most streams sustained (commit p95 <= {SUSTAIN_P95_MS:g} ms, no errors, sender p99 late <= "
              f"{SUSTAIN_LATE_P99_MS:g} ms): {best if best is not None else 'none'}", "targets:"]

    def check(label: str, value: float | None, target: float, digits: str = ".0f") -> None:
        verdict = "-" if value is None else "PASS" if value <= target else f"MISS by {value - target:{digits}}"
        lines.append(f"  {label:<44} {fmt(value, digits):>7}  target <= {target:{digits}}  {verdict}")

    n = TARGETS["streams"]
    at = next((v for v in levels if v["streams"] == n), None)
    check(f"commit p50 @ {n} streams (ms)", at and at["commit_ms"]["p50"], TARGETS["commit_p50_ms"])
    check(f"commit p95 @ {n} streams (ms)", at and at["commit_ms"]["p95"], TARGETS["commit_p95_ms"])
    check(f"server CPU / raw engine CPU @ {cpu['streams']} streams", cpu["ratio_vs_raw"], TARGETS["cpu_ratio"], ".3f")
    check("server WER - raw engine WER (same audio)", cpu["server_wer"] - cpu["raw_wer"], 0.0, ".3f")
    k = cpu["streams_per_process"]
    lines.append(f"  CPU s per audio s @ {cpu['streams']} streams{'':17} server / it")
    lines.append(f"    server{'':34} {cpu['server_cpu_per_audio_second']:.4f}")
    lines.append(f"      of which the server process{'':13} {cpu['server_main_cpu_per_audio_second']:.4f}")
    lines.append(f"      of which the engine workers{'':13} {cpu['workers_cpu_per_audio_second']:.4f}")
    for key, label in (("raw", "raw engine, serial (the reference)"),
                       ("raw_interleaved", f"raw engine, {k} interleaved"),
                       ("pipeline_interleaved", f"engine+VAD pipeline, {k} interleaved"),
                       ("raw_paced", f"raw engine, {k} interleaved, real-time")):
        lines.append(f"    {label:<40} {cpu[key + '_cpu_per_audio_second']:.4f}  {cpu['ratio_vs_' + key]:.3f}")
    lines.append(f"  WER: server {cpu['server_wer']:.3f}, raw engine {cpu['raw_wer']:.3f}, raw interleaved "
                 f"{cpu['raw_interleaved_wer']:.3f}, pipeline {cpu['pipeline_interleaved_wer']:.3f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 12, 16], help="stream counts to ramp")
    parser.add_argument("--rounds", type=int, default=6, help="utterances per stream, on one socket")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="LECTERN_ENGINE_WORKERS")
    parser.add_argument("--streams-per-worker", type=int, default=16, help="LECTERN_STREAMS_PER_WORKER (raised to fit)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the start staggering")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "realtime.json")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI: 2 streams, 1 round")
    parser.add_argument("--cold", action="store_true", help="no warm-up: include first-use decoder loads")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows at once, even through a pipe
    if args.smoke:
        args.streams, args.rounds, args.cold = [2], 1, True
    per_worker = max(args.streams_per_worker, math.ceil(max(args.streams) / args.workers))
    fixtures, rng = load_fixtures(), random.Random(args.seed)

    print(f"server: {args.workers} engine worker(s) x {per_worker} streams; {args.rounds} utterances per stream")
    server, levels = Server(args.workers, per_worker), []
    try:
        if not args.cold:
            # A server loads a decoder (0.18 s of CPU, ~90 MB) the first time a worker slot is used
            # and keeps it for later streams; measure that steady state, not the first start.
            print(f"  warm-up: {max(args.streams)} streams, 1 utterance each (not measured)")
            asyncio.run(run_level(server, max(args.streams), 1, fixtures, rng))
            time.sleep(1.0)
        for n in args.streams:
            levels.append(level := asyncio.run(run_level(server, n, args.rounds, fixtures, rng)))
            print(f"  {n:>3} streams: commit p95 {fmt(level['commit_ms']['p95'])} ms, errors {level['errors']}"
                  + "".join(f"\n        {e}" for e in level["error_samples"][:3]))
            time.sleep(1.0)  # let the server end the sessions
    finally:
        server.stop()

    ref = next((v for v in levels if v["streams"] == TARGETS["streams"]), max(levels, key=lambda v: v["streams"]))
    print(f"decoding the same audio with the engine alone ({ref['streams']} streams' utterances)")
    plans = [plan_for(i, args.rounds, fixtures) for i in range(ref["streams"])]
    base = engine_baseline(plans, math.ceil(ref["streams"] / args.workers))
    server_cpu = ref["server_cpu_per_audio_second"]
    cpu = {"streams": ref["streams"], **base, "server_cpu_per_audio_second": server_cpu, "server_wer": ref["wer"],
           "server_main_cpu_per_audio_second": ref["server_main_cpu_per_audio_second"],
           "workers_cpu_per_audio_second": ref["workers_cpu_per_audio_second"],
           **{f"ratio_vs_{k}": server_cpu / base[f"{k}_cpu_per_audio_second"]
              for k in ("raw", "raw_interleaved", "pipeline_interleaved", "raw_paced")}}
    best = max((v["streams"] for v in levels if v["sustained"]), default=None)
    print("\n" + report(levels, cpu, best))

    machine = {"cpu_count": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
               "platform": platform.platform(), "python": platform.python_version(),
               "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)}
    settings = {**vars(args), "out": str(args.out), "streams_per_worker": per_worker, "chunk_ms": 100,
                "fixtures": FIXTURES,
                "sustained_if": {"commit_p95_ms": SUSTAIN_P95_MS, "late_p99_ms": SUSTAIN_LATE_P99_MS}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                    "machine": machine, "settings": settings, "targets": TARGETS, "levels": levels,
                                    "cpu": cpu, "most_streams_sustained": best}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    # In smoke mode a broken stream fails the run (latencies are not judged: CI boxes vary);
    # in a full run, errors at high N are results.
    return 1 if args.smoke and any(v["errors"] or v["committed"] < v["streams"] * args.rounds for v in levels) else 0


if __name__ == "__main__":
    sys.exit(main())
