"""The Reverie streaming endpoint (``/stream``), driven by the official ``reverie-sdk`` client.

Every test talks to a real ``lectern serve`` process (SQLite, and PostgreSQL when configured) the
way a Reverie customer would: ``ReverieClient(api_key=<Lectern key>, app_id=<tenant>)`` and
``client.asr.stt_stream(...)`` (sync generator; 1024-byte binary frames, then a binary
``--EOF--``) or ``await client.asr.stt_stream_async(..., callback=...)`` (4096-byte frames). The
SDK sends the whole byte string at once, so nothing here is paced; what needs exact frames or
real time is in test_reverie_wire.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import soxr
from reverie_sdk import ReverieClient
from reverie_sdk.services.asr import AudioStream
from sqlalchemy import update

from lectern.store.models import Tenant
from tests.conftest import LecternServer, load_speech, word_error_rate
from tests.realtime.reverie_wire import (
    BYTE_STREAM_FORMATS,
    FORMATS,
    api_get,
    check_error,
    check_stream,
    encode,
    ended_row_sync,
    jsonish,
    session_uuid,
    silence,
    texts,
)

FOX = load_speech("fox")
NUMBERS = load_speech("numbers")
COFFEE = load_speech("coffee")
WEATHER = load_speech("weather")
TWO = load_speech("two_sentences")
FIRST, SECOND = "the children are playing in the park", "we will have dinner at home tonight"
SECOND_ONLY_WORDS = {"dinner", "home", "tonight"}
MAX_WER = 0.15


# -- helpers ----------------------------------------------------------------------------------


def as_dict(result: Any) -> dict[str, Any]:
    """A ReverieAsrResult as the message it was made from (the seven keys plus any extra)."""
    assert result is not None, "the SDK could not parse a message"
    keys = ("id", "success", "final", "cause", "text", "confidence", "display_text")
    return {**{k: getattr(result, k) for k in keys}, **result.extra}


def sdk(key: str, tenant: str = "acme") -> ReverieClient:
    return ReverieClient(api_key=key, app_id=tenant)


def stt_stream(
    server: LecternServer, key: str, audio: bytes, tenant: str = "acme", **options: Any
) -> list[dict[str, Any]]:
    """Every result of the sync SDK's stream, as message dicts."""
    options.setdefault("src_lang", "en")
    results = sdk(key, tenant).asr.stt_stream(
        bytes_or_stream=audio, secure=False, host=f"127.0.0.1:{server.port}", **options
    )
    return [as_dict(r) for r in results]


async def stt_stream_async(server: LecternServer, key: str, audio: bytes, **options: Any) -> list[dict[str, Any]]:
    """Every result the async SDK hands its callback, as message dicts."""
    options.setdefault("src_lang", "en")
    results: list[Any] = []
    await sdk(key).asr.stt_stream_async(
        bytes_or_stream=audio, callback=results.append, secure=False, host=f"127.0.0.1:{server.port}", **options
    )
    return [as_dict(r) for r in results]


def recording(server: LecternServer, key: str, stream_id: str) -> bytes:
    response = api_get(server, key, f"/{stream_id}/recording")
    assert response.status_code == 200, response.text
    return response.content


def partials(messages: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in messages if m["cause"] == "partial"]


@pytest.fixture(autouse=True)
def no_tracebacks(server: LecternServer) -> Iterator[None]:
    """The server logged no traceback (an unhandled error) while the test ran."""
    log = server.data_dir / "server.log"
    before = log.stat().st_size
    yield
    new = log.read_bytes()[before:].decode(errors="replace")
    assert "Traceback" not in new and "Exception in ASGI application" not in new, new


# -- 1. one utterance to EOF: messages, ids, the stored session --------------------------------


def test_an_utterance_is_transcribed_and_stored_under_the_stream_id(server, api_key):
    messages = stt_stream(server, api_key, FOX.pcm)
    final = check_stream(messages, "EOF received")

    assert word_error_rate(FOX.text, final["text"]) <= MAX_WER, final
    assert final["display_text"] == final["text"][0].upper() + final["text"][1:] + ".", final
    assert 0.0 < final["confidence"] <= 1.0, final
    # Partial results grow towards the final transcript.
    shown = partials(messages)
    assert len(shown) >= 2, messages
    assert len(shown[0].split()) < len(final["text"].split()), messages
    assert max(len(p.split()) for p in shown) >= len(final["text"].split()) - 1, messages

    # The id is the session's: the sessions API finds it as given (32 hex digits).
    stream_id = final["id"]
    response = api_get(server, api_key, f"/{stream_id}")
    assert response.status_code == 200, response.text
    session = response.json()
    assert session["sessionId"] == session_uuid(stream_id)
    assert session["state"] == "FINISHED"
    assert session["requestedModelAlias"] == "reverie-en-generic" and session["usedFallback"] is False
    assert session["segmentCount"] == 1 and session["wordsCount"] == len(final["text"].split())
    assert abs(session["durationMilliseconds"] - len(FOX.pcm) / 32) <= 1, session
    assert session["recordingRequested"] is True  # logging defaults to true

    row = ended_row_sync(server, stream_id)
    assert row["protocol"] == "reverie"
    assert jsonish(row["config"]) == {
        "src_lang": "en", "domain": "generic", "format": "16k_int16", "timeout": 15.0, "silence": 15.0,
        "logging": "true", "punctuate": True, "continuous": False,
    }
    [segment] = server.segment_rows(session_uuid(stream_id))
    assert segment["transcript"] == final["text"], segment
    assert recording(server, api_key, stream_id) == FOX.pcm  # 16k_int16 is kept byte for byte


def test_each_stream_has_its_own_id(server, api_key):
    first = stt_stream(server, api_key, b"")
    second = stt_stream(server, api_key, b"")
    assert check_stream(first, "audio too short")["id"] != check_stream(second, "audio too short")["id"]


# -- 2. display_text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("speech", "punctuate", "display"),
    [
        (NUMBERS, "true", "My phone number is 5 5 5 1 2 3 4."),
        (NUMBERS, "false", "my phone number is 5 5 5 1 2 3 4"),
        (COFFEE, "true", "I would like a cup of coffee with sugar."),
        (COFFEE, "false", "i would like a cup of coffee with sugar"),
    ],
    ids=["numbers-punctuated", "numbers-plain", "pronoun-I-punctuated", "pronoun-i-plain"],
)
def test_display_text_writes_numbers_as_digits_and_punctuates_on_request(server, api_key, speech, punctuate, display):
    final = check_stream(stt_stream(server, api_key, speech.pcm, punctuate=punctuate), "EOF received")
    assert final["text"] == speech.text, final  # the engine hears these fixtures word for word
    assert final["display_text"] == display, final


# -- 3. the async client ------------------------------------------------------------------------


async def test_the_async_client_streams_to_eof(server, api_key):
    messages = await stt_stream_async(server, api_key, WEATHER.pcm)
    final = check_stream(messages, "EOF received")
    assert word_error_rate(WEATHER.text, final["text"]) <= MAX_WER, final
    # The async client sends no punctuate parameter: the default (true) applies.
    assert final["display_text"] == final["text"][0].upper() + final["text"][1:] + "."
    row = await asyncio.to_thread(ended_row_sync, server, final["id"])
    assert row["state"] == "FINISHED"
    assert jsonish(row["config"])["punctuate"] is True


async def test_the_async_client_never_sends_punctuate_or_continuous(server, api_key):
    # stt_stream_async takes punctuate and continuous as named parameters but leaves them out of
    # the URL (and so they cannot be extra parameters either): the server's defaults apply.
    messages = await stt_stream_async(server, api_key, TWO.pcm, silence=1, punctuate="false", continuous="true")
    final = check_stream(messages, "silence detected")
    assert word_error_rate(FIRST, final["text"]) <= MAX_WER, final
    assert final["display_text"] == final["text"][0].upper() + final["text"][1:] + ".", final
    config = jsonish((await asyncio.to_thread(ended_row_sync, server, final["id"]))["config"])
    assert (config["punctuate"], config["continuous"]) == (True, False), config


async def test_the_async_client_stops_at_silence_detected(server, api_key):
    messages = await stt_stream_async(server, api_key, TWO.pcm, silence=1)
    final = check_stream(messages, "silence detected")
    assert word_error_rate(FIRST, final["text"]) <= MAX_WER, final
    assert not SECOND_ONLY_WORDS & set(texts(messages).split()), messages


async def test_the_async_client_sees_a_refusal(server, api_key):
    [message] = await stt_stream_async(server, api_key, FOX.pcm, src_lang="hi")
    check_error(message, 400, "no decoder for given args")


# -- 4. silence: single utterance, and continuous ------------------------------------------------


def test_silence_ends_the_stream_and_the_rest_is_neither_transcribed_nor_stored(server, api_key):
    messages = stt_stream(server, api_key, TWO.pcm, silence=1)
    final = check_stream(messages, "silence detected")
    assert word_error_rate(FIRST, final["text"]) <= MAX_WER, final
    assert final["display_text"] == final["text"][0].upper() + final["text"][1:] + "."
    assert not SECOND_ONLY_WORDS & set(texts(messages).split()), messages

    stream_id = final["id"]
    row = ended_row_sync(server, stream_id)
    assert row["state"] == "FINISHED", row
    segments = server.segment_rows(session_uuid(stream_id))
    assert [s["transcript"] for s in segments] == [final["text"]], segments
    assert row["segment_count"] == 1 and row["words_count"] == len(final["text"].split()), row
    # The audio after the pause was not processed: the duration and the recording stop before the
    # second sentence (which starts at 3.99 s) and hold exactly the audio before that point.
    second_starts = 63840 * 2
    kept = recording(server, api_key, stream_id)
    assert 0 < len(kept) < second_starts, len(kept)
    assert kept == TWO.pcm[: len(kept)]
    assert row["duration_ms"] == len(kept) // 32, (row["duration_ms"], len(kept))


def test_a_pause_shorter_than_silence_does_not_end_the_stream(server, api_key):
    # two_sentences pauses 2 s between its sentences; with silence=3 only EOF ends it.
    messages = stt_stream(server, api_key, TWO.pcm, silence=3)
    final = check_stream(messages, "EOF received")
    assert word_error_rate(TWO.text, final["text"]) <= MAX_WER, final


@pytest.mark.parametrize("continuous", ["true", 1])
def test_continuous_mode_transcribes_every_utterance_until_eof(server, api_key, continuous):
    messages = stt_stream(server, api_key, TWO.pcm, silence=1, continuous=continuous)
    final = check_stream(messages, "EOF received", continuous=True)
    ends = [m for m in messages if m["cause"] == "silence detected"]
    assert len(ends) == 1, messages
    [first] = ends
    assert first["final"] is False, first  # the SDKs stop at final=true: continuous utterances are not final
    assert word_error_rate(FIRST, first["text"]) <= MAX_WER, first
    assert first["display_text"] == first["text"][0].upper() + first["text"][1:] + ".", first
    assert 0.0 < first["confidence"] <= 1.0, first
    assert word_error_rate(SECOND, final["text"]) <= MAX_WER, final
    # After an utterance's end the running text starts afresh.
    after = partials(messages[messages.index(first) + 1 :])
    assert after and not any("children" in p.split() for p in after), messages

    stream_id = final["id"]
    row = ended_row_sync(server, stream_id)
    assert row["state"] == "FINISHED", row
    assert jsonish(row["config"])["continuous"] is True
    segments = server.segment_rows(session_uuid(stream_id))
    assert [s["transcript"] for s in segments] == [first["text"], final["text"]], segments
    assert abs(row["duration_ms"] - len(TWO.pcm) / 32) <= 1, row


# -- 5. logging: what is kept -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logging", "transcript", "audio"),
    [("true", True, True), ("no_audio", True, False), ("no_transcript", False, True), ("false", False, False)],
)
def test_logging_decides_what_is_kept(server, api_key, logging, transcript, audio):
    final = check_stream(stt_stream(server, api_key, FOX.pcm, logging=logging), "EOF received")
    stream_id = final["id"]
    words = len(final["text"].split())
    assert words >= 8, final

    row = ended_row_sync(server, stream_id)
    assert row["state"] == "FINISHED", row
    assert bool(row["keep_transcript"]) is transcript and bool(row["recording_requested"]) is audio, row
    # The session row and its counters are kept whatever logging says.
    session = api_get(server, api_key, f"/{stream_id}").json()
    assert session["segmentCount"] == 1 and session["wordsCount"] == words, session
    assert abs(session["durationMilliseconds"] - len(FOX.pcm) / 32) <= 1, session
    assert session["recordingRequested"] is audio

    segments = api_get(server, api_key, f"/{stream_id}/segments")
    assert segments.status_code == 200, segments.text
    assert [s["transcript"] for s in segments.json()] == ([final["text"]] if transcript else [])
    assert len(server.segment_rows(session_uuid(stream_id))) == (1 if transcript else 0)

    if audio:
        assert recording(server, api_key, stream_id) == FOX.pcm
    else:
        assert api_get(server, api_key, f"/{stream_id}/recording").status_code == 404
        assert row["recording_path"] is None, row


def test_a_tenant_without_recordings_keeps_transcripts_only(server):
    key = server.create_key("quiet-corp", "erin")
    with server.db() as db:
        db.execute(update(Tenant).where(Tenant.name == "quiet-corp").values(recording_allowed=False))
        db.commit()
    final = check_stream(stt_stream(server, key, FOX.pcm, tenant="quiet-corp", logging="true"), "EOF received")
    row = ended_row_sync(server, final["id"])
    assert row["state"] == "FINISHED", row
    assert not row["recording_requested"] and row["recording_path"] is None, row
    assert [s["transcript"] for s in server.segment_rows(session_uuid(final["id"]))] == [final["text"]]
    assert api_get(server, key, f"/{final['id']}/recording").status_code == 404


# -- 6. every byte-stream format ----------------------------------------------------------------

# 8 kHz and 8-bit linear audio lose what the bundled 16 kHz model relies on (measured offline on the
# whole file: fox at 8 kHz 0.33, library at 8 kHz "he went ... her but"), so each format is checked
# on a sentence it keeps intelligible; that the server decodes each format exactly is shown by the
# recording, which holds the 16 kHz audio the engine heard.
FORMAT_SPEECH = {
    "16k_int16": "library", "8k_int16": "coffee", "16k_uint8": "train", "8k_uint8": "coffee",
    "16k_ulaw": "directions", "8k_ulaw": "coffee", "ogg_opus": "kitchen",
}


def _ulaw_decode_table() -> np.ndarray:
    """G.711 mu-law decoding, written out: bits inverted, then sign, 3-bit exponent, 4-bit mantissa."""
    table = []
    for code in range(256):
        inverted = ~code & 0xFF
        magnitude = ((((inverted & 0x0F) << 3) + 0x84) << ((inverted >> 4) & 0x07)) - 0x84
        table.append(-magnitude if inverted & 0x80 else magnitude)
    return np.array(table, dtype=np.int16)


_ULAW_DECODE = _ulaw_decode_table()


def heard(format_name: str, sent: bytes, pcm16k: bytes) -> np.ndarray:
    """The 16 kHz samples the server should have heard, decoded here independently of the server."""
    rate, encoding = FORMATS[format_name]
    if encoding == "ogg":
        return np.frombuffer(pcm16k, dtype="<i2")  # lossy: compared by correlation only
    if encoding == "int16":
        samples = np.frombuffer(sent, dtype="<i2")
    elif encoding == "uint8":
        samples = ((np.frombuffer(sent, dtype=np.uint8).astype(np.int32) - 128) * 256).astype(np.int16)
    else:
        samples = _ULAW_DECODE[np.frombuffer(sent, dtype=np.uint8)]
    return samples if rate == 16000 else soxr.resample(samples, rate, 16000, quality="HQ").astype(np.int16)


@pytest.mark.parametrize("format_name", BYTE_STREAM_FORMATS)
def test_every_byte_stream_format_is_decoded_and_recognized(server, api_key, format_name):
    speech = load_speech(FORMAT_SPEECH[format_name])
    sent = encode(format_name, speech.pcm)
    assert isinstance(sent, bytes)
    final = check_stream(stt_stream(server, api_key, sent, format=format_name), "EOF received")
    assert word_error_rate(speech.text, final["text"]) <= MAX_WER, final

    stream_id = final["id"]
    row = ended_row_sync(server, stream_id)
    assert row["state"] == "FINISHED", row
    assert jsonish(row["config"])["format"] == format_name
    assert abs(row["duration_ms"] - speech.seconds * 1000) <= 1, (row["duration_ms"], speech.seconds)
    kept = np.frombuffer(recording(server, api_key, stream_id), dtype="<i2")
    expected = heard(format_name, sent, speech.pcm)
    assert len(kept) == len(expected), (len(kept), len(expected))
    rate, encoding = FORMATS[format_name]
    if rate == 16000 and encoding != "ogg":
        assert np.array_equal(kept, expected)  # no resampling: sample for sample
    else:
        assert np.corrcoef(kept.astype(np.float64), expected.astype(np.float64))[0, 1] > 0.95


# -- 7. limits and short audio ------------------------------------------------------------------


@pytest.mark.parametrize(("timeout", "silence_seconds"), [(180, 30), (2.5, 0.1)])
def test_timeout_and_silence_are_accepted_up_to_their_limits(server, api_key, timeout, silence_seconds):
    messages = stt_stream(server, api_key, b"", timeout=timeout, silence=silence_seconds)
    check_stream(messages, "audio too short")
    config = jsonish(ended_row_sync(server, messages[0]["id"])["config"])
    assert (config["timeout"], config["silence"]) == (float(timeout), float(silence_seconds))


@pytest.mark.parametrize(
    ("options", "cause"),
    [({"timeout": 180.5}, "invalid `timeout` value"), ({"silence": 30.5}, "invalid `silence` value"),
     ({"timeout": 0}, "invalid `timeout` value"), ({"silence": 0}, "invalid `silence` value")],
)
def test_limits_beyond_the_edge_are_refused(server, api_key, options, cause):
    [message] = stt_stream(server, api_key, FOX.pcm, **options)
    check_error(message, 400, cause)


@pytest.mark.parametrize(
    ("audio", "cause"),
    [(b"", "audio too short"), (FOX.pcm[: 9600 - 2], "audio too short"), (FOX.pcm[:9600], "EOF received"),
     (silence(1.0), "EOF received")],
    ids=["nothing", "0.2999s", "0.3s", "1s-of-silence"],
)
def test_audio_too_short_below_three_tenths_of_a_second(server, api_key, audio, cause):
    final = check_stream(stt_stream(server, api_key, audio), cause)
    row = ended_row_sync(server, final["id"])
    assert row["state"] == "FINISHED", row
    assert row["duration_ms"] == len(audio) // 32


# -- 8. refusals as the SDK sees them -----------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "code", "cause"),
    [
        ({"src_lang": "hi"}, 400, "no decoder for given args"),
        ({"domain": "bfsi"}, 400, "no decoder for given args"),
        ({"format": "mp3"}, 200, "unsupported audio format"),
        ({"logging": "sometimes"}, 400, "invalid `logging` value"),
        ({"appname": "stt_file"}, 403, "Forbidden"),
    ],
    ids=["src_lang", "domain", "format", "logging", "appname"],
)
def test_refusals_reach_the_sdk_as_one_final_result(server, api_key, options, code, cause):
    # An extra appname replaces the SDK's own stt_stream in the query it builds.
    messages = stt_stream(server, api_key, FOX.pcm, **options)
    assert len(messages) == 1, messages
    [message] = messages
    why = check_error(message, code, cause)
    if cause == "no decoder for given args":
        assert "src_lang=en" in why and "domain=generic" in why, why


def test_a_wrong_api_key_or_app_id_is_forbidden(server, api_key):
    [bad_key] = stt_stream(server, "not-a-key", FOX.pcm)
    check_error(bad_key, 403, "Forbidden")
    other_tenant = server.create_key("globex", "carol")
    [wrong_app] = stt_stream(server, other_tenant, FOX.pcm, tenant="acme")
    check_error(wrong_app, 403, "Forbidden")
    assert "appid" in wrong_app["message"], wrong_app
    read_only = server.create_key("acme", "reader", scopes=["speech:sessions:read"])
    [no_scope] = stt_stream(server, read_only, FOX.pcm)
    check_error(no_scope, 403, "Forbidden")
    assert "speech:sessions:write" in no_scope["message"], no_scope


# -- 8. a live source (the SDK's AudioStream, as from a microphone) ----------------------------


def test_a_live_stream_that_outlasts_its_timeout_ends_with_timeout(server, api_key):
    # The SDK's AudioStream fed at real time, as a microphone callback would: fox, then silence
    # for longer than timeout=2 (silence=10 keeps the pause from ending it first).
    audio = FOX.pcm + silence(4.0)
    stream = AudioStream()
    chunk = 3200  # 100 ms

    def microphone() -> None:
        start = time.monotonic()
        for offset in range(0, len(audio), chunk):
            if not stream.streaming:  # the SDK stops the source once the stream has ended
                return
            stream.add_chunk(audio[offset : offset + chunk])
            time.sleep(max(0.0, start + (offset + chunk) / 32000 - time.monotonic()))

    feeder = threading.Thread(target=microphone, daemon=True)
    feeder.start()
    results = sdk(api_key).asr.stt_stream(
        src_lang="en", bytes_or_stream=stream, secure=False, host=f"127.0.0.1:{server.port}", timeout=2, silence=10
    )
    messages = [as_dict(r) for r in results]
    final = check_stream(messages, "timeout")
    assert stream.streaming is False, "the SDK did not see the stream end"
    heard = set(final["text"].split())
    assert "quick" in heard and "dog" not in heard, final  # 2 s into the fox: its start, not its end
    row = ended_row_sync(server, final["id"])
    assert row["state"] == "FINISHED" and row["failure_reason"] is None, row
    assert 0 < row["duration_ms"] <= 2500, row
