"""Ingest's API models (request and response bodies)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from services.ingest.orders import Outcome


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "Loja da Maria"}]})

    name: str = Field(min_length=1, max_length=200, description="The seller's display name.")


class TenantWithKey(BaseModel):
    """A new tenant and its first API key. The key is shown only here, once."""

    id: UUID
    name: str
    created_at: datetime
    api_key: str = Field(
        description="Send as `Authorization: Bearer <api_key>` to every service. Shown once."
    )


class OrderAccepted(BaseModel):
    order_id: UUID = Field(description="Clientela's id for this order (stable across versions).")
    status: Outcome = Field(
        description="accepted (new), updated (new version), duplicate (identical resend), "
        "stale (older than the stored version: ignored)."
    )
    version: int = Field(description="The stored version of the order.")
