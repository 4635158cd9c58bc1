"""Errors of the ElevenLabs batch route, in ElevenLabs' REST shape.

``{"detail": {"type", "code", "message", "status", "request_id", "param"}}`` (``status`` is their
legacy field, still read by older clients), answered from the route itself so the platform's
problem+json handlers never see them.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from lectern.api.rate_limits import headers as rate_limit_headers
from lectern.api.uploads import StorageQuotaExceeded, UploadError
from lectern.rate_limits import RateLimited


class ScribeError(Exception):
    """An error answered in ElevenLabs' shape (never reaches the app's problem+json handlers)."""

    def __init__(self, http_status: int, message: str, *, param: str | None = None, type: str = "validation_error",
                 code: str = "invalid_parameters", status: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers
        self.http_status = http_status
        self.message = message
        self.param = param
        self.type = type
        self.code = code
        self.status = status or code

    def response(self) -> JSONResponse:
        detail: dict[str, Any] = {"type": self.type, "code": self.code, "message": self.message,
                                  "status": self.status, "request_id": uuid.uuid4().hex}
        if self.param is not None:
            detail["param"] = self.param
        return JSONResponse({"detail": detail}, status_code=self.http_status, headers=self.headers)


def invalid(message: str, param: str) -> ScribeError:
    return ScribeError(400, message, param=param)


def unauthorized(message: str, status: str = "invalid_api_key") -> ScribeError:
    return ScribeError(401, message, type="authentication_error", code="unauthorized", status=status)


def quota_exceeded(message: str) -> ScribeError:
    return ScribeError(403, message, type="invalid_request", code="quota_exceeded")


def zero_retention_refused() -> ScribeError:
    return ScribeError(403, "zero retention (enable_logging=false) is not enabled for this account; send "
                       "enable_logging=true or leave it out", param="enable_logging", type="authorization_error",
                       code="zero_retention_not_allowed")


def rate_limited(message: str, headers: dict[str, str]) -> ScribeError:
    return ScribeError(429, message, type="rate_limit_error", code="rate_limit_exceeded", headers=headers)


def too_many_requests(exc: RateLimited) -> ScribeError:
    """A spent rate limit, with the platform's ``Retry-After`` and ``RateLimit-*`` headers."""
    return rate_limited(str(exc), {"Retry-After": str(exc.retry_after), **rate_limit_headers(exc.standing)})


def upload_error(exc: UploadError) -> ScribeError:
    if isinstance(exc, StorageQuotaExceeded):
        return ScribeError(413, exc.message, param="file", type="invalid_request", code="quota_exceeded")
    if exc.status == 413:
        return ScribeError(413, exc.message, param="file", type="invalid_request", code="file_too_large")
    if exc.status == 415:
        return ScribeError(415, exc.message, type="invalid_request", code="unsupported_media_type")
    if exc.field == "file" and exc.message.startswith("no file"):
        return invalid("no file: send the audio as the multipart part 'file' (this server does not fetch "
                       "source_url or cloud_storage_url)", "file")
    return invalid(exc.message, exc.field or "file")


# -- the documented shape (OpenAPI only: errors are answered with ScribeError.response) ------------


class ScribeErrorDetail(BaseModel):
    type: str
    code: str
    message: str
    status: str = Field(description="ElevenLabs' legacy error code field")
    request_id: str
    param: str | None = None


class ScribeErrorBody(BaseModel):
    detail: ScribeErrorDetail
