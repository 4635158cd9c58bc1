"""Listing totals come from tallies that database triggers keep: they stay exact on every write path.

After each kind of write (real streams, rows written straight into the database, soft delete,
purges, the lease sweeper failing lapsed streams, raw updates and deletes) the listing is read
with filters covering every pair of state, recordingRequested and modelAlias values, as one user
and as the tenant admin, page by page. For each, the sessions enumerated must be exactly the
matching visible rows of the database, the API's ``total`` must be their number, and the
time-window path (which counts the sessions themselves) must agree; the tallies table must equal
a GROUP BY over the sessions.
"""

from __future__ import annotations

import asyncio
import itertools
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import delete, func, select, update
from websockets.asyncio.client import connect

from lectern.store.models import StreamSessionRow, StreamSessionTally, Tenant, User
from tests.api.test_streams_api import ADMIN, BASE, DELETE, READ, all_pages, auth, start_server
from tests.conftest import LecternServer, load_speech
from tests.realtime.scribe_wire import COMMIT, expect_started, next_committed, send_audio

COFFEE = load_speech("coffee")
TENANT = "tallyco"
STATES = ("CREATED", "ACTIVE", "FINISHED", "CANCELLED", "FAILED")
# '%' and '_' are plain characters in a modelAlias filter; "" is an alias no stream can send.
ALIASES = ("scribe_v2_realtime", "Odd%Model_X", "odd_model%x", "NOVA-2", "plain", "")
FILTER_ALIASES = (None, "SCRIBE", "odd%", "%", "_", "l_x", "MODEL%X", "nova-2", "a", "zzz")
EVER = "0001-01-01T00:00:00Z"  # a startedAfter every session passes: the total is then counted
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Tally:
    keys: dict[str, str]  # ann and ben: their own sessions; boss: the tenant admin
    tenant_id: uuid.UUID
    user_ids: dict[str, uuid.UUID]


@pytest.fixture(scope="module")
def srv(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LecternServer]:
    server = start_server(tmp_path_factory, backend, sweep_interval_seconds=0.2)  # the sweeper runs often
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(srv: LecternServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.base_url, timeout=30) as client:
        yield client


async def stream(srv: LecternServer, key: str, model_id: str, *, recording: bool = False, close: int = 1000) -> str:
    """One real session committing one utterance, closed with ``close``: 1000 ends it FINISHED,
    4000 (the client going away abnormally) CANCELLED. Returns its id once the row has ended."""
    query = urllib.parse.urlencode({"model_id": model_id, **({"recording": "true"} if recording else {})})
    url = f"{srv.ws_url}/v1/speech-to-text/realtime?{query}"
    async with connect(url, additional_headers={"xi-api-key": key}, open_timeout=5, max_size=None) as ws:
        session_id = str(uuid.UUID((await expect_started(ws))["session_id"]))
        await send_audio(ws, COFFEE.pcm)
        await ws.send(COMMIT)
        await next_committed(ws)
        await ws.close(code=close)
    final = "FINISHED" if close == 1000 else "CANCELLED"
    row = await asyncio.to_thread(srv.wait_session_state, session_id, (final,), 15.0)
    assert row["state"] == final, row
    return session_id


def _user(db: Any, tenant: str, name: str) -> User:
    return db.scalar(
        select(User).join(Tenant, User.tenant_id == Tenant.id).where(Tenant.name == tenant, User.external_id == name)
    )


def _insert_rows(srv: LecternServer, owners: list[User]) -> None:
    """Sessions in every state, alias and recording choice, some already deleted, written directly."""
    with srv.db() as db:
        for i in range(150):
            owner, state = owners[i % len(owners)], STATES[i % 5]
            db.add(StreamSessionRow(
                tenant_id=owner.tenant_id, user_id=owner.id, protocol="elevenlabs", state=state,
                requested_model_alias=ALIASES[(i // 5) % len(ALIASES)], resolved_model_name="pocketsphinx-en-us",
                start_time=T0 + timedelta(minutes=i), recording_requested=i % 3 == 0, client_address="10.0.0.9",
                end_time=None if state in ("CREATED", "ACTIVE") else T0 + timedelta(minutes=i, seconds=30),
                deleted_at=T0 + timedelta(days=1) if i % 11 == 0 else None,
            ))
        db.commit()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tally(srv: LecternServer) -> Tally:
    keys = {
        "ann": srv.create_key(TENANT, "ann"),
        "ben": srv.create_key(TENANT, "ben"),
        "boss": srv.create_key(TENANT, "boss", [READ, DELETE, ADMIN]),
        "zed": srv.create_key("tallyco-other", "ann"),  # another tenant, same names and aliases
    }
    await stream(srv, keys["ann"], "scribe_v2_realtime", recording=True)
    await stream(srv, keys["ann"], "Odd%Model_X", close=4000)
    await stream(srv, keys["ben"], "odd_model%x", recording=True)
    await stream(srv, keys["zed"], "Odd%Model_X")
    with srv.db() as db:
        ann, ben, zed = _user(db, TENANT, "ann"), _user(db, TENANT, "ben"), _user(db, "tallyco-other", "ann")
    _insert_rows(srv, [ann, ben, ann, zed])
    return Tally(keys, ann.tenant_id, {"ann": ann.id, "ben": ben.id})


# -- the checks -----------------------------------------------------------------------------------


def visible_rows(srv: LecternServer, tenant_id: uuid.UUID) -> list[StreamSessionRow]:
    """The oracle: the tenant's visible sessions, read from the database."""
    with srv.db() as db:
        return list(db.scalars(select(StreamSessionRow).where(
            StreamSessionRow.tenant_id == tenant_id, StreamSessionRow.deleted_at.is_(None))))


def matches(row: StreamSessionRow, state: str | None, recording: bool | None, alias: str | None) -> bool:
    return ((state is None or row.state == state) and (recording is None or row.recording_requested == recording)
            and (not alias or alias.lower() in row.requested_model_alias.lower()))


def assert_tallies_exact(srv: LecternServer) -> None:
    """The tallies table, zero rows aside, is a GROUP BY over the visible sessions; none is negative."""
    s, t = StreamSessionRow, StreamSessionTally
    key = (s.tenant_id, s.user_id, s.state, s.recording_requested, s.requested_model_alias)
    with srv.db() as db:
        truth = {tuple(r[:5]): r[5] for r in db.execute(
            select(*key, func.count()).where(s.deleted_at.is_(None)).group_by(*key))}
        kept = db.execute(select(t.tenant_id, t.user_id, t.state, t.recording_requested, t.requested_model_alias,
                                 t.visible)).all()
    assert all(r[5] >= 0 for r in kept), kept
    assert {tuple(r[:5]): r[5] for r in kept if r[5]} == truth


def filter_combinations() -> set[tuple[str | None, bool | None, str | None]]:
    """(state, recordingRequested, modelAlias) covering every pair of values of two filters."""
    states, recordings = (None, *STATES), (None, True, False)
    return (set(itertools.product(states, recordings, [None])) | set(itertools.product(states, [None], FILTER_ALIASES))
            | set(itertools.product([None], recordings, FILTER_ALIASES)))


def assert_listings_exact(http: httpx.Client, srv: LecternServer, tally: Tally) -> None:
    """Filter combinations, for ann and for the tenant admin: pages, total and count agree."""
    assert_tallies_exact(srv)
    rows = visible_rows(srv, tally.tenant_id)
    scopes = {"ann": [r for r in rows if r.user_id == tally.user_ids["ann"]], "boss": rows}
    for who, scoped in scopes.items():
        for state, recording, alias in sorted(filter_combinations(), key=repr):
            params = {k: v for k, v in (("state", state), ("modelAlias", alias)) if v is not None}
            if recording is not None:
                params["recordingRequested"] = str(recording).lower()
            expected = {str(r.id) for r in scoped if matches(r, state, recording, alias)}
            listed = all_pages(http, tally.keys[who], size=40, **params)  # checks total == len(listed)
            assert {s["sessionId"] for s in listed} == expected, (who, params)
            counted = http.get(BASE, headers=auth(tally.keys[who]), params={**params, "startedAfter": EVER, "size": 1})
            assert counted.status_code == 200 and counted.json()["total"] == len(expected), (who, params)


def total(http: httpx.Client, key: str, **params: Any) -> int:
    response = http.get(BASE, headers=auth(key), params={"size": 1, **params})
    assert response.status_code == 200, response.text
    return response.json()["total"]


# -- every write path -----------------------------------------------------------------------------


def test_totals_of_streamed_and_inserted_sessions(http, srv, tally):
    rows = visible_rows(srv, tally.tenant_id)
    assert len(rows) > 40 and {r.state for r in rows} == set(STATES)  # enough to span pages and filters
    assert {"Odd%Model_X", "odd_model%x", ""} <= {r.requested_model_alias for r in rows}
    assert_listings_exact(http, srv, tally)
    assert total(http, tally.keys["ann"], modelAlias="%model_") == total(http, tally.keys["ann"], modelAlias="odd%") > 0
    assert total(http, tally.keys["zed"]) == 1 + sum(1 for i in range(150) if i % 4 == 3 and i % 11)


async def test_soft_delete_takes_the_session_out_of_every_total(http, srv, tally):
    ann = tally.keys["ann"]
    session_id = await stream(srv, ann, "Odd%Model_X", recording=True)
    before = {alias: total(http, ann, modelAlias=alias, state="FINISHED") for alias in FILTER_ALIASES}
    admin_before = total(http, tally.keys["boss"], recordingRequested="true")
    assert http.delete(f"{BASE}/{session_id}", headers=auth(ann)).status_code == 204
    after = {alias: total(http, ann, modelAlias=alias, state="FINISHED") for alias in FILTER_ALIASES}
    assert after == {a: n - (not a or a.lower() in "odd%model_x") for a, n in before.items()}
    assert total(http, tally.keys["boss"], recordingRequested="true") == admin_before - 1
    assert_listings_exact(http, srv, tally)


async def test_purges_change_no_total(http, srv, tally):
    ben = tally.keys["ben"]
    purged = await stream(srv, ben, "NOVA-2", recording=True)
    both = await stream(srv, ben, "NOVA-2", recording=True)
    before = [total(http, ben, modelAlias="nova", recordingRequested="true"), total(http, tally.keys["boss"])]
    assert http.delete(f"{BASE}/{purged}/recording", headers=auth(ben)).status_code == 204
    assert http.post(f"{BASE}/{both}/purge", headers=auth(ben)).status_code == 204
    assert [total(http, ben, modelAlias="nova", recordingRequested="true"), total(http, tally.keys["boss"])] == before
    assert_listings_exact(http, srv, tally)


async def test_the_lease_sweeper_failing_lapsed_sessions_moves_them_to_failed(http, srv, tally):
    """Streams of a crashed server (written as it would have) are ended FAILED by the live server's sweeper."""
    lapsed = datetime.now(timezone.utc) - timedelta(seconds=1)
    ids = [uuid.uuid4() for _ in range(4)]
    before = Counter(s["state"] for s in all_pages(http, tally.keys["ann"], size=100, modelAlias="scribe"))
    with srv.db() as db:
        for n, session_id in enumerate(ids):
            db.add(StreamSessionRow(
                id=session_id, tenant_id=tally.tenant_id, user_id=tally.user_ids["ann"], protocol="elevenlabs",
                state="ACTIVE" if n % 2 else "CREATED", requested_model_alias="Scribe_Crashed",
                resolved_model_name="pocketsphinx-en-us", lease_expires_at=lapsed, client_address="10.0.0.8",
                deleted_at=lapsed if n == 3 else None,  # a deleted live session is failed too, and stays uncounted
            ))
        db.commit()
    for session_id in ids:
        row = await asyncio.to_thread(srv.wait_session_state, str(session_id), ("FAILED",), 15.0)
        assert row["state"] == "FAILED", row
    after = Counter(s["state"] for s in all_pages(http, tally.keys["ann"], size=100, modelAlias="scribe"))
    assert after == before + Counter({"FAILED": 3})
    assert_listings_exact(http, srv, tally)


def test_any_write_to_the_table_is_counted(http, srv, tally):
    """Writers other than Lectern's own code: the triggers count them just the same."""
    s = StreamSessionRow
    ann_rows = (s.user_id == tally.user_ids["ann"]) & (s.client_address == "10.0.0.9")  # inserted: no segments
    with srv.db() as db:
        deleted = db.scalars(select(s.id).where(ann_rows, s.deleted_at.is_not(None)).order_by(s.id)).all()
        shown = db.scalars(select(s.id).where(ann_rows, s.deleted_at.is_(None)).order_by(s.id)).all()
        assert len(deleted) >= 2 and len(shown) >= 6
        db.execute(update(s).where(s.id == deleted[0]).values(deleted_at=None))  # undeleted
        db.execute(update(s).where(s.id == deleted[1]).values(deleted_at=T0, state="FINISHED"))  # stays deleted
        db.execute(update(s).where(s.id == shown[0]).values(requested_model_alias="Renamed_%_Alias"))
        db.execute(update(s).where(s.id == shown[1]).values(recording_requested=~s.recording_requested))
        db.execute(update(s).where(s.id == shown[2]).values(user_id=tally.user_ids["ben"]))  # another owner
        db.execute(update(s).where(s.id.in_(shown[3:5])).values(state="CANCELLED", words_count=7))
        db.execute(delete(s).where(s.id.in_([shown[5], deleted[-1]])))  # gone for good
        db.commit()
    assert total(http, tally.keys["ann"], modelAlias="d_%_a") == 1
    assert_listings_exact(http, srv, tally)
