"""Kafka messages whose tenant does not match what they name are refused (never applied): an order or a
profile of tenant A announced under tenant B's id raises `TenantMismatch`, which the consumer retries
(bounded) and then dead-letters like any poison message, and A's data stays as it was."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from services.profile.profiles import apply_order
from services.segmentation.segments import apply_profile_updated
from shared.db import make_engine
from shared.events import OrderIngested, TenantMismatch
from shared.records import Order
from tests.conftest import db_url
from tests.support import ADMIN_TOKEN, Stack, auth, eventually, order_body, profile_updated

pytestmark = pytest.mark.integration


def tenant(stack: Stack, name: str) -> tuple[UUID, str]:
    response = stack.ingest.post("/v1/tenants", json={"name": name}, headers=auth(ADMIN_TOKEN))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    key: str = created["api_key"]
    eventually(lambda: _accepted(stack, key))
    return UUID(created["id"]), key


def _accepted(stack: Stack, key: str) -> None:
    assert stack.profile.get("/v1/profiles", headers=auth(key)).status_code == 200
    assert stack.segmentation.get("/v1/segments", headers=auth(key)).status_code == 200


def test_messages_naming_another_tenants_data_are_refused(stack: Stack) -> None:
    _, key_a = tenant(stack, "A")
    tenant_b, _ = tenant(stack, "B")
    body = order_body("X-1", "dona@example.com", "42.00")
    accepted = stack.ingest.post("/v1/orders", json=body, headers=auth(key_a))
    assert accepted.status_code == 202, accepted.text
    order_id = UUID(accepted.json()["id"])

    def profile() -> dict[str, Any]:
        items = stack.profile.get("/v1/profiles", params={"email": "dona@example.com"}, headers=auth(key_a))
        found: list[dict[str, Any]] = items.json()["items"]
        assert len(found) == 1
        assert found[0]["orders_count"] == 1
        return found[0]

    owner = eventually(profile, timeout=30)
    eventually(lambda: _projected(UUID(owner["id"])), timeout=30)

    # Tenant B's id on a new version of A's order: refused by the profile service.
    forged = OrderIngested(order_id=order_id, order_version=2, order=Order.model_validate(body))
    engine = make_engine(db_url("profile"))
    try:
        with Session(engine) as session, pytest.raises(TenantMismatch):
            apply_order(session, forged.envelope(tenant_b), forged)
    finally:
        engine.dispose()
    # Tenant B's id on a profile event of A's profile: refused by segmentation.
    event = profile_updated(UUID(owner["id"]), version=99, orders_count=7)
    engine = make_engine(db_url("segmentation"))
    try:
        with Session(engine) as session, pytest.raises(TenantMismatch):
            apply_profile_updated(session, event.envelope(tenant_b), event)
    finally:
        engine.dispose()
    assert profile()["orders_count"] == 1


def _projected(profile_id: UUID) -> None:
    engine = sa.create_engine(db_url("segmentation"))
    try:
        with engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT count(*) FROM profile_projection WHERE profile_id = :p"), {"p": profile_id}
            ).scalar_one()
    finally:
        engine.dispose()
    assert found == 1
