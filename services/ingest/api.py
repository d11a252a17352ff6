"""Ingest's HTTP routes: thin; validation and storage live in `intake`, tenants in `tenants`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlmodel import Session

from services.ingest import idempotency, intake, quality, tenants
from services.ingest.adapters import ADAPTERS, AdapterError
from services.ingest.intake import Kind, Outcome
from services.ingest.schemas import (
    MAX_BATCH,
    Accepted,
    BatchResult,
    BehaviourBatch,
    CustomerBatch,
    OrderBatch,
    QualityReport,
    TenantCreate,
    TenantWithKey,
    body_of,
)
from shared.auth import AdminDep, TenantDep
from shared.db import SessionDep
from shared.errors import Invalid, NotFound, problem, problem_responses
from shared.logs import request_id_var
from shared.records import BehaviourEvent, CustomerRecord, Order
from shared.web import json_body, read_json

router = APIRouter(prefix="/v1")

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Makes the POST safe to retry: the same key and body within 48 h replay the 1st answer.",
    ),
]
SINGLE = {
    202: {"description": "Accepted (new) or updated (new version): durable", "model": Accepted},
    200: {"description": "Duplicate or stale resend: nothing changed", "model": Accepted},
    **problem_responses(400, 401, 409, 413, 415, 422),
}
BATCH = {
    200: {"description": "One result per item", "model": BatchResult},
    **problem_responses(400, 401, 409, 413, 415, 422),
}


async def _idempotent(
    request: Request,
    session: Session,
    scope: str,
    key: str | None,
    raw: bytes,
    handler: Callable[[], Response],
) -> Response:
    fingerprint = idempotency.request_hash(request.method, request.url.path, raw)
    return await run_in_threadpool(
        idempotency.run_idempotent, session, scope=scope, key=key, fingerprint=fingerprint, handler=handler
    )


async def _single(
    request: Request, tenant_id: UUID, session: Session, key: str | None, kind: Kind[Any]
) -> Response:
    raw, data = await read_json(request)

    def handle() -> Response:
        [result] = intake.accept(
            kind, [data], tenant_id=tenant_id, session=session, correlation_id=request_id_var.get()
        )
        if result.outcome == Outcome.rejected:
            return problem(
                422, "Invalid record", "The record does not pass validation.", errors=result.errors
            )
        code = 202 if result.outcome in (Outcome.accepted, Outcome.updated) else 200
        return JSONResponse(body_of(Accepted.of(result), exclude_none=True), status_code=code)

    return await _idempotent(request, session, str(tenant_id), key, raw, handle)


async def _batch(
    request: Request, tenant_id: UUID, session: Session, key: str | None, kind: Kind[Any]
) -> Response:
    raw, data = await read_json(request)

    def handle() -> Response:
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise Invalid("The body must be an object with an `items` array.")
        if len(items) > MAX_BATCH:
            raise Invalid(f"At most {MAX_BATCH} items per batch; split it.", extra={"items": len(items)})
        results = intake.accept(
            kind, items, tenant_id=tenant_id, session=session, correlation_id=request_id_var.get()
        )
        return JSONResponse(body_of(BatchResult.of(results)))

    return await _idempotent(request, session, str(tenant_id), key, raw, handle)


def _documented(model: type[BaseModel]) -> dict[str, Any]:
    return json_body(model)


@router.post(
    "/tenants",
    status_code=status.HTTP_201_CREATED,
    dependencies=[AdminDep],
    tags=["tenants"],
    responses=problem_responses(401, 409, 422),
)
async def create_tenant(
    body: TenantCreate, request: Request, session: SessionDep, key: IdempotencyKey = None
) -> Response:
    """Create a tenant (a seller) and its first API key; needs the admin token."""

    def handle() -> Response:
        tenant, api_key = tenants.create_tenant(body.name, session=session)
        out = TenantWithKey(id=tenant.id, name=tenant.name, created_at=tenant.created_at, api_key=api_key)
        return JSONResponse(body_of(out), status_code=201)

    return await _idempotent(request, session, "admin", key, await request.body(), handle)


@router.post(
    "/orders", tags=["orders"], responses=SINGLE, openapi_extra=_documented(Order), response_model=None
)
async def post_order(
    request: Request, tenant_id: TenantDep, session: SessionDep, key: IdempotencyKey = None
) -> Response:
    """Accept one canonical order (202); durable when this answers."""
    return await _single(request, tenant_id, session, key, intake.ORDERS)


@router.post(
    "/orders:batch",
    tags=["orders"],
    responses=BATCH,
    openapi_extra=_documented(OrderBatch),
    response_model=None,
)
async def post_orders(
    request: Request, tenant_id: TenantDep, session: SessionDep, key: IdempotencyKey = None
) -> Response:
    """Accept up to 1,000 orders; a result per item (one bad order never blocks the others)."""
    return await _batch(request, tenant_id, session, key, intake.ORDERS)


@router.post(
    "/customers",
    tags=["customers"],
    responses=SINGLE,
    openapi_extra=_documented(CustomerRecord),
    response_model=None,
)
async def post_customer(
    request: Request, tenant_id: TenantDep, session: SessionDep, key: IdempotencyKey = None
) -> Response:
    """Accept one customer record (registration form, CRM export)."""
    return await _single(request, tenant_id, session, key, intake.CUSTOMERS)


@router.post(
    "/customers:batch",
    tags=["customers"],
    responses=BATCH,
    openapi_extra=_documented(CustomerBatch),
    response_model=None,
)
async def post_customers(
    request: Request, tenant_id: TenantDep, session: SessionDep, key: IdempotencyKey = None
) -> Response:
    """Accept up to 1,000 customer records; a result per item."""
    return await _batch(request, tenant_id, session, key, intake.CUSTOMERS)


@router.post(
    "/events",
    tags=["events"],
    responses=SINGLE,
    openapi_extra=_documented(BehaviourEvent),
    response_model=None,
)
async def post_event(
    request: Request, tenant_id: TenantDep, session: SessionDep, key: IdempotencyKey = None
) -> Response:
    """Accept one behaviour event (page view, search, cart, ...)."""
    return await _single(request, tenant_id, session, key, intake.BEHAVIOUR)


@router.post(
    "/events:batch",
    tags=["events"],
    responses=BATCH,
    openapi_extra=_documented(BehaviourBatch),
    response_model=None,
)
async def post_events(
    request: Request, tenant_id: TenantDep, session: SessionDep, key: IdempotencyKey = None
) -> Response:
    """Accept up to 1,000 behaviour events; a result per item."""
    return await _batch(request, tenant_id, session, key, intake.BEHAVIOUR)


@router.post(
    "/sources/{source}/orders",
    tags=["orders"],
    responses={**SINGLE, **problem_responses(404)},
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "description": "The platform's order JSON."}
                }
            },
        }
    },
)
async def post_source_order(
    source: Annotated[str, Path(description=f"One of: {', '.join(sorted(ADAPTERS))}.")],
    request: Request,
    tenant_id: TenantDep,
    session: SessionDep,
    key: IdempotencyKey = None,
) -> Response:
    """Accept one order as the marketplace's own API returns it; mapped to the canonical order."""
    adapter = ADAPTERS.get(source)
    if adapter is None:
        raise NotFound(f"No adapter for this source; known: {', '.join(sorted(ADAPTERS))}.")
    raw, data = await read_json(request)

    def handle() -> Response:
        if not isinstance(data, dict):
            raise Invalid("The body must be the platform's order object.")
        try:
            order = adapter(data)
        except AdapterError as exc:
            quality.record_rejection(session, tenant_id, "order", f"adapter:{source}")
            return problem(422, "Invalid record", str(exc))
        [result] = intake.accept(
            intake.ORDERS, [order], tenant_id=tenant_id, session=session, correlation_id=request_id_var.get()
        )
        code = 202 if result.outcome in (Outcome.accepted, Outcome.updated) else 200
        return JSONResponse(body_of(Accepted.of(result), exclude_none=True), status_code=code)

    return await _idempotent(request, session, str(tenant_id), key, raw, handle)


@router.get("/quality", tags=["quality"], responses=problem_responses(401, 422), response_model=QualityReport)
def get_quality(
    tenant_id: TenantDep,
    session: SessionDep,
    days: Annotated[int, Query(ge=1, le=366, description="Window: the last N days, today included.")] = 30,
) -> dict[str, Any]:
    """Data quality over a window: received, accepted, duplicates, rejections by reason, completeness."""
    return quality.report(session, tenant_id, days=days)
