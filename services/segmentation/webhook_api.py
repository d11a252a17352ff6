"""The HTTP routes of webhook endpoints and their deliveries (logic in `webhooks`)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response, status

from services.segmentation import webhooks
from services.segmentation.models import WebhookDelivery, WebhookEndpoint
from services.segmentation.ssrf import Guard
from services.segmentation.webhook_schemas import (
    DeliveryStatusName,
    RedeliverRange,
    RedeliverResult,
    WebhookDeliveryPage,
    WebhookDeliveryRead,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointList,
    WebhookEndpointRead,
    WebhookEndpointUpdate,
    WebhookSecret,
)
from shared.auth import TenantDep
from shared.db import SessionDep, utcnow
from shared.errors import Invalid, problem_responses

router = APIRouter(prefix="/v1", tags=["webhooks"])

ERRORS = problem_responses(401, 404)
BODY_ERRORS = problem_responses(401, 404, 422)
STATE_ERRORS = problem_responses(401, 404, 409)


def guard(request: Request) -> Guard:
    """The SSRF guard as this service is configured (private addresses only in development)."""
    return Guard(allow_private=bool(getattr(request.app.state.settings, "webhook_allow_private", False)))


GuardDep = Annotated[Guard, Depends(guard)]


def _read(endpoint: WebhookEndpoint) -> WebhookEndpointRead:
    return WebhookEndpointRead(
        id=endpoint.id,
        url=endpoint.url,
        description=endpoint.description,
        event_types=endpoint.event_types,
        segment_ids=None if endpoint.segment_ids is None else [UUID(s) for s in endpoint.segment_ids],
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        disabled_at=endpoint.disabled_at,
        failing_since=endpoint.failing_since,
        previous_secret_expires_at=webhooks.expires_previous(endpoint, utcnow()),
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def _delivery(delivery: WebhookDelivery) -> WebhookDeliveryRead:
    return WebhookDeliveryRead.model_validate(delivery, from_attributes=True)


@router.post("/webhook-endpoints", status_code=status.HTTP_201_CREATED, responses=BODY_ERRORS)
def create_endpoint(
    body: WebhookEndpointCreate, tenant_id: TenantDep, session: SessionDep, url_guard: GuardDep
) -> WebhookEndpointCreated:
    """Register an endpoint; its signing secret is in this answer only."""
    endpoint, secret = webhooks.create_endpoint(
        url=body.url,
        event_types=body.event_types,
        segment_ids=body.segment_ids,
        description=body.description,
        tenant_id=tenant_id,
        guard=url_guard,
        session=session,
    )
    return WebhookEndpointCreated(**_read(endpoint).model_dump(), secret=secret)


@router.get("/webhook-endpoints", responses=ERRORS)
def list_endpoints(
    tenant_id: TenantDep,
    session: SessionDep,
    cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> WebhookEndpointList:
    """The tenant's webhook endpoints, oldest first (secrets are never shown again)."""
    found = webhooks.list_endpoints(tenant_id=tenant_id, session=session, after=cursor, limit=limit)
    next_cursor = str(found[-1].id) if len(found) == limit else None
    return WebhookEndpointList(items=[_read(e) for e in found], next_cursor=next_cursor)


# The routes below an endpoint's id come before GET/PATCH/DELETE of the endpoint itself, so that the
# OpenAPI document (and whoever walks it in order, like the tenancy tests) lists DELETE last.


@router.post(
    "/webhook-endpoints/{endpoint_id}/test", status_code=status.HTTP_202_ACCEPTED, responses=STATE_ERRORS
)
def send_test(endpoint_id: UUID, tenant_id: TenantDep, session: SessionDep) -> WebhookDeliveryRead:
    """Queue a `webhook.test` delivery to the endpoint."""
    return _delivery(webhooks.send_test(endpoint_id, tenant_id=tenant_id, session=session))


@router.post("/webhook-endpoints/{endpoint_id}/rotate-secret", responses=ERRORS)
def rotate_secret(endpoint_id: UUID, tenant_id: TenantDep, session: SessionDep) -> WebhookSecret:
    """A new signing secret (shown once); the previous one also signs for 24 hours."""
    endpoint, secret = webhooks.rotate_secret(endpoint_id, tenant_id=tenant_id, session=session)
    assert endpoint.previous_secret_expires_at is not None
    return WebhookSecret(secret=secret, previous_secret_expires_at=endpoint.previous_secret_expires_at)


@router.get("/webhook-endpoints/{endpoint_id}/deliveries", responses=problem_responses(401, 404, 422))
def list_deliveries(
    endpoint_id: UUID,
    tenant_id: TenantDep,
    session: SessionDep,
    status_: Annotated[DeliveryStatusName | None, Query(alias="status")] = None,
    cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> WebhookDeliveryPage:
    """The endpoint's deliveries, newest first: status, attempts, last response code and latency."""
    found = webhooks.list_deliveries(
        endpoint_id, tenant_id=tenant_id, session=session, status=status_, after=cursor, limit=limit
    )
    return WebhookDeliveryPage(
        items=[_delivery(d) for d in found],
        next_cursor=str(found[-1].id) if len(found) == limit else None,
    )


@router.post(
    "/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    responses=STATE_ERRORS,
)
def redeliver(
    endpoint_id: UUID, delivery_id: UUID, tenant_id: TenantDep, session: SessionDep
) -> WebhookDeliveryRead:
    """Send a delivery's message again (a new delivery, the same webhook-id)."""
    return _delivery(webhooks.redeliver(endpoint_id, delivery_id, tenant_id=tenant_id, session=session))


@router.post(
    "/webhook-endpoints/{endpoint_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(401, 404, 409, 422),
)
def redeliver_range(
    endpoint_id: UUID, body: RedeliverRange, tenant_id: TenantDep, session: SessionDep
) -> RedeliverResult:
    """Send again the messages of a time range whose delivery failed (or all finished ones)."""
    queued = webhooks.redeliver_range(
        endpoint_id,
        since=body.since,
        until=body.until or utcnow(),
        only_failed=not body.include_delivered,
        tenant_id=tenant_id,
        session=session,
    )
    return RedeliverResult(queued=queued)


@router.get("/webhook-endpoints/{endpoint_id}", responses=ERRORS)
def get_endpoint(endpoint_id: UUID, tenant_id: TenantDep, session: SessionDep) -> WebhookEndpointRead:
    """One webhook endpoint."""
    return _read(webhooks.get_endpoint(endpoint_id, tenant_id=tenant_id, session=session))


@router.patch("/webhook-endpoints/{endpoint_id}", responses=BODY_ERRORS)
def update_endpoint(
    endpoint_id: UUID,
    body: WebhookEndpointUpdate,
    tenant_id: TenantDep,
    session: SessionDep,
    url_guard: GuardDep,
) -> WebhookEndpointRead:
    """Change the URL, event types, segments or description; disable or enable the endpoint."""
    changes = body.model_dump(exclude_unset=True)
    for name in ("url", "event_types", "enabled"):
        if name in changes and changes[name] is None:
            raise Invalid(
                f"`{name}` cannot be null.",
                extra={"errors": [{"loc": ["body", name], "msg": "May not be null.", "type": "null"}]},
            )
    endpoint = webhooks.update_endpoint(
        endpoint_id, changes, tenant_id=tenant_id, guard=url_guard, session=session
    )
    return _read(endpoint)


@router.delete("/webhook-endpoints/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
def delete_endpoint(endpoint_id: UUID, tenant_id: TenantDep, session: SessionDep) -> Response:
    """Delete an endpoint and its deliveries (pending ones are not sent)."""
    webhooks.delete_endpoint(endpoint_id, tenant_id=tenant_id, session=session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
