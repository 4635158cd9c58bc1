#!/usr/bin/env python3
"""Generate lectern's speech test fixtures into ``tests/fixtures/speech/``.

What it makes
-------------
Every *speech fixture* is a pair ``NAME.wav`` + ``NAME.txt``:

* ``NAME.wav`` -- 16 kHz, mono, 16-bit signed PCM WAV.  The synthesized
  speech has its own leading/trailing noise floor trimmed off and is then
  padded with exactly 0.3 s of digital silence (zeros) at the start and
  0.5 s at the end.
* ``NAME.txt`` -- the exact spoken text on one line: lowercase words,
  no punctuation (empty for the silence fixture).

Fixtures:

* ``fox`` -- "the quick brown fox jumps over the lazy dog".
* eight further single sentences of everyday read English (see
  ``SENTENCES``), 2-5 s each.
* ``two_sentences`` -- two sentences separated by exactly 2.0 s of digital
  silence; the text is both sentences joined by a space.  Also writes
  ``two_sentences.json`` with the sample offsets (at 16 kHz, end exclusive)
  where each sentence's speech starts and ends, for VAD tests.
* ``long_pause`` -- one sentence, exactly 4.0 s of digital silence, then a
  second sentence.
* ``silence_3s`` -- exactly 3.0 s of digital silence, empty text.

``manifest.json`` lists ``{name, text, duration_seconds, sample_rate}`` for
each of the speech fixtures above.

Derived formats of ``fox`` only, for audio-format tests (not in the
manifest; their text is ``fox.txt``):

* ``fox_8k.wav``, ``fox_22050.wav``, ``fox_24000.wav``, ``fox_44100.wav``,
  ``fox_48000.wav`` -- 16-bit mono WAV resampled from ``fox.wav`` with
  sox's high-quality resampler (``rate -h``).
* ``fox_ulaw_8k.raw`` -- headerless G.711 mu-law, 8 kHz mono
  (``sox ... -e u-law -t raw``).

How to run
----------
From the repository root::

    .venv/bin/python scripts/make_fixtures.py

It needs the Debian packages ``festival festvox-us-slt-hts sox`` (speech is
synthesized with festival's ``text2wave`` using the
``voice_cmu_us_slt_arctic_hts`` voice; sox resamples, pads and encodes) and
Python 3.11 with numpy.  Existing fixture files are overwritten.

Output is deterministic for a given festival/sox installation: HTS synthesis
is deterministic and sox is run with dithering disabled (``-D``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "tests" / "fixtures" / "speech"

VOICE = "(voice_cmu_us_slt_arctic_hts)"
SAMPLE_RATE = 16000
LEAD_SILENCE_S = 0.3
TRAIL_SILENCE_S = 0.5

# Single-sentence fixtures: name -> text (lowercase, no punctuation).
SENTENCES: dict[str, str] = {
    "fox": "the quick brown fox jumps over the lazy dog",
    "weather": "the weather will be sunny and warm tomorrow",
    "meeting": "the meeting has been moved to monday morning",
    "numbers": "my phone number is five five five one two three four",
    "kitchen": "please put the milk back in the refrigerator",
    "train": "the train leaves the station every hour",
    "coffee": "i would like a cup of coffee with sugar",
    "directions": "turn left at the next corner and go straight ahead",
    "library": "she went to the library to return her books",
}

# Two-part fixtures: name -> (first sentence, second sentence, gap seconds).
TWO_PART: dict[str, tuple[str, str, float]] = {
    "two_sentences": (
        "the children are playing in the park",
        "we will have dinner at home tonight",
        2.0,
    ),
    "long_pause": (
        "please close the door when you leave",
        "thank you very much for your help",
        4.0,
    ),
}

SILENCE_NAME = "silence_3s"
SILENCE_S = 3.0

DERIVED_RATES = {
    "fox_8k": 8000,
    "fox_22050": 22050,
    "fox_24000": 24000,
    "fox_44100": 44100,
    "fox_48000": 48000,
}
ULAW_NAME = "fox_ulaw_8k.raw"
ULAW_RATE = 8000

# Trimming of the synthesizer's own noise floor around the speech.
FRAME = 160  # 10 ms at 16 kHz
TRIM_RMS_THRESHOLD = 60.0  # frame RMS (int16 units, about -55 dBFS)
TRIM_MARGIN = 320  # keep 20 ms of context around detected speech
FADE = 80  # 5 ms raised-cosine fade at the cut points


def run(cmd: list[str]) -> None:
    """Run an external command, failing loudly with its stderr."""
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}")


def sox(*args: str | Path) -> None:
    # -D: no dither, so output is repeatable; -V1: errors only.
    run(["sox", "-D", "-V1", *[str(a) for a in args]])


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2, path
        assert w.getframerate() == SAMPLE_RATE, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(samples.astype("<i2").tobytes())


def wav_frames(path: Path) -> int:
    with wave.open(str(path), "rb") as w:
        return w.getnframes()


def synthesize(text: str, out: Path, tmp: Path) -> int:
    """Synthesize ``text`` into ``out`` as trimmed 16 kHz speech.

    Returns the number of samples written.
    """
    txt = tmp / "in.txt"
    raw = tmp / "tts.wav"
    conv = tmp / "tts16k.wav"
    txt.write_text(text + "\n", encoding="utf-8")
    run(["text2wave", "-eval", VOICE, str(txt), "-o", str(raw)])
    sox(raw, "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer", conv, "rate", "-h")

    x = read_wav(conv).astype(np.float64)
    n_frames = len(x) // FRAME
    rms = np.sqrt(np.mean(x[: n_frames * FRAME].reshape(n_frames, FRAME) ** 2, axis=1))
    loud = np.flatnonzero(rms > TRIM_RMS_THRESHOLD)
    if loud.size == 0:
        raise RuntimeError(f"no speech detected in synthesis of {text!r}")
    start = max(0, loud[0] * FRAME - TRIM_MARGIN)
    end = min(len(x), (loud[-1] + 1) * FRAME + TRIM_MARGIN)
    y = x[start:end].copy()
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, FADE))
    y[:FADE] *= ramp
    y[-FADE:] *= ramp[::-1]
    write_wav(out, np.clip(np.round(y), -32768, 32767))
    return len(y)


def samples(seconds: float) -> int:
    return int(round(seconds * SAMPLE_RATE))


def pad(src: Path, dst: Path, lead: int, trail: int) -> None:
    """Pad ``src`` with ``lead``/``trail`` samples of digital silence."""
    sox(src, dst, "pad", f"{lead}s", f"{trail}s")


def write_text(name: str, text: str) -> None:
    (OUT_DIR / f"{name}.txt").write_text(text + "\n", encoding="utf-8")


def manifest_entry(name: str, text: str) -> dict:
    n = wav_frames(OUT_DIR / f"{name}.wav")
    return {
        "name": name,
        "text": text,
        "duration_seconds": round(n / SAMPLE_RATE, 4),
        "sample_rate": SAMPLE_RATE,
    }


def main() -> int:
    for tool in ("text2wave", "sox"):
        if shutil.which(tool) is None:
            print(f"error: {tool!r} not found; install: apt-get install festival festvox-us-slt-hts sox",
                  file=sys.stderr)
            return 1

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    lead, trail = samples(LEAD_SILENCE_S), samples(TRAIL_SILENCE_S)
    manifest: list[dict] = []

    with tempfile.TemporaryDirectory(prefix="lectern-fixtures-") as tmpdir:
        tmp = Path(tmpdir)

        for name, text in SENTENCES.items():
            speech = tmp / f"{name}.speech.wav"
            synthesize(text, speech, tmp)
            pad(speech, OUT_DIR / f"{name}.wav", lead, trail)
            write_text(name, text)
            manifest.append(manifest_entry(name, text))

        for name, (text1, text2, gap_s) in TWO_PART.items():
            s1, s2 = tmp / f"{name}.1.wav", tmp / f"{name}.2.wav"
            n1 = synthesize(text1, s1, tmp)
            n2 = synthesize(text2, s2, tmp)
            gap = samples(gap_s)
            p1, p2 = tmp / f"{name}.1p.wav", tmp / f"{name}.2p.wav"
            pad(s1, p1, lead, gap)
            pad(s2, p2, 0, trail)
            sox(p1, p2, OUT_DIR / f"{name}.wav")  # concatenate
            text = f"{text1} {text2}"
            write_text(name, text)
            manifest.append(manifest_entry(name, text))

            total = wav_frames(OUT_DIR / f"{name}.wav")
            assert total == lead + n1 + gap + n2 + trail, name
            if name == "two_sentences":
                first_start = lead
                second_start = lead + n1 + gap
                segments = {
                    "sample_rate": SAMPLE_RATE,
                    "total_samples": total,
                    "gap_seconds": gap_s,
                    "note": "sample offsets at sample_rate; end is exclusive",
                    "segments": [
                        {"text": text1, "start_sample": first_start, "end_sample": first_start + n1},
                        {"text": text2, "start_sample": second_start, "end_sample": second_start + n2},
                    ],
                }
                (OUT_DIR / f"{name}.json").write_text(json.dumps(segments, indent=2) + "\n", encoding="utf-8")

        # Pure digital silence.
        silence = OUT_DIR / f"{SILENCE_NAME}.wav"
        # Rate/channels go before -n so they describe the null input (no resampling).
        sox("-r", str(SAMPLE_RATE), "-c", "1", "-n", "-b", "16", "-e", "signed-integer", silence,
            "trim", "0", f"{samples(SILENCE_S)}s")
        write_text(SILENCE_NAME, "")
        manifest.append(manifest_entry(SILENCE_NAME, ""))

    # Derived formats of fox.
    fox = OUT_DIR / "fox.wav"
    for name, rate in DERIVED_RATES.items():
        sox(fox, "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer", OUT_DIR / f"{name}.wav",
            "rate", "-h")
    sox(fox, "-r", str(ULAW_RATE), "-c", "1", "-e", "u-law", "-t", "raw", OUT_DIR / ULAW_NAME, "rate", "-h")

    (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    for entry in manifest:
        print(f"{entry['name']:<14} {entry['duration_seconds']:7.3f} s  {entry['text']!r}")
    total_bytes = sum(p.stat().st_size for p in OUT_DIR.iterdir() if p.is_file())
    print(f"wrote {len(manifest)} fixtures to {OUT_DIR.relative_to(REPO_ROOT)} ({total_bytes / 1e6:.2f} MB total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
