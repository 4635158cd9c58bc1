"""A multilingual Whisper model, as an operator model, through every protocol and through batch.

The model is tests/speech/tiny_multilingual.py's: random weights, so what it writes is gibberish
and these tests never look at words. They check the plumbing of languages: the model's languages
in /healthz, a language asked for is used, a stream or job without one gets the detected one back
(the fixture hears Telugu in any speech, with a probability near 0.09: not English, and stable
enough to compare with the same model's runner), and a language the model has no token for is
refused in each protocol's own shape. One server for the module: the multilingual model is its
default (Reverie has no model parameter), and the embedded tiny.en is beside it, still refusing
French.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from elevenlabs import ElevenLabs
from elevenlabs.core.api_error import ApiError

from lectern.speech.engines.whisper_runner import WhisperRequest, WhisperRunner
from lectern.speech.models import iso639_3
from tests.api.test_transcriptions_api import uploaded, wait_job, wav
from tests.conftest import LecternServer, load_speech
from tests.realtime import native_wire, reverie_wire
from tests.realtime.scribe_wire import COMMIT, expect_error, expect_started, key_for, open_ws, recv_json, send_audio
from tests.speech import tiny_multilingual

MULTI = "whisper-multilingual"
ENGLISH = "whisper-tiny.en"
FOX = load_speech("fox")
TRANSCRIPTIONS = "/api/v1/speech-services/transcriptions"
UNSERVED = ["tlh", "xx", "yue"]  # Klingon, no language, and one faster-whisper knows but this model lacks


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_multilingual.build(tmp_path_factory.mktemp("tiny-multilingual"))


@pytest.fixture(scope="module")
def languages(model_dir: Path) -> list[str]:
    return tiny_multilingual.languages(model_dir)


@pytest.fixture(scope="module")
def detected(model_dir: Path) -> str:
    """What the model detects in FOX, decoded here by the same runner the workers use."""
    audio = np.frombuffer(FOX.pcm, np.int16).astype(np.float32) / 32768
    language = WhisperRunner(model_dir).transcribe(WhisperRequest(audio)).language
    assert language != "en"  # else a default of "en" would pass for a detected language
    return language


@pytest.fixture(scope="module")
def multi(backend: str, tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Any:
    models = {MULTI: {"path": str(model_dir)}}
    srv = LecternServer(tmp_path_factory.mktemp(f"multilingual-{backend}"), backend,
                        # One worker: the tests run one stream or job at a time, and a start is cheaper.
                        {"models": json.dumps(models), "default_model": MULTI, "engine_workers": 1})
    yield srv
    srv.stop()


def scribe_query(**params: Any) -> str:
    return "&".join(f"{name}={value}" for name, value in {"model_id": MULTI, **params}.items())


async def scribe_commit(srv: LecternServer, **params: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """session_started and the committed_transcript_with_timestamps of FOX, committed by hand."""
    async with open_ws(srv, scribe_query(include_language_detection="true", **params)) as ws:
        started = await expect_started(ws)
        await send_audio(ws, FOX.pcm)
        await ws.send(COMMIT)
        while (message := await recv_json(ws))["message_type"] != "committed_transcript_with_timestamps":
            assert "error" not in message, message
    return started, message


def test_healthz_lists_the_models_languages(multi: LecternServer, languages: list[str]) -> None:
    models = httpx.get(f"{multi.base_url}/healthz").json()["models"]
    assert models[MULTI]["languages"] == languages and len(languages) == 99
    assert models[ENGLISH]["languages"] == ["en"]


# -- ElevenLabs realtime ----------------------------------------------------------------------------


async def test_scribe_uses_the_language_asked_for(multi: LecternServer) -> None:
    started, timed = await scribe_commit(multi, language_code="fr")
    assert (started["config"]["language_code"], started["config"]["model_id"]) == ("fr", MULTI)
    assert timed["language_code"] == "fr"
    row = multi.session_row(started["session_id"])
    assert (row["resolved_model_name"], row["language_code"]) == (MULTI, "fr")


async def test_scribe_without_a_language_reports_the_detected_one(multi: LecternServer, detected: str) -> None:
    started, timed = await scribe_commit(multi)
    assert timed["language_code"] == detected
    assert multi.session_row(started["session_id"])["language_code"] == "auto"


async def test_scribe_accepts_iso_639_3_and_regions(multi: LecternServer) -> None:
    _, timed = await scribe_commit(multi, language_code="deu")
    assert timed["language_code"] == "de"
    _, timed = await scribe_commit(multi, language_code="pt-BR")
    assert timed["language_code"] == "pt"


@pytest.mark.parametrize("code", UNSERVED)
async def test_scribe_refuses_a_language_the_model_lacks(multi: LecternServer, code: str) -> None:
    async with open_ws(multi, scribe_query(language_code=code)) as ws:
        error, _ = await expect_error(ws, "invalid_request", results_first=False)
    assert repr(code) in error and MULTI in error, error


async def test_the_english_only_model_beside_it_still_refuses_french(multi: LecternServer) -> None:
    async with open_ws(multi, f"model_id={ENGLISH}&language_code=fr") as ws:
        error, _ = await expect_error(ws, "invalid_request", results_first=False)
    assert "English" in error, error


# -- Reverie --------------------------------------------------------------------------------------


async def test_reverie_streams_in_the_src_lang_asked_for(multi: LecternServer) -> None:
    frames: list[bytes | str] = [*reverie_wire.chunks(FOX.pcm + bytes(32000), 3200), "--EOF--"]
    messages = await reverie_wire.stream(multi, frames, src_lang="fr")
    final = reverie_wire.check_stream(messages, messages[-1]["cause"])
    assert final["success"] is True and final["cause"] in ("EOF received", "silence detected"), final
    row = multi.session_row(messages[0]["id"])
    assert (row["resolved_model_name"], row["language_code"]) == (MULTI, "fr")


@pytest.mark.parametrize("code", UNSERVED)
async def test_reverie_refuses_a_src_lang_the_model_lacks(multi: LecternServer, code: str) -> None:
    async with reverie_wire.open_stream(multi, src_lang=code) as ws:
        messages = await reverie_wire.read_all(ws)
    assert len(messages) == 1, messages
    why = reverie_wire.check_error(messages[0], 400, "no decoder for given args")
    assert f"src_lang={code}" in why and MULTI in why, why


# -- native ---------------------------------------------------------------------------------------


async def test_native_streams_in_the_language_asked_for(multi: LecternServer) -> None:
    key = key_for(multi)
    run = await native_wire.run_session(multi, FOX.pcm + bytes(32000), key, model=MULTI, language="fr")
    assert (run.info["config"]["resolvedModel"], run.info["config"]["language"]) == (MULTI, "fr")
    assert run.finals, run.closed.messages
    row = multi.session_row(run.session_id)
    assert (row["resolved_model_name"], row["language_code"]) == (MULTI, "fr")


async def test_native_without_a_language_lets_the_model_detect_it(multi: LecternServer) -> None:
    """Not English by default, as on the English-only models: the session echoes no language and
    is stored as auto (native finals carry no language)."""
    run = await native_wire.run_session(multi, FOX.pcm + bytes(32000), key_for(multi), model=MULTI)
    assert run.info["config"]["language"] is None and run.finals, run.info
    assert multi.session_row(run.session_id)["language_code"] == "auto"


@pytest.mark.parametrize("code", UNSERVED)
async def test_native_refuses_a_language_the_model_lacks(multi: LecternServer, code: str) -> None:
    async with native_wire.open_native(multi) as ws:
        await native_wire.send_json(ws, native_wire.start_message(key_for(multi), model=MULTI, language=code))
        text = await native_wire.expect_refusal(ws, "INVALID_ARGUMENT", 1008)
    assert repr(code) in text and MULTI in text, text


# -- batch ----------------------------------------------------------------------------------------


def scribe_convert(srv: LecternServer, **kwargs: Any) -> Any:
    client = ElevenLabs(api_key=key_for(srv), base_url=srv.base_url, timeout=120)
    return client.speech_to_text.convert(model_id=MULTI, file=("fox.wav", wav(FOX.pcm), "audio/wav"), **kwargs)


async def test_scribe_batch_answers_the_detected_language(multi: LecternServer, detected: str) -> None:
    result = await asyncio.to_thread(scribe_convert, multi)
    assert result.language_code == iso639_3(detected) and 0 < result.language_probability <= 1, result
    given = await asyncio.to_thread(scribe_convert, multi, language_code="fra")
    assert (given.language_code, given.language_probability) == ("fra", 1.0), given


@pytest.mark.parametrize("code", UNSERVED)
def test_scribe_batch_refuses_a_language_the_model_lacks(multi: LecternServer, code: str) -> None:
    with pytest.raises(ApiError) as caught:
        scribe_convert(multi, language_code=code)
    assert caught.value.status_code == 400, caught.value.body
    found = caught.value.body["detail"]
    assert (found["type"], found["code"], found["param"]) == ("validation_error", "invalid_parameters", "language_code")
    assert repr(code) in found["message"], found


def transcribe(http: httpx.Client, key: str, **language: str) -> httpx.Response:
    file = uploaded(http, key, wav(FOX.pcm))
    options: dict[str, Any] = {"model": MULTI}
    if language:
        options["language"] = language
    return http.post(TRANSCRIPTIONS, headers={"X-API-Key": key}, json={"fileId": file["id"], "transcription": options})


async def test_platform_transcriptions_detect_or_keep_the_language(multi: LecternServer, detected: str) -> None:
    key = key_for(multi)
    with httpx.Client(base_url=multi.base_url, timeout=30) as http:
        jobs = {}
        for name, language in (("detected", {}), ("given", {"defaultLanguageCode": "de-DE"})):
            response = transcribe(http, key, **language)
            assert response.status_code == 201, response.text
            jobs[name] = response.json()["id"]
        done = {name: await asyncio.to_thread(wait_job, http, key, job) for name, job in jobs.items()}
    assert done["detected"]["status"] == "COMPLETED" and done["detected"]["languageCode"] == detected, done
    assert done["given"]["status"] == "COMPLETED" and done["given"]["languageCode"] == "de", done


def test_platform_transcriptions_refuse_a_language_the_model_lacks(multi: LecternServer) -> None:
    key = key_for(multi)
    with httpx.Client(base_url=multi.base_url, timeout=30) as http:
        response = transcribe(http, key, defaultLanguageCode="tlh")
    assert response.status_code == 400 and response.headers["content-type"].startswith("application/problem+json")
    assert "'tlh'" in response.json()["detail"], response.text
