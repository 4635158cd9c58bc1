"""Download bandwidth is paced per tenant (issue G: 12 parallel downloads got 7 MiB/s against a
1 MiB/s setting, and file downloads were not paced at all): one token bucket per tenant, shared by
all of its recording and file downloads, and another tenant's downloads are not slowed by them.

The bound asserted is a throughput bound: the bytes one tenant received over the time the server
needed to send them never exceed the rate by more than the bucket's burst. The elapsed time is
measured around every download, so it only overstates the server's time, never understates it."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from tests.api.test_files_api import BASE as FILES
from tests.api.test_files_api import FOX_WAV
from tests.api.test_streams_api import auth
from tests.conftest import LecternServer, load_speech
from tests.realtime.native_wire import record

RATE = 256 * 1024  # bytes a second, per tenant
BURST = RATE // 10  # the bucket holds one chunk: a tenth of a second's allowance (api/pacing.py)
STREAMS = "/api/v1/speech-services/streams"
FOX = load_speech("fox")


def uploaded(server: LecternServer, key: str) -> str:
    response = httpx.post(f"{server.base_url}{FILES}", headers=auth(key),
                          files={"file": ("fox.wav", FOX_WAV, "audio/wav")}, timeout=60)
    assert response.status_code == 201, response.text
    return f"{FILES}/{response.json()['id']}/content"


async def download(http: httpx.AsyncClient, key: str, path: str, ended: list[str], name: str) -> int:
    response = await http.get(path, headers=auth(key))
    assert response.status_code == 200, response.text
    ended.append(name)
    return len(response.content)


async def timed(downloads: list[Any]) -> tuple[list[int], float]:
    began = time.monotonic()
    sizes = await asyncio.gather(*downloads)
    return list(sizes), time.monotonic() - began


def assert_paced(total: int, elapsed: float) -> None:
    assert total <= RATE * elapsed + BURST, (
        f"{total} bytes in {elapsed:.2f} s: {total / elapsed:.0f} B/s against {RATE} B/s per tenant")


def test_parallel_file_downloads_of_a_tenant_share_its_rate_and_another_tenant_is_not_slowed(
        make_server: Any) -> None:
    server = make_server(download_bytes_per_second_per_tenant=RATE)
    busy = server.create_key(f"busy-{uuid.uuid4().hex[:6]}", "alice")
    other = server.create_key(f"other-{uuid.uuid4().hex[:6]}", "bob")
    busy_path, other_path = uploaded(server, busy), uploaded(server, other)

    async def run() -> tuple[list[int], float, list[str]]:
        ended: list[str] = []
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60,
                                     limits=httpx.Limits(max_connections=10)) as http:
            downloads = [download(http, busy, busy_path, ended, f"busy-{i}") for i in range(4)]
            sizes, elapsed = await timed([*downloads, download(http, other, other_path, ended, "other")])
        return sizes[:4], elapsed, ended

    sizes, elapsed, ended = asyncio.run(run())
    assert sizes == [len(FOX_WAV)] * 4
    assert_paced(sum(sizes), elapsed)
    # Paced apart, the other tenant's one download needs a quarter of the time each of the busy
    # tenant's four does (they share its rate); paced together it would end with them.
    assert ended[0] == "other", ended


def test_recording_and_file_downloads_of_a_tenant_share_one_rate(make_server: Any) -> None:
    server = make_server(download_bytes_per_second_per_tenant=RATE)
    key = server.create_key(f"recorder-{uuid.uuid4().hex[:6]}", "alice")

    session_id = asyncio.run(record(server, key, FOX.pcm))
    assert server.wait_session_state(session_id, ("FINISHED",))["recording_path"]
    file_path = uploaded(server, key)
    recording_path = f"{STREAMS}/{session_id}/recording"

    async def run() -> tuple[list[int], float]:
        ended: list[str] = []
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
            return await timed([download(http, key, recording_path, ended, "recording-1"),
                                download(http, key, recording_path, ended, "recording-2"),
                                download(http, key, file_path, ended, "file")])

    sizes, elapsed = asyncio.run(run())
    assert sizes[0] == sizes[1] > 0 and sizes[2] == len(FOX_WAV)
    assert_paced(sum(sizes), elapsed)
