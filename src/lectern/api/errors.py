"""problem+json (RFC 9457) for every REST error: a clear body, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from sqlalchemy.exc import DBAPIError
from starlette.routing import Match

from lectern.store.db import database_status, is_unavailable

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 410: "Gone", 413: "Content Too Large", 415: "Unsupported Media Type",
           416: "Range Not Satisfiable", 429: "Too Many Requests", 422: "Unprocessable Content",
           500: "Internal Server Error", 503: "Service Unavailable"}
# How long a client is asked to wait while the database is away: long enough not to hammer a
# recovering server, short enough that a blip costs little.
DATABASE_RETRY_AFTER_SECONDS = 5


class Problem(BaseModel):
    """The body of every error response."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    parameter: str | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses an operation can answer (moved to problem+json by
    ``_problem_openapi``: FastAPI files a response model under application/json). Every
    authenticated operation can answer 429: rate limits (api/rate_limits.py) apply to all of them."""
    return {s: {"model": Problem, "description": _TITLES.get(s, "Error")} for s in sorted({*statuses, 429})}


def _problem_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The document as the server behaves: error bodies are problem+json, and a request that
    fails validation is 400 (declared per operation), never FastAPI's default 422."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        for path in document.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                default_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
                if default_422.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                    del responses["422"]
                for status, response in responses.items():
                    content = response.get("content", {})
                    schema = content.get("application/json", {}).get("schema", {})
                    if status[0] in "45" and schema.get("$ref", "").endswith("/Problem"):
                        content[PROBLEM_JSON] = content.pop("application/json")
        document.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
        document.get("components", {}).get("schemas", {}).pop("ValidationError", None)
        app.openapi_schema = document
        return document

    return openapi


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return ", ".join(sorted(methods))


class ApiError(Exception):
    def __init__(
        self, status: int, detail: str, parameter: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.parameter = parameter
        self.headers = headers


def problem(status: int, detail: str, parameter: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(title=_TITLES.get(status, "Error"), status=status, detail=detail, parameter=parameter)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM_JSON,
                        headers=headers)


def _validation_problem(exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("query", "path", "body", "header")]
    parameter = ".".join(location) or None
    message = first.get("msg", "invalid request")
    detail = f"{parameter}: {message}" if parameter else message
    return problem(400, detail, parameter)


def install(app: FastAPI) -> None:
    app.openapi = _problem_openapi(app)  # type: ignore[method-assign]

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else exc.headers
        return problem(exc.status, exc.detail, exc.parameter, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_problem(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return problem(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if not is_unavailable(exc):
            return await _unexpected(request, exc)
        # The outage is logged once (DatabaseStatus), not with a traceback per request.
        database_status(request.app.state.services.db).failed(exc)
        return problem(503, "The database is unavailable; try again shortly.",
                       headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem(500, "An unexpected error occurred; it has been logged.")
