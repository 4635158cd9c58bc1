"""`lectern transcribe FILE...`: locally (an engine pool in the process, no server) and through a
server (``--server URL --api-key KEY``), run as a user runs it, in a subprocess.

Transcripts go to stdout (``-f text``) or to files (srt, vtt, json); messages and the progress
bar go to stderr, which is a terminal for the progress bar's test (a pseudo-terminal).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.api.test_transcriptions_api import (
    MAX_WER,
    RESULT_FIELDS,
    assert_result,
    normalized,
    parse_srt,
    parse_vtt,
    wav,
)
from tests.conftest import LecternServer, Speech, load_speech, word_error_rate
from tests.speech.test_decode import write_audio

TWO = load_speech("two_sentences")
FOX = load_speech("fox")
COFFEE = load_speech("coffee")
LONG = Speech("long", TWO.pcm + FOX.pcm + COFFEE.pcm, f"{TWO.text} {FOX.text} {COFFEE.text}")
HEADER = re.compile(r"^==> (.+) <==$", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def transcribe(cwd: Path, *args: Any, env: dict[str, str] | None = None, timeout: float = 300) -> Run:
    # The light engine, as the test servers use: these tests compare local and server results.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_")}
    clean["LECTERN_DEFAULT_MODEL"] = "pocketsphinx-en-us"
    done = subprocess.run([sys.executable, "-m", "lectern", "transcribe", *map(str, args)], cwd=cwd,
                          env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in done.stderr, done.stderr
    return Run(done.returncode, done.stdout, done.stderr)


def sections(stdout: str) -> list[tuple[str, str]]:
    """``==> FILE <==`` headers and the text under each, in the order printed."""
    parts = HEADER.split(stdout)
    assert parts[0] == "", f"text before the first header: {parts[0]!r}"
    return list(zip(parts[1::2], parts[2::2], strict=True))


def assert_text(printed: str, speech: Speech, max_wer: float = MAX_WER) -> None:
    """One segment a line: each a sentence (a capital, a full stop), together the speech's words."""
    assert printed.strip(), "nothing was printed"
    lines = printed.strip("\n").split("\n")
    for line in lines:
        assert line[0].isupper() and line.endswith("."), line
    assert word_error_rate(speech.text, normalized(" ".join(lines))) <= max_wer, (speech.text, printed)


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """two.wav (two sentences), fox.wav, long.wav (two, fox and coffee), two.m4a, and not-audio.wav."""
    folder = tmp_path_factory.mktemp("transcribe")
    (folder / "two.wav").write_bytes(wav(TWO.pcm))
    (folder / "fox.wav").write_bytes(wav(FOX.pcm))
    (folder / "long.wav").write_bytes(wav(LONG.pcm))
    write_audio(folder / "two.m4a", "ipod", "aac", np.frombuffer(TWO.pcm, dtype="<i2"), bit_rate=32000)
    (folder / "not-audio.wav").write_text("These are meeting notes, not a recording.\n" * 20)
    return folder


@pytest.fixture(scope="module")
def local_two(audio: Path) -> Run:
    return transcribe(audio, "two.wav")


@pytest.fixture(scope="module")
def local_json(audio: Path) -> dict[str, Any]:
    run = transcribe(audio, "-f", "json", "-o", "json-out", "two.wav")
    assert (run.returncode, run.stdout) == (0, ""), run
    return json.loads((audio / "json-out" / "two.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def several(audio: Path) -> Run:
    return transcribe(audio, "long.wav", "two.m4a", "fox.wav")


# -- locally ---------------------------------------------------------------------------------------


def test_one_file_prints_its_text_on_stdout(local_two):
    assert local_two.returncode == 0, local_two.stderr
    assert local_two.stderr == ""  # no progress bar when stderr is not a terminal
    assert not HEADER.search(local_two.stdout)
    assert_text(local_two.stdout, TWO)
    assert normalized(local_two.stdout.split("\n")[0]) == "the children are playing in the park"
    assert local_two.stdout.count("\n") == 2  # the two sentences are two segments, a line each


def test_several_files_print_each_under_a_header(several):
    assert several.returncode == 0, several.stderr
    printed = dict(sections(several.stdout))
    assert sorted(printed) == ["fox.wav", "long.wav", "two.m4a"]
    assert_text(printed["long.wav"], LONG, max_wer=0.12)
    assert_text(printed["two.m4a"], TWO)
    assert_text(printed["fox.wav"], FOX, max_wer=0.12)  # "jumps" may be heard as "jumped"


def test_several_files_are_printed_in_the_order_given(several):
    # As head and tail print their ==> FILE <== sections: the order of the arguments, whichever
    # file happens to be transcribed first.
    assert [name for name, _ in sections(several.stdout)] == ["long.wav", "two.m4a", "fox.wav"]


def test_srt_files_go_to_the_output_directory(audio):
    run = transcribe(audio, "-f", "srt", "-o", "subtitles", "two.wav", "fox.wav")
    assert (run.returncode, run.stdout) == (0, ""), run
    assert sorted(p.name for p in (audio / "subtitles").iterdir()) == ["fox.srt", "two.srt"]
    cues = parse_srt((audio / "subtitles" / "two.srt").read_text(encoding="utf-8"))
    assert [normalized(c[2]) for c in cues] == ["the children are playing in the park",
                                               "we will have dinner at home tonight"]
    assert 0 < cues[0][0] < cues[0][1] < cues[1][0] < cues[1][1] <= TWO.seconds
    fox = parse_srt((audio / "subtitles" / "fox.srt").read_text(encoding="utf-8"))
    assert word_error_rate(FOX.text, normalized(" ".join(c[2] for c in fox))) <= 0.12


def test_vtt_without_an_output_directory_goes_beside_the_file(audio, tmp_path):
    source = tmp_path / "recordings" / "two.wav"
    source.parent.mkdir()
    source.write_bytes(wav(TWO.pcm))
    run = transcribe(audio, "-f", "vtt", source)
    assert (run.returncode, run.stdout) == (0, ""), run
    assert sorted(p.name for p in source.parent.iterdir()) == ["two.vtt", "two.wav"]
    cues = parse_vtt((source.parent / "two.vtt").read_text(encoding="utf-8"))
    assert [normalized(c[2]) for c in cues] == ["the children are playing in the park",
                                               "we will have dinner at home tonight"]


def test_json_holds_the_text_segments_and_words(local_json, local_two):
    assert set(local_json) == RESULT_FIELDS
    job = {"status": "COMPLETED", "result": local_json, "durationMilliseconds": local_json["durationMilliseconds"],
           "segmentCount": len(local_json["segments"]), "wordsCount": len(local_json["words"])}
    assert abs(local_json["durationMilliseconds"] - TWO.seconds * 1000) <= 1
    assert_result(job, TWO)
    assert local_json["text"] == " ".join(local_two.stdout.split("\n")).strip()


def test_an_undecodable_or_missing_file_fails_alone(audio):
    run = transcribe(audio, "not-audio.wav", "two.wav", "missing.wav")
    assert run.returncode == 1
    messages = run.stderr.strip().split("\n")
    assert len(messages) == 2, run.stderr
    assert messages[0].startswith("lectern transcribe: not-audio.wav: ") and "audio" in messages[0]
    assert messages[1].startswith("lectern transcribe: missing.wav: ")
    assert_text(run.stdout.replace("==> two.wav <==\n", ""), TWO)


# -- the progress bar ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def on_a_terminal(audio: Path) -> tuple[Run, list[int]]:
    """long.wav transcribed with stderr on a pseudo-terminal; the percentages the bar showed."""
    master, slave = pty.openpty()
    # The light engine, as the test servers use: these tests compare local and server results.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_")}
    clean["LECTERN_DEFAULT_MODEL"] = "pocketsphinx-en-us"
    process = subprocess.Popen([sys.executable, "-m", "lectern", "transcribe", "long.wav"], cwd=audio, env=clean,
                               stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    terminal = bytearray()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the other end closed
                break
            if not data:
                break
            terminal += data
        elif process.poll() is not None:
            break
    stdout = process.stdout.read().decode() if process.stdout else ""
    process.wait(30)
    os.close(master)
    shown = terminal.decode(errors="replace")
    percentages = [int(p) for p in re.findall(r"(\d+)%", shown)]
    return Run(process.returncode, stdout, shown), percentages


def test_a_terminal_shows_a_progress_bar_up_to_100_percent(on_a_terminal):
    run, percentages = on_a_terminal
    assert run.returncode == 0
    assert "long.wav" in run.stderr
    assert percentages and percentages == sorted(percentages) and percentages[-1] == 100, percentages
    assert len(set(percentages)) >= 3, "the bar moves as the file is transcribed"


def test_with_the_progress_bar_shown_the_transcript_still_goes_to_stdout(on_a_terminal):
    run, _ = on_a_terminal
    assert_text(run.stdout, LONG, max_wer=0.12)
    assert "children" not in run.stderr.lower()


# -- through a server ------------------------------------------------------------------------------


def test_through_a_server_the_text_is_the_local_text(server: LecternServer, audio, local_two):
    key = server.create_key("acme", "cli-user")
    run = transcribe(audio, "--server", server.base_url, "--api-key", key, "two.wav")
    assert run.returncode == 0, run.stderr
    assert run.stdout == local_two.stdout
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": key}, timeout=30) as http:
        jobs = http.get("/api/v1/speech-services/transcriptions").json()["transcriptions"]
        assert [j["status"] for j in jobs] == ["COMPLETED"]
        file = http.get(f"/api/v1/speech-services/files/{jobs[0]['fileId']}").json()
        assert (file["name"], file["filename"], file["size"]) == ("two.wav", "two.wav",
                                                                  (audio / "two.wav").stat().st_size)


def test_through_a_server_json_is_the_local_json(server: LecternServer, audio, local_json, tmp_path):
    key = server.create_key("acme", "cli-user")
    run = transcribe(audio, "-f", "json", "-o", tmp_path, "--server", server.base_url, "two.wav",
                     env={"LECTERN_API_KEY": key})  # the key from the environment
    assert (run.returncode, run.stdout) == (0, ""), run
    assert json.loads((tmp_path / "two.json").read_text(encoding="utf-8")) == local_json


def test_through_a_server_a_refused_key_is_a_message_and_status_1(server: LecternServer, audio):
    run = transcribe(audio, "--server", server.base_url, "--api-key", "kk-" + "x" * 43, "two.wav")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr.startswith("lectern transcribe: two.wav: ") and "401" in run.stderr, run.stderr
