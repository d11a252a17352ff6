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
from starlette.routing import BaseRoute, Match

from shared.logs import redact

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("clientela.errors")


class DomainError(Exception):
    status = 400
    title = "Bad request"

    def __init__(
        self, detail: str, *, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}
        self.headers = headers or {}


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


class TooManyRequests(DomainError):
    """Over a rate limit; raise it with a `Retry-After` header."""

    status = 429
    title = "Too many requests"


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
            "msg": safe_msg(err),
            "type": err.get("type", ""),
        }
        for err in errors
    ]


def safe_msg(err: Mapping[str, Any]) -> str:
    """An error's message; pydantic quotes the input in a few of them (the tag of a tagged union)."""
    if err.get("type") == "union_tag_invalid":
        expected = (err.get("ctx") or {}).get("expected_tags", "")
        return f"Input tag does not match any of the expected tags: {expected}"
    return redact(str(err.get("msg", "")))


def safe_loc(loc: Any, error_type: str) -> list[str]:
    """An error location. The name of an unknown field and the keys of a mapping (`{"<key>": ...}`) are the
    client's own text: an unknown field or a refused key is not repeated, other keys are redacted."""
    parts = [redact(str(p)) for p in loc]
    if error_type == "extra_forbidden" and parts:
        parts[-1] = "(unknown field)"
    for n, part in enumerate(parts[1:], 1):
        if part == "[key]":  # pydantic's marker after a refused key
            parts[n - 1] = "(key)"
    return parts


def allowed_methods(request: Request) -> str:
    """`Allow` for a 405: the methods of every route on the path. Starlette names only the first route's,
    and a path's methods are often separate routes (`GET` and `POST /v1/segments`)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, BaseRoute) and route.matches(request.scope)[0] is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def install_problem_handlers(app: FastAPI) -> None:
    async def on_domain(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        return problem(exc.status, exc.title, exc.detail, headers=exc.headers, **exc.extra)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem(
            422,
            "Invalid request",
            "The request does not match the schema.",
            errors=field_errors(exc.errors()),
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        title = {404: "Not found", 405: "Method not allowed", 413: "Content too large"}.get(
            exc.status_code, "HTTP error"
        )
        detail = exc.detail if isinstance(exc.detail, str) else None
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return problem(exc.status_code, title, detail, headers=headers)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", extra={"error_type": type(exc).__name__})
        return problem(500, "Internal error", "The server could not complete the request.")

    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


_DESCRIPTIONS = {
    401: "Missing, invalid, expired or revoked API key",
    403: "The API key lacks the scope this route needs",
    404: "Not found (or owned by another tenant)",
    400: "Malformed JSON",
    409: "A request with the same Idempotency-Key is in progress",
    413: "Body larger than 1 MB",
    415: "Not application/json",
    422: "Invalid request",
    429: "Over the API key's rate limit (see `Retry-After`)",
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for problem+json errors, for the route decorators."""
    return {code: {"description": _DESCRIPTIONS[code], "content": {PROBLEM_JSON: {}}} for code in codes}


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "An error as RFC 9457 problem details. A 422 lists the offending fields in `errors` "
    "(`loc`, `msg`, `type`; never the submitted values); other members depend on the error.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}, "required": True}},
    429: {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "integer", "minimum": 1},
            "required": True,
        }
    },
}
# What the shared code may answer, whatever the route: the API key check (401, 403, 429) on routes that take
# one; the body limit, JSON parsing and validation (400, 413, 422) on routes with a body; validation of
# path and query parameters (422).
_FOR_SECURITY = (401, 403, 429)
_FOR_BODY = (400, 413, 422)
_FOR_PARAMETERS = (422,)


def document_problems(spec: dict[str, Any]) -> None:
    """Complete an OpenAPI document's error responses, in place: declare every error the shared code may
    answer on each operation, and describe them all as problem+json (FastAPI's default 422 says JSON)."""
    spec.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            codes = [
                *(_FOR_SECURITY if operation.get("security") else ()),
                *(_FOR_BODY if operation.get("requestBody") else ()),
                *(_FOR_PARAMETERS if operation.get("parameters") else ()),
            ]
            for code in codes:
                responses.setdefault(str(code), {"description": _DESCRIPTIONS[code]})
            if responses.get("422", {}).get("description") == "Validation Error":  # FastAPI's
                responses["422"]["description"] = _DESCRIPTIONS[422]
            for code, response in responses.items():
                if not code.startswith(("4", "5")):
                    continue
                response["content"] = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
                if int(code) in _HEADERS:
                    response.setdefault("headers", {}).update(_HEADERS[int(code)])
    schemas = spec["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)  # FastAPI's 422 body, replaced by Problem above
