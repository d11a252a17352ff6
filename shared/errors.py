"""Domain exceptions and their RFC 9457 problem+json rendering.

Code below the routes raises these; `install_problem_handlers` maps them (and FastAPI's own errors) to
``application/problem+json`` responses. Error texts never contain the offending input values, so no
personal data leaks through them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("clientela.errors")


class DomainError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}


class Invalid(DomainError):
    status = 422
    title = "Invalid request"


class NotFound(DomainError):
    status = 404
    title = "Not found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class Unauthorized(DomainError):
    status = 401
    title = "Unauthorized"


class MalformedRequest(DomainError):
    status = 400
    title = "Malformed request"


class ContentTooLarge(DomainError):
    status = 413
    title = "Content too large"


class UnsupportedMediaType(DomainError):
    status = 415
    title = "Unsupported media type"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"


def problem(
    status: int, title: str, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers or None)


def field_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic errors as `loc`/`msg`/`type` only: "input" and "ctx" are dropped, they echo the submitted
    (possibly personal) data."""
    return [
        {
            "loc": safe_loc(err.get("loc", ()), err.get("type", "")),
            "msg": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in errors
    ]


def safe_loc(loc: Any, error_type: str) -> list[str]:
    """An error location; the name of an unknown field is the client's own text, so it is not repeated."""
    parts = [str(p) for p in loc]
    if error_type == "extra_forbidden" and parts:
        parts[-1] = "(unknown field)"
    return parts


def install_problem_handlers(app: FastAPI) -> None:
    async def on_domain(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        return problem(exc.status, exc.title, exc.detail, **exc.extra)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem(
            422,
            "Invalid request",
            "The request does not match the schema.",
            errors=field_errors(exc.errors()),
        )

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        title = {404: "Not found", 405: "Method not allowed", 413: "Content too large"}.get(
            exc.status_code, "HTTP error"
        )
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem(exc.status_code, title, detail, headers=dict(exc.headers or {}))

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", extra={"error_type": type(exc).__name__})
        return problem(500, "Internal error", "The server could not complete the request.")

    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


_DESCRIPTIONS = {
    401: "Missing or invalid API key",
    404: "Not found (or owned by another tenant)",
    400: "Malformed JSON",
    409: "A request with the same Idempotency-Key is in progress",
    413: "Body larger than 1 MB",
    415: "Not application/json",
    422: "Invalid request",
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for problem+json errors, for the route decorators."""
    return {code: {"description": _DESCRIPTIONS[code], "content": {PROBLEM_JSON: {}}} for code in codes}
