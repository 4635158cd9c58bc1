"""ElevenLabs batch speech-to-text (``POST /v1/speech-to-text``), driven by the official SDK.

Every test talks to a real ``lectern serve`` (SQLite, and PostgreSQL when configured) the way an
ElevenLabs customer would: ``ElevenLabs(base_url=...).speech_to_text.convert(...)``. Each request
is a transcription job of the platform, so the platform's API sees it too.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from elevenlabs import ElevenLabs
from elevenlabs.core.api_error import ApiError
from sqlalchemy import text

from lectern.api.scribe_answer import _segment_words
from lectern.store.batch_models import TranscriptionSegmentRow
from tests.conftest import SPEECH, LecternServer, load_speech, word_error_rate
from tests.speech.test_decode import write_audio

MODEL = "scribe_v1"
FOX = load_speech("fox")
TRANSCRIPTIONS = "/api/v1/speech-services/transcriptions"
FILES = "/api/v1/speech-services/files"


def normalized(transcript: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", transcript.lower()).split())


def client(server: LecternServer, key: str | None) -> ElevenLabs:
    return ElevenLabs(api_key=key, base_url=server.base_url, timeout=120)


def convert(server: LecternServer, key: str | None, **kwargs: Any) -> Any:
    kwargs.setdefault("model_id", MODEL)
    return client(server, key).speech_to_text.convert(**kwargs)


def refused(server: LecternServer, key: str | None, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        convert(server, key, **kwargs)
    return caught.value


def detail(error: ApiError) -> dict[str, Any]:
    """ElevenLabs' error body: {"detail": {"type", "code", "message", "status", "request_id", "param"?}}."""
    assert isinstance(error.body, dict) and isinstance(error.body.get("detail"), dict), error.body
    found = error.body["detail"]
    assert {"type", "code", "message", "status", "request_id"} <= set(found), found
    assert found["message"] and isinstance(found["message"], str)
    return found


def wav_bytes(pcm: bytes, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def api(server: LecternServer, key: str, path: str) -> dict[str, Any]:
    response = httpx.get(f"{server.base_url}{path}", headers={"X-API-Key": key}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def check_words(result: Any, seconds: float, characters: bool) -> None:
    """Words and spacing alternate, concatenate to the text, and are timed inside the audio."""
    words = result.words
    assert words, result
    assert "".join(w.text for w in words) == result.text
    assert [w.type for w in words] == ["word", "spacing"] * (len(words) // 2) + ["word"]
    previous_end = 0.0
    for w in words:
        assert 0.0 <= w.start <= w.end <= seconds + 0.05, w
        assert w.start >= previous_end - 1e-6, (w, previous_end)  # ascending, never overlapping
        previous_end = w.end
        assert w.speaker_id is None
        if w.type == "spacing":
            assert (w.text, w.logprob) == (" ", 0.0)
        else:
            assert w.text.strip() == w.text and w.logprob <= 0.0
        if characters:
            assert w.characters and "".join(c.text for c in w.characters) == w.text
            assert w.characters[0].start == pytest.approx(w.start, abs=1e-3)
            assert w.characters[-1].end == pytest.approx(w.end, abs=1e-3)
        else:
            assert w.characters is None


# -- transcripts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fox", "weather", "meeting", "two_sentences"])
def test_a_wav_file_is_transcribed_with_timed_words(server: LecternServer, api_key: str, name: str) -> None:
    speech = load_speech(name)
    with open(SPEECH / f"{name}.wav", "rb") as audio:
        result = convert(server, api_key, file=audio)
    assert word_error_rate(speech.text, normalized(result.text)) <= 0.2, (speech.text, result.text)
    assert result.text[0].isupper() and result.text.endswith("."), result.text  # written as sentences
    assert (result.language_code, result.language_probability) == ("eng", 1.0)
    assert result.audio_duration_secs == pytest.approx(speech.seconds, abs=0.01)
    check_words(result, speech.seconds, characters=False)


def test_every_option_the_sdk_sends_that_this_server_honours(server: LecternServer, api_key: str) -> None:
    with open(SPEECH / "fox.wav", "rb") as audio:
        result = convert(
            server, api_key, file=audio, model_id="scribe_v2", language_code="en", tag_audio_events=True,
            num_speakers=1, diarize=False, timestamps_granularity="character", file_format="other",
            webhook=False, temperature=0.0, seed=7, use_multi_channel=False, no_verbatim=True,
            use_speaker_library=False, detect_speaker_roles=False, keyterms=["quick brown fox", "lazy dog"],
            secondary_language_codes=["eng"], numbers_format="words", entity_redaction_mode="redacted",
            enable_logging=True, additional_formats=[{"format": "srt"}, {"format": "txt", "include_timestamps": False}],
        )
    assert word_error_rate(FOX.text, normalized(result.text)) <= 0.2, result.text
    check_words(result, FOX.seconds, characters=True)
    srt, txt = result.additional_formats
    assert (srt.requested_format, srt.file_extension, srt.is_base_64_encoded) == ("srt", "srt", False)
    assert srt.content.startswith("1\n00:00:0") and " --> " in srt.content and result.text in srt.content
    assert (txt.requested_format, txt.content) == ("txt", result.text + "\n")


def test_timestamps_granularity_none_gives_the_text_without_words(server: LecternServer, api_key: str) -> None:
    with open(SPEECH / "fox.wav", "rb") as audio:
        result = convert(server, api_key, file=audio, timestamps_granularity="none")
    assert result.words == []
    assert word_error_rate(FOX.text, normalized(result.text)) <= 0.2, result.text


def test_raw_pcm_with_file_format_pcm_s16le_16(server: LecternServer, api_key: str) -> None:
    result = convert(server, api_key, file=("fox.pcm", FOX.pcm, "application/octet-stream"),
                     file_format="pcm_s16le_16")
    assert word_error_rate(FOX.text, normalized(result.text)) <= 0.2, result.text
    assert result.audio_duration_secs == pytest.approx(FOX.seconds, abs=0.01)
    check_words(result, FOX.seconds, characters=False)
    # Kept as a WAV file of those very samples.
    job = api(server, api_key, f"{TRANSCRIPTIONS}/{result.transcription_id}")
    content = httpx.get(f"{server.base_url}{FILES}/{job['fileId']}/content", headers={"X-API-Key": api_key},
                        timeout=30)
    with wave.open(io.BytesIO(content.content)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert w.readframes(w.getnframes()) == FOX.pcm


def test_raw_pcm_that_is_not_whole_samples_is_refused(server: LecternServer, api_key: str) -> None:
    error = refused(server, api_key, file=("x.pcm", FOX.pcm[:-1], "application/octet-stream"),
                    file_format="pcm_s16le_16")
    assert error.status_code == 400 and "16-bit samples" in detail(error)["message"]


@pytest.mark.parametrize(("muxer", "encoder", "bit_rate"), [("mp3", "libmp3lame", 32000), ("ogg", "libopus", 24000)])
def test_compressed_files_are_transcribed(server: LecternServer, api_key: str, tmp_path: Path, muxer: str,
                                          encoder: str, bit_rate: int) -> None:
    samples = np.frombuffer(FOX.pcm, dtype=np.int16)
    path = write_audio(tmp_path / f"fox.{muxer}", muxer, encoder, samples, bit_rate=bit_rate)
    with open(path, "rb") as audio:
        result = convert(server, api_key, file=audio)
    assert word_error_rate(FOX.text, normalized(result.text)) <= 0.25, result.text
    check_words(result, result.audio_duration_secs, characters=False)


def test_silence_gives_an_empty_transcript(server: LecternServer, api_key: str) -> None:
    with open(SPEECH / "silence_3s.wav", "rb") as audio:
        result = convert(server, api_key, file=audio)
    assert (result.text, result.words) == ("", [])


def test_no_verbatim_drops_fillers_and_repeats_and_keeps_words_and_text_aligned() -> None:
    words = [{"word": w, "startSeconds": i * 0.5, "endSeconds": i * 0.5 + 0.4, "confidence": 0.9}
             for i, w in enumerate(["um", "i", "i", "think", "uh", "so"])]
    segment = TranscriptionSegmentRow(transcript="Um I I think uh so.", words=words, start_seconds=0.0,
                                      end_seconds=3.0)
    text, kept = _segment_words(segment, no_verbatim=True)
    assert text == "I think so." and [w.text for w in kept] == ["I", "think", "so."]
    assert [w.start for w in kept] == [0.5, 1.5, 2.5]
    text, kept = _segment_words(segment, no_verbatim=False)
    assert text == "Um I I think uh so." and [w.text for w in kept] == text.split(" ")


# -- the platform's view ---------------------------------------------------------------------------


def test_the_job_is_in_the_transcriptions_api(server: LecternServer, api_key: str) -> None:
    with open(SPEECH / "weather.wav", "rb") as audio:
        result = convert(server, api_key, file=audio, model_id="scribe_v2")
    listed = api(server, api_key, f"{TRANSCRIPTIONS}?status=COMPLETED")["transcriptions"]
    job = next(t for t in listed if t["id"] == result.transcription_id)
    assert (job["status"], job["model"], job["languageCode"]) == ("COMPLETED", "scribe_v2", "en")
    assert job["punctuation"] and job["capitalization"]
    assert api(server, api_key, f"{TRANSCRIPTIONS}/{job['id']}")["result"]["text"] == result.text
    file = api(server, api_key, f"{FILES}/{job['fileId']}")
    assert (file["filename"], file["isDeleted"]) == ("weather.wav", False)


def test_enable_logging_false_keeps_neither_audio_nor_transcript(server: LecternServer, api_key: str) -> None:
    with open(SPEECH / "fox.wav", "rb") as audio:
        result = convert(server, api_key, file=audio, enable_logging=False)
    assert word_error_rate(FOX.text, normalized(result.text)) <= 0.2, result.text
    job = api(server, api_key, f"{TRANSCRIPTIONS}/{result.transcription_id}")
    assert (job["status"], job["isDeleted"], job["isPurged"], job["result"]) == ("COMPLETED", True, True, None)
    assert api(server, api_key, f"{FILES}/{job['fileId']}")["isDeleted"] is True


def test_a_raw_client_with_the_platform_key_header(server: LecternServer, api_key: str) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/speech-to-text", headers={"X-API-Key": api_key}, timeout=60,
        data={"model_id": "anything-goes", "timestamps_granularity": "word"},
        files={"file": ("fox.wav", (SPEECH / "fox.wav").read_bytes(), "audio/wav")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert word_error_rate(FOX.text, normalized(body["text"])) <= 0.2
    assert {"language_code", "language_probability", "text", "words", "transcription_id"} <= set(body)


async def test_a_client_that_leaves_cancels_its_job(server: LecternServer, api_key: str) -> None:
    long_audio = wav_bytes(FOX.pcm * 100)  # six minutes: far from done when the client leaves
    async with httpx.AsyncClient(timeout=120) as http:
        request = asyncio.create_task(http.post(
            f"{server.base_url}/v1/speech-to-text", headers={"xi-api-key": api_key}, data={"model_id": MODEL},
            files={"file": ("long.wav", long_audio, "audio/wav")},
        ))
        job_id = await asyncio.to_thread(wait_for_job, server, ("PENDING", "IN_PROGRESS"))
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    assert await asyncio.to_thread(wait_for_job, server, ("CANCELLED",), job_id) == job_id


async def test_a_job_cancelled_through_the_platform_api_ends_the_request_with_409(
        server: LecternServer, api_key: str) -> None:
    long_audio = wav_bytes(FOX.pcm * 100)
    async with httpx.AsyncClient(timeout=120) as http:
        request = asyncio.create_task(http.post(
            f"{server.base_url}/v1/speech-to-text", headers={"xi-api-key": api_key}, data={"model_id": MODEL},
            files={"file": ("long.wav", long_audio, "audio/wav")},
        ))
        job_id = await asyncio.to_thread(wait_for_job, server, ("PENDING", "IN_PROGRESS"))
        job = next(t["id"] for t in api(server, api_key, TRANSCRIPTIONS)["transcriptions"]
                   if t["status"] in ("PENDING", "IN_PROGRESS"))
        assert job.replace("-", "") == str(job_id).replace("-", "")
        cancel = await http.post(f"{server.base_url}{TRANSCRIPTIONS}/{job}/cancel", headers={"X-API-Key": api_key})
        assert cancel.status_code == 204, cancel.text
        response = await request
    assert response.status_code == 409 and response.headers["content-type"] == "application/json"
    body = response.json()["detail"]
    assert (body["code"], body["type"]) == ("transcription_cancelled", "invalid_request")
    assert "cancelled" in body["message"]


def wait_for_job(server: LecternServer, states: tuple[str, ...], job_id: Any = None, timeout: float = 60) -> Any:
    """The id of the ElevenLabs job (``job_id``, or any) once it is in one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        with server.db() as s:
            rows = s.execute(text("SELECT id, status FROM transcriptions WHERE source = 'elevenlabs'")).all()
        found = [r.id for r in rows if r.status in states and (job_id is None or r.id == job_id)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no elevenlabs job reached {states}: {rows}"
        time.sleep(0.05)


# -- errors ----------------------------------------------------------------------------------------


def test_a_request_without_a_file(server: LecternServer, api_key: str) -> None:
    error = refused(server, api_key)
    assert error.status_code == 400 and detail(error)["param"] == "file"
    assert "file" in detail(error)["message"]


def test_a_url_instead_of_a_file_is_refused(server: LecternServer, api_key: str) -> None:
    error = refused(server, api_key, source_url="https://example.com/a.mp3")
    assert error.status_code == 400
    with open(SPEECH / "fox.wav", "rb") as audio:
        error = refused(server, api_key, file=audio, cloud_storage_url="https://example.com/a.mp3")
    assert error.status_code == 400 and detail(error)["param"] == "cloud_storage_url"
    assert "network" in detail(error)["message"]


def test_a_file_that_is_not_audio(server: LecternServer, api_key: str) -> None:
    error = refused(server, api_key, file=("notes.txt", b"these are not the droids\n" * 20, "text/plain"))
    assert error.status_code == 400
    assert detail(error)["param"] == "file" and "audio" in detail(error)["message"]


def test_an_empty_file(server: LecternServer, api_key: str) -> None:
    error = refused(server, api_key, file=("empty.wav", b"", "audio/wav"))
    assert error.status_code == 400 and "empty" in detail(error)["message"]


@pytest.mark.parametrize(("option", "param"), [
    ({"language_code": "fr"}, "language_code"),
    ({"language_code": "deu"}, "language_code"),
    ({"secondary_language_codes": ["es"]}, "secondary_language_codes"),
    ({"diarize": True}, "diarize"),
    ({"num_speakers": 2}, "num_speakers"),
    ({"diarization_threshold": 0.3}, "diarization_threshold"),
    ({"detect_speaker_roles": True}, "detect_speaker_roles"),
    ({"use_multi_channel": True}, "use_multi_channel"),
    ({"webhook": True}, "webhook"),
    ({"webhook_id": "abc"}, "webhook_id"),
    ({"entity_detection": "all"}, "entity_detection"),
    ({"entity_redaction": ["pii"]}, "entity_redaction"),
    ({"transcript_edit": "make it formal"}, "transcript_edit"),
    ({"numbers_format": "digits"}, "numbers_format"),
    ({"timestamps_granularity": "syllable"}, "timestamps_granularity"),
    ({"file_format": "pcm_s16le_8"}, "file_format"),
    ({"temperature": 3.0}, "temperature"),
    ({"keyterms": ["x" * 51]}, "keyterms"),
    ({"additional_formats": [{"format": "pdf"}]}, "additional_formats"),
])
def test_what_this_server_cannot_do_is_refused_clearly(server: LecternServer, api_key: str,
                                                       option: dict[str, Any], param: str) -> None:
    with open(SPEECH / "fox.wav", "rb") as audio:
        error = refused(server, api_key, file=audio, **option)
    assert error.status_code == 400, error.body
    found = detail(error)
    assert (found["type"], found["code"], found["param"]) == ("validation_error", "invalid_parameters", param)
    assert param.split("_")[0] in found["message"]


def test_a_wrong_or_missing_key_is_401(server: LecternServer) -> None:
    with open(SPEECH / "fox.wav", "rb") as audio:
        wrong = refused(server, "kk-not-a-key", file=audio)
    assert wrong.status_code == 401
    assert (detail(wrong)["type"], detail(wrong)["status"]) == ("authentication_error", "invalid_api_key")
    with open(SPEECH / "fox.wav", "rb") as audio:
        missing = refused(server, None, file=audio)
    assert missing.status_code == 401 and detail(missing)["status"] == "needs_authorization"
    with open(SPEECH / "fox.wav", "rb") as audio:
        token = refused(server, None, file=audio, token="sutkn_unknown")
    assert token.status_code == 401


def test_a_key_without_the_scopes_is_403(server: LecternServer) -> None:
    for scopes in (["speech:files:write"], ["speech:transcriptions:write"]):
        key = server.create_key("acme", "limited", scopes=scopes)
        with open(SPEECH / "fox.wav", "rb") as audio:
            error = refused(server, key, file=audio)
        assert error.status_code == 403 and detail(error)["type"] == "authorization_error"
        missing = ({"speech:files:write", "speech:transcriptions:write"} - set(scopes)).pop()
        assert missing in detail(error)["message"]


def test_a_body_that_is_not_multipart_is_refused_in_elevenlabs_shape(server: LecternServer, api_key: str) -> None:
    response = httpx.post(f"{server.base_url}/v1/speech-to-text", headers={"xi-api-key": api_key},
                          json={"model_id": MODEL}, timeout=30)
    assert response.status_code == 415 and response.headers["content-type"] == "application/json"
    assert "multipart/form-data" in response.json()["detail"]["message"]


def test_the_upload_limit_holds_at_its_edge(make_server: Any) -> None:
    srv = make_server(max_upload_bytes=len(FOX.pcm))
    key = srv.create_key()
    result = convert(srv, key, file=("fox.pcm", FOX.pcm, "application/octet-stream"), file_format="pcm_s16le_16")
    assert word_error_rate(FOX.text, normalized(result.text)) <= 0.2, result.text
    error = refused(srv, key, file=("fox.pcm", FOX.pcm + b"\0\0", "application/octet-stream"),
                    file_format="pcm_s16le_16")
    assert error.status_code == 413 and detail(error)["param"] == "file"
    assert str(len(FOX.pcm)) in detail(error)["message"]
    with srv.db() as s:  # nothing was kept of the refused upload
        statuses = s.execute(text("SELECT status FROM transcriptions")).scalars().all()
        assert statuses == ["COMPLETED"]
        assert s.execute(text("SELECT count(*) FROM files")).scalar() == 1
