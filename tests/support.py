"""Helpers for the integration and e2e tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.testclient import TestClient

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
