"""Faults, end to end: the profile consumer is SIGKILLed three times while 20,000 orders stream in.

The profile API runs without workers and its consumers in a process of their own
(``python -m services.profile.consumer``), which is killed (no shutdown, no offset commit, no flush) and
started again three times while the orders arrive in batches. Afterwards every customer's profile counts
exactly their orders and their exact total, as the orders themselves say (what a clean run gives: the
totals do not depend on how the work was split); the segment holds exactly the customers over its
threshold; and no webhook id ever arrived with two different contents.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import ServiceProcess, free_ports
from tests.e2e.test_e2e_webhooks import WEBHOOK_ENV, SellerReceiver, receiver
from tests.support import ADMIN_TOKEN, auth, eventually, get_within_limits, order_body

if TYPE_CHECKING:
    from tests.e2e.conftest import ServiceStack

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

__all__ = ["receiver"]  # the fixture, used by the test below

ORDERS, CUSTOMERS, BATCH = 20_000, 2_000, 500
KILLS_AT = (4_000, 9_000, 14_000)  # orders accepted when the consumer is killed
THRESHOLD = Decimal("1500")
SOURCES = ("mercadolivre", "shopee", "amazon", "magalu", "site")


@pytest.fixture
def service_env_overrides() -> dict[str, str]:
    return dict(WEBHOOK_ENV)


def email(customer: int) -> str:
    return f"c{customer:04d}.faults@example.com"


def plan(seed: int) -> tuple[list[dict[str, Any]], dict[str, tuple[int, Decimal]]]:
    """The orders, and what each customer's profile must end with: (orders, total spent)."""
    rng = random.Random(seed)
    bodies: list[dict[str, Any]] = []
    expected: dict[str, tuple[int, Decimal]] = {}
    for n in range(ORDERS):
        customer = email(n if n < CUSTOMERS else rng.randrange(CUSTOMERS))
        total = Decimal(rng.randint(1_000, 40_000)) / 100
        count, spent = expected.get(customer, (0, Decimal(0)))
        expected[customer] = (count + 1, spent + total)
        bodies.append(
            order_body(
                f"F-{n:05d}",
                customer,
                f"{total:.2f}",
                source=SOURCES[n % len(SOURCES)],
                placed_at=f"2026-11-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:00-03:00",
            )
        )
    return bodies, expected


class Streamer:
    """Posts the orders in batches from a thread; `accepted` counts what ingest accepted."""

    def __init__(self, url: str, key: str, bodies: list[dict[str, Any]]) -> None:
        self.url, self.key, self.bodies = url, key, bodies
        self.accepted = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="faults-streamer", daemon=True)

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, headers=auth(self.key), timeout=60.0) as client:
                for start in range(0, len(self.bodies), BATCH):
                    items = self.bodies[start : start + BATCH]
                    response = client.post("/v1/orders:batch", json={"items": items})
                    if response.status_code != 200 or response.json()["accepted"] != len(items):
                        self.errors.append(f"batch at {start}: {response.status_code} {response.text[:300]}")
                        return
                    self.accepted += len(items)
        except Exception as exc:  # reported by the test, not lost in the thread
            self.errors.append(f"{type(exc).__name__}: {exc}")


def profiles_summary(client: httpx.Client, key: str) -> tuple[int, int]:
    """(profiles, orders counted over all of them), paging through the list."""
    profiles = orders = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/profiles", params=params, headers=auth(key)).json()
        profiles += len(page["items"])
        orders += sum(p["orders_count"] for p in page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return profiles, orders


def test_profile_consumer_killed_three_times_while_orders_stream_in(
    services: ServiceStack, receiver: SellerReceiver, tmp_path: Path
) -> None:
    # The profile service's consumers in a process of their own, the API without them.
    api = services.services["profile"]
    api.stop()
    api.env["CLIENTELA_RUN_WORKERS"] = "false"
    services.start("profile")
    [metrics_port] = free_ports(1)
    consumer = ServiceProcess(
        "profile-consumer",
        port=metrics_port,
        env={**api.env, "CLIENTELA_METRICS_PORT": str(metrics_port)},
        log_path=tmp_path / "profile-consumer.log",
        module="services.profile.consumer",
        ready_path="/metrics",
    )
    consumer.start()
    consumer.wait_ready()

    bodies, expected = plan(seed=20_000)
    members = {customer for customer, (_, spent) in expected.items() if spent >= THRESHOLD}
    assert 0.2 < len(members) / CUSTOMERS < 0.8, "the data must put customers on each side"
    try:
        with (
            httpx.Client(base_url=services.ingest_url, timeout=30.0) as ingest,
            httpx.Client(base_url=services.profile_url, timeout=30.0) as profiles,
            httpx.Client(base_url=services.segmentation_url, timeout=30.0) as segmentation,
        ):
            created = ingest.post("/v1/tenants", json={"name": "Loja Falhas"}, headers=auth(ADMIN_TOKEN))
            assert created.status_code == 201, created.text
            key = created.json()["api_key"]

            def known_everywhere() -> None:
                assert profiles.get("/v1/profiles", headers=auth(key)).status_code == 200
                assert segmentation.get("/v1/segments", headers=auth(key)).status_code == 200

            eventually(known_everywhere, timeout=60)
            segment = segmentation.post(
                "/v1/segments",
                json={"name": "R$1.500+", "rule": {"field": "total_spent", "op": "gte", "value": "1500"}},
                headers=auth(key),
            )
            assert segment.status_code == 201, segment.text
            segment_id = segment.json()["id"]
            endpoint = segmentation.post(
                "/v1/webhook-endpoints",
                json={"url": receiver.url, "event_types": ["segment.entered", "segment.exited"]},
                headers=auth(key),
            )
            assert endpoint.status_code == 201, endpoint.text
            receiver.secret = endpoint.json()["secret"]

            streamer = Streamer(services.ingest_url, key, bodies)
            streamer.thread.start()
            for kill_at in KILLS_AT:

                def streamed(count: int = kill_at) -> None:
                    assert not streamer.errors, streamer.errors
                    assert streamer.accepted >= count

                eventually(streamed, timeout=120, interval=0.05)
                consumer.kill()  # SIGKILL, mid-stream
                consumer.start()
                consumer.wait_ready()
            streamer.thread.join(timeout=300)
            assert not streamer.thread.is_alive()
            assert not streamer.errors, streamer.errors
            assert streamer.accepted == ORDERS

            # Every order counted once: first in sum, then customer by customer.
            eventually(
                lambda: _equal(profiles_summary(profiles, key), (CUSTOMERS, ORDERS)), timeout=600, interval=2
            )
            ids: dict[str, str] = {}
            for customer, (count, spent) in expected.items():
                found = get_within_limits(
                    profiles, "/v1/profiles", params={"email": customer}, headers=auth(key)
                )
                assert found.status_code == 200, found.text
                [profile] = found.json()["items"]
                assert (profile["orders_count"], Decimal(profile["total_spent"])) == (count, spent), customer
                ids[customer] = profile["id"]

            # The segment holds exactly the customers over the threshold, and the webhooks said so.
            want = sorted(ids[c] for c in members)

            def segment_final() -> None:
                got: list[str] = []
                cursor: str | None = None
                while True:
                    params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
                    page = segmentation.get(
                        f"/v1/segments/{segment_id}/members", params=params, headers=auth(key)
                    ).json()
                    got += [m["profile_id"] for m in page["items"]]
                    cursor = page.get("next_cursor")
                    if not cursor:
                        break
                assert sorted(got) == want

            eventually(segment_final, timeout=300, interval=2)

            def webhooks_final() -> None:
                last: dict[str, str] = {}
                for event in sorted(receiver.events(), key=lambda e: e["data"]["profile_version"]):
                    last[event["data"]["profile_id"]] = event["type"]
                entered = sorted(p for p, kind in last.items() if kind == "segment.entered")
                assert entered == want

            eventually(webhooks_final, timeout=300, interval=2)
            contents: dict[str, set[bytes]] = defaultdict(set)
            for event in receiver.events():
                contents[event["id"]].add(orjson.dumps(event, option=orjson.OPT_SORT_KEYS))
            twice = [webhook_id for webhook_id, bodies_seen in contents.items() if len(bodies_seen) > 1]
            assert twice == [], f"{len(twice)} webhook ids arrived with different contents"
            assert receiver.rejected == 0
    finally:
        consumer.stop()
    crashes = consumer.log_path.read_text(errors="replace")
    assert crashes.count("workers started") == len(KILLS_AT) + 1


def _equal(got: tuple[int, int], want: tuple[int, int]) -> None:
    assert got == want
