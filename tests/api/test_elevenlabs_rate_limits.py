"""Rate limits on the ElevenLabs REST routes (issue G): batch speech-to-text spends the uploads
budget, single-use token minting the token_mints one, and failed authentications on either are
counted per address; each refusal is a 429 in ElevenLabs' shape with Retry-After and RateLimit-*."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import LecternServer

SCRIBE = "/v1/speech-to-text"
TOKEN = "/v1/single-use-token/realtime_scribe"


def scribe(server: LecternServer, key: str) -> httpx.Response:
    # Not multipart: once admitted, the request is answered 415 without any audio being decoded.
    return httpx.post(f"{server.base_url}{SCRIBE}", headers={"xi-api-key": key}, content=b"{}", timeout=30)


def mint(server: LecternServer, key: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}{TOKEN}", headers={"xi-api-key": key}, timeout=30)


def assert_headers(response: httpx.Response, limit: int) -> None:
    assert 1 <= int(response.headers["retry-after"]) <= 60, response.headers
    assert response.headers["ratelimit-limit"] == str(limit), response.headers
    assert response.headers["ratelimit-remaining"] == "0", response.headers


def assert_scribe_refused(response: httpx.Response, limit: int, what: str) -> None:
    assert response.status_code == 429, response.text
    detail = response.json()["detail"]
    assert (detail["type"], detail["code"], detail["status"]) == (
        "rate_limit_error", "rate_limit_exceeded", "rate_limit_exceeded"), detail
    assert f"too many {what}: at most {limit} a minute" in detail["message"], detail
    assert_headers(response, limit)


def assert_token_refused(response: httpx.Response, limit: int, what: str) -> None:
    assert response.status_code == 429, response.text
    detail = response.json()["detail"]
    assert detail["status"] == "rate_limit_exceeded", detail
    assert f"too many {what}: at most {limit} a minute" in detail["message"], detail
    assert_headers(response, limit)


def test_batch_speech_to_text_spends_the_uploads_budget(make_server: Any) -> None:
    server = make_server(rate_limit_uploads="2/minute")
    alice, bob = server.create_key("acme", "alice"), server.create_key("acme", "bob")
    first = scribe(server, alice)
    assert first.status_code == 415, first.text
    assert first.headers["ratelimit-limit"] == "2" and first.headers["ratelimit-remaining"] == "1", first.headers
    assert scribe(server, alice).status_code == 415
    assert_scribe_refused(scribe(server, alice), 2, "uploads")
    assert scribe(server, bob).status_code == 415, "another key has its own budget"


def test_token_minting_spends_the_token_mints_budget(make_server: Any) -> None:
    server = make_server(rate_limit_token_mints="2/minute")
    alice, bob = server.create_key("acme", "alice"), server.create_key("acme", "bob")
    assert [mint(server, alice).status_code for _ in range(2)] == [200, 200]
    assert_token_refused(mint(server, alice), 2, "tokens minted")
    assert mint(server, bob).status_code == 200, "another key has its own budget"


def test_failed_authentications_on_either_route_lock_out_the_address(make_server: Any) -> None:
    server = make_server(rate_limit_auth_failures="3/minute")
    key = server.create_key("acme", "alice")
    assert mint(server, key).status_code == 200, "successes are not failures"
    assert [scribe(server, "kk-wrong-1").status_code, mint(server, "kk-wrong-2").status_code,
            scribe(server, "kk-wrong-3").status_code] == [401, 401, 401]
    assert_scribe_refused(scribe(server, key), 3, "failed authentications")
    assert_token_refused(mint(server, key), 3, "failed authentications")
