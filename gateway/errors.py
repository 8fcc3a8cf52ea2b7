"""The one exception type the HTTP layer turns into an OpenAI error object, and the upstream
failures the engine maps onto it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gateway.protocol import ErrorBody, ErrorResponse

if TYPE_CHECKING:
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError


class APIError(Exception):
    """An error with the HTTP status and OpenAI error fields the client should see."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict:
        error = ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=error).model_dump()


def from_validation(exc: ValidationError | RequestValidationError) -> APIError:
    """A 422 naming the first field that failed validation, as OpenAI does."""
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    return APIError(422, f"{param}: {first.get('msg')}" if param else str(first.get("msg")),
                    param=param, code="invalid_value")


# Where the upstream lives is the operator's business: URLs, host:port pairs and IP addresses are
# cut from what the client sees (the server log keeps the whole message).
_INTERNAL_ADDRESS = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+|\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b|"
                               r"\b[\w.-]+:\d{2,5}\b", re.IGNORECASE)


def client_safe(message: str) -> str:
    """An upstream message without the internal addresses in it."""
    return _INTERNAL_ADDRESS.sub("<upstream>", message)


def from_upstream(exc: UpstreamError) -> APIError:
    """The client-facing error for an upstream failure (400 when the upstream blamed the request)."""
    message = client_safe(str(exc))
    if exc.status == 400:
        return APIError(400, message, type="invalid_request_error", code=exc.code or "upstream_error")
    if exc.status == 404:
        return APIError(404, message, type="not_found_error", code=exc.code or "not_found")
    return APIError(exc.status, message, type="upstream_error",
                    code="upstream_timeout" if exc.status == 504 else "upstream_error")


# Upstream HTTP statuses worth another try (as LiteLLM and the OpenAI SDK retry them).
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class UpstreamError(Exception):
    """The upstream failed (502), or rejected the request as invalid (400). `retryable`: another
    attempt may succeed (connection trouble, 429, 5xx)."""

    def __init__(self, message: str, *, status: int = 502, retryable: bool = False,
                 upstream_status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.upstream_status = upstream_status  # the upstream's own HTTP status, when it answered
        self.code = code  # the client-facing error code, where it says more than "upstream_error"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time (504)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=504)


def as_upstream_error(exc: BaseException) -> UpstreamError:
    """Any exception from an upstream call as an UpstreamError (502 unless it already is one)."""
    if isinstance(exc, UpstreamError):
        return exc
    return UpstreamError(f"upstream failed: {type(exc).__name__}: {exc}")
