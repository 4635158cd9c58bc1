"""Hostile input on the REST API: files whose header lies about their length, JSON nested 2000
deep, numbers of thousands of digits, NaN and NUL characters, and oversized JWT claims. Each gets
a clear problem+json error (or the ElevenLabs error shape on its endpoint), never a 500.

On a real server, on SQLite and PostgreSQL: PostgreSQL refuses NaN in JSON and NUL in text, and
enforces the length of its columns, where SQLite would have kept whatever it was given.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import av
import httpx
import jwt
import numpy as np
import pytest

from lectern.api.errors import ApiError
from lectern.api.recording import parse_range
from tests.api.test_files_api import BASE, FOX, FOX_WAV, fresh_key, upload, uploaded
from tests.api.test_streams_api import assert_problem, auth
from tests.conftest import LecternServer
from tests.speech.test_decode import flac_claiming

DEEP = 2000
DEEP_ARRAY = "[" * DEEP + "]" * DEEP
DEEP_OBJECT = '{"a":' * DEEP + "1" + "}" * DEEP
DIGITS = "1" + "0" * 4300  # past Python's int() limit of 4300 digits
TEN_HOURS = 10 * 3600
UPLOAD_AND_TRANSCRIBE = "/api/v1/speech-services/transcriptions/upload"
SCRIBE = "/v1/speech-to-text"
SECRET = "lectern-hostile-input-hs256-secret-0123456789"


@pytest.fixture(scope="module")
def http(server: LecternServer) -> Any:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def key(server: LecternServer) -> str:
    return fresh_key(server)


# -- files whose container lies about their length -------------------------------------------------


def test_a_flac_whose_header_claims_ten_hours_is_stored_at_its_real_length(http, key):
    lying = flac_claiming(FOX.pcm, TEN_HOURS)
    assert len(lying) < 100_000
    with av.open(io.BytesIO(lying)) as container:  # what the header says, as FFmpeg reads it
        assert container.streams.audio[0].duration == TEN_HOURS * 16000
    file = uploaded(http, key, lying, filename="fox.flac", content_type="audio/flac")
    assert file["durationMilliseconds"] == round(len(FOX.pcm) / 2 / 16000 * 1000)
    assert file["format"]["codec"] == "flac"


def test_a_file_longer_than_the_limit_is_refused_with_413(make_server):
    srv = make_server(max_file_seconds=5)
    key = fresh_key(srv)
    six_seconds = (FOX.pcm + FOX.pcm)[: 6 * 16000 * 2]
    with httpx.Client(base_url=srv.base_url, timeout=60) as http:
        # Within the limit, whatever the header claims: 3.66 s.
        assert uploaded(http, key, flac_claiming(FOX.pcm, TEN_HOURS), filename="fox.flac")["durationMilliseconds"] \
            == 3660
        body = assert_problem(upload(http, key, wav_pcm(six_seconds)), 413, "file")
        assert "5 s" in body["detail"], body
        form = {"transcription": json.dumps({"model": "general"})}
        response = http.post(UPLOAD_AND_TRANSCRIBE, headers=auth(key), data=form,
                             files={"file": ("long.wav", wav_pcm(six_seconds), "audio/wav")})
        assert_problem(response, 413, "file")
        listed = http.get(BASE, headers=auth(key)).json()
        assert listed["total"] == 1, listed  # the refused files were not kept


def wav_pcm(pcm: bytes) -> bytes:
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(pcm)
    return out.getvalue()


# -- JSON form fields ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metadata", DEEP_OBJECT),
        ("metadata", '{"a": ' + DEEP_ARRAY + "}"),
        ("metadata", '{"n": ' + DIGITS + "}"),
        ("metadata", '{"a": NaN}'),
        ("metadata", '{"a": 1e400}'),
        ("metadata", '{"a": "x\\u0000y"}'),
        ("metadata", '{"x\\u0000": "y"}'),
        ("tags", DEEP_ARRAY),
    ],
    ids=["nested-2000", "nested-array", "4301-digits", "nan", "infinity", "nul-value", "nul-key", "tags-nested"],
)
def test_a_hostile_json_field_of_an_upload_is_400(http, key, field, value):
    assert_problem(upload(http, key, FOX_WAV, **{field: value}), 400, field)


@pytest.mark.parametrize("field", ["transcription", "diarization", "webhook", "metadata"])
@pytest.mark.parametrize("value", [DEEP_OBJECT, '{"n": ' + DIGITS + "}", '{"model": NaN}'],
                         ids=["nested-2000", "4301-digits", "nan"])
def test_a_hostile_json_field_of_upload_and_transcribe_is_400(http, key, field, value):
    response = http.post(UPLOAD_AND_TRANSCRIBE, headers=auth(key), data={field: value},
                         files={"file": ("fox.wav", FOX_WAV, "audio/wav")})
    assert_problem(response, 400, field)


@pytest.mark.parametrize("field", ["additional_formats", "webhook_metadata", "entity_detection"])
def test_a_hostile_json_field_of_scribe_batch_is_its_400(http, key, field):
    response = http.post(SCRIBE, headers={"xi-api-key": key}, data={"model_id": "scribe_v1", field: DEEP_ARRAY},
                         files={"file": ("fox.wav", FOX_WAV, "audio/wav")})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail["param"] == field, detail


@pytest.mark.parametrize("metadata", [{"a": "x\x00y"}, {"x\x00": 1}, {"a": [{"b": "\x00"}]}],
                         ids=["nul-value", "nul-key", "nul-nested"])
def test_patching_metadata_with_a_nul_is_400(http, key, metadata):
    file = uploaded(http, key)
    response = http.patch(f"{BASE}/{file['id']}", headers=auth(key), json={"metadata": metadata})
    assert_problem(response, 400, "metadata")
    assert http.get(f"{BASE}/{file['id']}", headers=auth(key)).json()["metadata"] is None


def test_patching_metadata_nested_too_deep_is_400(http, key):
    file = uploaded(http, key)
    body = '{"metadata": ' + '{"a":' * 100 + "1" + "}" * 100 + "}"
    response = http.patch(f"{BASE}/{file['id']}", headers={**auth(key), "content-type": "application/json"},
                          content=body)
    assert_problem(response, 400, "metadata")


# -- byte ranges of thousands of digits -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (f"bytes={DIGITS}-", 416),  # starts past any end
        (f"bytes={DIGITS}-{DIGITS}", 416),
        (f"bytes=0-{DIGITS}", 206),  # to the end
        (f"bytes=-{DIGITS}", 206),  # a suffix longer than the file: all of it
        (f"bytes=5-{DIGITS}", 206),
        (f"bytes={DIGITS}-0", 200),  # last < first: not a valid range, ignored (RFC 9110 14.1.1)
    ],
    ids=["first", "both", "last", "suffix", "from-5", "inverted"],
)
def test_a_range_of_thousands_of_digits_is_answered_by_rfc_9110(http, key, header, status):
    file = uploaded(http, key)
    response = http.get(f"{BASE}/{file['id']}/content", headers={**auth(key), "Range": header})
    if status == 416:
        assert_problem(response, 416)
        assert response.headers["content-range"] == f"bytes */{len(FOX_WAV)}"
        return
    assert response.status_code == status, response.text
    start = 5 if header.startswith("bytes=5-") else 0
    assert response.content == FOX_WAV[start:]
    if status == 206:
        assert response.headers["content-range"] == f"bytes {start}-{len(FOX_WAV) - 1}/{len(FOX_WAV)}"


def test_parse_range_never_converts_thousands_of_digits():
    assert parse_range(f"bytes=0-{DIGITS}", 100) == (0, 99)
    assert parse_range(f"bytes=-{DIGITS}", 100) == (0, 99)
    assert parse_range(f"bytes=10-{DIGITS}", 100) == (10, 99)
    assert parse_range(f"bytes={DIGITS}-0", 100) is None
    for header in (f"bytes={DIGITS}-", f"bytes={DIGITS}-{DIGITS}", f"bytes={'0' * 5000}100-"):
        with pytest.raises(ApiError) as refused:
            parse_range(header, 100)
        assert refused.value.status == 416
    assert parse_range(f"bytes={'0' * 5000}-{'0' * 5000}99", 100) == (0, 99)  # leading zeros are still numbers


# -- JWT claims longer than the users table holds ----------------------------------------------------------


def bearer(sub: str, tenant: str = "acme") -> dict[str, str]:
    claims = {"sub": sub, "tenant": tenant, "exp": int(time.time()) + 300, "scope": "speech:files:read"}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


def test_jwt_claims_the_database_cannot_hold_are_401(make_server):
    srv = make_server(jwt_secret=SECRET)
    with httpx.Client(base_url=srv.base_url, timeout=30) as http:
        assert http.get(BASE, headers=bearer("u" * 200)).status_code == 200  # the longest that fits
        for headers, claim in [
            (bearer("u" * 201), "sub"),
            (bearer("u" * 5000), "sub"),
            (bearer("alice", "t" * 201), "tenant"),
            (bearer("ali\x00ce"), "sub"),
            (bearer("alice", "ac\x00me"), "tenant"),
        ]:
            body = assert_problem(http.get(BASE, headers=headers), 401)
            assert claim in body["detail"], body
