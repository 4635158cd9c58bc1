"""Realtime streaming benchmark: latency, capacity, CPU overhead and accuracy of a real server.

What is measured, and how:

* A real server (``python -m lectern serve``) runs as a subprocess on a free port with a
  throwaway data dir; the bench creates an API key with ``lectern admin create-key``.
* For each stream count N of the ramp, N asyncio clients speak the raw ElevenLabs Scribe
  realtime protocol over ``websockets`` (manual commits). Each client starts at a random
  moment within the first second, then streams single-sentence speech fixtures at real-time
  pace in 100 ms chunks, each sent when its audio would have finished "recording"
  (t0 + audio time, a monotonic schedule: no drift). After each utterance it sends a commit
  and keeps streaming the next one, ``--rounds`` utterances per socket.
* commit latency: monotonic time from sending the commit to receiving its
  ``committed_transcript``. first partial: from sending an utterance's first chunk to the
  first non-empty ``partial_transcript`` for it (each fixture opens with ~0.33 s of silence
  and the server shows partials only once its VAD hears speech, so this includes that lead-in).
  lateness: how far behind its schedule the sender was for each chunk (client-side pace).
* errors: error messages, failed connects, unexpected closes and missing commits.
* WER: committed text of all utterances vs the fixture transcripts (word-level edit distance).
* server CPU: user+system time of the server process and all its children (engine workers)
  over a level, per second of audio streamed. At N=8 (or the largest N run) it is compared
  with the raw engine decoding the very same utterances in this process (feed + partial per
  100 ms chunk, finish per utterance, ``time.process_time``), and with the worker's
  engine + VAD pipeline (``StreamPipeline``). The raw engine's WER on that audio is the
  accuracy baseline: streaming should lose none.
* "most streams sustained": the largest N with commit p95 <= 500 ms, no errors and a sender
  that kept real-time pace (p99 lateness <= 100 ms). Note that clients and server share the box.

Usage: .venv/bin/python bench/realtime.py [--streams 1 2 4 8] [--rounds 6] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil
import websockets

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "tests" / "fixtures" / "speech"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
FIXTURES = "fox weather meeting numbers kitchen train coffee directions library".split()
CHUNK_BYTES = 3200  # 100 ms of 16 kHz s16le
BYTES_PER_SECOND = 32000
SUSTAIN_P95_MS, SUSTAIN_LATE_P99_MS = 500.0, 100.0
TARGETS = {"streams": 8, "commit_p50_ms": 100.0, "commit_p95_ms": 200.0, "cpu_ratio": 1.10}
OK_TYPES = {"partial_transcript", "committed_transcript", "committed_transcript_with_timestamps", "warning"}


@dataclass
class Fixture:
    name: str
    pcm: bytes
    text: str
    chunks: list[bytes]
    messages: list[str]  # pre-encoded input_audio_chunk frames, so clients spend nothing on it

    @property
    def seconds(self) -> float:
        return len(self.pcm) / BYTES_PER_SECOND


def load_fixtures() -> list[Fixture]:
    out = []
    for name in FIXTURES:
        with wave.open(str(SPEECH / f"{name}.wav")) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2), name
            pcm = w.readframes(w.getnframes())
        chunks = [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]
        messages = [json.dumps({"message_type": "input_audio_chunk", "audio_base_64": base64.b64encode(c).decode(),
                                "commit": False, "sample_rate": 16000}) for c in chunks]
        out.append(Fixture(name, pcm, (SPEECH / f"{name}.txt").read_text().strip(), chunks, messages))
    return out


COMMIT_MESSAGE = json.dumps({"message_type": "input_audio_chunk", "audio_base_64": "", "commit": True,
                             "sample_rate": 16000})


def plan_for(client: int, rounds: int, fixtures: list[Fixture]) -> list[Fixture]:
    """Client i speaks fixtures i, i+1, ... so that concurrent streams say different things."""
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
    total = sum(len(words(r)) for r, _ in pairs)
    return sum(edits(words(r), words(h)) for r, h in pairs) / max(total, 1)


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None when there is nothing to rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# -- server -----------------------------------------------------------------------------------


class Server:
    def __init__(self, workers: int, streams_per_worker: int) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="lectern-bench-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.env = {**os.environ, "LECTERN_DATA_DIR": self.dir.name, "LECTERN_CREATE_DEV_KEY": "false",
                    "LECTERN_LOG_LEVEL": "warning", "LECTERN_ENGINE_WORKERS": str(workers),
                    "LECTERN_STREAMS_PER_WORKER": str(streams_per_worker)}
        self.log = open(Path(self.dir.name) / "server.log", "w+")
        self.proc = subprocess.Popen([PYTHON, "-m", "lectern", "serve", "--port", str(self.port)], env=self.env,
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_healthy()
        created = subprocess.run([PYTHON, "-m", "lectern", "admin", "create-key", "--tenant", "bench", "--user",
                                  "bench"], env=self.env, cwd=ROOT, capture_output=True, text=True, check=True)
        self.key = created.stdout.strip().splitlines()[-1]

    def _wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not healthy after {timeout:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text().splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """user+system of the server and all its descendants (engine workers, resource tracker)."""
        root = psutil.Process(self.proc.pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.dir.cleanup()


# -- clients ----------------------------------------------------------------------------------


@dataclass
class Utterance:
    fixture: Fixture
    first_sent: float = 0.0
    first_partial: float | None = None
    commit_sent: float = 0.0
    committed: float | None = None
    text: str = ""


@dataclass
class ClientResult:
    utterances: list[Utterance] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def run_client(url: str, key: str, plan: list[Fixture], delay: float, drain_timeout: float) -> ClientResult:
    result = ClientResult()
    open_utts: list[Utterance] = []  # sent (at least partly), not yet committed: oldest first
    all_committed = asyncio.Event()

    async def receive(ws: websockets.ClientConnection) -> None:
        async for raw in ws:
            now = time.monotonic()
            msg = json.loads(raw)
            kind = msg.get("message_type")
            if kind == "partial_transcript":
                if msg.get("text") and open_utts and open_utts[0].first_partial is None:
                    open_utts[0].first_partial = now
            elif kind == "committed_transcript":
                if not open_utts:
                    result.errors.append("committed_transcript with no commit pending")
                    continue
                utt = open_utts.pop(0)
                utt.committed, utt.text = now, msg.get("text", "")
                if len(result.utterances) == len(plan) and not open_utts:
                    all_committed.set()
            elif kind not in OK_TYPES:
                result.errors.append(f"{kind}: {msg.get('error', msg)}")
        if not all_committed.is_set():
            result.errors.append(f"closed by the server early: {ws.close_code} {ws.close_reason}")

    await asyncio.sleep(delay)
    try:
        async with websockets.connect(url, additional_headers={"xi-api-key": key}, max_size=None,
                                      compression=None, open_timeout=30) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if first.get("message_type") != "session_started":
                result.errors.append(f"{first.get('message_type')}: {first.get('error', first)}")
                return result
            receiver = asyncio.create_task(receive(ws))
            t0, sent_bytes = time.monotonic(), 0
            for fixture in plan:
                utt = Utterance(fixture)
                for i, (chunk, message) in enumerate(zip(fixture.chunks, fixture.messages)):
                    sent_bytes += len(chunk)
                    due = t0 + sent_bytes / BYTES_PER_SECOND  # the moment this chunk's audio has been "recorded"
                    if (wait := due - time.monotonic()) > 0:
                        await asyncio.sleep(wait)
                    now = time.monotonic()
                    result.lateness.append(now - due)
                    if i == 0:
                        utt.first_sent = now
                        open_utts.append(utt)
                        result.utterances.append(utt)
                    await ws.send(message)
                utt.commit_sent = time.monotonic()
                await ws.send(COMMIT_MESSAGE)
            try:
                await asyncio.wait_for(all_committed.wait(), drain_timeout)
            except TimeoutError:
                result.errors.append(f"{len(open_utts)} commit(s) unanswered after {drain_timeout:g} s")
            receiver.cancel()
    except (OSError, websockets.WebSocketException, TimeoutError) as exc:
        result.errors.append(f"connection: {type(exc).__name__}: {exc}")
    return result


async def run_level(server: Server, n: int, rounds: int, fixtures: list[Fixture], rng: random.Random) -> dict:
    url = (f"ws://127.0.0.1:{server.port}/v1/speech-to-text/realtime"
           "?model_id=scribe_v2_realtime&audio_format=pcm_16000&commit_strategy=manual")
    plans = [plan_for(i, rounds, fixtures) for i in range(n)]
    cpu0, client0, wall0 = server.cpu_seconds(), time.process_time(), time.monotonic()
    results = await asyncio.gather(*(run_client(url, server.key, plan, rng.random(), 15.0) for plan in plans))
    cpu, client_cpu, wall = server.cpu_seconds() - cpu0, time.process_time() - client0, time.monotonic() - wall0
    utts = [u for r in results for u in r.utterances]
    commit_ms = [1000 * (u.committed - u.commit_sent) for u in utts if u.committed is not None]
    partial_ms = [1000 * (u.first_partial - u.first_sent) for u in utts if u.first_partial is not None]
    late_ms = [1000 * x for r in results for x in r.lateness]
    errors = [e for r in results for e in r.errors]
    audio = sum(f.seconds for plan in plans for f in plan)
    level = {
        "streams": n, "utterances": len(utts), "committed": len(commit_ms), "audio_seconds": round(audio, 2),
        "wall_seconds": round(wall, 2),
        "commit_ms": {"p50": pct(commit_ms, 50), "p95": pct(commit_ms, 95), "max": max(commit_ms, default=None)},
        "first_partial_ms": {"p50": pct(partial_ms, 50), "p95": pct(partial_ms, 95), "missing": len(utts) - len(partial_ms)},
        "lateness_ms": {"p99": pct(late_ms, 99), "max": max(late_ms, default=None)},
        "errors": len(errors), "error_samples": sorted(set(errors))[:10],
        "wer": wer([(u.fixture.text, u.text) for u in utts if u.committed is not None]),
        "server_cpu_seconds": round(cpu, 3), "server_cpu_per_audio_second": cpu / audio,
        "client_cpu_seconds": round(client_cpu, 3),
    }
    level["sustained"] = bool(level["errors"] == 0 and len(commit_ms) == len(utts) == n * rounds
                              and commit_ms and level["commit_ms"]["p95"] <= SUSTAIN_P95_MS
                              and level["lateness_ms"]["p99"] <= SUSTAIN_LATE_P99_MS)
    return level


# -- the engine alone, on the same audio ------------------------------------------------------


def engine_baseline(plans: list[list[Fixture]]) -> dict:
    """CPU and WER of the raw engine, and of the worker's engine+VAD pipeline, on the same utterances."""
    from lectern.speech.audio import AudioFormat
    from lectern.speech.engines.pocketsphinx import PocketSphinxEngine
    from lectern.speech.pipeline import StreamPipeline, StreamSpec
    from lectern.speech.vad import load_vad_model

    engine, vad_model = PocketSphinxEngine(), load_vad_model()
    audio = sum(f.seconds for plan in plans for f in plan)
    raw_cpu, pipe_cpu, raw_pairs, pipe_pairs = 0.0, 0.0, [], []
    for plan in plans:  # one recognizer per stream, as the server has
        rec = engine.recognizer()
        start = time.process_time()
        for fixture in plan:
            rec.start()
            for chunk in fixture.chunks:
                rec.feed(chunk)
                rec.partial()
            raw_pairs.append((fixture.text, " ".join(w.text for w in rec.finish())))
        raw_cpu += time.process_time() - start
        rec.close()
        pipeline = StreamPipeline(StreamSpec(AudioFormat("pcm_s16le", 16000)), engine.recognizer(), vad_model)
        start = time.process_time()
        for fixture in plan:
            for chunk in fixture.chunks:
                pipeline.feed(chunk)
            pipe_pairs.append((fixture.text, " ".join(w.text for w in pipeline.finish())))
        pipe_cpu += time.process_time() - start
        pipeline.close()
    return {"audio_seconds": round(audio, 2), "raw_cpu_per_audio_second": raw_cpu / audio,
            "pipeline_cpu_per_audio_second": pipe_cpu / audio, "raw_wer": wer(raw_pairs), "pipeline_wer": wer(pipe_pairs)}


# -- report -----------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def report(levels: list[dict], cpu: dict, best: int | None) -> str:
    head = ("streams", "utts", "commit p50", "p95", "max", "partial p50", "p95", "late p99", "max", "errors",
            "WER", "srv CPU/audio-s", "ok")
    rows = [head] + [(
        str(l["streams"]), str(l["utterances"]), fmt(l["commit_ms"]["p50"]), fmt(l["commit_ms"]["p95"]),
        fmt(l["commit_ms"]["max"]), fmt(l["first_partial_ms"]["p50"]), fmt(l["first_partial_ms"]["p95"]),
        fmt(l["lateness_ms"]["p99"]), fmt(l["lateness_ms"]["max"]), str(l["errors"]), f"{l['wer']:.3f}",
        f"{l['server_cpu_per_audio_second']:.4f}", "yes" if l["sustained"] else "NO") for l in levels]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("(times in ms; commit = commit sent -> committed_transcript; partial = first chunk -> first "
                 "non-empty partial; late = sender behind its real-time schedule)")
    lines.append("")
    lines.append(f"most streams sustained (commit p95 <= {SUSTAIN_P95_MS:g} ms, no errors, sender p99 late <= "
                 f"{SUSTAIN_LATE_P99_MS:g} ms): {best if best is not None else 'none'}")

    def check(label: str, value: float | None, target: float, unit: str = "", digits: str = ".0f") -> str:
        verdict = "-" if value is None else ("PASS" if value <= target else f"MISS by {value - target:{digits}}{unit}")
        return f"  {label:<48} {fmt(value, digits):>8}{unit}  target <= {target:{digits}}{unit}  {verdict}"

    lines.append("targets:")
    at = next((l for l in levels if l["streams"] == TARGETS["streams"]), None)
    n = TARGETS["streams"]
    lines.append(check(f"commit p50 @ {n} streams", at and at["commit_ms"]["p50"], TARGETS["commit_p50_ms"], " ms"))
    lines.append(check(f"commit p95 @ {n} streams", at and at["commit_ms"]["p95"], TARGETS["commit_p95_ms"], " ms"))
    if cpu:
        lines.append(check(f"server CPU / raw engine CPU @ {cpu['streams']} streams", cpu["ratio_vs_raw"],
                           TARGETS["cpu_ratio"], "", ".3f"))
        lines.append(check("server WER - raw engine WER (same audio)", cpu["server_wer"] - cpu["raw_wer"], 0.0, "",
                           ".3f"))
        lines.append(f"  CPU per audio second: server {cpu['server_cpu_per_audio_second']:.4f}, raw engine "
                     f"{cpu['raw_cpu_per_audio_second']:.4f}, engine+VAD pipeline "
                     f"{cpu['pipeline_cpu_per_audio_second']:.4f} (server / pipeline = {cpu['ratio_vs_pipeline']:.3f})")
        lines.append(f"  WER: server {cpu['server_wer']:.3f}, raw engine {cpu['raw_wer']:.3f}, "
                     f"pipeline {cpu['pipeline_wer']:.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 12, 16], help="stream counts to ramp")
    parser.add_argument("--rounds", type=int, default=6, help="utterances per stream (one socket)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="LECTERN_ENGINE_WORKERS")
    parser.add_argument("--streams-per-worker", type=int, default=16, help="LECTERN_STREAMS_PER_WORKER (raised to fit)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the start staggering")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "realtime.json")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI: 2 streams, 1 round")
    args = parser.parse_args()
    if args.smoke:
        args.streams, args.rounds = [2], 1
    per_worker = max(args.streams_per_worker, math.ceil(max(args.streams) / args.workers))
    fixtures, rng = load_fixtures(), random.Random(args.seed)

    print(f"starting server: {args.workers} worker(s) x {per_worker} streams", flush=True)
    server = Server(args.workers, per_worker)
    levels = []
    try:
        for n in args.streams:
            level = asyncio.run(run_level(server, n, args.rounds, fixtures, rng))
            levels.append(level)
            print(f"  {n:>3} streams: commit p95 {fmt(level['commit_ms']['p95'])} ms, errors {level['errors']}",
                  flush=True)
            time.sleep(1.0)  # let the server release the sessions
    finally:
        server.stop()

    cpu_level = next((l for l in levels if l["streams"] == TARGETS["streams"]), max(levels, key=lambda l: l["streams"]))
    print(f"decoding the same audio with the engine alone ({cpu_level['streams']} streams' utterances)", flush=True)
    base = engine_baseline([plan_for(i, args.rounds, fixtures) for i in range(cpu_level["streams"])])
    cpu = {"streams": cpu_level["streams"], **base, "server_cpu_per_audio_second": cpu_level["server_cpu_per_audio_second"],
           "server_wer": cpu_level["wer"],
           "ratio_vs_raw": cpu_level["server_cpu_per_audio_second"] / base["raw_cpu_per_audio_second"],
           "ratio_vs_pipeline": cpu_level["server_cpu_per_audio_second"] / base["pipeline_cpu_per_audio_second"]}
    best = max((l["streams"] for l in levels if l["sustained"]), default=None)
    print()
    print(report(levels, cpu, best))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
                    "platform": platform.platform(), "python": sys.version.split()[0],
                    "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
        "settings": {"streams": args.streams, "rounds": args.rounds, "workers": args.workers,
                     "streams_per_worker": per_worker, "chunk_ms": 100, "fixtures": FIXTURES, "seed": args.seed,
                     "smoke": args.smoke, "sustain": {"commit_p95_ms": SUSTAIN_P95_MS,
                                                      "lateness_p99_ms": SUSTAIN_LATE_P99_MS}},
        "targets": TARGETS, "levels": levels, "cpu": cpu, "most_streams_sustained": best,
    }, indent=2) + "\n")
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
