"""Helpers for the integration and e2e tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID, uuid4

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shared.auth import ALL_SCOPES, new_api_key
from shared.db import utcnow
from shared.events import ProfileUpdatedV2
from shared.infra import ApiKey, Tenant

KAFKA = os.environ.get("CLIENTELA_TEST_KAFKA", "127.0.0.1:9092")
ADMIN_TOKEN = "test-admin-token"
T = TypeVar("T")
# make_settings(service, **overrides) -> that service's settings for the test databases and topics
SettingsFactory = Callable[..., Any]


def eventually(check: Callable[[], T], timeout: float = 20.0, interval: float = 0.1) -> T:
    """Call `check` until it returns without AssertionError; re-raise its last error after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)


def get_within_limits(client: Any, url: str, *, attempts: int = 20, **kwargs: Any) -> Any:
    """GET like a well-behaved seller: on 429 (the key's rate limit) or 503 (load shed), wait the
    `Retry-After` it was given and ask again. Tests that read in a tight loop go faster than the limit."""
    for _ in range(attempts - 1):
        response = client.get(url, **kwargs)
        if response.status_code not in (429, 503):
            return response
        time.sleep(float(response.headers.get("Retry-After", "1")))
    return client.get(url, **kwargs)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Stack:
    """The three services in-process (API + consumers + relays), driven with TestClient."""

    ingest: TestClient
    profile: TestClient
    segmentation: TestClient

    @property
    def clients(self) -> dict[str, TestClient]:
        return {"ingest": self.ingest, "profile": self.profile, "segmentation": self.segmentation}

    def create_tenant(self, name: str = "Loja Teste") -> str:
        """A new tenant; returns its API key once every service accepts it."""
        response = self.ingest.post("/v1/tenants", json={"name": name}, headers=auth(ADMIN_TOKEN))
        assert response.status_code == 201, response.text
        key: str = response.json()["api_key"]

        def accepted_everywhere() -> None:
            for client in (self.profile, self.segmentation):
                assert (
                    client.get(
                        "/v1/segments" if client is self.segmentation else "/v1/profiles", headers=auth(key)
                    ).status_code
                    == 200
                )

        eventually(accepted_everywhere)
        return key


def order_body(
    external_id: str,
    email: str,
    total: str,
    *,
    status: str = "paid",
    source: str = "site",
    placed_at: str = "2026-11-20T10:00:00-03:00",
    updated_at: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "external_id": external_id,
        "source": source,
        "status": status,
        "placed_at": placed_at,
        "currency": "BRL",
        "total": total,
        "customer": {"email": email},
        "items": [{"sku": "SKU-1", "name": "Produto", "quantity": 1, "unit_price": total}],
    }
    if updated_at is not None:
        body["updated_at"] = updated_at
    return body


# -- segmentation tests that feed the service directly ---------------------------------------------------


class FakeClock:
    """The real time plus whatever the test skipped ahead."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


def add_tenant(engine: Engine) -> tuple[UUID, str]:
    """A tenant and an API key written straight into a service's replica tables: (tenant id, key)."""
    tenant_id = uuid4()
    plain, key_hash, prefix = new_api_key()
    with Session(engine) as session:
        session.add(Tenant(id=tenant_id, name="Loja"))
        session.add(
            ApiKey(
                id=uuid4(),
                tenant_id=tenant_id,
                key_hash=key_hash,
                prefix=prefix,
                name="default",
                scopes=list(ALL_SCOPES),
            )
        )
        session.commit()
    return tenant_id, plain


def profile_updated(
    profile_id: UUID, version: int, changed: list[str] | None = None, **traits: Any
) -> ProfileUpdatedV2:
    """A `profile.updated` v2 of a profile with no traits but `traits`; by default every field changed."""
    values: dict[str, Any] = {
        "orders_count": 0,
        "total_spent": Decimal("0"),
        "average_order_value": None,
        "first_order_at": None,
        "last_order_at": None,
        "sources": [],
        "categories": [],
        "products": [],
        "preferred_payment_method": None,
        "birth_date": None,
        "gender": None,
        "city": None,
        "state": None,
        "zip": None,
        "consents": {},
        "rfm_group": None,
        "rfm_r": None,
        "rfm_f": None,
        "rfm_m": None,
        "clv_12m": None,
        "churn_probability": None,
        "next_order_at": None,
        "last_seen_at": None,
        "viewed_categories": {},
        "viewed_products": {},
        "cart_abandoned_at": None,
    }
    values.update(traits)
    every = [name for name in ProfileUpdatedV2.model_fields if name not in ("profile_id", "profile_version")]
    return ProfileUpdatedV2(
        profile_id=profile_id,
        profile_version=version,
        changed=every if changed is None else changed,
        **values,
    )
