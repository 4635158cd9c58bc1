"""JWT bearer verification against real keys and a real local JWKS server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from lectern.auth import jwt as jwt_auth
from lectern.auth.jwt import JwtIdentity, JwtVerifier
from lectern.auth.principal import AuthError
from lectern.settings import Settings

SECRET = "test-secret-that-is-long-enough-for-hs256!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def pem(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "alice", "tenant": "acme", "exp": int(time.time()) + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def settings(**kw: Any) -> Settings:
    return Settings(**kw)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None = None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = b"" if hmac_key is None else hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def jwk(private_key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    algo = RSAAlgorithm if isinstance(private_key, rsa.RSAPrivateKey) else ECAlgorithm
    return {**algo.to_jwk(private_key.public_key(), as_dict=True), "kid": kid, **extra}


# --- a real JWKS server -------------------------------------------------------------------------


class JwksServer:
    def __init__(self) -> None:
        self.document: Any = {"keys": []}
        self.status = 200
        self.raw: bytes | None = None
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                body = server.raw if server.raw is not None else json.dumps(server.document).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    if server.thread.is_alive():
        server.stop()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The verifier's monotonic clock, advanced by hand: now[0] += seconds."""
    now = [1000.0]
    monkeypatch.setattr(jwt_auth, "_clock", lambda: now[0])
    return now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- accepted tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "scopes"),
    [
        ({"scope": "speech:read  speech:write"}, {"speech:read", "speech:write"}),
        ({"scp": ["speech:read", "history:read"]}, {"speech:read", "history:read"}),
        ({"scp": "speech:read history:read"}, {"speech:read", "history:read"}),
        ({"scope": "a", "scp": ["b"]}, {"a", "b"}),
        ({}, set()),
    ],
)
async def test_hs256_identity_and_scopes(extra: dict[str, Any], scopes: set[str]) -> None:
    token = jwt.encode(claims(**extra), SECRET, algorithm="HS256")
    identity = await JwtVerifier(settings(jwt_secret=SECRET)).verify(token)
    assert identity == JwtIdentity(tenant="acme", user="alice", scopes=frozenset(scopes))


async def test_malformed_scope_claim_is_refused() -> None:
    token = jwt.encode(claims(scp=["ok", 3]), SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="scp"):
        await JwtVerifier(settings(jwt_secret=SECRET)).verify(token)


def test_enabled_follows_configuration() -> None:
    assert not JwtVerifier(settings()).enabled
    assert JwtVerifier(settings(jwt_secret=SECRET)).enabled
    assert JwtVerifier(settings(jwt_public_key=pem(RSA_KEY))).enabled
    assert JwtVerifier(settings(jwt_jwks_url="http://127.0.0.1:1/jwks")).enabled


@pytest.mark.parametrize(("key", "alg"), [(RSA_KEY, "RS256"), (EC_KEY, "ES256")])
async def test_pem_public_key(key: Any, alg: str) -> None:
    verifier = JwtVerifier(settings(jwt_public_key=pem(key)))
    identity = await verifier.verify(jwt.encode(claims(scope="x"), key, algorithm=alg))
    assert identity == JwtIdentity("acme", "alice", frozenset({"x"}))
    # The key type fixes the algorithm: an RSA key does not verify ES256 and vice versa.
    other, other_alg = (EC_KEY, "ES256") if alg == "RS256" else (RSA_KEY, "RS256")
    with pytest.raises(AuthError, match="algorithm"):
        await verifier.verify(jwt.encode(claims(), other, algorithm=other_alg))


async def test_pem_with_escaped_newlines_from_env() -> None:
    verifier = JwtVerifier(settings(jwt_public_key=pem(RSA_KEY).replace("\n", "\\n")))
    assert (await verifier.verify(jwt.encode(claims(), RSA_KEY, algorithm="RS256"))).user == "alice"


def test_unsupported_pem_key_fails_at_startup() -> None:
    with pytest.raises(ValueError, match="P-256"):
        JwtVerifier(settings(jwt_public_key=pem(ec.generate_private_key(ec.SECP384R1()))))


async def test_custom_tenant_claim_issuer_and_audience() -> None:
    verifier = JwtVerifier(
        settings(jwt_secret=SECRET, jwt_tenant_claim="org", jwt_issuer="https://idp", jwt_audience="lectern")
    )
    token = jwt.encode(claims(tenant=None, org="initech", iss="https://idp", aud=["other", "lectern"]), SECRET)
    assert (await verifier.verify(token)).tenant == "initech"


async def test_expired_within_leeway_is_accepted() -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 10), SECRET, algorithm="HS256")
    assert (await JwtVerifier(settings(jwt_secret=SECRET, jwt_leeway_seconds=30)).verify(token)).user == "alice"


# --- refused tokens -----------------------------------------------------------------------------


async def refused(verifier: JwtVerifier, token: str, match: str) -> None:
    with pytest.raises(AuthError, match=match):
        await verifier.verify(token)


async def test_alg_none_is_refused() -> None:
    token = hand_made({"alg": "none", "typ": "JWT"}, claims())
    await refused(JwtVerifier(settings(jwt_secret=SECRET)), token, "algorithm 'none' not accepted")
    await refused(JwtVerifier(settings(jwt_public_key=pem(RSA_KEY))), token, "algorithm 'none' not accepted")


async def test_algorithm_confusion_is_refused() -> None:
    """An HS256 token 'signed' with the public key's PEM text as HMAC secret."""
    public_pem = pem(RSA_KEY)
    token = hand_made({"alg": "HS256", "typ": "JWT"}, claims(), hmac_key=public_pem.encode())
    await refused(JwtVerifier(settings(jwt_public_key=public_pem)), token, "algorithm 'HS256' not accepted")


async def test_rs256_token_with_only_a_secret_is_refused() -> None:
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    await refused(JwtVerifier(settings(jwt_secret=SECRET)), token, "algorithm 'RS256' not accepted")


async def test_expired_beyond_leeway() -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 60), SECRET, algorithm="HS256")
    await refused(JwtVerifier(settings(jwt_secret=SECRET, jwt_leeway_seconds=30)), token, "expired")
    token = jwt.encode(claims(exp=int(time.time()) - 1), SECRET, algorithm="HS256")
    await refused(JwtVerifier(settings(jwt_secret=SECRET, jwt_leeway_seconds=0)), token, "expired")


@pytest.mark.parametrize(
    ("config", "extra", "match"),
    [
        ({"jwt_audience": "lectern"}, {"aud": "someone-else"}, "audience not accepted"),
        ({"jwt_audience": "lectern"}, {}, "lacks the 'aud' claim"),
        ({}, {"aud": "someone-else"}, "audience not accepted"),  # a token meant for a specific service
        ({"jwt_issuer": "https://idp"}, {"iss": "https://evil"}, "issuer not accepted"),
        ({"jwt_issuer": "https://idp"}, {}, "lacks the 'iss' claim"),
        ({}, {"sub": None}, "lacks the 'sub' claim"),
        ({}, {"sub": ""}, "lacks the 'sub' claim"),
        ({}, {"exp": None}, "lacks the 'exp' claim"),
        ({}, {"tenant": None}, "lacks the 'tenant' claim"),
        ({}, {"tenant": 7}, "lacks the 'tenant' claim"),
        ({}, {"nbf": int(time.time()) + 3600}, "invalid token"),
    ],
)
async def test_claim_checks(config: dict[str, Any], extra: dict[str, Any], match: str) -> None:
    token = jwt.encode(claims(**extra), SECRET, algorithm="HS256")
    await refused(JwtVerifier(settings(jwt_secret=SECRET, **config)), token, match)


async def test_bad_signature() -> None:
    token = jwt.encode(claims(), "another-secret-that-is-long-enough-too!!", algorithm="HS256")
    await refused(JwtVerifier(settings(jwt_secret=SECRET)), token, "bad token signature")
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), other_rsa, algorithm="RS256")
    await refused(JwtVerifier(settings(jwt_public_key=pem(RSA_KEY))), token, "bad token signature")
    # A valid token whose payload was swapped keeps its old signature.
    good = jwt.encode(claims(), SECRET, algorithm="HS256")
    header, _, sig = good.split(".")
    forged = f"{header}.{b64(json.dumps(claims(sub='mallory')).encode())}.{sig}"
    await refused(JwtVerifier(settings(jwt_secret=SECRET)), forged, "bad token signature")


@pytest.mark.parametrize("garbage", ["", "garbage", "a.b.c", "Bearer x.y.z", "...."])
async def test_garbage(garbage: str) -> None:
    await refused(JwtVerifier(settings(jwt_secret=SECRET)), garbage, "malformed token")


# --- JWKS ---------------------------------------------------------------------------------------


async def test_jwks_rs256_and_es256(jwks: JwksServer, clock: list[float]) -> None:
    jwks.document = {"keys": [jwk(RSA_KEY, "r1"), jwk(EC_KEY, "e1", alg="ES256", use="sig")]}
    verifier = JwtVerifier(settings(jwt_jwks_url=jwks.url))
    for key, alg, kid in [(RSA_KEY, "RS256", "r1"), (EC_KEY, "ES256", "e1"), (RSA_KEY, "RS256", "r1")]:
        token = jwt.encode(claims(scope="s"), key, algorithm=alg, headers={"kid": kid})
        assert await verifier.verify(token) == JwtIdentity("acme", "alice", frozenset({"s"}))
    assert jwks.requests == 1  # cached


async def test_jwks_with_shared_http_client(jwks: JwksServer) -> None:
    jwks.document = {"keys": [jwk(RSA_KEY, "r1")]}
    async with httpx.AsyncClient() as http:
        verifier = JwtVerifier(settings(jwt_jwks_url=jwks.url), http=http)
        token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "r1"})
        assert (await verifier.verify(token)).user == "alice"


async def test_jwks_key_rotation_and_no_refetch_storm(jwks: JwksServer, clock: list[float]) -> None:
    new_key = ec.generate_private_key(ec.SECP256R1())
    jwks.document = {"keys": [jwk(RSA_KEY, "old")]}
    verifier = JwtVerifier(settings(jwt_jwks_url=jwks.url))
    old_token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "old"})
    new_token = jwt.encode(claims(sub="bob"), new_key, algorithm="ES256", headers={"kid": "new"})
    assert (await verifier.verify(old_token)).user == "alice"
    assert jwks.requests == 1

    jwks.document = {"keys": [jwk(RSA_KEY, "old"), jwk(new_key, "new")]}  # the provider rotates
    clock[0] += jwt_auth.MIN_REFETCH_SECONDS
    assert (await verifier.verify(new_token)).user == "bob"  # unknown kid -> one refetch
    assert jwks.requests == 2

    # Tokens with random kids right after: refused without touching the server.
    for _ in range(20):
        token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": uuid.uuid4().hex})
        await refused(verifier, token, "unknown signing key")
    assert jwks.requests == 2
    clock[0] += jwt_auth.MIN_REFETCH_SECONDS
    await refused(verifier, jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "zzz"}), "unknown")
    assert jwks.requests == 3  # at most one refetch per interval
    assert (await verifier.verify(new_token)).user == "bob"
    assert jwks.requests == 3


async def test_jwks_cache_expiry_drops_removed_keys(jwks: JwksServer, clock: list[float]) -> None:
    jwks.document = {"keys": [jwk(RSA_KEY, "old")]}
    verifier = JwtVerifier(settings(jwt_jwks_url=jwks.url, jwks_cache_seconds=300))
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "old"})
    assert (await verifier.verify(token)).user == "alice"
    jwks.document = {"keys": [jwk(EC_KEY, "new")]}
    clock[0] += 299
    assert (await verifier.verify(token)).user == "alice"  # still cached
    assert jwks.requests == 1
    clock[0] += 2
    await refused(verifier, token, "unknown signing key 'old'")
    assert jwks.requests == 2


async def test_jwks_server_down(clock: list[float]) -> None:
    verifier = JwtVerifier(settings(jwt_jwks_url=f"http://127.0.0.1:{free_port()}/jwks"))
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "r1"})
    await refused(verifier, token, "JWKS fetch failed")
    await refused(verifier, token, "JWKS fetch failed")


async def test_jwks_server_goes_down_keeps_cached_keys(jwks: JwksServer, clock: list[float]) -> None:
    jwks.document = {"keys": [jwk(RSA_KEY, "r1")]}
    verifier = JwtVerifier(settings(jwt_jwks_url=jwks.url, jwks_cache_seconds=60))
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "r1"})
    assert (await verifier.verify(token)).user == "alice"
    jwks.stop()
    clock[0] += 120  # cache expired, refetch fails: the last good keys still verify
    assert (await verifier.verify(token)).user == "alice"
    unknown = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "r2"})
    await refused(verifier, unknown, "JWKS fetch failed")


@pytest.mark.parametrize(
    ("status", "raw"), [(500, b"oops"), (200, b"not json"), (200, b'{"no": "keys"}'), (404, b"{}")]
)
async def test_jwks_bad_responses(jwks: JwksServer, clock: list[float], status: int, raw: bytes) -> None:
    jwks.status, jwks.raw = status, raw
    verifier = JwtVerifier(settings(jwt_jwks_url=jwks.url))
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "r1"})
    await refused(verifier, token, "JWKS fetch failed")


async def test_jwks_refusals(jwks: JwksServer, clock: list[float]) -> None:
    oct_key = {"kty": "oct", "kid": "sym", "k": b64(SECRET.encode())}
    p384 = ec.generate_private_key(ec.SECP384R1())
    jwks.document = {
        "keys": [
            oct_key,
            jwk(EC_KEY, "e1"),
            jwk(RSA_KEY, "enc", use="enc"),
            jwk(RSA_KEY, "ps", alg="PS256"),
            jwk(p384, "p384"),
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            "not a key",
        ]
    }
    verifier = JwtVerifier(settings(jwt_jwks_url=jwks.url))
    # A symmetric key published in the JWKS is never used as an HMAC secret.
    await refused(verifier, jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "sym"}), "'HS256'")
    # The JWK fixes the algorithm: an RS256 header naming an EC key is refused.
    await refused(verifier, jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "e1"}), "invalid")
    for kid in ("enc", "ps", "broken"):
        token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": kid})
        await refused(verifier, token, "unknown signing key")
    await refused(verifier, jwt.encode(claims(), p384, algorithm="ES384", headers={"kid": "p384"}), "'ES384'")
    # No kid at all: nothing to look up.
    await refused(verifier, jwt.encode(claims(), RSA_KEY, algorithm="RS256"), "no key id")
    # The usable key among the junk still works.
    assert (await verifier.verify(jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "e1"}))).user
