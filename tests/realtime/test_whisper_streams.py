"""The default engine, Whisper tiny.en, through every protocol and through batch.

Other protocol tests run on pocketsphinx (their point is not the engine); these run a server whose
default model is the embedded Whisper and check what only Whisper gives: cased, punctuated text,
word probabilities, keyterms as hotwords, a clear refusal of languages the model cannot serve, and
an honest start (an operator model that cannot be loaded stops the server with the reason).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from lectern.speech.decode import decode_pcm
from tests.api.test_transcriptions_api import poll, uploaded, wait_job, wav
from tests.conftest import LecternServer, load_speech, word_error_rate
from tests.realtime import native_wire, reverie_wire
from tests.realtime.scribe_wire import (
    COMMIT,
    expect_error,
    expect_started,
    frame,
    open_ws,
    q,
    recv_json,
    send_audio,
)

SPEECH_DEV = Path(__file__).resolve().parents[3] / "shared" / "speech-dev"
WHISPER = "whisper-tiny.en"
FOX = load_speech("fox")
TWO = load_speech("two_sentences")


@pytest.fixture(scope="module")
def whisper_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = LecternServer(tmp_path_factory.mktemp(f"whisper-{backend}"), backend, {"default_model": WHISPER})
    yield srv
    srv.stop()


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def assert_written(text: str, reference: str) -> None:
    """Whisper's writing: a capital first letter, a closing full stop, and the right words."""
    assert text[:1].isupper() and text.endswith((".", "?", "!")), text
    assert word_error_rate(normalized(reference), normalized(text)) <= 0.1, text


async def scribe_stream(srv: LecternServer, pcm: bytes, **params: Any) -> list[dict[str, Any]]:
    """Stream ``pcm`` with a manual commit at the end; every message up to its committed transcript
    (and the timestamps message, when asked for)."""
    messages = []
    async with open_ws(srv, q(**params)) as ws:
        messages.append(await expect_started(ws))
        await send_audio(ws, pcm)
        await ws.send(COMMIT)
        timed = params.get("include_timestamps") or params.get("include_language_detection")
        want = "committed_transcript_with_timestamps" if timed else "committed_transcript"
        while messages[-1]["message_type"] != want:
            messages.append(await recv_json(ws))
            assert "error" not in messages[-1], messages[-1]
    return messages


async def test_scribe_commits_cased_punctuated_text_with_word_probabilities(whisper_server) -> None:
    messages = await scribe_stream(whisper_server, FOX.pcm, include_timestamps="true")
    started, *_, committed, timed = messages
    assert_written(committed["text"], FOX.text)
    assert timed["text"] == committed["text"]
    words = [w for w in timed["words"] if w["type"] == "word"]
    assert "".join(w["text"] for w in timed["words"]) == timed["text"]
    assert all(w["logprob"] <= 0 for w in words) and any(w["logprob"] < 0 for w in words)
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and all(w["start"] <= w["end"] for w in words)
    assert 0 <= words[0]["start"] and words[-1]["end"] <= len(FOX.pcm) / 32000 + 0.1
    row = whisper_server.session_row(started["session_id"])
    assert row["resolved_model_name"] == WHISPER and not row["used_fallback"]


async def test_language_detection_alone_brings_the_language_with_the_words(whisper_server) -> None:
    *_, committed, timed = await scribe_stream(whisper_server, FOX.pcm, include_language_detection="true")
    assert (timed["text"], timed["language_code"]) == (committed["text"], "en")
    assert "".join(w["text"] for w in timed["words"]) == timed["text"]


async def test_vad_commits_each_sentence_and_partials_come_first(whisper_server) -> None:
    async with open_ws(whisper_server, q(commit_strategy="vad", vad_silence_threshold_secs=0.5)) as ws:
        await expect_started(ws)
        await send_audio(ws, TWO.pcm + bytes(32000))
        seen: list[dict[str, Any]] = []
        while sum(m["message_type"] == "committed_transcript" for m in seen) < 2:
            seen.append(await recv_json(ws))
            assert "error" not in seen[-1], seen[-1]
    kinds = [m["message_type"] for m in seen]
    assert kinds.index("partial_transcript") < kinds.index("committed_transcript")
    committed = [m["text"] for m in seen if m["message_type"] == "committed_transcript"]
    assert all(text[:1].isupper() for text in committed), committed
    assert word_error_rate(normalized(TWO.text), normalized(" ".join(committed))) <= 0.1, committed


@pytest.mark.skipif(not SPEECH_DEV.is_dir(), reason="shared/speech-dev is not beside this checkout")
async def test_keyterms_are_hotwords(whisper_server) -> None:
    pcm = b"".join(decode_pcm(SPEECH_DEV / "fw_hotwords.mp3"))
    plain = await scribe_stream(whisper_server, pcm)
    biased = await scribe_stream(whisper_server, pcm, keyterms="ComfyUI")
    assert "ComfyUI" not in plain[-1]["text"], plain[-1]
    assert "ComfyUI" in biased[-1]["text"], biased[-1]


async def test_previous_text_is_taken_as_context(whisper_server) -> None:
    async with open_ws(whisper_server) as ws:
        await expect_started(ws)
        await ws.send(frame(FOX.pcm[:3200], previous_text="A pangram, typed by a quick brown fox."))
        await send_audio(ws, FOX.pcm[3200:], previous_text=None)  # as the SDK sends every later chunk
        await ws.send(COMMIT)
        while (message := await recv_json(ws))["message_type"] != "committed_transcript":
            assert "error" not in message, message
    assert_written(message["text"], FOX.text)


async def test_an_english_only_model_refuses_other_languages_in_every_protocol(whisper_server) -> None:
    async with open_ws(whisper_server, q(language_code="de")) as ws:
        error, _ = await expect_error(ws, "invalid_request", results_first=False)
    assert "de" in error and "English" in error, error
    async with native_wire.open_native(whisper_server) as ws:
        key = whisper_server.create_key("acme", "alice")
        await native_wire.send_json(ws, native_wire.start_message(key, language="de"))
        message = await native_wire.recv_message(ws)
    assert "English" in native_wire.check_error(message, "INVALID_ARGUMENT")
    with httpx.Client(base_url=whisper_server.base_url, timeout=30) as http:
        file = uploaded(http, key, wav(FOX.pcm))
        response = http.post("/api/v1/speech-services/transcriptions", headers={"X-API-Key": key}, json={
            "fileId": file["id"], "transcription": {"language": {"defaultLanguageCode": "de"}}})
    assert response.status_code == 400 and "English" in response.json()["detail"], response.text


async def test_reverie_final_has_punctuated_display_text(whisper_server) -> None:
    frames: list[bytes | str] = [*reverie_wire.chunks(FOX.pcm + bytes(32000), 3200), "--EOF--"]
    messages = await reverie_wire.stream(whisper_server, frames, key=reverie_wire.key_for(whisper_server))
    final = messages[-1]
    assert final["final"] is True and final["success"] is True, final
    assert_written(final["display_text"], FOX.text)
    assert word_error_rate(normalized(FOX.text), normalized(final["text"])) <= 0.1, final


async def test_native_protocol_finals(whisper_server) -> None:
    key = whisper_server.create_key("acme", "alice")
    run = await native_wire.run_session(whisper_server, TWO.pcm + bytes(32000), key)
    assert run.info["config"]["resolvedModel"] == WHISPER
    assert word_error_rate(normalized(TWO.text), normalized(run.text)) <= 0.1, run.text
    assert all(final["transcript"][:1].isupper() for final in run.finals), run.finals


async def test_batch_transcription_uses_whisper(whisper_server) -> None:
    key = whisper_server.create_key("acme", "alice")
    with httpx.Client(base_url=whisper_server.base_url, timeout=30) as http:
        file = uploaded(http, key, wav(TWO.pcm))
        response = http.post("/api/v1/speech-services/transcriptions", headers={"X-API-Key": key},
                             json={"fileId": file["id"]})
        assert response.status_code == 201, response.text
        job = await asyncio.to_thread(wait_job, http, key, response.json()["id"])
        assert job["status"] == "COMPLETED" and job["resolvedModelName"] == WHISPER, job
        result = http.get(f"/api/v1/speech-services/transcriptions/{job['id']}/result",
                          headers={"X-API-Key": key}).json()
    assert word_error_rate(normalized(TWO.text), normalized(result["text"])) <= 0.1, result["text"]
    assert all(s["text"][:1].isupper() and s["text"].endswith(".") for s in result["segments"]), result


def test_an_operator_model_is_served_under_its_own_name(make_server) -> None:
    from lectern.speech.models import embedded_whisper_dir

    models = {"whisper-local": {"path": str(embedded_whisper_dir()), "streams_per_worker": 2}}
    srv = make_server(models=json.dumps(models))
    health = httpx.get(f"{srv.base_url}/healthz").json()
    assert health["models"]["whisper-local"] == {"capacity": 4, "languages": ["en"]}, health


@pytest.mark.parametrize("setting, reason", [
    ({"LECTERN_MODELS": json.dumps({"big": {"path": "/nonexistent/model"}})}, "no CTranslate2 model"),
    ({"LECTERN_MODELS": json.dumps({"big": {"path": "Systran/faster-whisper-small"}})}, "downloading models is not allowed"),
    ({"LECTERN_DEFAULT_MODEL": "nope"}, "default model 'nope'"),
])
def test_a_model_that_cannot_be_loaded_stops_the_server_with_the_reason(tmp_path, setting, reason) -> None:
    env = {**LecternServer.base_env(tmp_path), **setting}
    done = subprocess.run([sys.executable, "-m", "lectern", "serve", "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert reason in done.stdout + done.stderr, done.stderr


async def test_admission_counts_each_models_share_of_a_worker(make_server) -> None:
    # One worker: a Whisper stream takes all of it (1 a worker), a pocketsphinx one half (2 a worker).
    # The tenant may fill the node (its default cap is a share of it): this is about the pool's shares.
    srv = make_server(default_model=WHISPER, engine_workers=1, whisper_streams_per_worker=1, streams_per_worker=2,
                      tenant_max_streams=2)
    light = "model_id=pocketsphinx-en-us"
    async with open_ws(srv, light) as first:
        await expect_started(first)
        async with open_ws(srv) as whisper:
            error, _ = await expect_error(whisper, "resource_exhausted", results_first=False)
        assert "whisper-tiny.en" in error, error
        async with open_ws(srv, light) as second:
            await expect_started(second)  # the other half of the worker
            async with open_ws(srv, light) as third:
                await expect_error(third, "resource_exhausted", results_first=False)
    await asyncio.to_thread(poll, lambda: httpx.get(f"{srv.base_url}/healthz").json()["streams"] == 0,
                            "the streams to end")
    async with open_ws(srv) as whisper:  # all free again
        await expect_started(whisper)
