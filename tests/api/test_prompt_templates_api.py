"""The Summary Prompt Templates API (``/api/v1/session-history/summary-prompt-templates``) on a
real server: the platform's built-in templates, USER and TENANT templates (create, get, update,
delete, who sees what), every field rule at its edge, assignments and defaults, paging and filters.

Users (one set per backend, in tenants of their own on the shared server):

- tenant ``main``: alice and bob (a normal user's scopes), boss (also ``ai:prompts:admin``),
  reader (``speech:summaries:read`` only) and stranger (no summaries scope);
- tenant ``other``: carol (a prompt admin of another tenant);
- tenant ``pages``: pat (a prompt admin), for listings no other test touches;
- tenant ``team``: ann and ben (normal users) and chief (a prompt admin), for assignments.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from lectern.auth.principal import Principal
from lectern.auth.scopes import NORMAL_USER_SCOPES, PROMPTS_ADMIN
from lectern.store import prompt_templates as store
from lectern.store.db import create_db_engine, session_factory
from lectern.store.models import Tenant, User
from tests.api.test_streams_api import assert_problem, auth, media_type
from tests.conftest import LecternServer

BASE = "/api/v1/session-history/summary-prompt-templates"
READ = "speech:summaries:read"
NORMAL = list(NORMAL_USER_SCOPES)
ADMIN = [*NORMAL_USER_SCOPES, PROMPTS_ADMIN]
BUILT_IN = {  # id -> (name, kind)
    "00000000-0000-4000-8000-00000000a001": ("Concise summary", "summary"),
    "00000000-0000-4000-8000-00000000a002": ("Meeting minutes", "minutes"),
    "00000000-0000-4000-8000-00000000a003": ("Action items", "action_items"),
}
SUMMARY, MINUTES, ACTIONS = BUILT_IN
TEMPLATE_FIELDS = {
    "id", "name", "description", "level", "systemPrompt", "userPrompt", "outputOptions", "isGlobal",
    "isGlobalDefault", "ownerId", "creationDate", "modificationDate",
}
ASSIGNED_FIELDS = TEMPLATE_FIELDS | {"isDefault", "isExplicit"}
ASSIGNMENT_FIELDS = {"templateId", "userId", "isDefault", "creationDate"}
LEVEL_ORDER = {"APPLICATION": 0, "TENANT": 1, "USER": 2}


# -- helpers ----------------------------------------------------------------------------------------


class Caller:
    """One user's view of the API."""

    def __init__(self, srv: LecternServer, tenant: str, name: str, key: str) -> None:
        self.tenant, self.name = tenant, name
        self.http = httpx.Client(base_url=srv.base_url, headers=auth(key), timeout=30)

    def get(self, path: str = "", **params: Any) -> httpx.Response:
        return self.http.get(BASE + path, params=params)

    def post(self, path: str = "", body: Any = None) -> httpx.Response:
        return self.http.post(BASE + path, json=body)

    def put(self, path: str, body: Any) -> httpx.Response:
        return self.http.put(BASE + path, json=body)

    def patch(self, path: str, body: Any) -> httpx.Response:
        return self.http.patch(BASE + path, json=body)

    def delete(self, path: str, **params: Any) -> httpx.Response:
        return self.http.delete(BASE + path, params=params)

    def create(self, **fields: Any) -> dict[str, Any]:
        r = self.post("", template(**fields))
        assert r.status_code == 201, r.text
        return r.json()

    def listing(self, path: str = "", **params: Any) -> list[dict[str, Any]]:
        """Every template of a listing, page after page."""
        found: list[dict[str, Any]] = []
        for page in range(100):
            r = self.get(path, page=page, size=100, **params)
            assert r.status_code == 200, r.text
            body = r.json()
            found += body["templates"]
            if len(found) >= body["total"]:
                return found
        raise AssertionError("the listing never ends")

    def ids(self, path: str = "", **params: Any) -> list[str]:
        return [t["id"] for t in self.listing(path, **params)]

    def assigned(self) -> dict[str, dict[str, Any]]:
        return {t["id"]: t for t in self.listing("/assigned")}


def template(**fields: Any) -> dict[str, Any]:
    """A valid create/update body; ``fields`` override or (when None) leave out its fields."""
    body: dict[str, Any] = {
        "name": f"t{uuid.uuid4().hex[:8]}",
        "description": "A template made by a test.",
        "systemPrompt": "You summarize transcripts.",
        "userPrompt": "Summarize this {{language}} transcript of {{date}}:\n{{transcript}}",
        "outputOptions": {"kind": "summary", "maxOutputTokens": 400, "temperature": 0.3},
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


@dataclass
class People:
    alice: Caller
    bob: Caller
    boss: Caller
    reader: Caller
    stranger: Caller
    carol: Caller
    pat: Caller
    ann: Caller
    ben: Caller
    chief: Caller

    def all(self) -> list[Caller]:
        return list(vars(self).values())


@pytest.fixture(scope="module")
def people(server: LecternServer) -> Iterator[People]:
    run = uuid.uuid4().hex[:8]
    main, other, pages, team = (f"pt-{t}-{run}" for t in ("main", "other", "pages", "team"))
    specs = {
        "alice": (main, NORMAL), "bob": (main, NORMAL), "boss": (main, ADMIN), "reader": (main, [READ]),
        "stranger": (main, ["speech:files:read"]), "carol": (other, ADMIN), "pat": (pages, ADMIN),
        "ann": (team, NORMAL), "ben": (team, NORMAL), "chief": (team, ADMIN),
    }
    callers = {name: Caller(server, tenant, name, server.create_key(tenant, name, scopes))
               for name, (tenant, scopes) in specs.items()}
    yield People(**callers)
    for caller in callers.values():
        caller.http.close()


# -- built-in templates -------------------------------------------------------------------------------


def test_built_in_templates_are_listed_for_everyone(people: People) -> None:
    for caller in (people.alice, people.carol, people.reader, people.pat):
        listed = caller.listing(level="APPLICATION")
        assert [t["id"] for t in listed] == [ACTIONS, SUMMARY, MINUTES]  # by name
        for t in listed:
            assert set(t) == TEMPLATE_FIELDS
            assert (t["name"], t["outputOptions"]["kind"]) == BUILT_IN[t["id"]]
            assert t["level"] == "APPLICATION" and t["ownerId"] is None
            assert t["isGlobal"] is True and t["isGlobalDefault"] is False
            assert "{{transcript}}" in t["userPrompt"] and t["systemPrompt"]
            assert t["outputOptions"]["maxOutputTokens"] > 0
            assert caller.get(f"/{t['id']}").json() == t
        assert caller.ids()[:3] == [ACTIONS, SUMMARY, MINUTES]  # APPLICATION first


def test_built_in_templates_are_read_only(people: People) -> None:
    for caller in (people.alice, people.boss):
        for template_id in BUILT_IN:
            assert_problem(caller.put(f"/{template_id}", template(level="APPLICATION")), 403)
            assert_problem(caller.put(f"/{template_id}", template()), 403)
            assert_problem(caller.delete(f"/{template_id}"), 403)
        assert_problem(caller.post("", template(level="APPLICATION")), 403, "level")
    assert people.alice.get(f"/{SUMMARY}").json()["name"] == "Concise summary"


# -- USER templates -------------------------------------------------------------------------------------


def test_user_template_create_get_update_delete(people: People) -> None:
    alice = people.alice
    body = template(name="Weekly sync", outputOptions={"kind": "minutes", "maxOutputTokens": 32000, "temperature": 2})
    r = alice.post("", body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == TEMPLATE_FIELDS
    assert created["level"] == "USER" and created["ownerId"] == "alice"
    assert {k: created[k] for k in ("name", "description", "systemPrompt", "userPrompt", "outputOptions")} == {
        **{k: body[k] for k in ("name", "description", "systemPrompt", "userPrompt")},
        "outputOptions": {"kind": "minutes", "maxOutputTokens": 32000, "temperature": 2.0}}
    assert created["isGlobal"] is False and created["isGlobalDefault"] is False
    assert created["creationDate"] == created["modificationDate"]
    tid = created["id"]
    assert alice.get(f"/{tid}").json() == created
    assert tid in alice.ids(level="USER")

    # PUT replaces every field: what it leaves out falls back to its default
    r = alice.put(f"/{tid}", {"name": "Weekly sync v2", "systemPrompt": "", "userPrompt": "{{ transcript }}",
                              "outputOptions": {"kind": "action_items"}})
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["id"] == tid and updated["name"] == "Weekly sync v2" and updated["description"] is None
    assert updated["systemPrompt"] == "" and updated["userPrompt"] == "{{ transcript }}"
    assert updated["outputOptions"] == {"kind": "action_items", "maxOutputTokens": None, "temperature": None}
    assert updated["creationDate"] == created["creationDate"]
    assert datetime.fromisoformat(updated["modificationDate"]) >= datetime.fromisoformat(created["modificationDate"])
    assert alice.get(f"/{tid}").json() == updated
    assert alice.put(f"/{tid}", {**template(), "level": "USER"}).status_code == 200  # its own level may be named

    r = alice.delete(f"/{tid}")
    assert r.status_code == 204 and r.content == b""
    assert_problem(alice.get(f"/{tid}"), 404)
    assert_problem(alice.put(f"/{tid}", template()), 404)
    assert_problem(alice.delete(f"/{tid}"), 404)
    assert tid not in alice.ids()


def test_another_users_template_does_not_exist_for_them(people: People) -> None:
    mine = people.alice.create()["id"]
    for caller in (people.bob, people.boss, people.carol):
        assert_problem(caller.get(f"/{mine}"), 404)
        assert_problem(caller.put(f"/{mine}", template()), 404)
        assert_problem(caller.delete(f"/{mine}"), 404)
        assert_problem(caller.post(f"/{mine}/assign", {}), 404)
        assert mine not in caller.ids()
    assert_problem(people.boss.post(f"/{mine}/assign", {"userId": "alice"}), 404)
    assert people.alice.get(f"/{mine}").status_code == 200
    assert_problem(people.alice.get("/not-a-uuid"), 404)
    assert_problem(people.alice.get(f"/{uuid.uuid4()}"), 404)


def test_scopes(people: People, server: LecternServer) -> None:
    tid = people.alice.create()["id"]
    reader = people.reader
    assert reader.get().status_code == 200 and reader.get("/assigned").status_code == 200
    assert reader.get(f"/{SUMMARY}").status_code == 200
    for r in (reader.post("", template()), reader.put(f"/{tid}", template()), reader.delete(f"/{tid}"),
              reader.post(f"/{SUMMARY}/assign", {}), reader.patch(f"/{SUMMARY}/assign", {"isDefault": True}),
              reader.delete(f"/{SUMMARY}/unassign")):
        assert "speech:summaries:write" in assert_problem(r, 403)["detail"]
    for r in (people.stranger.get(), people.stranger.get(f"/{SUMMARY}"), people.stranger.get("/assigned")):
        assert "speech:summaries:read" in assert_problem(r, 403)["detail"]
    assert_problem(httpx.get(f"{server.base_url}{BASE}"), 401)
    assert_problem(httpx.get(f"{server.base_url}{BASE}", headers=auth("kk-not-a-key")), 401)


# -- TENANT templates -----------------------------------------------------------------------------------


def test_tenant_templates_need_prompt_admin(people: People) -> None:
    body = template(level="TENANT", name="Team summary")
    assert PROMPTS_ADMIN in assert_problem(people.alice.post("", body), 403, "level")["detail"]
    shared = people.boss.create(**body)
    tid = shared["id"]
    assert shared["level"] == "TENANT" and shared["ownerId"] is None

    for caller in (people.alice, people.bob, people.reader, people.boss):  # the tenant's users see it
        assert caller.get(f"/{tid}").json() == shared
        assert tid in caller.ids(level="TENANT")
    assert_problem(people.carol.get(f"/{tid}"), 404)  # another tenant's admin does not
    assert tid not in people.carol.ids()
    assert_problem(people.carol.put(f"/{tid}", template(level="TENANT")), 404)
    assert_problem(people.carol.delete(f"/{tid}"), 404)

    for r in (people.alice.put(f"/{tid}", template(level="TENANT")), people.alice.delete(f"/{tid}")):
        assert PROMPTS_ADMIN in assert_problem(r, 403)["detail"]
    r = people.boss.put(f"/{tid}", template(level="TENANT", name="Team summary v2"))
    assert r.status_code == 200 and r.json()["name"] == "Team summary v2"
    assert people.alice.get(f"/{tid}").json()["name"] == "Team summary v2"
    assert people.boss.delete(f"/{tid}").status_code == 204
    assert_problem(people.alice.get(f"/{tid}"), 404)


def test_a_template_level_never_changes(people: People) -> None:
    mine = people.boss.create()["id"]
    shared = people.boss.create(level="TENANT")["id"]
    assert_problem(people.boss.put(f"/{mine}", template(level="TENANT")), 400, "level")
    assert_problem(people.boss.put(f"/{shared}", template(level="USER")), 400, "level")
    assert_problem(people.boss.put(f"/{shared}", template(level="APPLICATION")), 400, "level")
    assert people.boss.put(f"/{shared}", template()).json()["level"] == "TENANT"  # no level: unchanged
    assert people.boss.get(f"/{mine}").json()["level"] == "USER"


# -- field rules ----------------------------------------------------------------------------------------


def _options(**options: Any) -> dict[str, Any]:
    return {"kind": "summary", **options}


ACCEPTED = {
    "name of 200": template(name="n" * 200),
    "spaced placeholders": template(userPrompt="{{  transcript }} in {{language }} on {{ date}}"),
    "only transcript": template(userPrompt="{{transcript}}"),
    "single braces around": template(userPrompt='{{{transcript}}} as {"json": true}'),
    "placeholders in systemPrompt": template(systemPrompt="Today is {{date}}; answer in {{ language }}."),
    "description of 2000": template(description="d" * 2000),
    "no description": template(description=None),
    "prompts of 20000": template(systemPrompt="s" * 20_000, userPrompt="{{transcript}}" + "u" * 19_986),
    "temperature 0": template(outputOptions=_options(temperature=0)),
    "temperature 2": template(outputOptions=_options(temperature=2)),
    "temperature 2.0": template(outputOptions=_options(temperature=2.0)),
    "maxOutputTokens 1": template(outputOptions=_options(maxOutputTokens=1)),
    "maxOutputTokens 32000": template(outputOptions=_options(maxOutputTokens=32_000)),
    "kind only": template(outputOptions={"kind": "action_items"}),
    "level USER": template(level="USER"),
    "not global": template(isGlobal=False, isGlobalDefault=False),
    "unicode": template(name="Résumé ✓ 会议", userPrompt="Zusammenfassung: {{transcript}} ✓"),
}

REFUSED = {  # name -> (body, parameter)
    "no transcript placeholder": (template(userPrompt="Summarize {{language}} text of {{date}}."), "userPrompt"),
    "transcript without braces": (template(userPrompt="Summarize the transcript."), "userPrompt"),
    "single braces": (template(userPrompt="Summarize {transcript}."), "userPrompt"),
    "unknown placeholder": (template(userPrompt="{{transcript}} for {{speaker}}"), "userPrompt"),
    "placeholder case": (template(userPrompt="{{Transcript}}"), "userPrompt"),
    "empty placeholder": (template(userPrompt="{{transcript}} {{}}"), "userPrompt"),
    "unknown in systemPrompt": (template(systemPrompt="You are {{persona}}."), "systemPrompt"),
    "half a placeholder": (template(userPrompt="{{transcript}} in {{language}"), "userPrompt"),
    "nested placeholder": (template(userPrompt="{{transcript}} {{ {{date}} }}"), "userPrompt"),
    "stray closing braces": (template(systemPrompt="Answer in language}}."), "systemPrompt"),
    "name of 201": (template(name="n" * 201), "name"),
    "empty name": (template(name=""), "name"),
    "blank name": (template(name="   "), "name"),
    "control character in name": (template(name="a\nb"), "name"),
    "no name": (template(name=None), "name"),
    "description of 2001": (template(description="d" * 2001), "description"),
    "systemPrompt of 20001": (template(systemPrompt="s" * 20_001), "systemPrompt"),
    "userPrompt of 20001": (template(userPrompt="{{transcript}}" + "u" * 19_987), "userPrompt"),
    "empty userPrompt": (template(userPrompt=""), "userPrompt"),
    "NUL in userPrompt": (template(userPrompt="{{transcript}}\x00"), "userPrompt"),
    "no systemPrompt": (template(systemPrompt=None), "systemPrompt"),
    "no outputOptions": (template(outputOptions=None), "outputOptions"),
    "no kind": (template(outputOptions={"maxOutputTokens": 10}), "outputOptions.kind"),
    "unknown kind": (template(outputOptions={"kind": "haiku"}), "outputOptions.kind"),
    "temperature 2.01": (template(outputOptions=_options(temperature=2.01)), "outputOptions.temperature"),
    "temperature -0.01": (template(outputOptions=_options(temperature=-0.01)), "outputOptions.temperature"),
    "temperature as text": (template(outputOptions=_options(temperature="1")), "outputOptions.temperature"),
    "maxOutputTokens 0": (template(outputOptions=_options(maxOutputTokens=0)), "outputOptions.maxOutputTokens"),
    "maxOutputTokens 32001": (template(outputOptions=_options(maxOutputTokens=32_001)),
                              "outputOptions.maxOutputTokens"),
    "maxOutputTokens 1.5": (template(outputOptions=_options(maxOutputTokens=1.5)), "outputOptions.maxOutputTokens"),
    "unknown option": (template(outputOptions=_options(topP=0.9)), "outputOptions.topP"),
    "unknown field": (template(owner="bob"), "owner"),
    "unknown level": (template(level="GLOBAL"), "level"),
    "global USER template": (template(isGlobal=True), "isGlobal"),
    "global default USER template": (template(isGlobal=True, isGlobalDefault=True), "isGlobal"),
    "isGlobalDefault without isGlobal": (template(level="TENANT", isGlobalDefault=True), "isGlobalDefault"),
    "isGlobal as text": (template(level="TENANT", isGlobal="true"), "isGlobal"),
}


@pytest.mark.parametrize("case", ACCEPTED)
def test_accepted_fields(people: People, case: str) -> None:
    body = ACCEPTED[case]
    r = people.boss.post("", body)
    assert r.status_code == 201, r.text
    created = r.json()
    for field in ("name", "systemPrompt", "userPrompt"):
        assert created[field] == body[field]
    assert created["description"] == body.get("description")
    assert created["outputOptions"] == {"maxOutputTokens": None, "temperature": None, **body["outputOptions"]}
    updated = people.boss.put(f"/{created['id']}", body)  # the same rules hold for an update
    assert updated.status_code == 200, updated.text


@pytest.mark.parametrize("case", REFUSED)
def test_refused_fields(people: People, case: str) -> None:
    body, parameter = REFUSED[case]
    detail = assert_problem(people.boss.post("", body), 400, parameter)["detail"]
    if case == "unknown placeholder":
        assert "{{speaker}}" in detail
    if case == "unknown in systemPrompt":
        assert "{{persona}}" in detail
    existing = people.boss.create(level=body.get("level") if body.get("level") == "TENANT" else None)
    assert_problem(people.boss.put(f"/{existing['id']}", body), 400, parameter)
    assert people.boss.get(f"/{existing['id']}").json() == existing  # unchanged


def test_refused_bodies(people: People) -> None:
    for raw in (b"", b"[]", b"{", b'"text"'):
        r = people.alice.http.post(BASE, content=raw, headers={"content-type": "application/json"})
        assert_problem(r, 400)


# -- global templates and assignments ----------------------------------------------------------------


def _defaults(assigned: dict[str, dict[str, Any]]) -> list[str]:
    return [tid for tid, t in assigned.items() if t["isDefault"]]


def test_assigning_to_oneself_and_switching_the_default(people: People) -> None:
    ann = people.ann
    assigned = ann.assigned()
    assert set(BUILT_IN) <= set(assigned)  # the built-in templates are global
    assert all(set(t) == ASSIGNED_FIELDS and not t["isExplicit"] for t in assigned.values())
    assert _defaults(assigned) == []

    r = ann.post(f"/{SUMMARY}/assign", {})
    assert r.status_code == 201, r.text
    first = r.json()
    assert set(first) == ASSIGNMENT_FIELDS
    assert first == {"templateId": SUMMARY, "userId": "ann", "isDefault": False, "creationDate": first["creationDate"]}
    assert ann.assigned()[SUMMARY]["isExplicit"] is True

    r = ann.post(f"/{SUMMARY}/assign", {"userId": "ann", "isDefault": True})  # again: 200, as given
    assert r.status_code == 200, r.text
    assert r.json() == {**first, "isDefault": True}
    assert _defaults(ann.assigned()) == [SUMMARY]

    own = ann.create(name="Ann's notes")["id"]
    r = ann.post(f"/{own}/assign", {"isDefault": True})  # a new default replaces the old one
    assert r.status_code == 201 and r.json()["isDefault"] is True
    assigned = ann.assigned()
    assert _defaults(assigned) == [own]
    assert assigned[own]["isExplicit"] and assigned[own]["ownerId"] == "ann"
    assert assigned[SUMMARY]["isExplicit"] and not assigned[SUMMARY]["isDefault"]

    r = ann.patch(f"/{SUMMARY}/assign", {"isDefault": True})
    assert r.status_code == 200 and r.json() == {**first, "isDefault": True}
    assert _defaults(ann.assigned()) == [SUMMARY]
    r = ann.patch(f"/{SUMMARY}/assign", {"userId": "ann", "isDefault": False})
    assert r.status_code == 200 and r.json()["isDefault"] is False
    assert _defaults(ann.assigned()) == []
    assert_problem(ann.patch(f"/{MINUTES}/assign", {"isDefault": True}), 404)  # implicit only: no assignment
    assert_problem(ann.patch(f"/{SUMMARY}/assign", {}), 400, "isDefault")
    assert_problem(ann.post(f"/{SUMMARY}/assign", {"isDefault": "yes"}), 400, "isDefault")
    assert_problem(ann.post(f"/{SUMMARY}/assign", {"user": "ann"}), 400, "user")

    r = ann.delete(f"/{SUMMARY}/unassign")
    assert r.status_code == 204 and r.content == b""
    assigned = ann.assigned()
    assert SUMMARY in assigned and not assigned[SUMMARY]["isExplicit"]  # still there: it is global
    assert_problem(ann.delete(f"/{SUMMARY}/unassign"), 404)
    assert_problem(ann.delete(f"/{MINUTES}/unassign"), 404)
    assert ann.delete(f"/{own}/unassign", userId="ann").status_code == 204
    assert own not in ann.assigned()
    assert ann.get(f"/{own}").status_code == 200  # unassigning keeps the template


def test_global_templates_and_assignments_for_other_users(people: People) -> None:
    ann, ben, chief = people.ann, people.ben, people.chief
    plain = chief.create(level="TENANT", name="Team plain")["id"]
    everyone = chief.create(level="TENANT", name="Team global", isGlobal=True)["id"]
    first_default = chief.create(level="TENANT", name="Team default", isGlobal=True, isGlobalDefault=True)["id"]
    for user in (ann, ben, chief):
        assigned = user.assigned()
        assert {everyone, first_default} <= set(assigned) and plain not in assigned
        assert _defaults(assigned) == [first_default]
        assert not assigned[everyone]["isExplicit"] and assigned[everyone]["isGlobal"]
    assert first_default not in people.alice.assigned()  # another tenant's global templates are not theirs

    # a new global default replaces the tenant's previous one
    default = chief.create(level="TENANT", name="Team default 2", isGlobal=True, isGlobalDefault=True)["id"]
    assert chief.get(f"/{first_default}").json()["isGlobalDefault"] is False
    assert _defaults(ben.assigned()) == [default]

    # assigning to another user needs ai:prompts:admin, a user of the tenant, a template they see
    assert PROMPTS_ADMIN in assert_problem(ann.post(f"/{plain}/assign", {"userId": "ben"}), 403, "userId")["detail"]
    assert_problem(chief.post(f"/{plain}/assign", {"userId": "nobody-" + uuid.uuid4().hex}), 404, "userId")
    assert_problem(chief.post(f"/{plain}/assign", {"userId": "alice"}), 404, "userId")  # another tenant's user
    personal = chief.create(name="Chief's own")["id"]
    assert_problem(chief.post(f"/{personal}/assign", {"userId": "ben"}), 400, "userId")
    r = chief.post(f"/{plain}/assign", {"userId": "ben"})
    assert r.status_code == 201, r.text
    assert r.json()["userId"] == "ben" and r.json()["isDefault"] is False
    assigned = ben.assigned()
    assert assigned[plain]["isExplicit"] and not assigned[plain]["isDefault"]
    assert plain not in ann.assigned()

    # the user's own default wins over the tenant's global default: still one default
    r = chief.patch(f"/{plain}/assign", {"userId": "ben", "isDefault": True})
    assert r.status_code == 200 and r.json()["isDefault"] is True
    assert _defaults(ben.assigned()) == [plain]
    assert _defaults(ann.assigned()) == [default]
    assert_problem(ann.patch(f"/{plain}/assign", {"userId": "ben", "isDefault": False}), 403, "userId")
    assert_problem(ann.delete(f"/{plain}/unassign", userId="ben"), 403, "userId")
    assert_problem(chief.delete(f"/{plain}/unassign", userId="ann"), 404)
    assert chief.delete(f"/{plain}/unassign", userId="ben").status_code == 204
    assert plain not in ben.assigned()
    assert _defaults(ben.assigned()) == [default]  # the global default is back

    # a template that stops being global leaves the lists of those it was not assigned to
    ann.post(f"/{everyone}/assign", {})
    chief.put(f"/{everyone}", template(level="TENANT", name="Team global"))
    assert everyone in ann.assigned() and everyone not in ben.assigned()


def test_deleting_a_template_removes_it_everywhere(people: People, server: LecternServer) -> None:
    ann, ben, chief = people.ann, people.ben, people.chief
    shared = chief.create(level="TENANT", name="Doomed shared", isGlobal=True)["id"]
    own = ann.create(name="Doomed own")["id"]
    assert ann.post(f"/{own}/assign", {"isDefault": True}).status_code == 201
    assert ben.post(f"/{shared}/assign", {"isDefault": True}).status_code == 201
    assert _defaults(ben.assigned()) == [shared] and _defaults(ann.assigned()) == [own]

    assert ann.delete(f"/{own}").status_code == 204
    assert chief.delete(f"/{shared}").status_code == 204
    for user in (ann, ben, chief):
        assert {shared, own}.isdisjoint(user.ids())
        assert {shared, own}.isdisjoint(user.assigned())
        assert_problem(user.get(f"/{shared}"), 404)
        assert_problem(user.post(f"/{shared}/assign", {}), 404)
    assert own not in _defaults(ann.assigned()) and shared not in _defaults(ben.assigned())
    assert_problem(ben.delete(f"/{shared}/unassign"), 404)
    with server.db() as db:  # the rows stay (summaries name them), their assignments do not
        ids = [uuid.UUID(t).hex if server.backend == "sqlite" else t for t in (own, shared)]
        left = db.execute(text("SELECT count(*) FROM prompt_template_assignments WHERE template_id IN (:a, :b)"),
                          {"a": ids[0], "b": ids[1]}).scalar()
        kept = db.execute(text("SELECT count(*) FROM prompt_templates WHERE id IN (:a, :b) "
                               "AND deleted_at IS NOT NULL"), {"a": ids[0], "b": ids[1]}).scalar()
    assert (left, kept) == (0, 2)
    assert [visible_as(server, ann, t) for t in (own, shared, SUMMARY)] == [None, None, SUMMARY]


def visible_as(server: LecternServer, caller: Caller, template_id: str) -> str | None:
    """``store.visible_template`` (what a summary uses) for this caller, against the server's database."""

    async def look() -> str | None:
        engine = create_db_engine(server.database_url)
        try:
            async with session_factory(engine)() as db:
                tenant, user = (await db.execute(
                    select(Tenant, User).join(User, User.tenant_id == Tenant.id)
                    .where(Tenant.name == caller.tenant, User.external_id == caller.name))).one()
                principal = Principal(tenant.id, tenant.name, user.id, user.external_id, frozenset())
                row = await store.visible_template(db, uuid.UUID(template_id), principal)
                return str(row.id) if row is not None else None
        finally:
            await engine.dispose()

    return asyncio.run(look())


def test_visible_template_for_summaries(people: People, server: LecternServer) -> None:
    own = people.alice.create()["id"]
    shared = people.boss.create(level="TENANT")["id"]
    assert visible_as(server, people.alice, own) == own
    assert visible_as(server, people.bob, own) is None  # another user's personal template
    assert visible_as(server, people.bob, shared) == shared
    assert visible_as(server, people.carol, shared) is None  # another tenant's
    assert visible_as(server, people.carol, MINUTES) == MINUTES
    assert visible_as(server, people.alice, str(uuid.uuid4())) is None


# -- listings ---------------------------------------------------------------------------------------------


def test_paging_order_and_filters(people: People) -> None:
    pat = people.pat
    kinds = ["summary", "minutes", "action_items", "minutes", "summary"]
    own = [pat.create(name=f"mine {i:02d}", outputOptions={"kind": k})["id"] for i, k in enumerate(kinds)]
    shared = [pat.create(level="TENANT", name=f"shared {i:02d}", outputOptions={"kind": "minutes"})["id"]
              for i in range(2)]
    everything = [ACTIONS, SUMMARY, MINUTES, *shared, *own]

    seen: list[dict[str, Any]] = []
    for page in range(5):
        r = pat.get(page=page, size=2)
        assert r.status_code == 200 and media_type(r) == "application/json"
        body = r.json()
        assert set(body) == {"templates", "page", "size", "total"}
        assert (body["page"], body["total"]) == (page, len(everything))
        assert body["size"] == len(body["templates"]) == min(2, len(everything) - 2 * page)
        seen += body["templates"]
    assert [t["id"] for t in seen] == everything
    assert [LEVEL_ORDER[t["level"]] for t in seen] == sorted(LEVEL_ORDER[t["level"]] for t in seen)
    past = pat.get(page=5, size=2).json()
    assert past["templates"] == [] and past["size"] == 0 and past["total"] == len(everything)
    assert [t["id"] for t in pat.get().json()["templates"]] == everything  # the default page (20) holds them all

    assert pat.ids(level="USER") == own
    assert pat.ids(level="TENANT") == shared
    assert pat.ids(kind="minutes") == [MINUTES, *shared, own[1], own[3]]
    assert pat.ids(level="USER", kind="summary") == [own[0], own[4]]
    body = pat.get(level="USER", kind="summary", size=1).json()
    assert (body["total"], [t["id"] for t in body["templates"]]) == (2, [own[0]])

    for params, parameter in (({"size": 101}, "size"), ({"size": 0}, "size"), ({"page": -1}, "page"),
                              ({"level": "GLOBAL"}, "level"), ({"kind": "haiku"}, "kind"),
                              ({"page": "x"}, "page")):
        assert_problem(pat.get(**params), 400, parameter)
        assert_problem(pat.get("/assigned", **params), 400, parameter)
    assert pat.get(size=100).status_code == 200


def test_assigned_paging_and_filters(people: People) -> None:
    pat = people.pat
    global_one = pat.create(level="TENANT", name="zz global", isGlobal=True, outputOptions={"kind": "minutes"})["id"]
    mine = pat.create(name="zz assigned", outputOptions={"kind": "action_items"})["id"]
    pat.post(f"/{mine}/assign", {"isDefault": True})
    expected = [ACTIONS, SUMMARY, MINUTES, global_one, mine]
    pages = [pat.get("/assigned", page=p, size=2).json() for p in range(3)]
    assert [p["total"] for p in pages] == [5, 5, 5] and [p["size"] for p in pages] == [2, 2, 1]
    listed = [t for p in pages for t in p["templates"]]
    assert [t["id"] for t in listed] == expected
    assert [t["isDefault"] for t in listed] == [False, False, False, False, True]
    assert [t["isExplicit"] for t in listed] == [False, False, False, False, True]
    assert pat.ids("/assigned", kind="minutes") == [MINUTES, global_one]
    assert pat.ids("/assigned", level="USER") == [mine]
    assert pat.ids("/assigned", level="APPLICATION", kind="summary") == [SUMMARY]


def test_concurrent_defaults_leave_one(people: People) -> None:
    bob = people.bob
    candidates = [*BUILT_IN, *(bob.create(name=f"bob {i}")["id"] for i in range(5))]

    def make_default(template_id: str) -> int:
        return bob.post(f"/{template_id}/assign", {"isDefault": True}).status_code

    for _round in range(3):  # new assignments, then existing ones becoming the default again
        with ThreadPoolExecutor(len(candidates)) as pool:
            statuses = list(pool.map(make_default, candidates))
        assert set(statuses) <= {200, 201}, statuses
        assigned = bob.assigned()
        assert set(candidates) <= {tid for tid, t in assigned.items() if t["isExplicit"]}
        assert len(_defaults(assigned)) == 1
