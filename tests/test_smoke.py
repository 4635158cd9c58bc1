import httpx


def test_healthz_reports_the_engine_pool(server):
    body = httpx.get(f"{server.base_url}/healthz").json()
    assert body["status"] == "ok"
    assert body["capacity"] == 16
