"""Stream policies that need their own settings: automatic commit, tenant recording policy,
single-use token lifetime."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import update

from lectern.store.models import Tenant
from tests.conftest import load_speech, word_error_rate
from tests.realtime.scribe_wire import MODEL, expect_error, expect_started, key_for, next_committed, open_ws, q, send_audio

FOX = load_speech("fox")
TWO = load_speech("two_sentences")


async def test_uncommitted_audio_is_committed_automatically_at_the_bound(make_server: Any) -> None:
    srv = make_server(auto_commit_seconds=3)
    async with open_ws(srv) as ws:
        await expect_started(ws)
        await send_audio(ws, TWO.pcm)  # 6.1 s, never committed by the client
        text = await next_committed(ws)
    # 3 s falls in the 2 s pause (2.0 s to 4.0 s), so the first commit holds the first sentence.
    first_sentence = "the children are playing in the park"
    assert word_error_rate(first_sentence, text) <= 0.2, text


async def test_a_tenant_that_forbids_recording_refuses_recording_requests(make_server: Any) -> None:
    srv = make_server()
    key = key_for(srv)
    with srv.db() as s:
        s.execute(update(Tenant).where(Tenant.name == "acme").values(recording_allowed=False))
        s.commit()
    async with open_ws(srv, q(recording="true")) as ws:
        error, _ = await expect_error(ws, "invalid_request", results_first=False)
    assert "recording" in error.lower()
    async with open_ws(srv, MODEL, key=key) as ws:  # the tenant can still stream without recording
        await expect_started(ws)
        await send_audio(ws, FOX.pcm, commit=False)
        await ws.send('{"message_type":"input_audio_chunk","audio_base_64":"","commit":true}')
        assert word_error_rate(FOX.text, await next_committed(ws)) <= 0.2


async def test_a_single_use_token_expires(make_server: Any) -> None:
    srv = make_server(single_use_token_ttl_seconds=1)
    response = httpx.post(f"{srv.base_url}/v1/single-use-token/realtime_scribe", headers={"xi-api-key": key_for(srv)})
    assert response.status_code == 200
    token = response.json()["token"]
    await asyncio.sleep(1.5)  # the token's lifetime, not a race: the server must refuse it now
    async with open_ws(srv, q(token=token), key=None) as ws:
        await expect_error(ws, "auth_error", results_first=False)


async def test_token_endpoint_refuses_bad_keys_and_unknown_token_types(server: Any, api_key: str) -> None:
    url = f"{server.base_url}/v1/single-use-token"
    assert httpx.post(f"{url}/realtime_scribe").status_code == 401
    assert httpx.post(f"{url}/realtime_scribe", headers={"xi-api-key": "kk-nope"}).status_code == 401
    assert httpx.post(f"{url}/tts_websocket", headers={"xi-api-key": api_key}).status_code == 422
    reader = server.create_key("acme", "reader", ["speech:sessions:read"])
    assert httpx.post(f"{url}/realtime_scribe", headers={"xi-api-key": reader}).status_code == 403
