"""The Files API (``/api/v1/speech-services/files``) on a real server: uploads of real audio in
every common container, downloads, listing, updates, ownership, scopes and soft deletion.

Every test that lists owns a user of its own (``fresh_key``), so its listings are exact on the
shared server. The multipart reception itself (size limits, malformed bodies) is test_uploads.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from sqlalchemy import text

from lectern.store.batch_models import TranscriptionRow
from tests.api.test_streams_api import assert_problem, auth, iso, media_type
from tests.conftest import SPEECH, LecternServer, load_speech

BASE = "/api/v1/speech-services/files"
FOX = load_speech("fox")  # 3.66 s
FOX_WAV = (SPEECH / "fox.wav").read_bytes()
FILE_FIELDS = {
    "id", "name", "filename", "description", "path", "contentType", "size", "sha256", "durationMilliseconds",
    "format", "metadata", "tags", "creationDate", "modificationDate", "isDeleted", "deletedAt",
}


@dataclass(frozen=True)
class Format:
    name: str
    muxer: str  # "" for the fixture's own WAV bytes
    encoder: str
    filename: str
    content_type: str
    container: str  # what the server detects (FFmpeg's names)
    codec: str
    sample_rate: int = 16000
    slack: float = 0.01  # seconds the detected duration may stray from the source's (encoder delay, padding)


FORMATS = [
    Format("wav", "", "", "fox.wav", "audio/wav", "wav", "pcm_s16le"),
    Format("flac", "flac", "flac", "fox.flac", "audio/flac", "flac", "flac"),
    Format("mp3", "mp3", "libmp3lame", "fox.mp3", "audio/mpeg", "mp3", "mp3float", slack=4 * 576 / 16000),
    Format("ogg-opus", "ogg", "libopus", "fox.ogg", "audio/ogg", "ogg", "opus", 48000, slack=0.03),
    Format("m4a-aac", "ipod", "aac", "fox.m4a", "audio/mp4", "mov,mp4,m4a,3gp,3g2,mj2", "aac", slack=2 * 1024 / 16000),
    Format("webm-opus", "webm", "libopus", "fox.webm", "audio/webm", "matroska,webm", "opus", 48000, slack=0.03),
]


def encode(pcm: bytes, muxer: str, encoder: str) -> bytes:
    """16 kHz mono s16le as a client's tool would write it, in 1024-sample frames."""
    samples = np.frombuffer(pcm, dtype="<i2")
    out = io.BytesIO()
    with av.open(out, "w", format=muxer) as container:
        stream = container.add_stream(encoder, rate=16000)
        stream.codec_context.layout = "mono"
        if encoder != "flac":
            stream.codec_context.bit_rate = 32000
        for start in range(0, len(samples), 1024):
            chunk = samples[start : start + 1024].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def audio_bytes(fmt: Format) -> bytes:
    return FOX_WAV if not fmt.muxer else encode(FOX.pcm, fmt.muxer, fmt.encoder)


def wav_of(seconds: float) -> bytes:
    """The first ``seconds`` of the fox fixture as a WAV file."""
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(FOX.pcm[: int(seconds * 16000) * 2])
    return out.getvalue()


# -- helpers (also used by test_uploads) -------------------------------------------------------------


def upload(
    http: httpx.Client, key: str, content: bytes, filename: str = "speech.wav", content_type: str = "audio/wav",
    **fields: Any,
) -> httpx.Response:
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
    return http.post(BASE, headers=auth(key), files={"file": (filename, content, content_type)}, data=data)


def uploaded(http: httpx.Client, key: str, content: bytes = FOX_WAV, **kwargs: Any) -> dict[str, Any]:
    response = upload(http, key, content, **kwargs)
    assert response.status_code == 201, response.text
    return response.json()


def fresh_key(srv: LecternServer, tenant: str = "acme", scopes: list[str] | None = None) -> str:
    return srv.create_key(tenant, f"files-{uuid.uuid4().hex[:10]}", scopes)


def files_in(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


@dataclass(frozen=True)
class Stored:
    """What the server keeps: rows in the files table, blobs, temporary upload files."""

    rows: int
    blobs: int
    spooled: int


def stored(srv: LecternServer) -> Stored:
    with srv.db() as s:
        rows = s.execute(text("SELECT count(*) FROM files")).scalar_one()
    return Stored(rows, len(files_in(srv.data_dir / "blobs")), len(files_in(srv.data_dir / "uploads")))


def db_id(srv: LecternServer, file_id: str) -> str:
    # SQLAlchemy's Uuid: 32 hex digits on SQLite, a native uuid on PostgreSQL.
    return uuid.UUID(file_id).hex if srv.backend == "sqlite" else file_id


def blob_path(srv: LecternServer, file_id: str) -> Path:
    with srv.db() as s:
        key = s.execute(text("SELECT blob_key FROM files WHERE id = :id"), {"id": db_id(srv, file_id)}).scalar_one()
    return srv.data_dir / "blobs" / key


@pytest.fixture(scope="module")
def http(server: LecternServer) -> Any:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


# -- uploads of real audio -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.name for f in FORMATS])
def test_real_audio_in_every_container_is_identified_and_kept_byte_for_byte(http, server, api_key, fmt):
    content = audio_bytes(fmt)
    response = upload(http, api_key, content, fmt.filename, fmt.content_type)
    assert response.status_code == 201, response.text
    assert media_type(response) == "application/json"
    body = response.json()
    assert set(body) == FILE_FIELDS
    assert response.headers["location"] == f"{BASE}/{body['id']}"
    assert body["size"] == len(content)
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["format"] == {"container": fmt.container, "codec": fmt.codec, "sampleRate": fmt.sample_rate,
                              "channels": 1}
    assert abs(body["durationMilliseconds"] / 1000 - FOX.seconds) <= fmt.slack, body["durationMilliseconds"]
    assert (body["filename"], body["name"], body["contentType"]) == (fmt.filename, fmt.filename, fmt.content_type)
    assert body["isDeleted"] is False and body["deletedAt"] is None
    assert iso(body["creationDate"]) == iso(body["modificationDate"])

    assert http.get(f"{BASE}/{body['id']}", headers=auth(api_key)).json() == body
    download = http.get(f"{BASE}/{body['id']}/content", headers=auth(api_key))
    assert download.status_code == 200
    assert download.content == content
    assert media_type(download) == fmt.content_type
    assert download.headers["content-length"] == str(len(content))
    assert download.headers["accept-ranges"] == "bytes"
    assert download.headers["content-disposition"].startswith("attachment;")
    assert f"filename*=UTF-8''{fmt.filename}" in download.headers["content-disposition"]
    assert blob_path(server, body["id"]).read_bytes() == content


def test_upload_defaults_and_every_field(http, api_key):
    plain = uploaded(http, api_key, filename="Zoë réunion.wav", content_type="")
    assert (plain["name"], plain["filename"]) == ("Zoë réunion.wav", "Zoë réunion.wav")
    assert (plain["path"], plain["description"], plain["metadata"], plain["tags"]) == ("/", None, None, [])
    assert plain["contentType"] is None
    download = http.get(f"{BASE}/{plain['id']}/content", headers=auth(api_key))
    assert media_type(download) == "application/octet-stream"
    disposition = download.headers["content-disposition"]
    assert "filename*=UTF-8''" + urllib.parse.quote("Zoë réunion.wav", safe="") in disposition

    metadata = {"source": "upload", "type": "meeting-recording", "agent": {"name": "Zoë"}, "n": 7, "none": None}
    full = uploaded(
        http, api_key, filename="x.wav", name="meeting-recording", path="/incoming-audio/",
        description="Weekly sync\nsecond line", metadata=metadata, tags=["meeting", "transcription", "meeting"],
    )
    assert (full["name"], full["filename"], full["path"]) == ("meeting-recording", "x.wav", "/incoming-audio/")
    assert full["description"] == "Weekly sync\nsecond line"
    assert full["metadata"] == metadata
    assert full["tags"] == ["meeting", "transcription"]  # kept in order, once each


def test_a_path_in_the_filename_is_dropped(http, api_key):
    assert uploaded(http, api_key, filename="C:\\Users\\x\\..\\a.wav")["filename"] == "a.wav"
    assert uploaded(http, api_key, filename="../../etc/b.wav")["filename"] == "b.wav"


@pytest.mark.parametrize(
    ("range_header", "first", "last"),
    [("bytes=0-99", 0, 99), ("bytes=100-", 100, None), ("bytes=-50", -50, None), ("bytes=7-7", 7, 7),
     ("bytes=1000-99999999", 1000, None)],
)
def test_byte_ranges_of_the_content(http, api_key, range_header, first, last):
    file = uploaded(http, api_key)
    response = http.get(f"{BASE}/{file['id']}/content", headers={**auth(api_key), "Range": range_header})
    assert response.status_code == 206, response.text
    expected = FOX_WAV[first:] if last is None else FOX_WAV[first : last + 1]
    assert response.content == expected
    start = first % len(FOX_WAV)
    assert response.headers["content-range"] == f"bytes {start}-{start + len(expected) - 1}/{len(FOX_WAV)}"


def test_an_unsatisfiable_range_is_416_and_a_malformed_one_is_ignored(http, api_key):
    file = uploaded(http, api_key)
    url = f"{BASE}/{file['id']}/content"
    body = assert_problem(http.get(url, headers={**auth(api_key), "Range": f"bytes={len(FOX_WAV)}-"}), 416)
    assert "file" in body["detail"]
    for header in ("bytes=5-2", "items=0-1", "bytes=0-1,5-6"):
        response = http.get(url, headers={**auth(api_key), "Range": header})
        assert (response.status_code, response.content) == (200, FOX_WAV), header


@pytest.mark.parametrize(
    ("content", "filename", "status", "says"),
    [
        (b"Hello, this is a text file, not audio.\n" * 20, "notes.txt", 415, "not an audio file"),
        (random.Random(7).randbytes(50_000), "noise.wav", 415, "audio"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "cut.wav", 415, "audio"),
        (b"", "empty.wav", 400, "empty"),
    ],
    ids=["text", "random-bytes", "truncated-wav-header", "empty"],
)
def test_what_is_not_audio_is_refused_and_nothing_is_stored(http, server, api_key, content, filename, status, says):
    before = stored(server)
    body = assert_problem(upload(http, api_key, content, filename, "audio/wav"), status, "file")
    assert says in body["detail"], body
    assert stored(server) == Stored(before.rows, before.blobs, 0)


@pytest.mark.parametrize(
    ("fields", "parameter"),
    [
        ({"path": "incoming"}, "path"),
        ({"path": "/a\tb"}, "path"),
        ({"name": "x" * 501}, "name"),
        ({"name": "bad\x01name"}, "name"),
        ({"metadata": "[1, 2]"}, "metadata"),
        ({"metadata": "{not json"}, "metadata"),
        ({"metadata": '{"x": NaN}'}, "metadata"),
        ({"metadata": json.dumps({"big": "x" * 5000})}, "metadata"),
        ({"metadata": "[" * 3000 + "]" * 3000}, "metadata"),
        ({"tags": '"meeting"'}, "tags"),
        ({"tags": "[1]"}, "tags"),
        ({"tags": json.dumps([f"t{i}" for i in range(51)])}, "tags"),
        ({"tags": json.dumps(["x" * 101])}, "tags"),
        ({"tags": json.dumps([""])}, "tags"),
        ({"tags": json.dumps(["a,b"])}, "tags"),
        ({"description": "x" * 10_001}, "description"),
    ],
    ids=lambda v: v if isinstance(v, str) else next(iter(v.values()))[:20],
)
def test_invalid_fields_are_400_naming_the_field_and_nothing_is_stored(http, server, api_key, fields, parameter):
    before = stored(server)
    assert_problem(upload(http, api_key, FOX_WAV, **fields), 400, parameter)
    assert stored(server) == Stored(before.rows, before.blobs, 0)


# -- listing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Library:
    key: str
    files: list[dict[str, Any]]  # in upload order

    def by_name(self, *names: str) -> set[str]:
        return {f["id"] for f in self.files if f["name"] in names}


LIBRARY = [  # name, seconds, path, tags
    ("Alpha 100%", 0.5, "/meetings/", ["meeting", "a"]),
    ("beta_call", 1.5, "/meetings/", ["meeting-notes", "b"]),
    ("Gamma", 1.0, "/calls/", ["meet", "a", "b"]),
    ("delta", 2.5, "/", ["café", 'quote"d', "back\\slash"]),
    ("EPSILON", 2.0, "/", []),
    ("zeta 1000", 3.0, "/calls/", ["50%"]),
]


@pytest.fixture(scope="module")
def library(http: httpx.Client, server: LecternServer) -> Library:
    key = fresh_key(server)
    files = [
        uploaded(http, key, wav_of(seconds), filename=f"{name.lower().replace(' ', '-')}.wav", name=name, path=path,
                 tags=tags)
        for name, seconds, path, tags in LIBRARY
    ]
    return Library(key, files)


def listed(http: httpx.Client, key: str, **params: Any) -> dict[str, Any]:
    response = http.get(BASE, headers=auth(key), params=params)
    assert response.status_code == 200, (params, response.text)
    return response.json()


def ids(page: dict[str, Any]) -> list[str]:
    return [f["id"] for f in page["files"]]


def test_list_defaults_are_page_0_of_20_newest_first(http, library):
    page = listed(http, library.key)
    assert (page["page"], page["size"], page["total"]) == (0, 6, 6)
    expected = sorted(library.files, key=lambda f: (iso(f["creationDate"]), f["id"]), reverse=True)
    assert page["files"] == expected


def test_paging_visits_every_file_once(http, library):
    seen = []
    for number in range(4):
        page = listed(http, library.key, page=number, size=2, sort="name,asc")
        assert (page["page"], page["total"]) == (number, 6)
        assert page["size"] == len(page["files"]) == (2 if number < 3 else 0)
        seen += ids(page)
    assert sorted(seen) == sorted(f["id"] for f in library.files)
    assert len(set(seen)) == 6


@pytest.mark.parametrize("field", ["creationDate", "name", "size", "duration"])
@pytest.mark.parametrize("direction", ["asc", "desc", None])
def test_sorting(http, library, field, direction):
    value = {
        "creationDate": lambda f: iso(f["creationDate"]), "name": lambda f: f["name"].lower(),
        "size": lambda f: f["size"], "duration": lambda f: f["durationMilliseconds"],
    }[field]
    sort = field if direction is None else f"{field},{direction}"
    descending = direction == "desc"
    expected = sorted(library.files, key=lambda f: (value(f), f["id"]), reverse=descending)
    assert ids(listed(http, library.key, sort=sort)) == [f["id"] for f in expected]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [({"sort": "size,up"}, "sort"), ({"sort": "createdAt"}, "sort"), ({"sort": ""}, "sort"),
     ({"size": 0}, "size"), ({"size": 101}, "size"), ({"page": -1}, "page"), ({"sha256": "abc"}, "sha256"),
     ({"createdAfter": "yesterday"}, "createdAfter"), ({"isDeleted": "maybe"}, "isDeleted"),
     ({"name": "a\x00b"}, "name")],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else v,
)
def test_invalid_list_parameters_are_400(http, library, params, parameter):
    assert_problem(http.get(BASE, headers=auth(library.key), params=params), 400, parameter)


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"name": "ALPHA"}, {"Alpha 100%"}),
        ({"name": "100%"}, {"Alpha 100%"}),  # % is a plain character
        ({"name": "a_"}, {"beta_call"}),  # _ too (as a wildcard it would match "Alpha", "Gamma"...)
        ({"filename": "GAMMA.W"}, {"Gamma"}),
        ({"path": "/meetings/"}, {"Alpha 100%", "beta_call"}),
        ({"path": "/meetings"}, set()),  # exact folder
        ({"path": "/"}, {"delta", "EPSILON"}),
        ({"tags": "meeting"}, {"Alpha 100%"}),  # not "meeting-notes", not "meet"
        ({"tags": "meet"}, {"Gamma"}),
        ({"tags": "a"}, {"Alpha 100%", "Gamma"}),
        ({"tags": "a,b"}, {"Gamma"}),
        ({"tags": " b , a "}, {"Gamma"}),
        ({"tags": "b,meeting"}, set()),
        ({"tags": "café"}, {"delta"}),
        ({"tags": 'quote"d'}, {"delta"}),
        ({"tags": "quote"}, set()),
        ({"tags": "back\\slash"}, {"delta"}),
        ({"tags": "50%"}, {"zeta 1000"}),
        ({"tags": "5"}, set()),
        ({"tags": "%"}, set()),
    ],
    ids=lambda v: json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else None,
)
def test_filters(http, library, params, names):
    page = listed(http, library.key, **params)
    assert set(ids(page)) == library.by_name(*names)
    assert page["total"] == len(names)


def test_sha256_and_creation_window_filters(http, library):
    third = library.files[2]
    assert ids(listed(http, library.key, sha256=third["sha256"].upper())) == [third["id"]]
    assert listed(http, library.key, sha256="0" * 64)["total"] == 0
    after = listed(http, library.key, createdAfter=third["creationDate"], sort="creationDate,asc")
    assert ids(after) == [f["id"] for f in library.files[2:]]
    before = listed(http, library.key, createdBefore=third["creationDate"], sort="creationDate,asc")
    assert ids(before) == [f["id"] for f in library.files[:3]]
    both = listed(http, library.key, createdAfter=third["creationDate"], createdBefore=third["creationDate"])
    assert ids(both) == [third["id"]]


def test_the_same_bytes_twice_are_two_files_with_one_sha256(http, server):
    key = fresh_key(server)
    first, second = uploaded(http, key), uploaded(http, key)
    assert first["id"] != second["id"] and first["sha256"] == second["sha256"]
    assert set(ids(listed(http, key, sha256=first["sha256"]))) == {first["id"], second["id"]}


# -- updates --------------------------------------------------------------------------------------


def test_patch_changes_only_what_is_sent(http, api_key):
    file = uploaded(http, api_key, name="before", description="old", metadata={"a": 1}, tags=["x"])
    url = f"{BASE}/{file['id']}"
    response = http.patch(url, headers=auth(api_key), json={"name": "after", "path": "/archive/2024/"})
    assert response.status_code == 200, response.text
    patched = response.json()
    assert (patched["name"], patched["path"], patched["description"]) == ("after", "/archive/2024/", "old")
    assert (patched["metadata"], patched["tags"]) == ({"a": 1}, ["x"])
    assert iso(patched["modificationDate"]) > iso(file["modificationDate"])
    assert patched["creationDate"] == file["creationDate"] and patched["sha256"] == file["sha256"]

    cleared = http.patch(url, headers=auth(api_key), json={"description": None, "metadata": None, "tags": []}).json()
    assert (cleared["description"], cleared["metadata"], cleared["tags"]) == (None, None, [])
    tagged = http.patch(url, headers=auth(api_key), json={"metadata": {"k": [1, "ü"]}, "tags": ["y", "z"]}).json()
    assert (tagged["metadata"], tagged["tags"]) == ({"k": [1, "ü"]}, ["y", "z"])
    assert http.get(url, headers=auth(api_key)).json() == tagged


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"name": ""}, "name"), ({"name": None}, "name"), ({"path": "nope"}, "path"), ({"path": None}, "path"),
        ({"tags": None}, "tags"), ({"tags": ["x" * 101]}, "tags"), ({"tags": [f"t{i}" for i in range(51)]}, "tags"),
        ({"tags": "meeting"}, "tags"), ({"metadata": [1]}, "metadata"), ({"metadata": {"x": "y" * 5000}}, "metadata"),
        ({"size": 5}, "size"), ({"name": "a\nb"}, "name"),
    ],
    ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else v,
)
def test_invalid_patches_are_400(http, api_key, body, parameter):
    file = uploaded(http, api_key)
    assert_problem(http.patch(f"{BASE}/{file['id']}", headers=auth(api_key), json=body), 400, parameter)
    assert http.get(f"{BASE}/{file['id']}", headers=auth(api_key)).json() == file


@pytest.mark.parametrize("body", ['{"name": ', "[]", '{"metadata": {"x": NaN}}', "[" * 5000 + "]" * 5000, ""])
def test_a_malformed_patch_body_is_400(http, api_key, body):
    file = uploaded(http, api_key)
    headers = {**auth(api_key), "Content-Type": "application/json"}
    assert_problem(http.patch(f"{BASE}/{file['id']}", headers=headers, content=body), 400)


# -- ownership, scopes -------------------------------------------------------------------------------


def operations(file_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", f"{BASE}/{file_id}", {}),
        ("GET", f"{BASE}/{file_id}/content", {}),
        ("PATCH", f"{BASE}/{file_id}", {"json": {"name": "mine now"}}),
        ("DELETE", f"{BASE}/{file_id}", {}),
    ]


def test_another_users_file_is_403_and_another_tenants_is_404(http, server, api_key):
    file = uploaded(http, api_key)
    bob, carol = server.create_key("acme", "bob"), server.create_key("globex", "carol")
    for method, url, kwargs in operations(file["id"]):
        assert_problem(http.request(method, url, headers=auth(bob), **kwargs), 403)
        assert_problem(http.request(method, url, headers=auth(carol), **kwargs), 404)
    assert file["id"] not in ids(listed(http, bob)) + ids(listed(http, carol))
    assert http.get(f"{BASE}/{file['id']}", headers=auth(api_key)).json() == file  # untouched


@pytest.mark.parametrize("file_id", ["not-a-uuid", "123", str(uuid.uuid4())])
def test_an_unknown_or_malformed_id_is_404(http, api_key, file_id):
    for method, url, kwargs in operations(file_id):
        assert_problem(http.request(method, url, headers=auth(api_key), **kwargs), 404)


def test_each_operation_needs_its_scope(http, server, api_key):
    file = uploaded(http, api_key)
    read_only = server.create_key("acme", "alice", ["speech:files:read"])
    write_only = server.create_key("acme", "alice", ["speech:files:write"])
    before = stored(server)
    body = assert_problem(upload(http, read_only, FOX_WAV), 403)
    assert "speech:files:write" in body["detail"]
    assert stored(server) == before
    assert_problem(http.patch(f"{BASE}/{file['id']}", headers=auth(read_only), json={"name": "n"}), 403)
    assert_problem(http.delete(f"{BASE}/{file['id']}", headers=auth(write_only)), 403)
    for url in (BASE, f"{BASE}/{file['id']}", f"{BASE}/{file['id']}/content"):
        assert_problem(http.get(url, headers=auth(write_only)), 403)
    assert http.get(f"{BASE}/{file['id']}/content", headers=auth(read_only)).content == FOX_WAV
    assert upload(http, write_only, FOX_WAV).status_code == 201
    assert_problem(http.post(BASE, files={"file": ("a.wav", FOX_WAV)}), 401)


# -- deletion ----------------------------------------------------------------------------------------


def test_delete_is_soft_and_removes_the_bytes_at_once(http, server):
    key = fresh_key(server)
    kept, doomed = uploaded(http, key), uploaded(http, key, name="doomed")
    blob = blob_path(server, doomed["id"])
    assert blob.is_file()
    url = f"{BASE}/{doomed['id']}"

    response = http.delete(url, headers=auth(key))
    assert (response.status_code, response.content) == (204, b"")
    assert not blob.exists()
    gone = http.get(url, headers=auth(key)).json()
    assert gone["isDeleted"] is True and iso(gone["deletedAt"]) >= iso(doomed["creationDate"])
    assert {k: v for k, v in gone.items() if k not in ("isDeleted", "deletedAt")} == {
        k: v for k, v in doomed.items() if k not in ("isDeleted", "deletedAt")}
    assert_problem(http.get(f"{url}/content", headers=auth(key)), 410)
    assert_problem(http.patch(url, headers=auth(key), json={"name": "back"}), 409)
    assert "already deleted" in assert_problem(http.delete(url, headers=auth(key)), 409)["detail"]

    assert ids(listed(http, key)) == [kept["id"]]
    deleted = listed(http, key, isDeleted="true")
    assert (ids(deleted), deleted["total"]) == ([doomed["id"]], 1)
    assert deleted["files"][0] == gone


def test_a_file_being_transcribed_cannot_be_deleted(make_server):
    srv = make_server(job_workers=0)  # no job runner: the transcription rows below stay as written
    key = srv.create_key("acme", "alice")
    with httpx.Client(base_url=srv.base_url, timeout=60) as client:
        file = uploaded(client, key)
        with srv.db() as s:
            owner = s.execute(text("SELECT tenant_id, user_id FROM files WHERE id = :id"),
                              {"id": db_id(srv, file["id"])}).one()
            job = TranscriptionRow(tenant_id=uuid.UUID(str(owner.tenant_id)), user_id=uuid.UUID(str(owner.user_id)),
                                   file_id=uuid.UUID(file["id"]), source="api", status="PENDING",
                                   requested_model="general", resolved_model_name="general")
            s.add(job)
            s.commit()
            for status in ("PENDING", "IN_PROGRESS"):
                job.status = status
                s.commit()
                body = assert_problem(client.delete(f"{BASE}/{file['id']}", headers=auth(key)), 409)
                assert "cancel" in body["detail"], body
                assert client.get(f"{BASE}/{file['id']}/content", headers=auth(key)).content == FOX_WAV
            job.status = "CANCELLED"
            s.commit()
        assert client.delete(f"{BASE}/{file['id']}", headers=auth(key)).status_code == 204
        assert not files_in(srv.data_dir / "blobs")
