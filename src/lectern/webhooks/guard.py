"""What a webhook may point at, checked twice: its URL and headers when a client submits them, and
every address the delivery client actually connects to (SSRF, DNS rebinding).

A URL that passes ``check_webhook`` may still name a host that resolves to a private address, or
one that resolves differently by delivery time; only the connect-time check, done on the address
the socket is opened to, closes that gap. Hosts listed in ``LECTERN_WEBHOOK_ALLOW_INSECURE_HOSTS``
skip both (http and private addresses allowed), for local development.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any

import anyio
import httpcore
import httpx

MAX_URL_CHARS = 2048
MAX_HEADERS = 20
MAX_HEADER_NAME_CHARS = 256
MAX_HEADER_VALUE_CHARS = 1024
# Set by the delivery itself (signature, framing) or by the connection.
RESERVED_HEADERS = frozenset({
    "webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length", "host",
    "transfer-encoding", "connection",
})

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field-name
_VALUE = re.compile(r"[\t\x20-\x7e]*")  # visible ASCII, space, tab: httpx sends values as ASCII
_LEGACY_IPV4 = re.compile(r"[0-9a-fx.]+")  # 127.1, 0x7f000001, 2130706433: what inet_aton accepts
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRefused(ValueError):
    """A webhook URL, header or address Lectern will not send to; the message says why (an API 400)."""


def allowed_hosts(value: str) -> frozenset[str]:
    """``LECTERN_WEBHOOK_ALLOW_INSECURE_HOSTS`` (comma-separated) as normalized host names."""
    return frozenset(_normal_host(h) for h in value.split(",") if h.strip())


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def is_public_address(ip: IPAddress) -> bool:
    """Whether ``ip`` is a globally routable unicast address (not private, loopback, link-local,
    reserved, multicast, unspecified or shared); IPv6 forms embedding an IPv4 address are judged
    by that address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast
        or ip.is_unspecified
    )


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            pass
    return None


def check_webhook(url: str, headers: dict[str, str] | None, allow_insecure_hosts: frozenset[str]) -> None:
    """Refuse (``WebhookRefused``) a webhook that may not be sent to; names resolving to private
    addresses are left to the connect-time check (``GuardedTransport``)."""
    _check_url(url, allow_insecure_hosts)
    _check_headers(headers)


def _check_url(url: str, allowed: frozenset[str]) -> None:
    if not isinstance(url, str) or not url:
        raise WebhookRefused("the webhook URL is required")
    if len(url) > MAX_URL_CHARS:
        raise WebhookRefused(f"the webhook URL is longer than {MAX_URL_CHARS} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise WebhookRefused("the webhook URL contains whitespace or control characters")
    # Parsed by httpx, as the delivery client will: two parsers disagreeing is an SSRF classic.
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise WebhookRefused(f"the webhook URL is not valid: {exc}") from None
    host = _normal_host(parsed.host)
    if not host:
        raise WebhookRefused("the webhook URL has no host")
    if parsed.userinfo:
        raise WebhookRefused("the webhook URL may not contain credentials (user:password@)")
    insecure_ok = host in allowed
    if parsed.scheme != "https" and not (parsed.scheme == "http" and insecure_ok):
        raise WebhookRefused(f"the webhook URL must use https, not {parsed.scheme or 'nothing'}")
    address = _literal_address(host)
    if address is not None and not insecure_ok and not is_public_address(address):
        raise WebhookRefused(f"the webhook URL's address {address} is not a public address")


def _check_headers(headers: dict[str, str] | None) -> None:
    if headers is None:
        return
    if not isinstance(headers, dict):
        raise WebhookRefused("webhook headers must be an object of names to strings")
    if len(headers) > MAX_HEADERS:
        raise WebhookRefused(f"at most {MAX_HEADERS} webhook headers are allowed")
    seen: set[str] = set()
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name) or len(name) > MAX_HEADER_NAME_CHARS:
            raise WebhookRefused(f"webhook header name {name!r} is not a valid HTTP header name")
        lowered = name.lower()
        if lowered in RESERVED_HEADERS:
            raise WebhookRefused(f"webhook header {name!r} is set by Lectern and may not be given")
        if lowered in seen:
            raise WebhookRefused(f"webhook header {name!r} is given twice")
        seen.add(lowered)
        if not isinstance(value, str):
            raise WebhookRefused(f"webhook header {name!r} must have a string value")
        if len(value) > MAX_HEADER_VALUE_CHARS:
            raise WebhookRefused(f"webhook header {name!r} is longer than {MAX_HEADER_VALUE_CHARS} characters")
        if not _VALUE.fullmatch(value):
            raise WebhookRefused(f"webhook header {name!r} may only contain printable ASCII (no CR/LF)")


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves each host itself and connects only to public addresses (unless the host is allowed).

    The socket is opened to the very address that was checked, so a name cannot resolve to a
    public address for the check and to a private one for the connection. TLS still verifies the
    URL's host name: httpcore passes it to ``start_tls`` as ``server_hostname``.
    """

    def __init__(self, allow_insecure_hosts: frozenset[str], inner: httpcore.AsyncNetworkBackend | None = None):
        self._allowed = allow_insecure_hosts
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if _normal_host(host) in self._allowed:
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        deadline = None if timeout is None else anyio.current_time() + timeout
        addresses = await _resolve(host, port, timeout)
        # One private answer refuses the name: a mixed answer is a misconfiguration or an attack.
        for address in addresses:
            if not is_public_address(address):
                raise WebhookRefused(f"{host} resolves to {address}, which is not a public address")
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:  # in the resolver's order, like a browser without happy eyeballs
            remaining = None if deadline is None else deadline - anyio.current_time()
            if remaining is not None and remaining <= 0:
                raise httpcore.ConnectTimeout(f"connecting to {host} timed out")
            try:
                return await self._inner.connect_tcp(str(address), port, remaining, local_address, socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise WebhookRefused("webhooks are not delivered over unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def _resolve(host: str, port: int, timeout: float | None) -> list[IPAddress]:
    try:
        with anyio.fail_after(timeout):
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
    except OSError as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over ``GuardedBackend``, never through a proxy from the environment."""

    def __init__(self, allow_insecure_hosts: frozenset[str], limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(trust_env=False, limits=limits)
        # httpx 0.28 offers no way to hand its pool a network backend, so the pool it built is
        # replaced by the same one around the guard (tests/webhooks/test_guard.py notices if a
        # new httpx stops using it: a loopback name would then connect).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=True),  # SSL_CERT_FILE/DIR still apply
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allow_insecure_hosts),
        )
