"""Soak: the server's memory over a long real-time stream (or several), for either engine.

* A real ``lectern serve`` (``realtime.Server``: free port, throwaway data dir, key made with
  ``lectern admin create-key``) with ``LECTERN_DEFAULT_MODEL=--model`` (default whisper-tiny.en),
  ``LECTERN_ENGINE_WORKERS=--workers`` (default os.cpu_count()), and
  ``LECTERN_STREAMS_PER_WORKER`` / ``LECTERN_WHISPER_STREAMS_PER_WORKER`` raised to fit
  ``--streams``; its ``/healthz`` must name the model as its engine.
* ``--streams`` K clients (default 1) each hold one ElevenLabs realtime socket
  (``/v1/speech-to-text/realtime``, ``model_id=scribe_v2_realtime``, ``commit_strategy=vad``,
  default VAD settings: the server commits after 1.5 s of silence) for ``--minutes`` (default 30):
  the speech fixtures in a loop (stream i starts at fixture i), each followed by a pause of
  ``--pause`` seconds (uniform, seeded; default 2-4 s) of low noise (Gaussian, ~-60 dBFS), all in
  100 ms ``input_audio_chunk``s sent at real-time pace (t0 + audio time, a monotonic schedule).
  After the last chunk, a stream sends 2 s more of the pause, waits up to 5 s for its last
  ``committed_transcript``, and closes.
* RSS (psutil) of the server process and of each of its engine workers (children whose command
  line is multiprocessing's), and their sum at one instant, every ``--sample-seconds`` (default
  10) while the streams run (the first that long after they start); also once before (idle,
  after the server settled) and once 5 s after the sockets closed. Growth: the median of the
  samples in the last window minus the median of those in the first window, a window being the
  first / last 5 minutes of the stream (or half of it when it lasts under 10 minutes); target
  <= 5 MB for the total and each process. Beside it (runs of three windows or more), the growth
  from the second window to the last: what grows once start-up is over (the first window holds
  the start-up: a Whisper worker's RSS climbs for its first minutes of speech, then stays flat).
  Slope: least squares over the samples after the first window, MB per hour (when they span 5
  minutes or more). A process that was replaced (a new pid in a role) is reported.
* Beside it, for a sanity check: committed transcripts, partials, errors (error messages, early
  closes), speech end -> committed_transcript p50/p95 (the VAD's 1.5 s included), the WER of
  each stream's committed texts against the fixtures it spoke (joined, aggregated; lowercase,
  punctuation dropped, digits read one by one), the sender's p99 lateness, the server's CPU per
  audio second, and "other": cores other processes kept busy (the box is shared).

Usage: .venv/bin/python bench/soak.py [--minutes 30] [--streams 1] [--model whisper-tiny.en]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is no package: import its siblings
from batch import server_processes, settle
from protocols import table
from realtime import (
    BYTES_PER_SECOND,
    CHUNK_BYTES,
    MODELS,
    ROOT,
    Fixture,
    Server,
    busy_cpu_seconds,
    chunk_message,
    connect_scribe,
    fmt,
    load_fixtures,
    pct,
    refusal,
    serving,
    wer,
)

URL = "/v1/speech-to-text/realtime?model_id=scribe_v2_realtime&audio_format=pcm_16000&commit_strategy=vad"
NOISE_RMS = 30.0  # int16 units: ~-60 dBFS
TAIL_SECONDS = 2.0  # of pause after the last chunk, so the VAD commits the last utterance
GROWTH_TARGET_MB = 5.0
WINDOW_SECONDS = 300.0
SLOPE_MIN_SECONDS = 300.0  # a slope over less is noise (RSS moves in steps of a few MB)


@dataclass
class Spoken:
    fixture: Fixture
    speech_end_sent: float | None = None


@dataclass
class StreamResult:
    spoken: list[Spoken] = field(default_factory=list)
    committed: list[tuple[float, str]] = field(default_factory=list)  # (received, text)
    partials: int = 0
    lateness: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0


def noise_messages(rng: random.Random, count: int = 64) -> list[str]:
    """Pre-encoded 100 ms chunks of low noise: a pause costs the client nothing to send."""
    gen = np.random.default_rng(rng.randrange(2**32))
    return [chunk_message(np.clip(gen.normal(0.0, NOISE_RMS, CHUNK_BYTES // 2), -32768, 32767)
                          .astype("<i2").tobytes()) for _ in range(count)]


async def run_stream(url: str, key: str, index: int, fixtures: list[Fixture], seconds: float,
                     pause: tuple[float, float], rng: random.Random, noise: list[str]) -> StreamResult:
    result = StreamResult()
    closed = asyncio.Event()

    async def receive(ws: websockets.ClientConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                msg = json.loads(raw)
                kind = msg.get("message_type")
                if kind == "committed_transcript":
                    result.committed.append((time.monotonic(), msg.get("text", "")))
                elif kind == "partial_transcript":
                    result.partials += bool(msg.get("text"))
                elif kind not in ("session_started", "committed_transcript_with_timestamps", "warning"):
                    result.errors.append(f"{kind}: {msg.get('error', 'unexpected')}")
        if not closed.is_set():
            result.errors.append(f"closed by the server early: {ws.close_code} {ws.close_reason}")

    try:
        async with connect_scribe(url, key) as ws:
            if refused := await refusal(ws):
                result.errors.append(refused)
                return result
            receiver = asyncio.create_task(receive(ws))
            t0, sent, n, k = time.monotonic(), 0, index, 0

            async def send(message: str) -> float:
                nonlocal sent
                sent += CHUNK_BYTES
                due = t0 + sent / BYTES_PER_SECOND
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                result.lateness.append((now := time.monotonic()) - due)
                await ws.send(message)
                return now

            while sent / BYTES_PER_SECOND < seconds and not receiver.done():
                fixture = fixtures[n % len(fixtures)]
                n += 1
                spoken = Spoken(fixture)
                result.spoken.append(spoken)
                end_chunk = fixture.end_chunk % len(fixture.chunks)
                for i, message in enumerate(fixture.messages):
                    now = await send(message)
                    if i == end_chunk:
                        spoken.speech_end_sent = now
                for _ in range(round(rng.uniform(*pause) * 10)):
                    k += 1
                    await send(noise[k % len(noise)])
            for _ in range(round(TAIL_SECONDS * 10)):
                k += 1
                await send(noise[k % len(noise)])
            result.audio_seconds = sent / BYTES_PER_SECOND
            deadline = time.monotonic() + 5.0
            while len(result.committed) < len(result.spoken) and time.monotonic() < deadline and not receiver.done():
                await asyncio.sleep(0.1)
            closed.set()
            receiver.cancel()
    except (OSError, websockets.WebSocketException, TimeoutError) as exc:
        result.errors.append(f"connection: {type(exc).__name__}: {exc}")
    return result


def sample(server: Server) -> dict[str, Any]:
    """RSS per role (server, worker i) and pid, at one instant."""
    rss: dict[str, int] = {}
    pids: dict[str, int] = {}
    for pid, (role, p) in server_processes(server).items():
        if role == "resource tracker" or role == "child":
            continue
        try:
            rss[role] = p.memory_info().rss
        except psutil.Error:
            continue
        pids[role] = pid
    return {"rss": rss, "pids": pids}


async def sampler(server: Server, every: float, samples: list[dict], stop: asyncio.Event, t0: float) -> None:
    """A sample every ``every`` seconds from t0 (the first at t0 + every), until ``stop``."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every - (time.monotonic() - t0) % every)
            return
        samples.append({"t": time.monotonic() - t0, **sample(server)})


async def soak(server: Server, streams: int, seconds: float, every: float, pause: tuple[float, float],
               seed: int) -> dict[str, Any]:
    fixtures = load_fixtures()
    url = f"ws://127.0.0.1:{server.port}{URL}"
    rngs = [random.Random(seed * 1000 + i) for i in range(streams)]
    noise = noise_messages(random.Random(seed))
    samples: list[dict] = []
    stop = asyncio.Event()
    (cpu_main0, cpu_workers0), box0, self0 = server.cpu_seconds(), busy_cpu_seconds(), time.process_time()
    t0 = time.monotonic()
    task = asyncio.create_task(sampler(server, every, samples, stop, t0))
    results = await asyncio.gather(*(run_stream(url, server.key, i, fixtures, seconds, pause, rngs[i], noise)
                                     for i in range(streams)))
    wall = time.monotonic() - t0
    stop.set()
    await task
    cpu_main1, cpu_workers1 = server.cpu_seconds()
    cpu = cpu_main1 - cpu_main0 + cpu_workers1 - cpu_workers0
    other = max(0.0, busy_cpu_seconds() - box0 - cpu - (time.process_time() - self0)) / wall
    return {"results": results, "samples": samples, "wall_seconds": wall, "server_cpu_seconds": cpu,
            "other_cpu_cores": other}


def rss_mb(one: dict[str, Any], role: str) -> float | None:
    """A sample's RSS of one role, or of all ("total"), in MB."""
    if role == "total":
        return sum(one["rss"].values()) / 1e6
    return one["rss"][role] / 1e6 if role in one["rss"] else None


def summarize(samples: list[dict], duration: float) -> dict[str, Any]:
    window = WINDOW_SECONDS if duration >= 2 * WINDOW_SECONDS else duration / 2
    roles = sorted({r for s in samples for r in s["rss"]}, key=lambda r: (r != "server", r))
    out: dict[str, Any] = {"window_seconds": window, "processes": {}}
    for role in [*roles, "total"]:
        series = [(s["t"], (sum(s["rss"].values()) if role == "total" else s["rss"].get(role))) for s in samples]
        series = [(t, v / 1e6) for t, v in series if v is not None]
        first = [v for t, v in series if t <= window]
        last = [v for t, v in series if t >= duration - window]
        steady = [(t, v) for t, v in series if t > window]  # the slope after the first window
        slope = None
        if len(steady) >= 3 and steady[-1][0] - steady[0][0] >= SLOPE_MIN_SECONDS:
            ts, vs = np.array([t for t, _ in steady]), np.array([v for _, v in steady])
            slope = float(np.polyfit(ts, vs, 1)[0]) * 3600
        growth = statistics.median(last) - statistics.median(first) if first and last else None
        # The same from the window after the first, when the run has room for it: what grows
        # once start-up (first recognizers, allocator arenas, caches) is over.
        second = [v for t, v in series if window < t <= 2 * window] if duration >= 3 * window else []
        later = statistics.median(last) - statistics.median(second) if second and last else None
        pids = sorted({s["pids"][role] for s in samples if role in s["pids"]}) if role != "total" else []
        out["processes"][role] = {
            "first_window_mb": round(statistics.median(first), 1) if first else None,
            "last_window_mb": round(statistics.median(last), 1) if last else None,
            "growth_mb": None if growth is None else round(growth, 2),
            "second_window_mb": round(statistics.median(second), 1) if second else None,
            "growth_after_first_window_mb": None if later is None else round(later, 2),
            "min_mb": round(min(v for _, v in series), 1) if series else None,
            "max_mb": round(max(v for _, v in series), 1) if series else None,
            "slope_mb_per_hour": None if slope is None else round(slope, 2),
            "pids": pids, "replaced": len(pids) > 1,
            "pass": growth is not None and growth <= GROWTH_TARGET_MB,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long each stream speaks")
    parser.add_argument("--streams", type=int, default=1, help="concurrent streams")
    parser.add_argument("--model", choices=MODELS, default="whisper-tiny.en", help="LECTERN_DEFAULT_MODEL")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="LECTERN_ENGINE_WORKERS")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="RSS sampling interval")
    parser.add_argument("--pause", type=float, nargs=2, default=(2.0, 4.0), metavar=("MIN", "MAX"),
                        help="seconds of low noise after each utterance")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    seconds = args.minutes * 60
    per_worker = max(8, math.ceil(args.streams / args.workers))

    print(f"server: {args.model}, {args.workers} engine worker(s) x {per_worker} streams")
    server = Server(args.workers, per_worker, model=args.model, whisper_streams_per_worker=per_worker)
    try:
        health = serving(server, args.model)
        settle(server)
        idle = sample(server)
        print(f"soak: {args.streams} stream(s) x {args.minutes:g} min at real time, RSS every {args.sample_seconds:g} s")
        run = asyncio.run(soak(server, args.streams, seconds, args.sample_seconds, tuple(args.pause), args.seed))
        time.sleep(5.0)
        after = sample(server)
    finally:
        server.stop()

    results: list[StreamResult] = run["results"]
    duration = max((s["t"] for s in run["samples"]), default=0.0)
    mem = summarize(run["samples"], duration)
    errors = [e for r in results for e in r.errors]
    commit_ms = []
    for r in results:  # the i-th commit answers the i-th utterance when the VAD split them as spoken
        for spoken, (received, _) in zip(r.spoken, r.committed, strict=False):
            if spoken.speech_end_sent is not None and len(r.committed) == len(r.spoken):
                commit_ms.append(1000 * (received - spoken.speech_end_sent))
    late_ms = [1000 * x for r in results for x in r.lateness]
    audio = sum(r.audio_seconds for r in results)
    stats = {
        "streams": args.streams, "audio_seconds": round(audio, 1), "wall_seconds": round(run["wall_seconds"], 1),
        "utterances": sum(len(r.spoken) for r in results), "committed": sum(len(r.committed) for r in results),
        "partials": sum(r.partials for r in results), "errors": len(errors), "error_samples": sorted(set(errors))[:10],
        "speech_end_to_committed_ms": {"p50": pct(commit_ms, 50), "p95": pct(commit_ms, 95)},
        "wer": wer([(" ".join(s.fixture.text for s in r.spoken), " ".join(t for _, t in r.committed))
                    for r in results]),
        "late_p99_ms": pct(late_ms, 99),
        "server_cpu_per_audio_second": run["server_cpu_seconds"] / audio if audio else None,
        "other_cpu_cores": round(run["other_cpu_cores"], 2),
    }

    lines = [(f"soak: {args.model}, {args.streams} stream(s), {duration / 60:.1f} min of streaming, RSS every "
              f"{args.sample_seconds:g} s ({len(run['samples'])} samples)")]
    lines += ["  " + s for s in table(
        ("RSS MB", "idle before", "first window", "last window", "growth", "target", "verdict",
         "growth from 2nd window", "slope MB/h", "min", "max", "after close"),
        [(role + (" (replaced!)" if m["replaced"] else ""), fmt(rss_mb(idle, role), ".1f"),
          fmt(m["first_window_mb"], ".1f"), fmt(m["last_window_mb"], ".1f"), fmt(m["growth_mb"], "+.2f"),
          f"<= {GROWTH_TARGET_MB:g}", "PASS" if m["pass"] else "MISS", fmt(m["growth_after_first_window_mb"], "+.2f"),
          fmt(m["slope_mb_per_hour"], "+.1f"), fmt(m["min_mb"], ".1f"), fmt(m["max_mb"], ".1f"),
          fmt(rss_mb(after, role), ".1f"))
         for role, m in mem["processes"].items()])]
    lines.append(f"  (growth: median of the last {mem['window_seconds'] / 60:.1f} min of samples minus median of the "
                 "first; growth from 2nd window: the same from the window after the first (runs of 3 windows or "
                 "more); slope: after the first window; idle before: after start-up, no stream; after close: 5 s "
                 "after the sockets closed)")
    lines.append(f"  streams: {stats['utterances']} utterances, {stats['committed']} committed, {stats['partials']} "
                 f"partials, {stats['errors']} errors; speech end -> committed p50/p95 "
                 f"{fmt(stats['speech_end_to_committed_ms']['p50'])}/{fmt(stats['speech_end_to_committed_ms']['p95'])}"
                 f" ms; WER {stats['wer']:.3f}; sender late p99 {fmt(stats['late_p99_ms'])} ms; server CPU "
                 f"{fmt(stats['server_cpu_per_audio_second'], '.3f')} s per audio s; other {stats['other_cpu_cores']:.2f}"
                 " cores")
    lines += [f"    {e}" for e in stats["error_samples"][:5]]
    print("\n" + "\n".join(lines))

    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
               "load_average": [round(x, 2) for x in os.getloadavg()]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"), "model": args.model, "healthz": health,
        "machine": machine, "settings": {**vars(args), "out": str(args.out), "streams_per_worker": per_worker,
                                         "noise_rms": NOISE_RMS, "growth_target_mb": GROWTH_TARGET_MB},
        "memory": mem, "streams": stats, "idle_before": idle, "after_close": after,
        "samples": [{"t": round(s["t"], 1), "rss_mb": {k: round(v / 1e6, 2) for k, v in s["rss"].items()},
                     "pids": s["pids"]} for s in run["samples"]],
    }, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0 if mem["processes"]["total"]["pass"] and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
