"""Faults, end to end: PostgreSQL (every service's database) restarts while orders stream in.

While it is down, ingest refuses orders with a 5xx (nothing half-accepted) and the seller's system sends
them again, as it would (with the same Idempotency-Key: a 409 for an attempt the outage cut short, until
that attempt's claim is taken over); the consumers, outbox relays and workers of the three services lose their
connections. Once it is back they reconnect by themselves: every order accepted is counted once, in the
right profile, and the services are ready again without a restart.
"""

from __future__ import annotations

import functools
import random
import subprocess
import threading
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.conftest import ROOT
from tests.support import ADMIN_TOKEN, auth, eventually, order_body

if TYPE_CHECKING:
    from tests.e2e.conftest import ServiceStack

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

ORDERS, CUSTOMERS, BATCH = 3_000, 300, 100
RESTART_AT = 1_000  # orders accepted when PostgreSQL goes down
DOWN_FOR_S = 3.0
POSTGRES_SH = ROOT / "deploy" / "postgres.sh"


def postgres(action: str) -> None:
    subprocess.run([str(POSTGRES_SH), action], check=True, timeout=180, capture_output=True)


class Seller:
    """Posts the orders in batches from a thread and, like a seller's system, sends a batch again (with the
    same Idempotency-Key) until ingest answers it: each order must end up accepted or, when an earlier
    attempt did get through, a duplicate."""

    def __init__(self, url: str, key: str, bodies: list[dict[str, Any]]) -> None:
        self.url, self.key, self.bodies = url, key, bodies
        self.accepted = self.duplicates = self.refused = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="faults-seller", daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, headers=auth(self.key), timeout=30.0) as client:
            for start in range(0, len(self.bodies), BATCH):
                items = self.bodies[start : start + BATCH]
                deadline = time.monotonic() + 180
                while True:
                    try:
                        response = client.post(
                            "/v1/orders:batch",
                            json={"items": items},
                            headers={"Idempotency-Key": f"faults-pg-{start}"},
                        )
                    except httpx.TransportError:
                        response = None
                    if response is not None and response.status_code == 200:
                        result = response.json()
                        self.accepted += result["accepted"]
                        self.duplicates += result["duplicates"]
                        if result["accepted"] + result["duplicates"] != len(items):
                            self.errors.append(f"batch at {start}: {response.text[:300]}")
                            return
                        break
                    # 409: an attempt the outage cut short still holds the key; it is taken over after a
                    # minute (services/ingest/idempotency.py), so a client sends it again later, as for a 5xx.
                    retry = response is None or response.status_code >= 500 or response.status_code == 409
                    if not retry:
                        assert response is not None
                        self.errors.append(f"batch at {start}: {response.status_code} {response.text[:300]}")
                        return
                    self.refused += 1
                    if time.monotonic() > deadline:
                        self.errors.append(f"batch at {start}: still refused after 180 s")
                        return
                    time.sleep(0.5)


def test_postgres_restarts_while_orders_stream_in(services: ServiceStack) -> None:
    rng = random.Random(3_000)
    expected: dict[str, tuple[int, Decimal]] = {}
    bodies: list[dict[str, Any]] = []
    for n in range(ORDERS):
        customer = f"p{(n if n < CUSTOMERS else rng.randrange(CUSTOMERS)):03d}.faults@example.com"
        total = Decimal(rng.randint(1_000, 30_000)) / 100
        count, spent = expected.get(customer, (0, Decimal(0)))
        expected[customer] = (count + 1, spent + total)
        bodies.append(order_body(f"PG-{n:05d}", customer, f"{total:.2f}"))

    with (
        httpx.Client(base_url=services.ingest_url, timeout=30.0) as ingest,
        httpx.Client(base_url=services.profile_url, timeout=30.0) as profiles,
    ):
        created = ingest.post("/v1/tenants", json={"name": "Loja Reinício"}, headers=auth(ADMIN_TOKEN))
        assert created.status_code == 201, created.text
        key = created.json()["api_key"]
        eventually(lambda: _ok(profiles.get("/v1/profiles", headers=auth(key))), timeout=60)

        seller = Seller(services.ingest_url, key, bodies)
        seller.thread.start()
        eventually(lambda: _at_least(seller, RESTART_AT), timeout=120, interval=0.05)
        postgres("down")
        try:
            time.sleep(DOWN_FOR_S)
            assert ingest.get("/readyz").status_code == 503  # it says so while the database is away
        finally:
            postgres("up")
        seller.thread.join(timeout=300)
        assert not seller.thread.is_alive()
        assert not seller.errors, seller.errors
        assert seller.accepted + seller.duplicates == ORDERS
        assert seller.refused > 0, "the restart happened while orders were being sent"

        for name, service in services.services.items():
            assert service.running, f"{name} died with its database"
            eventually(functools.partial(_ready, service.url), timeout=60)

        def all_counted() -> None:
            for customer, (count, spent) in expected.items():
                found = profiles.get("/v1/profiles", params={"email": customer}, headers=auth(key))
                [profile] = found.json()["items"]
                assert (profile["orders_count"], Decimal(profile["total_spent"])) == (count, spent)

        eventually(all_counted, timeout=300, interval=2)


def _ok(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text


def _ready(url: str) -> None:
    _ok(httpx.get(f"{url}/readyz", timeout=5))


def _at_least(seller: Seller, count: int) -> None:
    assert not seller.errors, seller.errors
    assert seller.accepted >= count
