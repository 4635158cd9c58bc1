"""No key, token or webhook secret in any log line or error message (issue G, defect 3).

A server logging at info (so uvicorn's access lines and WebSocket handshake lines, which carry the
query string, are written) is given credentials in every place a protocol reads them, and in the
query strings and headers where careless clients put them: REST (X-API-Key, bearer JWT), the
ElevenLabs single-use token and its realtime socket (token=, xi-api-key), Reverie (apikey=), the
native protocol (its session.start, and a resume token), and webhook secrets and headers on a
job whose webhook is delivered to a receiver that fails. Then its whole log, and every answer it
gave, is searched for each secret.

The session-wide check (tests/log_secrets.py, run at the end of every test run) does the same for
every server of the run.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from lectern.log_redaction import redact
from tests.api.test_streams_api import SECRET, auth, bearer, token
from tests.conftest import LecternServer, load_speech, record_secret
from tests.log_secrets import leaks_in
from tests.realtime import native_wire, reverie_wire, scribe_wire
from tests.webhooks import Receiver, Reply

STREAMS = "/api/v1/speech-services/streams"
FOX = load_speech("fox")


def wav(pcm: bytes) -> bytes:
    import io
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(pcm)
    return out.getvalue()


@pytest.fixture
def receiver() -> Receiver:
    hook = Receiver(default=Reply(status=500)).start()  # a failing receiver: the delivery's error path
    yield hook
    hook.stop()


@pytest.fixture
def chatty_server(make_server) -> LecternServer:
    return make_server(log_level="info", jwt_secret=SECRET, webhook_allow_insecure_hosts="127.0.0.1",
                       webhook_retry_seconds="0.2,0.2")


class Answers:
    """The server's error answers, searched for secrets they should never echo. (Successful ones
    may: a minted token is the answer, and a job shows its owner the webhook headers it was given.)"""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def keep(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            self.texts.append(f"{response.request.method} {response.request.url.path} {response.status_code} "
                              f"{response.headers} {response.text}")
        return response


async def test_no_credential_reaches_the_log_or_an_answer(chatty_server, receiver):
    srv = chatty_server
    key = srv.create_key("acme", "alice")
    wrong_key = record_secret("kk-" + base64.urlsafe_b64encode(uuid.uuid4().bytes * 2).decode().rstrip("="))
    jwt = record_secret(token("alice", scope="speech:sessions:read speech:sessions:write"))
    wrong_jwt = record_secret(token("alice", secret="not-the-server-secret-0123456789abcdef"))
    hook_secret = record_secret("whsec_" + base64.b64encode(uuid.uuid4().bytes * 2).decode())
    plain_hook_secret = record_secret(f"plain-webhook-secret-{uuid.uuid4().hex}")
    hook_header = record_secret(f"receiver-credential-{uuid.uuid4().hex}")
    answers = Answers()
    secrets = [key, wrong_key, jwt, wrong_jwt, hook_secret, plain_hook_secret, hook_header]

    with httpx.Client(base_url=srv.base_url, timeout=30) as http:
        # REST: in the headers the API reads, and in query strings the way careless clients send them.
        answers.keep(http.get(STREAMS, headers=auth(key)))
        answers.keep(http.get(STREAMS, headers=bearer(jwt)))
        answers.keep(http.get(STREAMS, headers=auth(wrong_key)))
        answers.keep(http.get(STREAMS, headers=bearer(wrong_jwt)))
        answers.keep(http.get(STREAMS, headers=auth(key), params={
            "apikey": key, "api_key": key, "apiKey": key, "token": jwt, "access_token": jwt,
            "xi-api-key": key, "authorization": f"Bearer {jwt}", "key": wrong_key}))
        answers.keep(http.get(f"/no/such/path?apikey={wrong_key}&token={wrong_jwt}"))
        # ElevenLabs: a single-use token, spent on a socket, then offered again (refused).
        minted = answers.keep(http.post("/v1/single-use-token/realtime_scribe", headers={"xi-api-key": key}))
        single_use = record_secret(minted.json()["token"])
        answers.keep(http.post("/v1/single-use-token/realtime_scribe", headers={"xi-api-key": wrong_key}))
        # A webhook whose delivery fails: secret, plain secret and a credential header for the receiver.
        for secret in (hook_secret, plain_hook_secret):
            webhook = {"url": receiver.url(f"/hook?token={hook_header}"), "secret": secret,
                       "headers": {"Authorization": f"Bearer {hook_header}"}}
            answers.keep(http.post(
                "/api/v1/speech-services/transcriptions/upload", headers=auth(key),
                files={"file": ("fox.wav", wav(FOX.pcm), "audio/wav")}, data={"webhook": json.dumps(webhook)}))
    secrets.append(single_use)

    async with connect(f"{srv.ws_url}{scribe_wire.PATH}?{scribe_wire.MODEL}&token={single_use}") as ws:
        await scribe_wire.expect_started(ws)
    for url in (f"{srv.ws_url}{scribe_wire.PATH}?{scribe_wire.MODEL}&token={single_use}",  # spent
                f"{srv.ws_url}{scribe_wire.PATH}?{scribe_wire.MODEL}&xi-api-key={wrong_key}"):
        async with connect(url) as ws:
            answers.texts.append(json.dumps(await scribe_wire.recv_json(ws)))
    async with scribe_wire.open_ws(srv, key=key) as ws:
        await scribe_wire.expect_started(ws)

    # Reverie: apikey in the query string, right and wrong.
    async with reverie_wire.open_stream(srv, key) as ws:
        await reverie_wire.recv_message(ws)  # ready
    async with reverie_wire.open_stream(srv, wrong_key) as ws:
        answers.texts += [json.dumps(m) for m in await reverie_wire.read_all(ws)]

    # Native: credentials in session.start (a key, a JWT, a wrong key), and a resume token.
    async with connect(f"{srv.ws_url}{native_wire.PATH}?apiKey={wrong_key}") as ws:
        info = await native_wire.start_session(ws, key)
    resume_token = info["resumeToken"]
    if resume_token:
        secrets.append(record_secret(resume_token))
    async with connect(f"{srv.ws_url}{native_wire.PATH}") as ws:
        await native_wire.start_session(ws, token=jwt)
    async with connect(f"{srv.ws_url}{native_wire.PATH}") as ws:
        await native_wire.send_json(ws, native_wire.start_message(wrong_key))
        answers.texts.append(json.dumps(await native_wire.recv_message(ws)))

    # The webhooks were delivered (and failed): their attempts are in the log, if anywhere.
    deadline = time.monotonic() + 60
    while len(receiver.received()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    deliveries = receiver.received()
    assert len(deliveries) >= 2, "the webhooks were not delivered"
    assert all(d.headers["authorization"] == f"Bearer {hook_header}" for d in deliveries)

    srv.stop()  # every line written
    log = Path(srv.data_dir / "server.log").read_text(errors="replace")
    assert [str(leak) for leak in leaks_in([srv.data_dir / "server.log"], secrets)] == []
    assert "apikey=[redacted]" in log and "token=[redacted]" in log, "the access lines were not logged"
    assert len(answers.texts) >= 6, answers.texts
    echoed = [text for text in answers.texts for secret in secrets if secret in text]
    assert echoed == [], echoed


@pytest.mark.parametrize(("line", "expected"), [
    ('127.0.0.1:5 - "GET /stream?appid=acme&apikey=kk-abcdefghijkl&x=1 HTTP/1.1" 200',
     '127.0.0.1:5 - "GET /stream?appid=acme&apikey=[redacted]&x=1 HTTP/1.1" 200'),
    ('"WebSocket /v1/speech-to-text/realtime?model_id=m&token=sutkn_abcdefghijk" [accepted]',
     '"WebSocket /v1/speech-to-text/realtime?model_id=m&token=[redacted]" [accepted]'),
    ("GET /x?API_KEY=anything&xi-api-key=x&resumeToken=r&page=2", "GET /x?API_KEY=[redacted]&xi-api-key=[redacted]"
     "&resumeToken=[redacted]&page=2"),
    ("Authorization: Bearer abc.def.ghi", "Authorization: Bearer [redacted]"),
    ("signing with whsec_c2VjcmV0c2VjcmV0", "signing with whsec_[redacted]"),
    ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl here", "token [redacted] here"),
    ("blob_key=abc monkey=1 tokens=3", "blob_key=abc monkey=1 tokens=3"),  # names that only contain one
])
def test_redaction(line, expected):
    assert redact(line) == expected
