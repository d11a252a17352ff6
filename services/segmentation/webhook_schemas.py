"""The API models of webhook endpoints and deliveries (routes in `webhook_api`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from shared.web import RequestTime

EventType = Literal["segment.entered", "segment.exited", "profile.merged", "customer.erased"]
DeliveryStatusName = Literal["pending", "delivered", "failed"]

URL_DESCRIPTION = (
    "Where deliveries are POSTed. https only; its host must resolve to public addresses only (checked now "
    "and at every connection). Redirects are not followed. No credentials in the URL: verify the "
    "`webhook-signature` instead."
)


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.loja.example.com.br/clientela",
                    "event_types": ["segment.entered", "segment.exited"],
                    "segment_ids": ["6f1c2a8e-3b7d-4d0e-9a51-2f6b8c0d1e23"],
                    "description": "CRM: VIP customers",
                },
                {"url": "https://erp.example.com/webhooks", "event_types": ["profile.merged"]},
            ]
        },
    )

    url: str = Field(min_length=1, max_length=2000, description=URL_DESCRIPTION)
    event_types: list[EventType] = Field(min_length=1, max_length=10, description="What to receive.")
    segment_ids: list[UUID] | None = Field(
        None,
        max_length=200,
        description="Only entries and exits of these segments (null: every segment). `profile.merged` is "
        "not filtered by segment.",
    )
    description: str | None = Field(None, max_length=500)


class WebhookEndpointUpdate(BaseModel):
    """Only the fields sent change. `enabled: false` disables the endpoint (its pending deliveries fail);
    `enabled: true` enables it again."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"enabled": True},
                {"event_types": ["segment.entered"], "segment_ids": None},
                {"url": "https://hooks.loja.example.com.br/v2/clientela"},
            ]
        },
    )

    # Optional but not nullable (null is refused), except `segment_ids` and `description`.
    url: Annotated[str, Field(min_length=1, max_length=2000)] | SkipJsonSchema[None] = Field(
        None, description=URL_DESCRIPTION
    )
    event_types: Annotated[list[EventType], Field(min_length=1, max_length=10)] | SkipJsonSchema[None] = None
    segment_ids: list[UUID] | None = Field(None, max_length=200, description="null: every segment.")
    description: str | None = Field(None, max_length=500)
    enabled: Annotated[bool, Field(strict=True)] | SkipJsonSchema[None] = None


class WebhookEndpointRead(BaseModel):
    id: UUID
    url: str
    description: str | None
    event_types: list[str]
    segment_ids: list[UUID] | None
    enabled: bool
    disabled_reason: str | None = Field(
        description="`manual`, `gone` (the endpoint answered 410) or `failing` (every attempt failed for "
        "the auto-disable period)."
    )
    disabled_at: datetime | None
    failing_since: datetime | None = Field(description="First failed attempt since the last success.")
    previous_secret_expires_at: datetime | None = Field(
        description="During a secret rotation: until then deliveries are signed with both secrets."
    )
    created_at: datetime
    updated_at: datetime


class WebhookEndpointCreated(WebhookEndpointRead):
    secret: str = Field(
        description="The signing secret (`whsec_...`), shown this once. Verify deliveries with it, e.g. "
        "`standardwebhooks.Webhook(secret).verify(body, headers)`."
    )


class WebhookEndpointList(BaseModel):
    items: list[WebhookEndpointRead]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class WebhookSecret(BaseModel):
    secret: str = Field(description="The new signing secret (`whsec_...`), shown this once.")
    previous_secret_expires_at: datetime = Field(
        description="Until then deliveries carry a signature with the previous secret too."
    )


class WebhookDeliveryRead(BaseModel):
    id: UUID
    message_id: str = Field(description="The `webhook-id` header: the same for every attempt and redelivery.")
    event_type: str
    status: DeliveryStatusName
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    response_status: int | None = Field(description="HTTP status of the last attempt (null: no answer).")
    latency_ms: int | None = Field(description="Time to the last attempt's answer (or failure).")
    error: str | None = Field(
        description="Why the last attempt failed without an answer (`timeout`, `connection_failed`, "
        "`blocked_address:<reason>`, ...), `redirect_not_followed`, `endpoint_disabled`, or "
        "`segment_deleted` (the segment it was about was deleted before it was delivered)."
    )
    delivered_at: datetime | None
    redelivery_of: UUID | None
    created_at: datetime


class WebhookDeliveryPage(BaseModel):
    items: list[WebhookDeliveryRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class RedeliverRange(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"since": "2026-11-20T00:00:00Z", "until": "2026-11-21T00:00:00Z"},
                {"since": "2026-11-20T00:00:00Z", "include_delivered": True},
            ]
        },
    )

    since: RequestTime = Field(description="Messages created at or after this time...")
    until: RequestTime | None = Field(None, description="...and before this one (default: now).")
    include_delivered: bool = Field(
        False,
        strict=True,
        description="Send delivered messages again too (default: only those whose delivery failed).",
    )


class RedeliverResult(BaseModel):
    queued: int = Field(description="Messages queued for delivery again (same webhook-id each).")
