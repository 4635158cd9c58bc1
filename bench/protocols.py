"""Protocol adapters benchmark: ElevenLabs, Reverie and native over one streaming core; resume cost.

* A real ``lectern serve`` (``realtime.Server``: free port, throwaway data dir, API key) serves
  every protocol. For each N of ``--streams`` and each protocol, N asyncio clients on raw
  ``websockets`` each speak ``--rounds`` single-sentence fixtures (``realtime.plan_for``: client i
  says fixtures i, i+1, ...), starting at a random moment in the first second, in 100 ms chunks
  at real-time pace (each chunk sent when its audio would have been "recorded").
* Every protocol gets the same work from the core: one connection, hence one session, per
  utterance, transcribed as one segment that ends when the client says the audio is over.
    elevenlabs  ``/v1/speech-to-text/realtime``, commit_strategy=manual: the utterance's last
                chunk carries ``commit: true``; final = ``committed_transcript``; then the
                client closes.
    reverie     ``/stream`` (defaults: silence 1 s, timeout 15 s; fixtures end in ~0.5 s of
                silence, so the VAD never ends them first): binary PCM, then a binary
                ``--EOF--``; final = the ``final: true`` message, which must say ``EOF received``;
                the server then closes.
    native      ``/api/v1/speech-services/stream``, ``enableEndpointDetection: false`` (no VAD
                commits: the segment ends at ``session.end``): ``session.start``, binary PCM,
                ``session.end``; final = the last ``result.final``, done = ``session.completed``.
  Extra row ``elevenlabs-1ws``: the ElevenLabs client as real Scribe clients (and
  bench/realtime.py) use it, all ``--rounds`` utterances on one socket, each ending with a
  commit, the next one streamed at once without waiting: no per-utterance connection setup.
* final: from writing the utterance's finish signal (right after its last audio; for elevenlabs
  the last chunk itself) to receiving its final transcript. done (native): to
  ``session.completed``. Reverie's final leaves only after the session row is ended, as native's
  ``session.completed`` does, so those two compare; elevenlabs' ``committed_transcript`` and
  native's ``result.final`` leave as soon as the segment is stored.
  setup: connect begun -> ``session_started`` / ``ready`` / ``session.info``. partial: first chunk
  sent -> first non-empty partial (fixtures open with ~0.33 s of silence). late: how far behind
  its schedule the sender was, per chunk. errors: error messages, failed connects, early
  closes, missing finals, a Reverie final with another cause. WER: finals vs fixture texts.
* CPU: user+system of the server and of its engine workers from a level's start until the server
  is idle again (< 5 % of a core for 1 s), so work a level leaves behind (sessions ending after
  their final, a backlog) is its own, never the next level's; per second of audio, split into
  the server process (where adapters live: frame parsing, base64, JSON, auth, session rows) and
  the workers (recognition: the same audio for every protocol). Levels run protocol after
  protocol, the order rotated per level and pass; ``--repeats`` pools several passes. "other":
  cores other processes kept busy meanwhile (the box is shared: if not ~0, the numbers are not
  the server's alone). ok: no errors, every final, final p95 <= 500 ms and sender p99 late <=
  100 ms, as bench/realtime.py's "sustained".
* Load: a one-connection-per-utterance client waits for its final before its next utterance, so
  an overloaded server slows its clients down; ``elevenlabs-1ws`` streams on regardless, and its
  backlog (so its latency) grows through the level. A client gives up on a final after
  ``--final-timeout`` s (an error); its session still recognizes what it sent, holding a slot.
* resume (native only): ``--resume-trials`` sequential trials. A session streams a fixture at
  real-time pace; at a random point between 30 % and 70 % of it the client aborts the TCP
  transport (no close frame), waits ``--resume-gap`` s, reconnects with ``session.resume``, sends
  its audio again from ``audioReceivedBytes`` (what was "recorded" meanwhile goes at once, the
  rest at real-time pace), then ``session.end``. reconnect: connect begun -> ``session.info``
  (``resumed: true``); resume msg: ``session.resume`` written -> ``session.info``; lost: bytes the
  client sent that the server never accepted; final: ``session.end`` -> last ``result.final``;
  whole: trials whose final transcript (all segments, both connections) is word for word what the
  native protocol made of the same fixture without a cut (at the fewest streams measured, else
  one more uninterrupted utterance); WER against the fixture texts, cut and uncut.

Usage: .venv/bin/python bench/protocols.py [--streams 1 4 8] [--rounds 4] [--repeats 2]
                                           [--resume-trials 12] [--resume-gap 0.5] [--smoke]
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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is no package: import its sibling
from realtime import (
    BYTES_PER_SECOND,
    CHUNK_BYTES,
    FIXTURES,
    ROOT,
    SUSTAIN_LATE_P99_MS,
    SUSTAIN_P95_MS,
    Fixture,
    Server,
    busy_cpu_seconds,
    chunk_message,
    edits,
    fmt,
    load_fixtures,
    pct,
    plan_for,
    wer,
    words,
)

TENANT = "bench"  # realtime.Server makes its key for this tenant: Reverie's appid
PROTOCOLS = ("elevenlabs", "reverie", "native")
SESSION_ROW = "elevenlabs-1ws"
CONNECT = {"max_size": None, "compression": None, "open_timeout": 30}
FINAL_TIMEOUT = 60.0  # seconds a final may take before it counts as missing (--final-timeout)
IDLE_CORES = 0.05  # the server is idle below this CPU use, for 1 s
EOF = b"--EOF--"
SESSION_END = json.dumps({"type": "session.end"})


def native_start(key: str) -> str:
    return json.dumps({"type": "session.start", "authentication": {"apiKey": key}, "model": "default",
                       "sampleRate": 16000, "enableEndpointDetection": False})


@dataclass
class Utt:  # monotonic times
    fixture: Fixture
    connect: float = 0.0
    ready: float | None = None
    first_sent: float | None = None
    first_partial: float | None = None
    finish_sent: float | None = None
    final: float | None = None
    completed: float | None = None  # native only
    segments: dict[int, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(self.segments[i] for i in sorted(self.segments))


@dataclass
class StreamResult:
    utterances: list[Utt] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Adapter:
    """One protocol as a client speaks it: where to connect, what to send, what its messages mean."""

    name: str

    def __init__(self, server: Server) -> None:
        self.server = server
        self._frames: dict[str, list[str | bytes]] = {}

    def url(self) -> str:
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        return {}

    def opening(self) -> str | None:
        """The first message, if the protocol has the client speak first."""
        return None

    def is_ready(self, msg: dict) -> bool:
        raise NotImplementedError

    def frames(self, fixture: Fixture) -> list[str | bytes]:
        """The utterance's audio frames, its finish signal included (pre-encoded once)."""
        if fixture.name not in self._frames:
            self._frames[fixture.name] = self._encode(fixture)
        return self._frames[fixture.name]

    def _encode(self, fixture: Fixture) -> list[str | bytes]:
        raise NotImplementedError

    def audio_frames(self, fixture: Fixture) -> int:
        return len(fixture.chunks)

    def handle(self, msg: dict, utt: Utt, now: float, errors: list[str]) -> bool:
        """Account for a message; True once the utterance's stream is over."""
        raise NotImplementedError


class ElevenLabs(Adapter):
    name = "elevenlabs"

    def url(self) -> str:
        return (f"ws://127.0.0.1:{self.server.port}/v1/speech-to-text/realtime"
                "?model_id=scribe_v2_realtime&audio_format=pcm_16000&commit_strategy=manual")

    def headers(self) -> dict[str, str]:
        return {"xi-api-key": self.server.key}

    def is_ready(self, msg: dict) -> bool:
        return msg.get("message_type") == "session_started"

    def _encode(self, fixture: Fixture) -> list[str | bytes]:
        return [*fixture.messages[:-1], chunk_message(fixture.chunks[-1], commit=True)]

    def handle(self, msg: dict, utt: Utt, now: float, errors: list[str]) -> bool:
        kind = msg.get("message_type")
        if kind == "partial_transcript":
            if msg.get("text") and utt.first_partial is None:
                utt.first_partial = now
        elif kind == "committed_transcript":
            utt.final, utt.segments[0] = now, msg.get("text", "")
            return True
        elif kind not in ("committed_transcript_with_timestamps", "warning"):
            errors.append(f"{kind}: {msg.get('error', msg)}")
            return True
        return False


class Reverie(Adapter):
    name = "reverie"

    def url(self) -> str:
        return (f"ws://127.0.0.1:{self.server.port}/stream?appname=stt_stream&apikey={self.server.key}"
                f"&appid={TENANT}&src_lang=en&domain=generic&format=16k_int16")

    def is_ready(self, msg: dict) -> bool:
        return msg.get("cause") == "ready" and msg.get("success") is True

    def _encode(self, fixture: Fixture) -> list[str | bytes]:
        return [*fixture.chunks, EOF]

    def handle(self, msg: dict, utt: Utt, now: float, errors: list[str]) -> bool:
        if not msg.get("success", False):
            errors.append(f"{msg.get('cause')}: {msg.get('message', msg)}")
            return True
        if msg.get("final"):
            utt.final, utt.segments[0] = now, msg.get("text", "")
            if msg.get("cause") != "EOF received":
                errors.append(f"final with cause {msg.get('cause')!r}, not 'EOF received'")
            return True
        if msg.get("text") and utt.first_partial is None:
            utt.first_partial = now
        return False


class Native(Adapter):
    name = "native"

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/api/v1/speech-services/stream"

    def opening(self) -> str | None:
        return native_start(self.server.key)

    def is_ready(self, msg: dict) -> bool:
        return msg.get("type") == "session.info"

    def _encode(self, fixture: Fixture) -> list[str | bytes]:
        return [*fixture.chunks, SESSION_END]

    def handle(self, msg: dict, utt: Utt, now: float, errors: list[str]) -> bool:
        return native_message(msg, utt, now, errors)


def native_message(msg: dict, utt: Utt, now: float, errors: list[str]) -> bool:
    kind = msg.get("type")
    if kind == "result.partial":
        if msg.get("transcript") and utt.first_partial is None:
            utt.first_partial = now
    elif kind == "result.final":
        utt.final, utt.segments[msg["segmentIndex"]] = now, msg.get("transcript", "")
    elif kind == "session.completed":
        utt.completed = now
        return True
    elif kind != "session.info":
        errors.append(f"{kind}: {msg.get('code')}: {msg.get('message', msg)}")
        return True
    return False


ADAPTERS: dict[str, type[Adapter]] = {"elevenlabs": ElevenLabs, "reverie": Reverie, "native": Native}


async def paced_send(ws: websockets.ClientConnection, frames: list[str | bytes], audio: list[bytes], t0: float,
                     offset: int, result: StreamResult, on_first: Callable[[float], None] | None = None) -> int:
    """Send ``frames`` (``audio`` frames first, then any control frames at once), chunk i when its
    audio has been "recorded": t0 + its end's byte offset / byte rate. Returns the new offset."""
    for i, frame in enumerate(frames):
        if i < len(audio):
            offset += len(audio[i])
            due = t0 + offset / BYTES_PER_SECOND
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            now = time.monotonic()
            result.lateness.append(now - due)
            if i == 0 and on_first:
                on_first(now)
        await ws.send(frame)
    return offset


async def recv_json(ws: websockets.ClientConnection, timeout: float = 30.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def one_utterance(adapter: Adapter, fixture: Fixture, result: StreamResult) -> None:
    """One connection, one session, one utterance: connect, stream, finish, wait for the final."""
    utt = Utt(fixture, connect=time.monotonic())
    result.utterances.append(utt)
    errors: list[str] = []
    try:
        async with websockets.connect(adapter.url(), additional_headers=adapter.headers(), **CONNECT) as ws:
            if (opening := adapter.opening()) is not None:
                await ws.send(opening)
            first = await recv_json(ws)
            if not adapter.is_ready(first):
                result.errors.append(f"not ready: {first}")
                return
            utt.ready = time.monotonic()
            done = asyncio.Event()

            async def receive() -> None:
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for raw in ws:
                        if adapter.handle(json.loads(raw), utt, time.monotonic(), errors):
                            done.set()
                if not done.is_set():
                    errors.append(f"closed by the server before the final: {ws.close_code} {ws.close_reason}")
                    done.set()

            receiver = asyncio.create_task(receive())
            await paced_send(ws, adapter.frames(fixture), fixture.chunks, utt.ready, 0, result,
                             lambda now: setattr(utt, "first_sent", now))
            utt.finish_sent = time.monotonic()
            try:
                await asyncio.wait_for(done.wait(), FINAL_TIMEOUT)
            except TimeoutError:
                errors.append(f"no final after {FINAL_TIMEOUT:g} s")
            receiver.cancel()
    except (OSError, websockets.WebSocketException, TimeoutError) as exc:
        errors.append(f"connection: {type(exc).__name__}: {exc}")
    if utt.final is None and not errors:
        errors.append("no final")
    result.errors += errors


async def one_socket(adapter: ElevenLabs, plan: list[Fixture], result: StreamResult) -> None:
    """All of ``plan`` on one ElevenLabs socket, a commit closing each utterance."""
    pending: list[Utt] = []  # begun, not yet answered, oldest first: what a message is about
    done = asyncio.Event()
    connect = time.monotonic()
    try:
        async with websockets.connect(adapter.url(), additional_headers=adapter.headers(), **CONNECT) as ws:
            first = await recv_json(ws)
            if not adapter.is_ready(first):
                result.errors.append(f"not ready: {first}")
                return
            ready = time.monotonic()

            async def receive() -> None:
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for raw in ws:
                        now, msg = time.monotonic(), json.loads(raw)
                        if not pending:
                            continue
                        if adapter.handle(msg, pending[0], now, result.errors):
                            if msg.get("message_type") != "committed_transcript":
                                break  # an error: the server closes
                            pending.pop(0)
                            if len(result.utterances) == len(plan) and not pending:
                                break
                done.set()
                if len(result.utterances) < len(plan) or pending:
                    result.errors.append(f"closed by the server early: {ws.close_code} {ws.close_reason}")

            receiver = asyncio.create_task(receive())
            offset = 0
            for fixture in plan:
                utt = Utt(fixture, connect=connect, ready=ready)
                result.utterances.append(utt)
                pending.append(utt)
                offset = await paced_send(ws, adapter.frames(fixture), fixture.chunks, ready, offset, result,
                                          lambda now, u=utt: setattr(u, "first_sent", now))
                utt.finish_sent = time.monotonic()
                if done.is_set():
                    break
            try:
                await asyncio.wait_for(done.wait(), FINAL_TIMEOUT)
            except TimeoutError:
                result.errors.append(f"{len(pending)} commit(s) unanswered after {FINAL_TIMEOUT:g} s")
            receiver.cancel()
    except (OSError, websockets.WebSocketException, TimeoutError) as exc:
        result.errors.append(f"connection: {type(exc).__name__}: {exc}")
    missing = sum(u.final is None for u in result.utterances)
    if missing and not result.errors:
        result.errors.append(f"{missing} final(s) missing")


async def run_level(server: Server, protocol: str, n: int, rounds: int, fixtures: list[Fixture],
                    rng: random.Random) -> dict:
    adapter = ADAPTERS["elevenlabs" if protocol == SESSION_ROW else protocol](server)
    plans = [plan_for(i, rounds, fixtures) for i in range(n)]
    delays = [rng.random() for _ in plans]

    async def stream(plan: list[Fixture], delay: float) -> StreamResult:
        result = StreamResult()
        await asyncio.sleep(delay)
        if protocol == SESSION_ROW:
            await one_socket(adapter, plan, result)  # type: ignore[arg-type]
        else:
            for fixture in plan:
                await one_utterance(adapter, fixture, result)
        return result

    (main0, workers0), client0 = server.cpu_seconds(), time.process_time()
    box0, wall0 = busy_cpu_seconds(), time.monotonic()
    results = await asyncio.gather(*(stream(plan, delay) for plan, delay in zip(plans, delays)))
    settled = await settle(server)
    main1, workers1 = server.cpu_seconds()
    return {"protocol": protocol, "streams": n, "results": results, "audio": sum(f.seconds for p in plans for f in p),
            "main_cpu": main1 - main0, "workers_cpu": workers1 - workers0,
            "client_cpu": time.process_time() - client0, "box_cpu": busy_cpu_seconds() - box0,
            "wall": time.monotonic() - wall0, "settle": settled}


async def settle(server: Server, limit: float = 300.0) -> float | None:
    """Wait until the server and its workers are idle; the seconds that took, None if they never were."""
    start, quiet = time.monotonic(), 0
    last = sum(server.cpu_seconds())
    while time.monotonic() - start < limit:
        await asyncio.sleep(0.5)
        now = sum(server.cpu_seconds())
        quiet, last = (quiet + 1 if now - last < IDLE_CORES * 0.5 else 0), now
        if quiet >= 2:
            return time.monotonic() - start
    return None


def summarize(runs: list[dict]) -> dict:
    """One row of the table from the passes of one protocol at one N."""
    results = [r for run in runs for r in run["results"]]
    utts = [u for r in results for u in r.utterances]
    finals = [u for u in utts if u.final is not None and u.finish_sent is not None]
    final_ms = [1000 * (u.final - u.finish_sent) for u in finals]
    completed_ms = [1000 * (u.completed - u.finish_sent) for u in finals if u.completed is not None]
    setup_ms = [1000 * (u.ready - u.connect) for u in utts if u.ready is not None]
    partial_ms = [1000 * (u.first_partial - u.first_sent) for u in utts
                  if u.first_partial is not None and u.first_sent is not None]
    late_ms = [1000 * x for r in results for x in r.lateness]
    errors = [e for r in results for e in r.errors]
    audio, wall = sum(run["audio"] for run in runs), sum(run["wall"] for run in runs)
    main_cpu, workers_cpu = sum(run["main_cpu"] for run in runs), sum(run["workers_cpu"] for run in runs)
    client_cpu, box = sum(run["client_cpu"] for run in runs), sum(run["box_cpu"] for run in runs)
    out = {
        "protocol": runs[0]["protocol"], "streams": runs[0]["streams"], "passes": len(runs),
        "utterances": len(utts), "finals": len(finals), "audio_seconds": round(audio, 2),
        "wall_seconds": round(wall, 2),
        "final_ms": {"p50": pct(final_ms, 50), "p95": pct(final_ms, 95), "max": max(final_ms, default=None)},
        "completed_ms": {"p50": pct(completed_ms, 50), "p95": pct(completed_ms, 95),
                         "max": max(completed_ms, default=None)},
        "setup_ms": {"p50": pct(setup_ms, 50), "p95": pct(setup_ms, 95)},
        "first_partial_ms": {"p50": pct(partial_ms, 50), "p95": pct(partial_ms, 95),
                             "missing": len(utts) - len(partial_ms)},
        "lateness_ms": {"p99": pct(late_ms, 99), "max": max(late_ms, default=None)},
        "errors": len(errors), "error_samples": sorted(set(errors))[:10],
        "wer": wer([(u.fixture.text, u.text) for u in finals]),
        "server_cpu_per_audio_second": (main_cpu + workers_cpu) / audio,
        "server_main_cpu_per_audio_second": main_cpu / audio,
        "workers_cpu_per_audio_second": workers_cpu / audio,
        "client_cpu_seconds": round(client_cpu, 3),
        "other_cpu_cores": round(max(0.0, box - main_cpu - workers_cpu - client_cpu) / wall, 2),
        "settle_seconds": [None if run["settle"] is None else round(run["settle"], 1) for run in runs],
    }
    out["ok"] = bool(not errors and len(finals) == len(utts) and final_ms
                     and out["final_ms"]["p95"] <= SUSTAIN_P95_MS and out["lateness_ms"]["p99"] <= SUSTAIN_LATE_P99_MS)
    return out


# -- resume ------------------------------------------------------------------------------------


async def resume_trial(server: Server, fixture: Fixture, cut_fraction: float, gap: float) -> dict:
    url = Native(server).url()
    pcm = b"".join(fixture.chunks)
    cut = max(1, min(len(fixture.chunks) - 1, round(len(fixture.chunks) * cut_fraction)))
    utt, result, errors = Utt(fixture), StreamResult(), []
    trial: dict[str, Any] = {"fixture": fixture.name, "cut_at_seconds": round(cut * CHUNK_BYTES / BYTES_PER_SECOND, 2)}
    done = asyncio.Event()

    async def receive(ws: websockets.ClientConnection, expect_end: bool) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                if native_message(json.loads(raw), utt, time.monotonic(), errors):
                    done.set()
        if expect_end and not done.is_set():
            errors.append(f"closed by the server before session.completed: {ws.close_code} {ws.close_reason}")
            done.set()

    try:
        # First connection: stream up to the cut, then drop the transport without a close frame.
        ws = await websockets.connect(url, **CONNECT)
        await ws.send(native_start(server.key))
        info = await recv_json(ws)
        if info.get("type") != "session.info" or not info.get("resumeToken"):
            raise RuntimeError(f"no resumable session: {info}")
        receiver = asyncio.create_task(receive(ws, expect_end=False))
        t0 = time.monotonic()
        sent = await paced_send(ws, fixture.chunks[:cut], fixture.chunks[:cut], t0, 0, result,
                                lambda now: setattr(utt, "first_sent", now))
        ws.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(receiver, 5)
        await asyncio.sleep(gap)

        # Second connection: resume, send again from what the server accepted, then end.
        reconnect = time.monotonic()
        ws = await websockets.connect(url, **CONNECT)
        opened = time.monotonic()
        await ws.send(json.dumps({"type": "session.resume", "sessionId": info["sessionId"],
                                  "resumeToken": info["resumeToken"],
                                  "lastSegmentIndex": max(utt.segments, default=-1)}))
        asked = time.monotonic()
        again = await recv_json(ws)
        answered = time.monotonic()
        if again.get("type") != "session.info" or not again.get("resumed"):
            raise RuntimeError(f"not resumed: {again}")
        accepted = again["audioReceivedBytes"]
        trial |= {"reconnect_ms": 1000 * (answered - reconnect), "handshake_ms": 1000 * (opened - reconnect),
                  "resume_message_ms": 1000 * (answered - asked), "sent_bytes": sent, "accepted_bytes": accepted,
                  "lost_bytes": sent - accepted}
        receiver = asyncio.create_task(receive(ws, expect_end=True))
        rest = [pcm[i : i + CHUNK_BYTES] for i in range(accepted, len(pcm), CHUNK_BYTES)]
        await paced_send(ws, [*rest, SESSION_END], rest, t0, accepted, result)
        utt.finish_sent = time.monotonic()
        try:
            await asyncio.wait_for(done.wait(), FINAL_TIMEOUT)
        except TimeoutError:
            errors.append(f"no session.completed after {FINAL_TIMEOUT:g} s")
        receiver.cancel()
        await ws.close()
    except (OSError, websockets.WebSocketException, TimeoutError, RuntimeError, KeyError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    if utt.final is None and not errors:
        errors.append("no final")
    trial |= {"text": utt.text, "reference": fixture.text, "segments": len(utt.segments),
              "edits": edits(words(fixture.text), words(utt.text)), "errors": errors,
              "final_ms": 1000 * (utt.final - utt.finish_sent) if utt.final and utt.finish_sent else None}
    return trial


async def uninterrupted(server: Server, fixtures: list[Fixture], known: dict[str, str]) -> dict[str, str | None]:
    """What the native protocol makes of each fixture without a cut: from the measured native runs
    where they had it, else from one more utterance each (None if that fails)."""
    out: dict[str, str | None] = {}
    for fixture in fixtures:
        if fixture.name in known:
            out[fixture.name] = known[fixture.name]
        else:
            result = StreamResult()
            await one_utterance(Native(server), fixture, result)
            ok = not result.errors and result.utterances[0].final is not None
            out[fixture.name] = result.utterances[0].text if ok else None
    return out


async def run_resume(server: Server, trials: int, gap: float, fixtures: list[Fixture], known: dict[str, str],
                     rng: random.Random) -> dict:
    plan = [fixtures[i % len(fixtures)] for i in range(trials)]
    control = await uninterrupted(server, list({f.name: f for f in plan}.values()), known)
    out = []
    for fixture in plan:
        trial = await resume_trial(server, fixture, rng.uniform(0.3, 0.7), gap)
        uncut = trial["uninterrupted"] = control[fixture.name]
        trial["edits_vs_uninterrupted"] = None if uncut is None else edits(words(uncut), words(trial["text"]))
        if uncut is None:
            trial["errors"].append(f"no uncut transcript of {fixture.name} to compare with")
        out.append(trial)
        await asyncio.sleep(0.5)
    ok = [t for t in out if "reconnect_ms" in t]
    reconnect = [t["reconnect_ms"] for t in ok]
    finals = [t["final_ms"] for t in out if t["final_ms"] is not None]
    return {
        "trials": len(out), "gap_seconds": gap,
        "reconnect_ms": {"p50": pct(reconnect, 50), "p95": pct(reconnect, 95), "max": max(reconnect, default=None)},
        "handshake_ms_p50": pct([t["handshake_ms"] for t in ok], 50),
        "resume_message_ms": {"p50": pct([t["resume_message_ms"] for t in ok], 50),
                              "p95": pct([t["resume_message_ms"] for t in ok], 95)},
        "lost_bytes": sum(t["lost_bytes"] for t in ok),
        "final_ms": {"p50": pct(finals, 50), "p95": pct(finals, 95)},
        "finals": len(finals),
        "whole": sum(t["edits_vs_uninterrupted"] == 0 and t["final_ms"] is not None for t in out),
        "wer": wer([(t["reference"], t["text"]) for t in out]),
        "uninterrupted_wer": wer([(t["reference"], t["uninterrupted"]) for t in out if t["uninterrupted"] is not None]),
        "errors": sum(len(t["errors"]) for t in out),
        "error_samples": sorted({e for t in out for e in t["errors"]})[:10],
        "trial_results": out,
    }


# -- report ------------------------------------------------------------------------------------


def table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head, *rows]]
    return [lines[0], "-" * len(lines[0]), *lines[1:]]


def report(cells: list[dict], resume: dict | None) -> str:
    head = ("protocol", "streams", "utts", "setup p50", "final p50", "p95", "max", "done p50", "partial p50", "p95",
            "late p99", "errors", "WER", "CPU/audio-s", "main", "workers", "other", "settle", "ok")
    rows = [(c["protocol"], str(c["streams"]), str(c["utterances"]), fmt(c["setup_ms"]["p50"], ".1f"),
             *(fmt(c["final_ms"][k]) for k in ("p50", "p95", "max")), fmt(c["completed_ms"]["p50"]),
             fmt(c["first_partial_ms"]["p50"]), fmt(c["first_partial_ms"]["p95"]), fmt(c["lateness_ms"]["p99"]),
             str(c["errors"]), f"{c['wer']:.3f}", f"{c['server_cpu_per_audio_second']:.4f}",
             f"{c['server_main_cpu_per_audio_second']:.4f}", f"{c['workers_cpu_per_audio_second']:.4f}",
             f"{c['other_cpu_cores']:.2f}", settle_text(c["settle_seconds"]), "yes" if c["ok"] else "NO")
            for c in cells]
    lines = table(head, rows)
    lines += ["(ms. setup: connect -> ready; final: finish signal sent -> final transcript (elevenlabs: last chunk",
              " with commit=true -> committed_transcript; reverie: --EOF-- -> 'EOF received' final; native:",
              " session.end -> result.final); done: -> session.completed (native); partial: first chunk -> first",
              " non-empty partial; late: sender behind its real-time schedule; CPU/audio-s: server CPU s per audio s",
              " = main (server process: adapters, core, database) + workers (recognition); other: cores busy with",
              " other processes meanwhile; settle: s the server took to go idle after the clients were done",
              f" (max over passes); ok: no errors, every final, final p95 <= {SUSTAIN_P95_MS:g} ms, late p99 <=",
              f" {SUSTAIN_LATE_P99_MS:g} ms. One connection per utterance, except {SESSION_ROW}: all on one socket)"]
    for n in sorted({c["streams"] for c in cells}):
        three = [c for c in cells if c["streams"] == n and c["protocol"] in PROTOCOLS and c["finals"]]
        if len(three) > 1:
            cpu = [c["server_cpu_per_audio_second"] for c in three]
            main = [c["server_main_cpu_per_audio_second"] for c in three]
            p50 = [c["final_ms"]["p50"] for c in three]
            lines.append(f"  {n} stream(s), the three protocols: CPU/audio-s max/min {max(cpu) / min(cpu):.2f}, "
                         f"server-process CPU/audio-s {min(main):.4f}..{max(main):.4f}, "
                         f"final p50 {min(p50):.0f}..{max(p50):.0f} ms")
    if resume:
        lines += ["", (f"native resume: {resume['trials']} trials, transport aborted at 30-70 % of an utterance, "
                       f"reconnect after {resume['gap_seconds']:g} s")]
        r = resume
        lines += table(("trials", "reconnect p50", "p95", "max", "handshake p50", "resume msg p50", "p95", "lost B",
                        "final p50", "p95", "whole", "WER", "uncut WER", "errors"),
                       [(str(r["trials"]), *(fmt(r["reconnect_ms"][k], ".1f") for k in ("p50", "p95", "max")),
                         fmt(r["handshake_ms_p50"], ".1f"), fmt(r["resume_message_ms"]["p50"], ".1f"),
                         fmt(r["resume_message_ms"]["p95"], ".1f"), str(r["lost_bytes"]), fmt(r["final_ms"]["p50"]),
                         fmt(r["final_ms"]["p95"]), f"{r['whole']}/{r['trials']}", f"{r['wer']:.3f}",
                         f"{r['uninterrupted_wer']:.3f}", str(r["errors"]))])
        lines += ["(ms. reconnect: connect begun -> session.info resumed; handshake: of which the WebSocket opening;",
                  " resume msg: session.resume sent -> session.info; lost B: bytes sent before the cut the server",
                  " never accepted (sent again); final: session.end -> last result.final; whole: final transcript",
                  " = the same fixture's transcript without a cut; WER vs the fixture texts, with and without cuts)"]
    return "\n".join(lines)


def settle_text(values: list[float | None]) -> str:
    return "never" if None in values else fmt(max(values, default=None), ".1f")  # type: ignore[type-var]


def failed(cells: list[dict], resume: dict | None) -> list[str]:
    problems = [f"{c['protocol']} @ {c['streams']}: {c['errors']} error(s), {c['finals']}/{c['utterances']} finals"
                for c in cells if c["errors"] or c["finals"] < c["utterances"]]
    if resume and (resume["errors"] or resume["finals"] < resume["trials"]):
        problems.append(f"resume: {resume['errors']} error(s), {resume['finals']}/{resume['trials']} finals")
    return problems


def main() -> int:
    global FINAL_TIMEOUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8], help="concurrent stream counts")
    parser.add_argument("--rounds", type=int, default=4, help="utterances per stream")
    parser.add_argument("--repeats", type=int, default=2, help="passes over protocols x streams, pooled")
    parser.add_argument("--protocols", nargs="+", default=[*PROTOCOLS, SESSION_ROW],
                        choices=[*PROTOCOLS, SESSION_ROW])
    parser.add_argument("--resume-trials", type=int, default=12, help="native resume trials (0: none)")
    parser.add_argument("--resume-gap", type=float, default=0.5, help="seconds between the cut and the reconnect")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="LECTERN_ENGINE_WORKERS")
    parser.add_argument("--streams-per-worker", type=int, default=16, help="LECTERN_STREAMS_PER_WORKER (raised to fit)")
    parser.add_argument("--final-timeout", type=float, default=FINAL_TIMEOUT,
                        help="seconds a final may take before it counts as missing (a client that gave up "
                             "leaves its session recognizing what it sent: more load)")
    parser.add_argument("--seed", type=int, default=1, help="seed of start staggering and resume cut points")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "protocols.json")
    parser.add_argument("--smoke", action="store_true",
                        help="CI: 1 stream, 1 utterance per protocol, 2 resume trials, no warm-up; fails on any error")
    args = parser.parse_args()
    FINAL_TIMEOUT = args.final_timeout
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if args.smoke:
        args.streams, args.rounds, args.repeats, args.resume_trials = [1], 1, 1, 2
        args.protocols = [p for p in args.protocols if p != SESSION_ROW]  # same as elevenlabs at 1 round
    per_worker = max(args.streams_per_worker, math.ceil(max(args.streams) / args.workers))
    fixtures, rng = load_fixtures(), random.Random(args.seed)
    started = time.monotonic()

    print(f"server: {args.workers} engine worker(s) x {per_worker} streams; {args.rounds} utterance(s) per stream, "
          f"{args.repeats} pass(es)")
    server = Server(args.workers, per_worker)
    runs: dict[tuple[str, int], list[dict]] = {}
    resume = None
    try:
        if not args.smoke:
            # Decoders load on a worker slot's first use and stay: measure that steady state.
            print(f"  warm-up: {max(args.streams)} streams x 1 utterance per protocol (not measured)")
            for protocol in args.protocols:
                asyncio.run(run_level(server, protocol, max(args.streams), 1, fixtures, rng))
        step = 0
        for rep in range(args.repeats):
            for n in args.streams:
                order = args.protocols[step % len(args.protocols):] + args.protocols[:step % len(args.protocols)]
                step += 1
                for protocol in order:
                    run = asyncio.run(run_level(server, protocol, n, args.rounds, fixtures, rng))
                    runs.setdefault((protocol, n), []).append(run)
                    errors = [e for r in run["results"] for e in r.errors]
                    print(f"  pass {rep + 1}: {protocol:<14} {n:>2} streams: {run['audio']:.0f} s of audio, "
                          f"errors {len(errors)}" + "".join(f"\n        {e}" for e in sorted(set(errors))[:3]))
        if args.resume_trials:
            print(f"  native resume: {args.resume_trials} trials")
            # Cut the fixtures the native runs spoke, so their uninterrupted transcripts are known.
            native = [u for run in runs.get(("native", min(args.streams)), []) for r in run["results"]
                      for u in r.utterances if u.final is not None]
            known = {u.fixture.name: u.text for u in native}
            spoken = [f for f in fixtures if f.name in known] or fixtures
            resume = asyncio.run(run_resume(server, args.resume_trials, args.resume_gap, spoken, known, rng))
    finally:
        server.stop()
    elapsed = time.monotonic() - started

    cells = [summarize(runs[(p, n)]) for n in args.streams for p in args.protocols]
    print("\n" + report(cells, resume))
    print(f"\ntotal run time {elapsed:.1f} s")

    machine = {"cpu_count": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
               "platform": platform.platform(), "python": platform.python_version(),
               "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
               "load_average": [round(x, 2) for x in os.getloadavg()]}
    settings = {**vars(args), "out": str(args.out), "streams_per_worker": per_worker, "chunk_ms": 100,
                "fixtures": FIXTURES, "idle_below_cores": IDLE_CORES}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                                    "machine": machine, "settings": settings, "run_seconds": round(elapsed, 1),
                                    "levels": cells, "resume": resume}, indent=2) + "\n")
    print(f"wrote {args.out}")
    # Smoke: a broken stream or a missing final fails the run (numbers are not judged: CI boxes vary).
    problems = failed(cells, resume)
    if problems:
        print("problems:\n  " + "\n  ".join(problems))
    return 1 if args.smoke and problems else 0


if __name__ == "__main__":
    sys.exit(main())
