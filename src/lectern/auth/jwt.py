"""JWT bearer tokens issued by an external identity provider.

The configured key source decides the algorithm (secret -> HS256, RSA key -> RS256, EC P-256
key -> ES256); the token's header only selects among configured keys. That closes `alg: none`
and algorithm confusion (an HS256 token "signed" with the public key as HMAC secret).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from lectern.auth.principal import AuthError
from lectern.settings import Settings

log = logging.getLogger(__name__)

# An unknown `kid` triggers a JWKS refetch (key rotation), at most this often, so tokens with
# random kids cannot turn the verifier into a request storm against the identity provider.
# Failed fetches are rate-limited the same way.
MIN_REFETCH_SECONDS = 5.0
JWKS_TIMEOUT_SECONDS = 5.0
MAX_NAME_CLAIM = 200  # users.external_id and tenants.name

_clock = time.monotonic  # module-level so tests can move time without sleeping


@dataclass(frozen=True, slots=True)
class JwtIdentity:
    tenant: str
    user: str
    scopes: frozenset[str]


def _alg_for(key: Any) -> str | None:
    """The one algorithm a public key may verify; None for key types we do not accept."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    return None


def _parse_jwks(document: Any) -> dict[str, tuple[Any, str]]:
    """kid -> (public key, algorithm). Keys we cannot use are skipped, not fatal: a JWKS often
    carries encryption keys or algorithms we do not support next to the signing key we need."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise TypeError("not a JWK set")
    keys: dict[str, tuple[Any, str]] = {}
    for data in document["keys"]:
        if not isinstance(data, dict) or not isinstance(data.get("kid"), str) or data.get("use", "sig") != "sig":
            continue
        if data.get("kty") not in ("RSA", "EC"):  # never a symmetric ("oct") key from a URL
            continue
        try:
            key = jwt.PyJWK(data).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        alg = _alg_for(key)
        if alg is not None and data.get("alg", alg) == alg:
            keys[data["kid"]] = (key, alg)
    return keys


def _name_claim(claims: dict[str, Any], name: str) -> str:
    """The user or tenant a token names, as the users and tenants tables can keep it."""
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise AuthError(f"token lacks the {name!r} claim")
    if len(value) > MAX_NAME_CLAIM:
        raise AuthError(f"token's {name!r} claim is longer than {MAX_NAME_CLAIM} characters")
    if "\x00" in value:
        raise AuthError(f"token's {name!r} claim contains a NUL character")
    return value


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    scopes: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list) and all(isinstance(s, str) for s in value):
            scopes.update(value)
        else:
            raise AuthError(f"malformed {name!r} claim")
    return frozenset(scopes)


class JwtVerifier:
    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._http = http
        self._pem: tuple[Any, str] | None = None
        if settings.jwt_public_key:
            # Env vars often carry PEM with literal "\n"; base64 never contains a backslash.
            key = load_pem_public_key(settings.jwt_public_key.replace("\\n", "\n").encode())
            alg = _alg_for(key)
            if alg is None:
                raise ValueError("jwt_public_key must be an RSA or EC P-256 public key")
            self._pem = (key, alg)
        self._jwks: dict[str, tuple[Any, str]] = {}
        self._jwks_fetched_at: float | None = None
        self._jwks_attempted_at = float("-inf")
        self._jwks_error: str | None = None
        self._jwks_lock = asyncio.Lock()  # one fetch at a time; waiters reuse its result

    @property
    def enabled(self) -> bool:
        s = self._settings
        return bool(s.jwt_secret or s.jwt_public_key or s.jwt_jwks_url)

    async def verify(self, token: str) -> JwtIdentity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        key, alg = await self._key_for(header.get("alg"), header.get("kid"))
        s = self._settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],  # exactly the key's algorithm, whatever the header claims
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway_seconds,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.MissingRequiredClaimError as e:
            raise AuthError(f"token lacks the {e.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token issuer not accepted") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad token signature") from None
        except jwt.PyJWTError as e:
            raise AuthError(f"invalid token: {e}") from None
        user = _name_claim(claims, "sub")
        tenant = _name_claim(claims, s.jwt_tenant_claim)
        return JwtIdentity(tenant=tenant, user=user, scopes=_scopes(claims))

    async def _key_for(self, alg: Any, kid: Any) -> tuple[Any, str]:
        s = self._settings
        if alg == "HS256" and s.jwt_secret:
            return s.jwt_secret, "HS256"
        if self._pem is not None and alg == self._pem[1] and (kid is None or not s.jwt_jwks_url):
            return self._pem
        if s.jwt_jwks_url and alg in ("RS256", "ES256"):
            if not isinstance(kid, str):
                raise AuthError("token has no key id ('kid')")
            return await self._jwk(kid)
        raise AuthError(f"token algorithm {alg!r} not accepted")

    async def _jwk(self, kid: str) -> tuple[Any, str]:
        async with self._jwks_lock:
            now = _clock()
            stale = self._jwks_fetched_at is None or now - self._jwks_fetched_at >= self._settings.jwks_cache_seconds
            if (stale or kid not in self._jwks) and now - self._jwks_attempted_at >= MIN_REFETCH_SECONDS:
                await self._fetch_jwks(now)
            found = self._jwks.get(kid)
        if found is not None:
            return found
        if self._jwks_error is not None:
            raise AuthError("signing keys unavailable (JWKS fetch failed)")
        raise AuthError(f"unknown signing key {kid!r}")

    async def _fetch_jwks(self, now: float) -> None:
        url = self._settings.jwt_jwks_url
        assert url is not None
        self._jwks_attempted_at = now
        try:
            if self._http is not None:
                response = await self._http.get(url, timeout=JWKS_TIMEOUT_SECONDS)
            else:  # fetches are rare; a short-lived client avoids owning one for the app's life
                async with httpx.AsyncClient(timeout=JWKS_TIMEOUT_SECONDS) as client:
                    response = await client.get(url)
            response.raise_for_status()
            keys = _parse_jwks(response.json())
        except (httpx.HTTPError, ValueError, TypeError) as e:
            # Keep the previous keys (stale-if-error): an identity-provider outage should not
            # reject every token. A key dropped from the set stays trusted until a fetch succeeds.
            self._jwks_error = f"{type(e).__name__}: {e}"
            log.warning("JWKS fetch from %s failed: %s", url, self._jwks_error)
            return
        self._jwks, self._jwks_fetched_at, self._jwks_error = keys, now, None
