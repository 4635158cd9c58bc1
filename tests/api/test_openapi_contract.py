"""The OpenAPI document describes the Streaming Sessions API as it behaves.

First plain checks of the document against the seed's contract (operations, parameters, data
types, error bodies, the statuses the server really answers), then a bounded schemathesis run
against a live server: no server error, no response that breaks the schema, no undocumented
status or content type, invalid input rejected.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import uuid
from datetime import timedelta
from typing import Any

import httpx
import hypothesis.strategies as st
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from websockets.asyncio.client import connect

from lectern.app import create_app
from tests.api.test_streams_api import (
    BASE,
    COFFEE,
    FOX,
    METADATA,
    SEGMENT_FIELDS,
    SESSION_FIELDS,
    STATES,
    UA,
    WORD_FIELDS,
    Streamed,
    auth,
    start_server,
    stream_session,
)
from tests.conftest import LecternServer
from tests.realtime.scribe_wire import expect_started, send_audio

OPERATIONS = {  # (path, method) -> the seed's summary
    (BASE, "get"): "List Sessions",
    (f"{BASE}/{{id}}", "get"): "Get Session",
    (f"{BASE}/{{id}}/segments", "get"): "Get Session Segments",
    (f"{BASE}/{{id}}/recording", "get"): "Download Recording",
    (f"{BASE}/{{id}}", "delete"): "Delete Session",
    (f"{BASE}/{{id}}/recording", "delete"): "Purge Recording",
    (f"{BASE}/{{id}}/purge", "post"): "Purge Session Content",
}
PROBLEM_JSON = "application/problem+json"


# -- fixtures -----------------------------------------------------------------------------------


class Contract:
    def __init__(self, srv: LecternServer, key: str, readable: list[Streamed]) -> None:
        self.srv = srv
        self.key = key
        self.readable = readable  # alice's sessions that are only ever read
        self.document: dict[str, Any] = httpx.get(f"{srv.base_url}/openapi.json", timeout=30).json()

    def operation(self, path: str, method: str) -> dict[str, Any]:
        return self.document["paths"][path][method]

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            ref = schema["$ref"]
            assert ref.startswith("#/components/schemas/"), ref
            schema = self.document["components"]["schemas"][ref.rsplit("/", 1)[1]]
        return schema


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def contract(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    # Budgets no generated run reaches: its point is the contract, and a caller locked out after its
    # failed authentications would leave every later case a 429 (tests/api/test_rate_limits.py).
    srv = start_server(tmp_path_factory, backend, rate_limit_auth_failures="", rate_limit_requests="",
                       rate_limit_tenant_requests="", rate_limit_purges="")
    key = srv.create_key("acme", "alice")
    readable = [
        await stream_session(srv, key, [FOX.pcm, COFFEE.pcm], recording=True, metadata=METADATA),
        await stream_session(srv, key, [COFFEE.pcm]),
    ]
    disposable = {  # two sessions for each operation that deletes or purges
        op: [await stream_session(srv, key, [FOX.pcm], recording=True) for _ in range(2)]
        for op in OPERATIONS if op[1] != "get"
    }
    KNOWN_SESSIONS.clear()
    for path, method in OPERATIONS:
        pool = readable if method == "get" else disposable[(path, method)]
        KNOWN_SESSIONS[f"{method.upper()} {path}"] = [s.id for s in pool]
    yield Contract(srv, key, readable)
    KNOWN_SESSIONS.clear()
    srv.stop()


def nullable(schema: dict[str, Any]) -> bool:
    types = schema.get("type")
    return (
        any(option.get("type") == "null" for option in schema.get("anyOf", []))
        or types == "null"
        or (isinstance(types, list) and "null" in types)
    )


def non_null(schema: dict[str, Any]) -> dict[str, Any]:
    options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
    assert len(options) == 1, schema
    return options[0]


# -- the document --------------------------------------------------------------------------------


def test_the_document_has_the_seven_operations(contract):
    documented = {
        (path, method): op["summary"]
        for path, item in contract.document["paths"].items()
        if path.startswith(BASE)
        for method, op in item.items()
    }
    assert documented == OPERATIONS
    docs = httpx.get(f"{contract.srv.base_url}/docs", timeout=30)
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text


def test_every_operation_takes_an_api_key_or_a_bearer_jwt(contract):
    schemes = contract.document["components"]["securitySchemes"]
    by_kind = {}
    for name, scheme in schemes.items():
        if scheme["type"] == "apiKey":
            assert (scheme["in"], scheme["name"]) == ("header", "X-API-Key")
            by_kind["key"] = name
        elif scheme["type"] == "http":
            assert scheme["scheme"].lower() == "bearer"
            by_kind["jwt"] = name
    assert set(by_kind) == {"key", "jwt"}
    for path, method in OPERATIONS:
        security = contract.operation(path, method)["security"]
        assert {name for requirement in security for name in requirement} == set(by_kind.values())
        assert all(len(requirement) == 1 for requirement in security), "either credential alone suffices"


def test_list_parameters_are_documented(contract):
    params = {p["name"]: p for p in contract.operation(BASE, "get")["parameters"]}
    assert set(params) == {"page", "size", "state", "modelAlias", "startedAfter", "startedBefore",
                           "recordingRequested", "sort"}
    assert all(p["in"] == "query" and not p.get("required") for p in params.values())
    page, size = non_null(params["page"]["schema"]), non_null(params["size"]["schema"])
    assert (page["type"], page.get("minimum"), params["page"]["schema"].get("default")) == ("integer", 0, 0)
    assert (size["type"], size.get("minimum"), size.get("maximum")) == ("integer", 1, 100)
    assert params["size"]["schema"].get("default") == 20
    assert set(contract.resolve(non_null(params["state"]["schema"]))["enum"]) == set(STATES)
    assert non_null(params["modelAlias"]["schema"])["type"] == "string"
    for name in ("startedAfter", "startedBefore"):
        value = non_null(params[name]["schema"])
        assert (value["type"], value.get("format")) == ("string", "date-time"), name
    assert non_null(params["recordingRequested"]["schema"])["type"] == "boolean"
    assert params["sort"]["schema"].get("default") == "startTime,desc"


def test_the_response_bodies_are_the_seeds_data_types(contract):
    listing = contract.operation(BASE, "get")["responses"]["200"]["content"]
    assert set(listing) == {"application/json"}
    page = contract.resolve(listing["application/json"]["schema"])
    assert set(page["properties"]) == set(page["required"]) == {"sessions", "page", "size", "total"}
    assert {page["properties"][f]["type"] for f in ("page", "size", "total")} == {"integer"}

    session = contract.resolve(page["properties"]["sessions"]["items"])
    one = contract.operation(f"{BASE}/{{id}}", "get")["responses"]["200"]["content"]
    assert set(one) == {"application/json"} and contract.resolve(one["application/json"]["schema"]) == session
    props = session["properties"]
    assert set(props) == set(session["required"]) == SESSION_FIELDS  # always present; some may be null
    assert {f for f, s in props.items() if nullable(s)} == {
        "endTime", "recordingPurgedAt", "userAgent", "failureReason", "metadata"}
    assert props["sessionId"]["format"] == "uuid"
    assert set(contract.resolve(props["state"])["enum"]) == set(STATES)
    for f in ("startTime", "endTime", "recordingPurgedAt"):
        assert (non_null(props[f])["type"], non_null(props[f]).get("format")) == ("string", "date-time"), f
    for f in ("durationMilliseconds", "wordsCount", "segmentCount"):
        assert props[f]["type"] == "integer", f
    for f in ("usedFallback", "recordingRequested", "recordingPurged"):
        assert props[f]["type"] == "boolean", f
    assert non_null(props["metadata"])["type"] == "object"

    segments = contract.operation(f"{BASE}/{{id}}/segments", "get")["responses"]["200"]["content"]
    assert set(segments) == {"application/json"}
    array = segments["application/json"]["schema"]
    assert array["type"] == "array"
    segment = contract.resolve(array["items"])
    assert set(segment["properties"]) == set(segment["required"]) == SEGMENT_FIELDS
    assert {f for f, s in segment["properties"].items() if nullable(s)} == {"confidence", "words"}
    assert segment["properties"]["id"]["format"] == "uuid"
    assert segment["properties"]["segmentIndex"]["type"] == "integer"
    word = contract.resolve(non_null(segment["properties"]["words"])["items"])
    assert set(word["properties"]) == set(word["required"]) == WORD_FIELDS
    assert {f for f, s in word["properties"].items() if nullable(s)} == {"confidence", "speakerTag"}
    assert non_null(word["properties"]["speakerTag"])["type"] == "integer"

    recording = contract.operation(f"{BASE}/{{id}}/recording", "get")["responses"]
    for status in ("200", "206"):
        assert set(recording[status]["content"]) == {"audio/x-pcm"}, status
    for path, method in [(f"{BASE}/{{id}}", "delete"), (f"{BASE}/{{id}}/recording", "delete"),
                         (f"{BASE}/{{id}}/purge", "post")]:
        responses = contract.operation(path, method)["responses"]
        assert "204" in responses and not responses["204"].get("content"), (method, path)
        assert not any(s.startswith("2") and s != "204" for s in responses), (method, path)


def test_the_recording_documents_the_range_header(contract):
    params = contract.operation(f"{BASE}/{{id}}/recording", "get").get("parameters", [])
    assert any(p["in"] == "header" and p["name"].lower() == "range" for p in params), params


def test_errors_are_documented_as_problem_json(contract):
    problem = contract.resolve({"$ref": "#/components/schemas/Problem"})
    assert {"type", "title", "status", "detail", "parameter"} <= set(problem["properties"])
    for path, method in OPERATIONS:
        for status, response in contract.operation(path, method)["responses"].items():
            if not status.startswith("4"):
                continue
            content = response.get("content", {})
            assert set(content) == {PROBLEM_JSON}, (method, path, status, content)
            assert contract.resolve(content[PROBLEM_JSON]["schema"]) == problem, (method, path, status)


def test_validation_errors_are_documented_as_400_not_422(contract):
    for path, method in OPERATIONS:
        responses = contract.operation(path, method)["responses"]
        assert "422" not in responses, (method, path, "the server answers invalid input with 400")
    assert "400" in contract.operation(BASE, "get")["responses"]


def _documented(contract: Contract, path: str, method: str) -> set[int]:
    return {int(s) for s in contract.operation(path, method)["responses"]}


async def test_every_status_the_server_answers_is_documented(contract):
    """Statuses seen from the server, operation by operation, including on a live stream."""
    srv, key = contract.srv, contract.key
    no_scope = srv.create_key("acme", "alice", ["speech:files:read"])
    missing = str(uuid.uuid4())
    seen: dict[tuple[str, str], set[int]] = {op: set() for op in OPERATIONS}
    with httpx.Client(base_url=srv.base_url, timeout=30) as client:
        def call(path: str, method: str, session_id: str | None, headers: dict[str, str]) -> int:
            url = path.replace("{id}", session_id) if session_id else path
            status = client.request(method.upper(), url, headers=headers).status_code
            seen[(path, method)].add(status)
            return status

        for path, method in OPERATIONS:
            call(path, method, missing, {})  # 401
            call(path, method, missing, auth(no_scope))  # 403
            if "{id}" in path:
                call(path, method, missing, auth(key))  # 404
        call(BASE, "get", None, auth(key))
        assert client.get(BASE, headers=auth(key), params={"size": 0}).status_code == 400
        seen[(BASE, "get")].add(400)
        recording = f"{BASE}/{{id}}/recording"
        readable = contract.readable[0].id
        for headers in ({}, {"Range": "bytes=0-9"}, {"Range": "bytes=999999999-"}):
            seen[(recording, "get")].add(
                client.get(recording.replace("{id}", readable), headers={**auth(key), **headers}).status_code)

        # a stream that is still live
        params = urllib.parse.urlencode({"model_id": "scribe_v2_realtime", "recording": "true"})
        url = f"{srv.ws_url}/v1/speech-to-text/realtime?{params}"
        async with connect(url, additional_headers={"xi-api-key": key}, user_agent_header=UA) as ws:
            started = await expect_started(ws)
            live = str(uuid.UUID(started["session_id"]))
            await send_audio(ws, FOX.pcm[:32000])
            row = await asyncio.to_thread(srv.wait_session_state, live, ("ACTIVE",), 10.0)
            assert row["state"] == "ACTIVE", row
            for path, method in [(f"{BASE}/{{id}}", "get"), (f"{BASE}/{{id}}/segments", "get"),
                                 (recording, "get"), (recording, "delete"), (f"{BASE}/{{id}}/purge", "post")]:
                status = await asyncio.to_thread(call, path, method, live, auth(key))
                assert status < 500, (method, path, status)
    undocumented = {op: sorted(statuses - _documented(contract, *op)) for op, statuses in seen.items()}
    assert {op: s for op, s in undocumented.items() if s} == {}
    assert {200, 206, 416} <= seen[(recording, "get")]


# -- schemathesis -------------------------------------------------------------------------------
#
# ``schemathesis.pytest.from_fixture`` (the lazy loader a live server calls for) cannot run here:
# schemathesis 4.32 reads ``Item._nodeid``, which pytest 9.2 no longer has. So the document is
# built at import from the application itself (``create_app().openapi()``: no lifespan needed to
# describe it), every request goes to the live server of ``contract`` (which needs its lifespan),
# and ``test_the_live_server_serves_this_document`` pins the two documents together.

DOCUMENT = create_app().openapi()
# A recording that is already purged is 410 Gone: the answer depends on the session's state, like a
# 404 for a deleted one, so for the two recording operations (which document 410) it is not
# "valid input rejected". Every other check and expectation is schemathesis' default.
CONFIG = SchemathesisConfig.from_dict({
    "operations": [{
        "include-name": [f"GET {BASE}/{{id}}/recording", f"DELETE {BASE}/{{id}}/recording"],
        "checks": {"positive_data_acceptance": {
            "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "410", "429", "5xx"]}},
    }],
})
SESSIONS_API = {**DOCUMENT, "paths": {path: item for path, item in DOCUMENT["paths"].items() if path.startswith(BASE)}}
schema = schemathesis.openapi.from_dict(SESSIONS_API, config=CONFIG)
KNOWN_SESSIONS: dict[str, list[str]] = {}  # operation label -> real session ids; filled by `contract`


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Sometimes a real session's id, so that successful responses are checked against the schema too:
    reading operations get sessions that stay; each deleting operation has sessions of its own."""
    known = KNOWN_SESSIONS.get(context.operation.label, [])
    if not path_parameters or "id" not in path_parameters or not known:
        return st.just(path_parameters)
    return st.one_of(
        st.just(path_parameters),
        st.sampled_from(known).map(lambda session_id: {**path_parameters, "id": session_id}),
    )


def test_the_live_server_serves_this_document(contract):
    assert contract.document == json.loads(json.dumps(DOCUMENT))


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=timedelta(seconds=10),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_the_api_conforms_to_its_openapi_document(case: Any, contract: Contract) -> None:
    """Every schemathesis check (server errors, response schemas, status codes, content types,
    headers, invalid input rejected, ignored auth...) over its examples, coverage and fuzzing phases;
    at most 25 fuzzed requests per operation, 10 s each at most."""
    case.call_and_validate(base_url=contract.srv.base_url, headers=auth(contract.key), timeout=30)
