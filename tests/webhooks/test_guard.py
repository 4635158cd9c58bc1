"""What a webhook may point at: each refusal rule at its edge, and the connect-time guard against
names that resolve to private addresses (checked on the address actually connected to)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from lectern.settings import Settings
from lectern.webhooks import RESERVED_HEADERS, WebhookRefused, allowed_hosts, check_webhook, make_client
from tests.webhooks import Receiver

NONE: frozenset[str] = frozenset()


def refused(url: str, headers: dict[str, str] | None = None, allowed: frozenset[str] = NONE) -> str:
    with pytest.raises(WebhookRefused) as info:
        check_webhook(url, headers, allowed)
    return str(info.value)


@pytest.mark.parametrize("url", [
    "https://example.com/hook",
    "https://hooks.example.com:8443/a/b?c=d",
    "https://93.184.216.34/hook",
    "https://[2606:4700::1111]/hook",
])
def test_public_https_accepted(url: str) -> None:
    check_webhook(url, None, NONE)


@pytest.mark.parametrize("url", ["http://example.com/hook", "ftp://example.com/x", "ws://example.com/", "file:///etc/passwd"])
def test_only_https(url: str) -> None:
    assert "https" in refused(url) or "host" in refused(url)


def test_http_only_for_allowed_hosts() -> None:
    check_webhook("http://example.com/hook", None, frozenset({"example.com"}))
    refused("http://example.org/hook", allowed=frozenset({"example.com"}))


def test_credentials_and_hostless_urls_refused() -> None:
    assert "credentials" in refused("https://user:pass@example.com/hook")
    assert "credentials" in refused("https://user@example.com/hook")
    refused("https:///hook")
    refused("https://")
    refused("")
    refused("https://exa mple.com/")
    refused("https://example.com/\r\nX-Evil: 1")


def test_url_length_limit() -> None:
    prefix = "https://example.com/"
    check_webhook(prefix + "a" * (2048 - len(prefix)), None, NONE)
    assert "2048" in refused(prefix + "a" * (2049 - len(prefix)))


@pytest.mark.parametrize("host", [
    "10.0.0.1", "172.16.0.1", "192.168.1.1", "127.0.0.1", "127.8.9.10", "169.254.169.254", "0.0.0.0",
    "100.64.0.1", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1",
    "[::1]", "[::]", "[fc00::1]", "[fd12:3456::1]", "[fe80::1]", "[ff02::1]", "[2001:db8::1]",
    "[::ffff:127.0.0.1]", "[::ffff:a00:1]", "[2002:a00:1::]", "[64:ff9b::a9fe:a9fe]",
    # Forms that inet_aton (and so the resolver) read as 127.0.0.1.
    "127.1", "2130706433", "0x7f000001",
])
def test_private_and_special_addresses_refused(host: str) -> None:
    assert "not a public address" in refused(f"https://{host}/hook")


def test_octal_address_refused() -> None:
    refused("https://0177.0.0.1/hook")  # httpx rejects the URL itself


@pytest.mark.parametrize("host,allowed", [
    ("127.0.0.1", "127.0.0.1"), ("[::1]", "::1"), ("[::1]", "[::1]"), ("localhost", "localhost"),
    ("10.0.0.1", "10.0.0.1"), ("LocalHost", " localhost , 127.0.0.1"),
])
def test_allowed_hosts_may_use_http_and_private_addresses(host: str, allowed: str) -> None:
    check_webhook(f"http://{host}:8080/hook", None, allowed_hosts(allowed))
    check_webhook(f"https://{host}:8080/hook", None, allowed_hosts(allowed))


def test_allowed_hosts_parsing() -> None:
    assert allowed_hosts("") == frozenset()
    assert allowed_hosts(" 127.0.0.1, Localhost ,[::1],,") == {"127.0.0.1", "localhost", "::1"}
    refused("http://127.0.0.2/hook", allowed=allowed_hosts("127.0.0.1,localhost"))


def test_header_count_limit() -> None:
    check_webhook("https://example.com/", {f"X-H{i}": "v" for i in range(20)}, NONE)
    assert "20" in refused("https://example.com/", {f"X-H{i}": "v" for i in range(21)})


def test_header_value_limits() -> None:
    check_webhook("https://example.com/", {"Authorization": "a" * 1024}, NONE)
    assert "1024" in refused("https://example.com/", {"Authorization": "a" * 1025})
    check_webhook("https://example.com/", {"X-Ok": "Bearer abc\tdef ~!"}, NONE)
    for value in ("a\r\nX-Evil: 1", "a\nb", "a\rb", "a\x00b", "caf\u00e9"):
        refused("https://example.com/", {"X-Bad": value})
    refused("https://example.com/", {"X-Bad": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize("name", ["X Bad", "X:Bad", "", "X-Bad\r\n", "Bad(", "é"])
def test_header_names_must_be_tokens(name: str) -> None:
    refused("https://example.com/", {name: "v"})


def test_header_name_token_accepted() -> None:
    check_webhook("https://example.com/", {"X-Good_1.a!#$%&'*+^`|~": "v"}, NONE)


@pytest.mark.parametrize("name", sorted(RESERVED_HEADERS) + ["Webhook-Signature", "CONTENT-TYPE", "Host"])
def test_reserved_headers_refused(name: str) -> None:
    assert "set by Lectern" in refused("https://example.com/", {name: "v"})


def test_duplicate_header_names_refused() -> None:
    refused("https://example.com/", {"X-A": "1", "x-a": "2"})


# The connect-time guard, against a real server on 127.0.0.1.

@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.1"])
async def test_client_refuses_loopback_at_connect(receiver: Receiver, host: str) -> None:
    # `localhost` passes check_webhook (a name), so only the client's own resolution catches it.
    async with make_client(Settings(webhook_allow_insecure_hosts="")) as client:
        with pytest.raises(WebhookRefused, match="not a public address"):
            await client.get(receiver.url(host=host))
    assert receiver.received() == []


@pytest.mark.parametrize("allowed", ["localhost", "LOCALHOST,example.com"])
async def test_client_connects_to_allowed_host(receiver: Receiver, allowed: str) -> None:
    async with make_client(Settings(webhook_allow_insecure_hosts=allowed)) as client:
        response = await client.get(receiver.url(host="localhost"))
    assert response.status_code == 200
    assert [r.path for r in receiver.received()] == ["/hook"]


async def test_client_ignores_proxies_from_environment(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy would connect on our behalf, past the guard: the environment's is never used.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:1")
    async with make_client(Settings(webhook_allow_insecure_hosts="127.0.0.1")) as client:
        assert (await client.get(receiver.url())).status_code == 200
    async with make_client(Settings(webhook_allow_insecure_hosts="")) as client:
        with pytest.raises(WebhookRefused):
            await client.get(receiver.url())


async def test_client_fails_on_unresolvable_name() -> None:
    async with make_client(Settings(webhook_allow_insecure_hosts="")) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("https://name-that-does-not-exist.invalid/hook")
