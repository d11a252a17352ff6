"""Ingest's HTTP routes (thin: validation by the schemas, logic in `tenants` and `orders`)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from services.ingest import orders, tenants
from services.ingest.schemas import OrderAccepted, TenantCreate, TenantWithKey
from shared.auth import AdminDep, TenantDep
from shared.db import SessionDep
from shared.errors import problem_responses
from shared.logs import request_id_var
from shared.records import Order

router = APIRouter(prefix="/v1")


@router.post(
    "/tenants",
    status_code=status.HTTP_201_CREATED,
    dependencies=[AdminDep],
    tags=["tenants"],
    responses=problem_responses(401, 422),
)
def create_tenant(body: TenantCreate, session: SessionDep) -> TenantWithKey:
    """Create a tenant (a seller) and its first API key; needs the admin token."""
    tenant, api_key = tenants.create_tenant(body.name, session=session)
    return TenantWithKey(id=tenant.id, name=tenant.name, created_at=tenant.created_at, api_key=api_key)


@router.post(
    "/orders",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["orders"],
    responses={
        200: {"description": "Duplicate or stale resend: nothing changed", "model": OrderAccepted},
        **problem_responses(401, 413, 422),
    },
)
def post_order(
    order: Order, tenant_id: TenantDep, session: SessionDep, request: Request, response: Response
) -> OrderAccepted:
    """Accept one canonical order; it is durable when this answers."""
    result = orders.ingest_order(
        order, tenant_id=tenant_id, session=session, correlation_id=request_id_var.get()
    )
    if result.outcome in (orders.Outcome.duplicate, orders.Outcome.stale):
        response.status_code = status.HTTP_200_OK
    return OrderAccepted(order_id=result.order_id, status=result.outcome, version=result.version)
