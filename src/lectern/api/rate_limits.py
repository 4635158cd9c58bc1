"""Rate limits on the REST surface: which budget each route spends, and the RateLimit-* headers.

Every authenticated request spends the caller's (and its tenant's) `requests` budget; the routes
below spend a stricter one as well. Failed authentications are counted per client address, and
an address past its budget is refused before its credentials are even looked at.
"""

from __future__ import annotations

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lectern.api.errors import ApiError
from lectern.auth.principal import Principal
from lectern.rate_limits import RateLimited, RateLimits, Standing

_SPEECH = "/api/v1/speech-services"

# (method, route path) -> the stricter budget that route also spends.
ROUTE_BUDGETS: dict[tuple[str, str], str] = {
    ("DELETE", f"{_SPEECH}/streams/{{id}}/recording"): "purges",
    ("POST", f"{_SPEECH}/streams/{{id}}/purge"): "purges",
    ("POST", f"{_SPEECH}/transcriptions/{{id}}/purge"): "purges",
    ("POST", f"{_SPEECH}/summaries/{{id}}/purge"): "purges",
    ("POST", f"{_SPEECH}/summaries"): "summaries",
    ("POST", f"{_SPEECH}/files"): "uploads",
    ("POST", f"{_SPEECH}/transcriptions"): "uploads",
    ("POST", f"{_SPEECH}/transcriptions/upload"): "uploads",
    ("POST", "/v1/speech-to-text"): "uploads",
    ("POST", "/v1/single-use-token/{token_type}"): "token_mints",
}

_STANDING = "rate_limit_standing"  # request.state: where the caller stands, for the response headers


def rate_limits(request: Request) -> RateLimits:
    return request.app.state.services.rate_limits


def caller_id(caller: Principal) -> str:
    """Budgets are per API key; a JWT caller (no key) spends as its user."""
    return str(caller.api_key_id or caller.user_id)


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


async def admit(request: Request, caller: Principal) -> None:
    """Spend ``caller``'s request budget and the route's own; raises RateLimited past either."""
    limits = rate_limits(request)
    budgets = [limits.budgets.requests]
    route = request.scope.get("route")
    name = ROUTE_BUDGETS.get((request.method, getattr(route, "path", "")))
    if name is not None:
        budgets.append(getattr(limits.budgets, name))
    for budget in budgets:
        standing = await limits.spend(budget, caller_id(caller), str(caller.tenant_id))
        _keep_tightest(request, standing)


async def refuse_failing_address(request: Request) -> None:
    """Raise RateLimited if this address has spent its failed-authentication budget."""
    limits = rate_limits(request)
    refused = await limits.spent(limits.budgets.auth_failures, client_address(request))
    if refused is not None:
        raise refused


async def count_failed_authentication(request: Request) -> None:
    limits = rate_limits(request)
    try:
        await limits.spend(limits.budgets.auth_failures, client_address(request))
    except RateLimited:
        pass  # already refused from now on; this request gets its 401


def too_many_requests(exc: RateLimited) -> ApiError:
    return ApiError(429, str(exc), headers={"Retry-After": str(exc.retry_after), **headers(exc.standing)})


def headers(standing: Standing) -> dict[str, str]:
    return {"RateLimit-Limit": str(standing.limit), "RateLimit-Remaining": str(standing.remaining),
            "RateLimit-Reset": str(standing.reset_seconds)}


def _keep_tightest(request: Request, standing: Standing | None) -> None:
    if standing is None:
        return
    current: Standing | None = getattr(request.state, _STANDING, None)
    if current is None or standing.remaining < current.remaining:
        setattr(request.state, _STANDING, standing)


class RateLimitHeaders:
    """Adds the RateLimit-* headers of the caller's tightest budget to every response that spent one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                standing = scope.get("state", {}).get(_STANDING)
                if standing is not None:
                    present = {name.lower() for name, _ in message.get("headers", [])}
                    extra = [(name.lower().encode(), value.encode()) for name, value in headers(standing).items()
                             if name.lower().encode() not in present]
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

