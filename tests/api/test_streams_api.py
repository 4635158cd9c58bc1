"""The Streaming Sessions REST API (``/api/v1/speech-services/streams``, seed 000) on a real server.

Sessions whose segments and recordings are read come from real streams over the ElevenLabs
socket. The list semantics at scale (sorting, paging, totals, filters, hidden deleted rows) use
rows inserted straight into the server's database, for a tenant no stream ever touches.

Users: in tenant ``acme``, alice and bob own the read-only sessions of ``world``; dave owns the
sessions that tests delete or purge (so alice's listing stays exact); ``boss`` holds
``speech:sessions:admin``. carol is in tenant ``globex``.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from sqlalchemy import select
from websockets.asyncio.client import connect

from lectern.store.models import StreamSessionRow, Tenant, User
from tests.conftest import LecternServer, load_speech, word_error_rate
from tests.realtime.scribe_wire import COMMIT, expect_started, next_committed, send_audio

BASE = "/api/v1/speech-services/streams"
READ = "speech:sessions:read"
DELETE = "speech:sessions:delete"
ADMIN = "speech:sessions:admin"
SECRET = "lectern-api-tests-hs256-secret-0123456789"
UA = "lectern-api-tests/1.0 (+streams)"
PCM_BYTES_PER_MS = 32  # 16 kHz, 16-bit, mono

FOX = load_speech("fox")
COFFEE = load_speech("coffee")
WEATHER = load_speech("weather")
TRAIN = load_speech("train")

METADATA = {"call_id": "c-42", "agent": {"name": "Zoë", "team": 7}, "tags": ["a", "b"], "vip": True, "note": None}

SESSION_FIELDS = {
    "sessionId", "state", "requestedModelAlias", "resolvedModelName", "usedFallback", "startTime", "endTime",
    "durationMilliseconds", "wordsCount", "segmentCount", "recordingRequested", "recordingPurged",
    "recordingPurgedAt", "clientAddress", "userAgent", "failureReason", "metadata",
}
SEGMENT_FIELDS = {"id", "segmentIndex", "transcript", "confidence", "words", "startSeconds", "endSeconds", "createdAt"}
WORD_FIELDS = {"word", "startSeconds", "endSeconds", "confidence", "speakerTag"}
STATES = ("CREATED", "ACTIVE", "FINISHED", "CANCELLED", "FAILED")
SORT_FIELDS = ("startTime", "endTime", "durationMilliseconds", "wordsCount", "segmentCount")


# -- helpers (also used by test_openapi_contract) -----------------------------------------------


@dataclass(frozen=True)
class Streamed:
    id: str  # the canonical UUID form the REST API uses
    texts: list[str]  # committed transcripts, in order
    pcm: bytes = dataclass_field(repr=False)  # the 16 kHz s16le mono audio sent: exactly what the recording must hold


async def stream_session(
    srv: LecternServer,
    key: str,
    utterances: list[bytes],
    *,
    recording: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Streamed:
    """One real session: each utterance is sent and committed; returns once the row is FINISHED."""
    params = {"model_id": "scribe_v2_realtime"}
    if recording:
        params["recording"] = "true"
    if metadata is not None:
        params["metadata"] = json.dumps(metadata)
    url = f"{srv.ws_url}/v1/speech-to-text/realtime?{urllib.parse.urlencode(params)}"
    texts = []
    async with connect(
        url, additional_headers={"xi-api-key": key}, user_agent_header=UA, open_timeout=5, max_size=None
    ) as ws:
        started = await expect_started(ws)
        for pcm in utterances:
            await send_audio(ws, pcm)
            await ws.send(COMMIT)
            texts.append(await next_committed(ws))
    session_id = str(uuid.UUID(started["session_id"]))
    row = await asyncio.to_thread(srv.wait_session_state, session_id, ("FINISHED",), 15.0)
    assert row["state"] == "FINISHED", row
    return Streamed(session_id, texts, b"".join(utterances))


def start_server(tmp_path_factory: pytest.TempPathFactory, backend: str, **settings: Any) -> LecternServer:
    return LecternServer(tmp_path_factory.mktemp(f"api-{backend}"), backend, settings)


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token(sub: str = "alice", tenant: str | None = "acme", *, secret: str = SECRET, **claims: Any) -> str:
    """An HS256 JWT; a claim given as None is left out."""
    payload: dict[str, Any] = {"sub": sub, "tenant": tenant, "exp": int(time.time()) + 300, "scope": READ}
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


def media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip()


def assert_problem(response: httpx.Response, status: int, parameter: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem+json error with this status (and naming ``parameter`` when given)."""
    assert response.status_code == status, (response.request.method, str(response.request.url), response.text)
    assert media_type(response) == "application/problem+json", response.headers
    body = response.json()
    assert body["status"] == status, body
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["detail"], str) and body["detail"], body
    if parameter is not None:
        assert body.get("parameter") == parameter, body
    return body


def iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{value!r} has no UTC offset"
    return parsed


def ids(page: dict[str, Any]) -> list[str]:
    return [s["sessionId"] for s in page["sessions"]]


def operations(session_id: str) -> list[tuple[str, str]]:
    """Every operation on one session: (method, path)."""
    return [
        ("GET", f"{BASE}/{session_id}"),
        ("GET", f"{BASE}/{session_id}/segments"),
        ("GET", f"{BASE}/{session_id}/recording"),
        ("DELETE", f"{BASE}/{session_id}"),
        ("DELETE", f"{BASE}/{session_id}/recording"),
        ("POST", f"{BASE}/{session_id}/purge"),
    ]


READ_OPERATIONS = [0, 1, 2]
DELETE_OPERATIONS = [3, 4, 5]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    """This module's own server (HS256 bearer tokens accepted), so every listing here is exact."""
    server = start_server(tmp_path_factory, backend, jwt_secret=SECRET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(srv: LecternServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.base_url, timeout=30) as client:
        yield client


@dataclass(frozen=True)
class World:
    keys: dict[str, str]
    a_rec: Streamed  # alice, recording, metadata, two segments
    a_plain: Streamed  # alice, no recording, no metadata, one segment (newer than a_rec)
    b_rec: Streamed  # bob (acme), recording
    c_rec: Streamed  # carol (globex), recording


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(srv: LecternServer) -> World:
    keys = {
        "alice": srv.create_key("acme", "alice"),
        "alice_read": srv.create_key("acme", "alice", [READ]),
        "alice_delete": srv.create_key("acme", "alice", [DELETE]),
        "alice_other": srv.create_key("acme", "alice", ["speech:files:read", "speech:sessions:write"]),
        "bob": srv.create_key("acme", "bob"),
        "boss": srv.create_key("acme", "boss", [READ, ADMIN]),
        "dave": srv.create_key("acme", "dave"),
        "dave_read": srv.create_key("acme", "dave", [READ]),
        "dave_delete": srv.create_key("acme", "dave", [DELETE]),
        "carol": srv.create_key("globex", "carol"),
        "carol_admin": srv.create_key("globex", "carol", [READ, DELETE, ADMIN]),
    }
    a_rec = await stream_session(srv, keys["alice"], [FOX.pcm, FOX.pcm], recording=True, metadata=METADATA)
    a_plain = await stream_session(srv, keys["alice"], [COFFEE.pcm])
    b_rec = await stream_session(srv, keys["bob"], [WEATHER.pcm], recording=True)
    c_rec = await stream_session(srv, keys["carol"], [TRAIN.pcm], recording=True)
    return World(keys, a_rec, a_plain, b_rec, c_rec)


def get_json(http: httpx.Client, path: str, headers: dict[str, str], **params: Any) -> Any:
    response = http.get(path, headers=headers, params=params)
    assert response.status_code == 200, (path, params, response.text)
    assert media_type(response) == "application/json", response.headers
    return response.json()


def recording_path(srv: LecternServer, session_id: str) -> Path:
    path = srv.session_row(session_id)["recording_path"]
    assert path, "the row has no recording path"
    return Path(path)


# -- reading sessions -----------------------------------------------------------------------------


def test_list_holds_the_callers_own_sessions_newest_first(http, world):
    page = get_json(http, BASE, auth(world.keys["alice"]))
    assert set(page) == {"sessions", "page", "size", "total"}
    assert ids(page) == [world.a_plain.id, world.a_rec.id]
    assert (page["page"], page["size"], page["total"]) == (0, 2, 2)
    for session in page["sessions"]:
        assert set(session) == SESSION_FIELDS
        assert session == get_json(http, f"{BASE}/{session['sessionId']}", auth(world.keys["alice"]))


def test_a_session_reports_what_was_streamed(http, srv, world):
    s = get_json(http, f"{BASE}/{world.a_rec.id}", auth(world.keys["alice"]))
    assert set(s) == SESSION_FIELDS
    assert s["sessionId"] == world.a_rec.id
    assert s["state"] == "FINISHED"
    assert s["requestedModelAlias"] == "scribe_v2_realtime"
    assert isinstance(s["resolvedModelName"], str) and s["resolvedModelName"]
    assert isinstance(s["usedFallback"], bool)
    started, ended = iso(s["startTime"]), iso(s["endTime"])
    assert started <= ended <= datetime.now(timezone.utc) + timedelta(seconds=5)
    assert abs(s["durationMilliseconds"] - len(world.a_rec.pcm) / PCM_BYTES_PER_MS) <= 1
    assert s["segmentCount"] == 2
    assert s["wordsCount"] == sum(len(t.split()) for t in world.a_rec.texts)
    assert s["recordingRequested"] is True
    assert s["recordingPurged"] is False and s["recordingPurgedAt"] is None
    assert s["clientAddress"] == "127.0.0.1"
    assert s["userAgent"] == UA
    assert s["failureReason"] is None
    assert s["metadata"] == METADATA

    plain = get_json(http, f"{BASE}/{world.a_plain.id}", auth(world.keys["alice"]))
    assert plain["recordingRequested"] is False and plain["recordingPurged"] is False
    assert plain["metadata"] is None
    assert plain["segmentCount"] == 1
    assert iso(plain["startTime"]) > started


def test_segments_are_the_committed_transcripts_in_order_with_words(http, world):
    segments = get_json(http, f"{BASE}/{world.a_rec.id}/segments", auth(world.keys["alice"]))
    session = get_json(http, f"{BASE}/{world.a_rec.id}", auth(world.keys["alice"]))
    assert [s["segmentIndex"] for s in segments] == [0, 1]
    assert [s["transcript"] for s in segments] == world.a_rec.texts
    for text in world.a_rec.texts:
        assert word_error_rate(FOX.text, text) <= 0.2, text
    assert len({s["id"] for s in segments}) == 2
    fox_seconds = FOX.seconds
    bounds = [(0.0, fox_seconds), (fox_seconds, 2 * fox_seconds)]  # relative to the session's start
    for segment, (lo, hi) in zip(segments, bounds, strict=True):
        assert set(segment) == SEGMENT_FIELDS
        uuid.UUID(segment["id"])
        assert segment["confidence"] is None or 0.0 <= segment["confidence"] <= 1.0
        assert lo - 0.01 <= segment["startSeconds"] < segment["endSeconds"] <= hi + 0.01, (segment, lo, hi)
        assert iso(session["startTime"]) <= iso(segment["createdAt"]) <= iso(session["endTime"])
        words = segment["words"]
        assert [w["word"] for w in words] == segment["transcript"].split()
        previous_end = segment["startSeconds"]
        for w in words:
            assert set(w) == WORD_FIELDS
            assert previous_end - 0.01 <= w["startSeconds"] <= w["endSeconds"] <= segment["endSeconds"] + 0.01, w
            assert w["confidence"] is None or 0.0 <= w["confidence"] <= 1.0
            assert w["speakerTag"] is None or isinstance(w["speakerTag"], int)
            previous_end = w["endSeconds"]


def test_metadata_and_filters_on_real_sessions(http, world):
    alice = auth(world.keys["alice"])
    assert ids(get_json(http, BASE, alice, recordingRequested="true")) == [world.a_rec.id]
    assert ids(get_json(http, BASE, alice, recordingRequested="false")) == [world.a_plain.id]
    assert ids(get_json(http, BASE, alice, state="FINISHED")) == [world.a_plain.id, world.a_rec.id]
    assert get_json(http, BASE, alice, state="ACTIVE")["total"] == 0
    assert ids(get_json(http, BASE, alice, modelAlias="SCRIBE_V2")) == [world.a_plain.id, world.a_rec.id]
    assert get_json(http, BASE, alice, modelAlias="nova")["total"] == 0
    newer = get_json(http, f"{BASE}/{world.a_plain.id}", alice)["startTime"]
    assert ids(get_json(http, BASE, alice, startedAfter=newer)) == [world.a_plain.id]
    assert ids(get_json(http, BASE, alice, startedBefore=newer)) == [world.a_plain.id, world.a_rec.id]
    [listed] = [s for s in get_json(http, BASE, alice)["sessions"] if s["sessionId"] == world.a_rec.id]
    assert listed["metadata"] == METADATA


# -- recordings -----------------------------------------------------------------------------------


def test_recording_download_is_the_16khz_pcm_that_was_sent(http, world):
    with http.stream("GET", f"{BASE}/{world.a_rec.id}/recording", headers=auth(world.keys["alice"])) as response:
        assert response.status_code == 200
        body = b"".join(response.iter_bytes())
    assert media_type(response) == "audio/x-pcm"
    assert response.headers["content-length"] == str(len(world.a_rec.pcm))
    assert response.headers.get("accept-ranges") == "bytes"
    assert "content-range" not in response.headers
    assert body == world.a_rec.pcm  # the same 16 kHz s16le mono samples, byte for byte
    session = get_json(http, f"{BASE}/{world.a_rec.id}", auth(world.keys["alice"]))
    assert abs(len(body) / PCM_BYTES_PER_MS - session["durationMilliseconds"]) <= 1


@pytest.mark.parametrize(
    ("range_header", "first", "last"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=0-0", 0, 0),
        ("bytes=1000-", 1000, None),
        ("bytes=-100", -100, None),
        ("bytes=100000-99999999", 100000, None),  # an end past the file is the file's end
    ],
)
def test_recording_byte_ranges(http, world, range_header, first, last):
    pcm = world.a_rec.pcm
    size = len(pcm)
    start = first if first >= 0 else size + first
    end = last if last is not None else size - 1
    headers = {**auth(world.keys["alice"]), "Range": range_header}
    response = http.get(f"{BASE}/{world.a_rec.id}/recording", headers=headers)
    assert response.status_code == 206, response.text
    assert media_type(response) == "audio/x-pcm"
    assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.content == pcm[start : end + 1]


@pytest.mark.parametrize("range_header", ["bytes={size}-", "bytes={size}-{past}", "bytes=-0"])
def test_an_unsatisfiable_range_is_416(http, world, range_header):
    size = len(world.a_rec.pcm)
    headers = {**auth(world.keys["alice"]), "Range": range_header.format(size=size, past=size + 10)}
    assert_problem(http.get(f"{BASE}/{world.a_rec.id}/recording", headers=headers), 416)


def test_no_recording_requested_is_404(http, world):
    assert_problem(http.get(f"{BASE}/{world.a_plain.id}/recording", headers=auth(world.keys["alice"])), 404)


# -- not found ----------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", range(6))
@pytest.mark.parametrize("session_id", [str(uuid.uuid4()), "not-a-uuid", "12345", "%20", "x" * 300,
                                        "00000000-0000-0000-0000-00000000000g"])
def test_an_unknown_or_malformed_session_id_is_404(http, world, operation, session_id):
    method, path = operations(session_id)[operation]
    assert_problem(http.request(method, path, headers=auth(world.keys["alice"])), 404)


# -- lifecycle: soft delete, purge recording, purge content --------------------------------------


async def test_delete_is_soft_and_hides_the_session_everywhere(http, srv, world):
    dave = auth(world.keys["dave"])
    s = await stream_session(srv, world.keys["dave"], [FOX.pcm], recording=True)
    before = get_json(http, BASE, dave)
    assert s.id in ids(before)

    response = http.delete(f"{BASE}/{s.id}", headers=dave)
    assert response.status_code == 204 and response.content == b""

    for method, path in operations(s.id):  # reads, a second delete, purges: all 404
        assert_problem(http.request(method, path, headers=dave), 404)
    after = get_json(http, BASE, dave, size=100)
    assert s.id not in ids(after) and after["total"] == before["total"] - 1
    boss = auth(world.keys["boss"])  # not even a tenant admin sees it
    assert_problem(http.get(f"{BASE}/{s.id}", headers=boss), 404)
    assert s.id not in ids(get_json(http, BASE, boss, size=100))

    row = srv.session_row(s.id)  # the row stays for audit and quota
    assert row["deleted_at"] is not None
    assert row["state"] == "FINISHED" and row["segment_count"] == 1


async def test_purging_the_recording_removes_the_file_and_keeps_the_segments(http, srv, world):
    dave = auth(world.keys["dave"])
    s = await stream_session(srv, world.keys["dave"], [FOX.pcm, COFFEE.pcm], recording=True)
    path = recording_path(srv, s.id)
    assert path.read_bytes() == s.pcm
    segments = get_json(http, f"{BASE}/{s.id}/segments", dave)
    assert [x["transcript"] for x in segments] == s.texts

    response = http.delete(f"{BASE}/{s.id}/recording", headers=dave)
    assert response.status_code == 204 and response.content == b""
    purged_by = datetime.now(timezone.utc)

    assert not path.exists()
    session = get_json(http, f"{BASE}/{s.id}", dave)
    assert session["recordingRequested"] is True
    assert session["recordingPurged"] is True
    assert iso(session["endTime"]) <= iso(session["recordingPurgedAt"]) <= purged_by + timedelta(seconds=5)
    assert_problem(http.get(f"{BASE}/{s.id}/recording", headers=dave), 410)
    assert get_json(http, f"{BASE}/{s.id}/segments", dave) == segments
    assert session["segmentCount"] == 2 and session["state"] == "FINISHED"


async def test_purging_the_recording_of_a_session_without_one_is_404(http, world):
    assert_problem(http.delete(f"{BASE}/{world.a_plain.id}/recording", headers=auth(world.keys["alice"])), 404)


async def test_purging_content_removes_segments_and_recording_but_keeps_the_session(http, srv, world):
    dave = auth(world.keys["dave"])
    s = await stream_session(srv, world.keys["dave"], [FOX.pcm, COFFEE.pcm], recording=True,
                             metadata={"purpose": "purge"})
    path = recording_path(srv, s.id)
    assert path.is_file()
    before = get_json(http, f"{BASE}/{s.id}", dave)
    assert len(get_json(http, f"{BASE}/{s.id}/segments", dave)) == 2

    response = http.post(f"{BASE}/{s.id}/purge", headers=dave)
    assert response.status_code == 204 and response.content == b""

    assert get_json(http, f"{BASE}/{s.id}/segments", dave) == []
    assert srv.segment_rows(s.id) == []
    assert not path.exists()
    assert_problem(http.get(f"{BASE}/{s.id}/recording", headers=dave), 410)
    after = get_json(http, f"{BASE}/{s.id}", dave)  # metadata and counters stay for audit and quota
    for field in ("sessionId", "state", "startTime", "endTime", "durationMilliseconds", "wordsCount",
                  "segmentCount", "requestedModelAlias", "resolvedModelName", "metadata", "recordingRequested"):
        assert after[field] == before[field], field
    assert after["recordingPurged"] is True and after["recordingPurgedAt"] is not None
    assert s.id in ids(get_json(http, BASE, dave, size=100))
    row = srv.session_row(s.id)
    assert row["deleted_at"] is None and row["purged_at"] is not None


async def test_purging_content_of_a_session_without_recording(http, srv, world):
    dave = auth(world.keys["dave"])
    s = await stream_session(srv, world.keys["dave"], [WEATHER.pcm])
    response = http.post(f"{BASE}/{s.id}/purge", headers=dave)
    assert response.status_code == 204
    assert get_json(http, f"{BASE}/{s.id}/segments", dave) == []
    assert get_json(http, f"{BASE}/{s.id}", dave)["segmentCount"] == 1
    assert_problem(http.get(f"{BASE}/{s.id}/recording", headers=dave), 404)


# -- ownership and tenants -------------------------------------------------------------------------


@pytest.mark.parametrize("operation", range(6))
def test_another_users_session_in_the_tenant_is_403(http, srv, world, operation):
    method, path = operations(world.a_rec.id)[operation]
    assert_problem(http.request(method, path, headers=auth(world.keys["bob"])), 403)
    # nothing happened to it
    session = get_json(http, f"{BASE}/{world.a_rec.id}", auth(world.keys["alice"]))
    assert session["recordingPurged"] is False
    assert len(get_json(http, f"{BASE}/{world.a_rec.id}/segments", auth(world.keys["alice"]))) == 2
    assert recording_path(srv, world.a_rec.id).is_file()


@pytest.mark.parametrize("key", ["carol", "carol_admin"])
@pytest.mark.parametrize("operation", range(6))
def test_another_tenants_session_is_404(http, world, key, operation):
    method, path = operations(world.a_rec.id)[operation]
    assert_problem(http.request(method, path, headers=auth(world.keys[key])), 404)
    assert world.a_rec.id not in ids(get_json(http, BASE, auth(world.keys[key]), size=100))


def test_a_tenant_admin_lists_and_reads_every_session_of_the_tenant_only(http, srv, world):
    boss = auth(world.keys["boss"])
    listed = get_json(http, BASE, boss, size=100)
    with srv.db() as db:
        tenant = db.scalar(select(Tenant).where(Tenant.name == "acme"))
        expected = {
            str(r.id)
            for r in db.scalars(
                select(StreamSessionRow).where(
                    StreamSessionRow.tenant_id == tenant.id, StreamSessionRow.deleted_at.is_(None)
                )
            )
        }
    assert {world.a_rec.id, world.a_plain.id, world.b_rec.id} <= set(ids(listed))
    assert set(ids(listed)) == expected and listed["total"] == len(expected)
    assert world.c_rec.id not in ids(listed)
    assert get_json(http, f"{BASE}/{world.b_rec.id}", boss)["sessionId"] == world.b_rec.id
    assert [s["transcript"] for s in get_json(http, f"{BASE}/{world.a_rec.id}/segments", boss)] == world.a_rec.texts
    assert http.get(f"{BASE}/{world.a_rec.id}/recording", headers=boss).content == world.a_rec.pcm
    assert_problem(http.get(f"{BASE}/{world.c_rec.id}", headers=boss), 404)
    # carol is the admin of globex: she sees her tenant's session, not acme's
    carol_admin = get_json(http, BASE, auth(world.keys["carol_admin"]), size=100)
    assert ids(carol_admin) == [world.c_rec.id]


# -- scopes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", DELETE_OPERATIONS)
def test_deleting_and_purging_need_the_delete_scope(http, srv, world, operation):
    method, path = operations(world.a_rec.id)[operation]
    assert_problem(http.request(method, path, headers=auth(world.keys["alice_read"])), 403)
    session = get_json(http, f"{BASE}/{world.a_rec.id}", auth(world.keys["alice_read"]))
    assert session["recordingPurged"] is False
    assert recording_path(srv, world.a_rec.id).is_file()


@pytest.mark.parametrize("key", ["alice_delete", "alice_other"])
@pytest.mark.parametrize("operation", READ_OPERATIONS)
def test_reading_needs_the_read_scope(http, world, key, operation):
    method, path = operations(world.a_rec.id)[operation]
    assert_problem(http.request(method, path, headers=auth(world.keys[key])), 403)
    assert_problem(http.get(BASE, headers=auth(world.keys[key])), 403)


@pytest.mark.parametrize("operation", DELETE_OPERATIONS)
def test_without_any_sessions_scope_deleting_is_403(http, world, operation):
    method, path = operations(world.a_rec.id)[operation]
    assert_problem(http.request(method, path, headers=auth(world.keys["alice_other"])), 403)


async def test_the_delete_scope_alone_can_delete(http, srv, world):
    s = await stream_session(srv, world.keys["dave"], [COFFEE.pcm])
    response = http.delete(f"{BASE}/{s.id}", headers=auth(world.keys["dave_delete"]))
    assert response.status_code == 204
    assert_problem(http.get(f"{BASE}/{s.id}", headers=auth(world.keys["dave_read"])), 404)


# -- authentication --------------------------------------------------------------------------------


def test_missing_or_unknown_credentials_are_401(http, world):
    response = http.get(BASE)
    assert_problem(response, 401)
    assert response.headers.get("www-authenticate")
    assert_problem(http.get(BASE, headers=auth("kk-not-a-key")), 401)
    assert_problem(http.get(BASE, headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"}), 401)
    assert_problem(http.get(f"{BASE}/{world.a_rec.id}", headers=bearer("not.a.jwt")), 401)


def test_a_jwt_for_the_same_tenant_and_user_is_the_same_user_as_the_api_key(http, world):
    by_key = get_json(http, BASE, auth(world.keys["alice"]))
    by_jwt = get_json(http, BASE, bearer(token("alice", "acme")))
    assert by_jwt == by_key
    assert ids(by_jwt) == [world.a_plain.id, world.a_rec.id]
    assert get_json(http, f"{BASE}/{world.a_rec.id}/segments", bearer(token()))[0]["transcript"] == world.a_rec.texts[0]
    assert http.get(f"{BASE}/{world.a_rec.id}/recording", headers=bearer(token())).content == world.a_rec.pcm
    assert_problem(http.get(f"{BASE}/{world.b_rec.id}", headers=bearer(token("alice", "acme"))), 403)
    # the same user name in another tenant is another user
    assert get_json(http, BASE, bearer(token("alice", "globex")))["total"] == 0
    assert_problem(http.get(f"{BASE}/{world.a_rec.id}", headers=bearer(token("alice", "globex"))), 404)


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": f"openid {READ} profile"},
        {"scope": None, "scp": ["openid", READ]},
        {"scope": "profile", "scp": [READ]},
    ],
    ids=["scope string", "scp list", "scope and scp"],
)
def test_jwt_scopes_come_from_scope_or_scp(http, world, claims):
    assert ids(get_json(http, BASE, bearer(token(**claims)))) == [world.a_plain.id, world.a_rec.id]


@pytest.mark.parametrize(
    "claims",
    [{"scope": None}, {"scope": "speech:sessions:readx"}, {"scope": None, "scp": ["speech:sessions"]},
     {"scope": DELETE}],
    ids=["no scope", "scope prefix", "scp other", "delete only"],
)
def test_a_jwt_without_the_read_scope_is_403(http, world, claims):
    assert_problem(http.get(BASE, headers=bearer(token(**claims))), 403)


async def test_a_jwt_with_the_delete_scope_deletes(http, srv, world):
    s = await stream_session(srv, world.keys["dave"], [TRAIN.pcm], recording=True)
    jwt_read = bearer(token("dave", "acme", scope=READ))
    jwt_delete = bearer(token("dave", "acme", scope=DELETE))
    assert_problem(http.post(f"{BASE}/{s.id}/purge", headers=jwt_read), 403)
    assert http.delete(f"{BASE}/{s.id}/recording", headers=jwt_delete).status_code == 204
    assert http.post(f"{BASE}/{s.id}/purge", headers=jwt_delete).status_code == 204
    assert http.delete(f"{BASE}/{s.id}", headers=jwt_delete).status_code == 204
    assert_problem(http.get(f"{BASE}/{s.id}", headers=jwt_read), 404)


def test_the_api_key_wins_when_both_are_sent(http, world):
    # a valid key with a garbage bearer token: the key decides
    both = {**auth(world.keys["alice"]), **bearer("garbage")}
    assert ids(get_json(http, BASE, both)) == [world.a_plain.id, world.a_rec.id]
    # a garbage key with a valid bearer token: still the key decides
    assert_problem(http.get(BASE, headers={**auth("kk-garbage"), **bearer(token())}), 401)
    # bob's key with alice's token: bob, who may not read alice's session
    assert_problem(http.get(f"{BASE}/{world.a_rec.id}", headers={**auth(world.keys["bob"]), **bearer(token())}), 403)
    # a key without the read scope is not rescued by a token that has it
    assert_problem(http.get(BASE, headers={**auth(world.keys["alice_delete"]), **bearer(token())}), 403)


def _unsigned(payload: dict[str, Any]) -> str:
    return jwt.encode(payload, None, algorithm="none")


def _tampered(good: str) -> str:
    """The same token with its payload changed (another user), the signature left as it was."""
    header, _, signature = good.split(".")
    claims = jwt.decode(good, SECRET, algorithms=["HS256"])
    payload = jwt.utils.base64url_encode(json.dumps({**claims, "sub": "bob"}).encode()).decode()
    return f"{header}.{payload}.{signature}"


@pytest.mark.parametrize(
    "make",
    [
        lambda: _unsigned({"sub": "alice", "tenant": "acme", "exp": int(time.time()) + 300, "scope": READ}),
        lambda: token(exp=int(time.time()) - 600),
        lambda: token(secret="another-secret-of-the-same-length-01234567"),
        lambda: token(tenant=None),
        lambda: token(exp=None),
        lambda: token(sub=None),
        lambda: token(nbf=int(time.time()) + 600),
        lambda: _tampered(token()),
    ],
    ids=["alg none", "expired", "wrong secret", "no tenant", "no exp", "no sub", "not yet valid", "tampered"],
)
def test_invalid_jwts_are_401(http, world, make):
    assert_problem(http.get(BASE, headers=bearer(make())), 401)


def test_jwt_audience_and_issuer_when_configured(make_server, world):
    srv = make_server(jwt_secret=SECRET, jwt_audience="lectern-api", jwt_issuer="https://idp.example.test/")
    good = {"aud": "lectern-api", "iss": "https://idp.example.test/"}
    with httpx.Client(base_url=srv.base_url, timeout=30) as client:
        page = get_json(client, BASE, bearer(token(**good)))
        assert page == {"sessions": [], "page": 0, "size": 0, "total": 0}
        assert get_json(client, BASE, bearer(token(**{**good, "aud": ["other", "lectern-api"]})))["total"] == 0
        for claims in (
            {**good, "aud": "another-api"},
            {**good, "aud": None},
            {**good, "iss": "https://evil.example.test/"},
            {**good, "iss": None},
        ):
            assert_problem(client.get(BASE, headers=bearer(token(**claims))), 401)


# -- query validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"size": 0}, "size"),
        ({"size": 101}, "size"),
        ({"size": "ten"}, "size"),
        ({"page": -1}, "page"),
        ({"page": "first"}, "page"),
        ({"startedAfter": "yesterday"}, "startedAfter"),
        ({"startedBefore": "2026-02-30T10:00:00Z"}, "startedBefore"),
        ({"startedAfter": "2026-04-06T25:00:00Z"}, "startedAfter"),
        ({"startedAfter": "1700000000"}, "startedAfter"),  # a Unix time is not ISO 8601
        ({"startedBefore": "0.5"}, "startedBefore"),
        ({"sort": "clientAddress,asc"}, "sort"),
        ({"sort": "startTime,up"}, "sort"),
        ({"sort": "nope"}, "sort"),
        ({"state": "DONE"}, "state"),
        ({"recordingRequested": "maybe"}, "recordingRequested"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else v,
)
def test_invalid_list_parameters_are_400_naming_the_parameter(http, world, params, parameter):
    assert_problem(http.get(BASE, headers=auth(world.keys["alice"]), params=params), 400, parameter)


@pytest.mark.parametrize(
    ("parameter", "value", "matches"),
    [
        ("startedAfter", "0001-01-01T00:00:00+14:00", 2),  # before year 1 in UTC
        ("startedBefore", "9999-12-31T23:59:59-14:00", 2),  # after year 9999 in UTC
        ("startedAfter", "0001-01-01T00:00:00Z", 2),
        ("startedBefore", "9999-12-31T23:59:59.999999Z", 2),
        ("modelAlias", "\x00", 0),  # PostgreSQL text cannot hold NUL
        ("modelAlias", "scribe\x00v2", 0),
        ("modelAlias", "\\", 0),
        ("modelAlias", "\udcff".encode("utf-8", "surrogateescape").decode("latin-1"), 0),
    ],
)
def test_odd_filter_values_are_never_a_server_error(http, world, parameter, value, matches):
    """A valid value filters (alice has two sessions); one the server cannot take is a 400 naming it."""
    response = http.get(BASE, headers=auth(world.keys["alice"]), params={parameter: value})
    if response.status_code == 400:
        assert_problem(response, 400, parameter)
    else:
        assert response.status_code == 200, response.text
        assert response.json()["total"] == matches


# -- list semantics at scale (rows inserted into the server's database) --------------------------------

ALIASES = ("scribe_v2_realtime", "Scribe_V1", "nova-2-general", "whisper_LARGE", "scribeXv9")
T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=timezone.utc)
N_ROWS = 57
DELETED = {4, 18, 33}


@dataclass(frozen=True)
class Row:
    id: str
    start: datetime
    end: datetime | None
    state: str
    alias: str
    recording: bool
    duration_ms: int
    words: int
    segments: int

    def value(self, field: str) -> Any:
        return {"startTime": self.start, "endTime": self.end, "durationMilliseconds": self.duration_ms,
                "wordsCount": self.words, "segmentCount": self.segments}[field]


@pytest.fixture(scope="module")
def listing(srv: LecternServer) -> tuple[str, list[Row]]:
    """57 sessions of lister@listco (3 of them deleted), plus sessions of others that must stay hidden.
    Returns lister's read key and the visible rows."""
    key = srv.create_key("listco", "lister", [READ])
    srv.create_key("listco", "other")
    srv.create_key("otherco", "lister")
    with srv.db() as db:
        def user(tenant: str, name: str) -> User:
            return db.scalar(select(User).join(Tenant, User.tenant_id == Tenant.id)
                             .where(Tenant.name == tenant, User.external_id == name))

        lister, other, elsewhere = user("listco", "lister"), user("listco", "other"), user("otherco", "lister")
        visible = []
        for i in range(N_ROWS):
            state = STATES[i % 5]
            start = T0 + timedelta(minutes=3 * ((i * 37) % N_ROWS))  # unique, not in insertion order
            end = None if state in ("CREATED", "ACTIVE") else start + timedelta(seconds=(i * 13) % 50 + 1)
            row = StreamSessionRow(
                id=uuid.uuid4(), tenant_id=lister.tenant_id, user_id=lister.id, protocol="elevenlabs", state=state,
                requested_model_alias=ALIASES[(i // 2) % 5], resolved_model_name="pocketsphinx-en-us",
                start_time=start, end_time=end, duration_ms=(i % 13) * 1000,  # ties across pages
                words_count=(i * 31) % 40, segment_count=i % 6, recording_requested=i % 3 == 0,
                client_address="10.0.0.1", deleted_at=T0 + timedelta(days=1) if i in DELETED else None,
                failure_reason="engine crashed" if state == "FAILED" else None,
            )
            db.add(row)
            if i not in DELETED:
                visible.append(Row(str(row.id), start, end, state, row.requested_model_alias, row.recording_requested,
                                   row.duration_ms, row.words_count, row.segment_count))
        for owner in (other, elsewhere):  # same aliases and times, never visible to lister
            for i in range(3):
                db.add(StreamSessionRow(
                    tenant_id=owner.tenant_id, user_id=owner.id, protocol="elevenlabs", state="FINISHED",
                    requested_model_alias=ALIASES[i], resolved_model_name="pocketsphinx-en-us",
                    start_time=T0 + timedelta(minutes=i), end_time=T0 + timedelta(minutes=i, seconds=5),
                    recording_requested=True, client_address="10.0.0.2",
                ))
        db.commit()
    return key, visible


def all_pages(http: httpx.Client, key: str, size: int, **params: Any) -> list[dict[str, Any]]:
    """Every page in turn; checks page/size/total on each, and that the page after the last is empty."""
    sessions: list[dict[str, Any]] = []
    total = None
    for page_number in range(200):
        page = get_json(http, BASE, auth(key), page=page_number, size=size, **params)
        total = page["total"] if total is None else total
        assert page["total"] == total, "the total changed between pages"
        assert page["page"] == page_number
        assert page["size"] == len(page["sessions"]) == min(size, max(total - page_number * size, 0))
        if not page["sessions"]:
            break
        sessions.extend(page["sessions"])
    assert len(sessions) == total
    return sessions


def test_list_defaults_are_page_0_of_20_newest_first(http, listing):
    key, rows = listing
    page = get_json(http, BASE, auth(key))
    newest_first = [r.id for r in sorted(rows, key=lambda r: r.start, reverse=True)]
    assert (page["page"], page["size"], page["total"]) == (0, 20, len(rows))
    assert ids(page) == newest_first[:20]
    assert get_json(http, BASE, auth(key), sort="startTime,desc") == page
    assert ids(get_json(http, BASE, auth(key), page=2)) == newest_first[40:]
    assert get_json(http, BASE, auth(key), page=3) == {"sessions": [], "page": 3, "size": 0, "total": len(rows)}
    assert get_json(http, BASE, auth(key), size=100)["size"] == len(rows)


def test_paging_visits_every_session_once(http, listing):
    key, rows = listing
    sessions = all_pages(http, key, size=8)
    assert [s["sessionId"] for s in sessions] == [r.id for r in sorted(rows, key=lambda r: r.start, reverse=True)]


@pytest.mark.parametrize("direction", ["asc", "desc"])
@pytest.mark.parametrize("field", SORT_FIELDS)
def test_sorting(http, listing, field, direction):
    key, rows = listing
    whole = get_json(http, BASE, auth(key), size=100, sort=f"{field},{direction}")
    assert sorted(ids(whole)) == sorted(r.id for r in rows)
    # pages of any size are slices of one stable order, even across ties
    assert [s["sessionId"] for s in all_pages(http, key, size=7, sort=f"{field},{direction}")] == ids(whole)
    by_id = {r.id: r for r in rows}
    values = [by_id[i].value(field) for i in ids(whole)]
    present = [v for v in values if v is not None]
    assert present == sorted(present, reverse=direction == "desc"), values
    if None in values:  # sessions without the value (no end time yet) come together, at one end
        nulls = [i for i, v in enumerate(values) if v is None]
        assert nulls == list(range(nulls[0], nulls[0] + len(nulls)))
        assert nulls[0] == 0 or nulls[-1] == len(values) - 1


@pytest.mark.parametrize("state", STATES)
def test_state_filter(http, listing, state):
    key, rows = listing
    sessions = all_pages(http, key, size=10, state=state)
    assert {s["sessionId"] for s in sessions} == {r.id for r in rows if r.state == state}
    assert all(s["state"] == state for s in sessions)


@pytest.mark.parametrize(
    ("alias", "matches"),
    [
        ("SCRIBE", {"scribe_v2_realtime", "Scribe_V1", "scribeXv9"}),
        ("v2_REAL", {"scribe_v2_realtime"}),
        ("e_v", {"scribe_v2_realtime", "Scribe_V1"}),  # "_" is a character, not a wildcard
        ("large", {"whisper_LARGE"}),
        ("nova-2-general", {"nova-2-general"}),
        ("%", set()),  # "%" is a character, not a wildcard
        ("whisper_large_v3", set()),
    ],
)
def test_model_alias_filter_is_partial_and_case_insensitive(http, listing, alias, matches):
    key, rows = listing
    sessions = all_pages(http, key, size=25, modelAlias=alias)
    assert {s["sessionId"] for s in sessions} == {r.id for r in rows if r.alias in matches}
    assert {s["requestedModelAlias"] for s in sessions} == {r.alias for r in rows if r.alias in matches}


def test_started_after_and_before_are_inclusive_iso_8601(http, listing):
    key, rows = listing
    starts = sorted(r.start for r in rows)
    lo, hi = starts[10], starts[30]
    expected = {r.id for r in rows if lo <= r.start <= hi}
    assert len(expected) == 21
    plus_two = timezone(timedelta(hours=2))
    for after, before in [
        (lo.isoformat(), hi.isoformat()),
        (lo.strftime("%Y-%m-%dT%H:%M:%SZ"), hi.strftime("%Y-%m-%dT%H:%M:%SZ")),
        (lo.astimezone(plus_two).isoformat(), hi.astimezone(plus_two).isoformat()),  # the same instants
    ]:
        sessions = all_pages(http, key, size=100, startedAfter=after, startedBefore=before)
        assert {s["sessionId"] for s in sessions} == expected, (after, before)
    just_after = (lo + timedelta(seconds=1)).isoformat()
    assert {s["sessionId"] for s in all_pages(http, key, size=100, startedAfter=just_after)} == {
        r.id for r in rows if r.start > lo
    }
    just_before = (hi - timedelta(seconds=1)).isoformat()
    assert {s["sessionId"] for s in all_pages(http, key, size=100, startedBefore=just_before)} == {
        r.id for r in rows if r.start < hi
    }


@pytest.mark.parametrize("requested", [True, False])
def test_recording_requested_filter(http, listing, requested):
    key, rows = listing
    sessions = all_pages(http, key, size=100, recordingRequested=str(requested).lower())
    assert {s["sessionId"] for s in sessions} == {r.id for r in rows if r.recording == requested}
    assert all(s["recordingRequested"] is requested for s in sessions)


def test_filters_combine_with_sorting_and_paging(http, listing):
    key, rows = listing
    lo = T0 + timedelta(minutes=30)
    chosen = [r for r in rows
              if r.state in ("FINISHED",) and r.recording and "scribe" in r.alias.lower() and r.start >= lo]
    assert len(chosen) >= 2
    params = {"state": "FINISHED", "recordingRequested": "true", "modelAlias": "Scribe", "startedAfter": lo.isoformat(),
              "sort": "wordsCount,asc"}
    sessions = all_pages(http, key, size=2, **params)
    assert {s["sessionId"] for s in sessions} == {r.id for r in chosen}
    assert [s["wordsCount"] for s in sessions] == sorted(r.words for r in chosen)


def test_deleted_and_foreign_sessions_are_not_counted(http, listing):
    key, rows = listing
    assert get_json(http, BASE, auth(key), size=1)["total"] == N_ROWS - len(DELETED) == len(rows)
    finished = sum(r.state == "FINISHED" for r in rows)
    assert get_json(http, BASE, auth(key), size=1, state="FINISHED")["total"] == finished


# -- bandwidth limit -------------------------------------------------------------------------------

LIMIT = 16_000  # bytes per second per download: half of real time for 16 kHz s16le


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def limited(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server whose recording downloads are limited to LIMIT bytes/s, with one recorded session."""
    server = start_server(tmp_path_factory, backend, recording_download_bytes_per_second=LIMIT)
    key = server.create_key("acme", "alice")
    session = await stream_session(server, key, [FOX.pcm], recording=True)
    yield server, key, session
    server.stop()


def timed_download(
    srv: LecternServer, key: str, session_id: str, headers: dict[str, str]
) -> tuple[bytes, float, float]:
    """The body, the seconds until its first bytes arrived and until its last."""
    with httpx.Client(base_url=srv.base_url, timeout=60) as client:
        began = time.monotonic()
        first = None
        chunks = []
        with client.stream("GET", f"{BASE}/{session_id}/recording", headers={**auth(key), **headers}) as response:
            assert response.status_code in (200, 206), response.read()
            for chunk in response.iter_bytes():
                if first is None:
                    first = time.monotonic() - began
                chunks.append(chunk)
        elapsed = time.monotonic() - began
    assert first is not None
    return b"".join(chunks), first, elapsed


def test_a_limited_download_takes_at_least_about_size_over_limit(limited):
    srv, key, session = limited
    body, first, elapsed = timed_download(srv, key, session.id, {})
    assert body == session.pcm
    expected = len(body) / LIMIT  # 7.3 s
    assert elapsed >= 0.5 * expected, (elapsed, expected)
    # streamed: bytes arrive while the server is still pacing the rest
    assert elapsed - first >= 0.25 * expected, (first, elapsed)


def test_a_limited_range_download_is_limited_too(limited):
    srv, key, session = limited
    body, _, elapsed = timed_download(srv, key, session.id, {"Range": "bytes=0-63999"})
    assert body == session.pcm[:64000]
    expected = len(body) / LIMIT  # 4 s
    assert elapsed >= 0.5 * expected, (elapsed, expected)
