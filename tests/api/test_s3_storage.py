"""A server that keeps file bytes in an S3-compatible bucket (moto's S3 server, run by the test).

Uploads, downloads, transcription and deletion go through the bucket: nothing lands in the data
directory's blob folder.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from tests.conftest import SPEECH, load_speech

API = "/api/v1/speech-services"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _objects(endpoint: str, bucket: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_files_and_transcriptions_live_in_the_bucket(make_server: Any, s3_endpoint: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)  # read by the server process (it inherits the environment) and boto3 here
    bucket = f"lectern-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    server = make_server(s3_bucket=bucket, s3_prefix="tenant-data/", s3_endpoint_url=s3_endpoint,
                         s3_region="us-east-1")
    key = server.create_key("acme", "alice")
    headers = {"X-API-Key": key}
    data = (SPEECH / "two_sentences.wav").read_bytes()

    upload = httpx.post(f"{server.base_url}{API}/files", headers=headers,
                        files={"file": ("two.wav", data, "audio/wav")}, timeout=60)
    assert upload.status_code == 201, upload.text
    file_id = upload.json()["id"]
    stored = _objects(s3_endpoint, bucket)
    assert len(stored) == 1 and stored[0].startswith("tenant-data/files/") and stored[0].endswith(file_id)
    assert not (server.data_dir / "blobs").exists() or not any((server.data_dir / "blobs").rglob("*.*"))

    content = httpx.get(f"{server.base_url}{API}/files/{file_id}/content", headers=headers, timeout=30)
    assert content.status_code == 200 and content.content == data

    job = httpx.post(f"{server.base_url}{API}/transcriptions", headers=headers, json={"fileId": file_id}, timeout=30)
    assert job.status_code == 201, job.text
    deadline = time.monotonic() + 120
    while (body := httpx.get(f"{server.base_url}{API}/transcriptions/{job.json()['id']}", headers=headers,
                             timeout=30).json())["status"] in ("PENDING", "IN_PROGRESS"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert body["status"] == "COMPLETED", body
    expected = load_speech("two_sentences").text
    assert " ".join(w.strip(".").lower() for w in body["result"]["text"].split()) == expected

    deleted = httpx.delete(f"{server.base_url}{API}/files/{file_id}", headers=headers, timeout=30)
    assert deleted.status_code == 204
    assert _objects(s3_endpoint, bucket) == []
