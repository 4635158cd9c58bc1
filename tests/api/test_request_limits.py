"""What one client can make the server hold (issue G, defect 1): request bodies are bounded while
they stream, credentials are checked before a JSON body is read, stalled and trickling bodies are
cut off, request heads are bounded, and connections are capped.

Raw sockets send what well-behaved clients never do (a body that stops, one that trickles, one far
over the limit) and stop sending once the server answers, as a real attacker's client would not
need to. Memory is the server process's own peak RSS (VmHWM, reset first through clear_refs),
a resource bound, not a time.
"""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_streams_api import assert_problem, auth
from tests.conftest import LecternServer

TRANSCRIPTIONS = "/api/v1/speech-services/transcriptions"  # a JSON body
FILES = "/api/v1/speech-services/files"  # a multipart upload
SCRIBE = "/v1/speech-to-text"  # ElevenLabs' multipart upload
BOUNDARY = "lectern-limits-test"
HUGE = 50 << 20  # far over the 1 MiB JSON limit
CHUNK = 64 << 10
# What a refused 50 MB body may still cost the server: the limit, socket buffers and parsing.
MEMORY_BOUND_KIB = 24 << 10


def exchange(srv: LecternServer, method: str, path: str, headers: dict[str, str], body: Iterator[bytes] = iter(()),
             *, chunked: bool = True, pace: float = 0.0) -> httpx.Response:
    """Send the request head, then ``body`` (as chunks when ``chunked``) until it ends or the
    server answers, whichever is first; then read the whole response. ``pace`` waits that long
    for an answer between pieces (a trickle). The socket's timeout fails a test whose server
    never answers."""
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    if chunked:
        head.append("Transfer-Encoding: chunked")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            for piece in body:
                if select.select([sock], [], [], pace)[0]:
                    break  # answered
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            else:
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending: its answer is read below
        return read_response(sock, httpx.Request(method, f"{srv.base_url}{path}"))


def read_response(sock: socket.socket, request: httpx.Request) -> httpx.Response:
    received = b""
    while b"\r\n\r\n" not in received:
        data = sock.recv(65536)
        assert data, f"the server closed the connection without answering: {received!r}"
        received += data
    head, _, content = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
    length = int(dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
    while len(content) < length:
        data = sock.recv(65536)
        assert data, "the server closed the connection inside its response"
        content += data
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=content[:length], request=request)


def filler(total: int, chunk: int = CHUNK) -> Iterator[bytes]:
    for _ in range(total // chunk):
        yield b" " * chunk


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def growth_kib(srv: LecternServer, send: Callable[[], httpx.Response]) -> tuple[httpx.Response, int]:
    """``send()``'s response, and how far the server's peak RSS rose above its RSS before."""
    pid = srv.process.pid
    reset_peak_rss(pid)
    before = rss_kib(pid)
    response = send()
    return response, peak_rss_kib(pid) - before


@pytest.fixture(scope="module")
def slow_server(make_module_server) -> LecternServer:
    return make_module_server(body_read_timeout_seconds=1, body_min_bytes_per_second=1024)


@pytest.fixture(scope="module")
def make_module_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    started: list[LecternServer] = []

    def start(**settings) -> LecternServer:
        srv = LecternServer(tmp_path_factory.mktemp(f"limits-{backend}"), backend, settings)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


# -- size -------------------------------------------------------------------------------------------


def test_a_json_body_declared_over_the_limit_is_413_before_it_is_sent(server, api_key):
    # Only the head goes: the server answers from Content-Length, without waiting for the body.
    response = exchange(server, "POST", TRANSCRIPTIONS,
                        {**auth(api_key), "Content-Type": "application/json", "Content-Length": str(HUGE)},
                        chunked=False)
    body = assert_problem(response, 413)
    assert str(1 << 20) in body["detail"]
    assert response.headers["connection"] == "close"


def test_a_streamed_json_body_past_the_limit_is_413_and_costs_no_more_than_the_limit(server, api_key):
    response, growth = growth_kib(server, lambda: exchange(
        server, "POST", TRANSCRIPTIONS, {**auth(api_key), "Content-Type": "application/json"}, filler(HUGE)))
    assert_problem(response, 413)
    assert growth < MEMORY_BOUND_KIB, f"the server grew by {growth} KiB for a refused body"


def test_a_json_body_within_the_limit_is_read(server, api_key):
    payload = json.dumps({"fileId": "00000000-0000-0000-0000-000000000000", "padding": " " * 500_000}).encode()
    response = exchange(server, "POST", TRANSCRIPTIONS, {**auth(api_key), "Content-Type": "application/json"},
                        iter([payload[i:i + CHUNK] for i in range(0, len(payload), CHUNK)]))
    assert response.status_code not in (408, 413), response.text  # the route itself answers


# -- credentials before the body --------------------------------------------------------------------


@pytest.mark.parametrize("credentials", [{}, {"X-API-Key": "kk-not-a-key-at-all-xxxxxxxxxxxx"},
                                         {"Authorization": "Bearer not.a.jwt"}], ids=["none", "bad-key", "bad-jwt"])
def test_a_huge_json_body_without_valid_credentials_is_401_unread(server, credentials):
    response, growth = growth_kib(server, lambda: exchange(
        server, "POST", TRANSCRIPTIONS, {**credentials, "Content-Type": "application/json"}, filler(HUGE)))
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["connection"] == "close"  # the rest of the body is never read
    assert growth < MEMORY_BOUND_KIB, f"the server grew by {growth} KiB for an unauthenticated body"


def test_the_connection_stays_usable_after_a_request_without_a_body(server, api_key):
    with httpx.Client(base_url=server.base_url, headers=auth(api_key)) as client:
        first = client.get(TRANSCRIPTIONS)
        second = client.get(TRANSCRIPTIONS)
    assert first.status_code == second.status_code == 200
    assert first.headers.get("connection") != "close"


# -- stalls and trickles ----------------------------------------------------------------------------


def multipart_head() -> bytes:
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            f"Content-Type: audio/wav\r\n\r\n").encode()


def test_a_stalled_json_body_is_408(slow_server):
    key = slow_server.create_key()
    response = exchange(slow_server, "POST", TRANSCRIPTIONS,
                        {**auth(key), "Content-Type": "application/json", "Content-Length": "1000"},
                        iter([b'{"fileId": ']), chunked=False)
    body = assert_problem(response, 408)
    assert "in time" in body["detail"]
    assert response.headers["connection"] == "close"


def trickle() -> Iterator[bytes]:
    """One byte at a time, for as long as anyone listens (bounded, so a server that never answers
    fails the test when it ends)."""
    yield multipart_head()
    for _ in range(600):
        yield b"\0"


def test_a_trickling_upload_is_408(slow_server):
    key = slow_server.create_key()
    response = exchange(slow_server, "POST", FILES,
                        {**auth(key), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                        trickle(), pace=0.1)
    assert_problem(response, 408)


def test_a_trickling_elevenlabs_upload_is_408_in_its_shape(slow_server):
    key = slow_server.create_key()
    response = exchange(slow_server, "POST", SCRIBE,
                        {"xi-api-key": key, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                        trickle(), pace=0.1)
    assert response.status_code == 408, response.text
    detail = response.json()["detail"]
    assert detail["code"] == "request_timeout" and detail["message"], detail


def test_an_upload_that_keeps_moving_is_not_cut_off(slow_server):
    # 1 MiB at 64 KiB a piece: longer than the 1 s timeout would allow a stall, well above the rate.
    key = slow_server.create_key()
    body = multipart_head() + b"\0" * (1 << 20) + f"\r\n--{BOUNDARY}--\r\n".encode()
    response = exchange(slow_server, "POST", FILES,
                        {**auth(key), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                        iter([body[i:i + CHUNK] for i in range(0, len(body), CHUNK)]), pace=0.1)
    assert_problem(response, 415)  # read whole, then found not to be audio


# -- request heads and connections ------------------------------------------------------------------


def test_an_endless_header_is_400_and_bounded(server):
    def send() -> httpx.Response:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
            try:
                for piece in filler(HUGE):
                    if select.select([sock], [], [], 0)[0]:
                        break
                    sock.sendall(piece.replace(b" ", b"a"))
                else:
                    sock.sendall(b"\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            return read_response(sock, httpx.Request("GET", f"{server.base_url}/healthz"))

    response, growth = growth_kib(server, send)
    assert response.status_code == 400, response.text
    assert growth < MEMORY_BOUND_KIB, f"the server grew by {growth} KiB for one request head"


def test_connections_past_the_cap_get_503(make_module_server):
    srv = make_module_server(max_connections=4)
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(4)]
    try:
        # uvicorn counts each connection once it is made, the request's own included.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            response = read_response(sock, httpx.Request("GET", f"{srv.base_url}/healthz"))
        assert response.status_code == 503, response.text
    finally:
        for sock in idle:
            sock.close()
