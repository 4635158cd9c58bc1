"""``lectern transcribe FILE...``: transcripts of audio files, locally or through a Lectern server.

Locally, the files are recognized by an engine pool in this process (no database, no server);
with ``--server``, they are uploaded and transcribed as jobs, and the job's progress is shown.
Either way the result is text on stdout, or srt / vtt / txt / json files.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from lectern.speech.decode import UnsupportedAudio, probe
from lectern.speech.subtitles import TimedText, TimedWord, to_srt, to_txt, to_vtt

FORMATS = ("text", "srt", "vtt", "json")
API = "/api/v1/speech-services"
POLL_SECONDS = 0.25
Report = Callable[[float], None]  # seconds of audio done


@dataclass(frozen=True, slots=True)
class Transcript:
    """What both ways produce: the API's result body (text, languageCode, durationMilliseconds, segments, words)."""

    result: dict[str, Any]

    def timed(self) -> list[TimedText]:
        words_of: dict[int, list[TimedWord]] = {}
        for w in self.result["words"]:
            words_of.setdefault(w["segmentIndex"], []).append(TimedWord(w["word"], w["startSeconds"], w["endSeconds"]))
        return [TimedText(s["text"], s["startSeconds"], s["endSeconds"], words_of.get(s["segmentIndex"], []))
                for s in self.result["segments"]]

    def render(self, fmt: str) -> str:
        if fmt == "json":
            return json.dumps(self.result, indent=2, ensure_ascii=False) + "\n"
        if fmt == "text":
            return to_txt(self.timed())
        return {"srt": to_srt, "vtt": to_vtt}[fmt](self.timed())


async def transcribe_locally(path: Path, pool: Any, report: Report) -> Transcript:
    from lectern.speech.batch import FileTranscription
    from lectern.speech.text import as_sentence

    transcription = FileTranscription(pool, path)
    segments: list[dict[str, Any]] = []
    words: list[dict[str, Any]] = []
    async for raw in transcription.segments():
        index = len(segments)
        text = as_sentence(" ".join(w.text for w in raw.words), capitalization=True, punctuation=True)
        confidence = round(sum(w.confidence for w in raw.words) / len(raw.words), 4)
        segments.append({"segmentIndex": index, "text": text, "startSeconds": raw.start, "endSeconds": raw.end,
                         "confidence": confidence})
        words += [{"word": w.text, "startSeconds": w.start, "endSeconds": w.end,
                   "confidence": round(w.confidence, 4), "segmentIndex": index} for w in raw.words]
        report(transcription.position)
    report(transcription.position)
    return Transcript({"text": " ".join(s["text"] for s in segments), "languageCode": "en",
                       "durationMilliseconds": round(transcription.position * 1000), "segments": segments,
                       "words": words})


async def transcribe_remotely(path: Path, client: httpx.AsyncClient, report: Report) -> Transcript:
    with path.open("rb") as f:
        response = await client.post(f"{API}/transcriptions/upload", files={"file": (path.name, f)},
                                     data={"name": path.name})
    body = _checked(response)
    job_id = body["transcription"]["id"]
    while True:
        job = _checked(await client.get(f"{API}/transcriptions/{job_id}"))
        report(job["processedMilliseconds"] / 1000)
        if job["status"] == "COMPLETED":
            return Transcript(job["result"])
        if job["status"] in ("FAILED", "CANCELLED"):
            errors = "; ".join(e["message"] for e in job.get("errors") or []) or job["status"].lower()
            raise RuntimeError(errors)
        await asyncio.sleep(POLL_SECONDS)


def _checked(response: httpx.Response) -> dict[str, Any]:
    if response.is_success:
        return response.json()
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise RuntimeError(f"the server answered {response.status_code}: {detail}")


class _InOrder:
    """Transcripts printed in the order the files were given, each as soon as those before it are."""

    def __init__(self, paths: list[Path], many: bool) -> None:
        self._waiting = list(paths)
        self._ready: dict[Path, str | None] = {}
        self._many = many

    def done(self, path: Path, text: str | None) -> None:
        self._ready[path] = text
        while self._waiting and self._waiting[0] in self._ready:
            first = self._waiting.pop(0)
            text = self._ready.pop(first)
            if text is not None:
                sys.stdout.write((f"==> {first} <==\n" if self._many else "") + text)
                sys.stdout.flush()


def _destination(path: Path, fmt: str, output_dir: Path | None) -> Path | None:
    """Where a transcript goes: stdout (None) for text without an output directory."""
    if fmt == "text" and output_dir is None:
        return None
    suffix = {"text": ".txt"}.get(fmt, f".{fmt}")
    return (output_dir or path.parent) / f"{path.stem}{suffix}"


async def run(paths: list[Path], fmt: str, output_dir: Path | None, server: str | None, api_key: str | None,
              workers: int, show_progress: bool) -> int:
    """Transcribe every file (``workers`` at a time); the exit status: 0, or 1 if any file failed."""
    durations: dict[Path, float] = {}
    for path in paths:
        try:
            durations[path] = probe(path).duration_seconds
        except (UnsupportedAudio, OSError) as exc:
            print(f"lectern transcribe: {path}: {exc}", file=sys.stderr)
    failed = len(paths) - len(durations)
    # The bar is drawn on stderr, so that stdout carries only transcripts (and can be piped).
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                        TimeRemainingColumn(), disable=not show_progress, transient=True,
                        console=Console(stderr=True), redirect_stdout=False)
    limit = asyncio.Semaphore(workers)
    printed = _InOrder([p for p in durations], many=len(paths) > 1)

    async def one(path: Path, work: Callable[[Path, Report], Awaitable[Transcript]]) -> bool:
        task: TaskID = progress.add_task(path.name, total=max(durations[path], 0.001))
        async with limit:
            try:
                transcript = await work(path, lambda seconds: progress.update(task, completed=seconds))
            except Exception as exc:  # one file's failure is reported; the others go on
                progress.remove_task(task)
                print(f"lectern transcribe: {path}: {exc}", file=sys.stderr)
                printed.done(path, None)
                return False
        progress.update(task, completed=durations[path])
        destination = _destination(path, fmt, output_dir)
        rendered = transcript.render(fmt)
        if destination is None:
            printed.done(path, rendered)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(rendered, encoding="utf-8")
        return True

    with progress:
        if server:
            headers = {"X-API-Key": api_key} if api_key else {}
            async with httpx.AsyncClient(base_url=server, headers=headers, timeout=None) as client:
                results = await asyncio.gather(*(one(p, lambda p, r: transcribe_remotely(p, client, r))
                                                 for p in durations))
        else:
            from lectern.settings import Settings
            from lectern.speech.engines.pool import RecognizerPool
            from lectern.speech.models import build_registry

            settings = Settings()
            models = build_registry(settings.default_model, settings.models, settings.allow_model_download, 1, 1)
            pool = RecognizerPool(workers, models)
            await pool.start()
            try:
                results = await asyncio.gather(*(one(p, lambda p, r: transcribe_locally(p, pool, r))
                                                 for p in durations))
            finally:
                await pool.close()
    failed += results.count(False)
    return 1 if failed else 0
