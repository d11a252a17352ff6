"""End to end: the three services as processes, driven over real HTTP the way a seller would.

Orders go in at ingest; profiles (profile service) and segment members (segmentation) follow through
the real Kafka broker. Expected values are computed here from the orders sent, never read back.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ADMIN_TOKEN, auth, eventually, order_body

if TYPE_CHECKING:  # annotations only: pytest itself loads the conftest that defines the fixtures
    from tests.e2e.conftest import ServiceStack

pytestmark = pytest.mark.e2e

THRESHOLD = Decimal("200")
SOURCES = ("site", "mercadolivre", "shopee")


@dataclass
class Expected:
    orders_count: int = 0
    total_spent: Decimal = Decimal("0.00")

    def add(self, total: str) -> None:
        self.orders_count += 1
        self.total_spent += Decimal(total)


@dataclass
class Clients:
    ingest: httpx.Client
    profile: httpx.Client
    segmentation: httpx.Client


@pytest.fixture
def http(services: ServiceStack) -> Iterator[Clients]:
    """An HTTP client per service, as a seller's integration would hold them."""
    with (
        httpx.Client(base_url=services.ingest_url, timeout=15.0) as ingest,
        httpx.Client(base_url=services.profile_url, timeout=15.0) as profile,
        httpx.Client(base_url=services.segmentation_url, timeout=15.0) as segmentation,
    ):
        yield Clients(ingest=ingest, profile=profile, segmentation=segmentation)


def money(cents: int) -> str:
    return f"{Decimal(cents).scaleb(-2):.2f}"


def spelling(email: str, variant: int) -> str:
    """The same address as different channels send it: case and surrounding whitespace vary."""
    return (
        email,
        email.upper(),
        f"  {email.title()}",
        f"{email}\t ",
        f" {email.capitalize()} ",
    )[variant % 5]


def create_tenant(http: Clients, name: str) -> str:
    """Create a tenant with the admin token; return its key once profile and segmentation accept it."""
    response = http.ingest.post("/v1/tenants", json={"name": name}, headers=auth(ADMIN_TOKEN))
    assert response.status_code == 201, response.text
    key: str = response.json()["api_key"]

    def accepted_everywhere() -> None:
        assert http.profile.get("/v1/profiles", headers=auth(key)).status_code == 200
        assert http.segmentation.get("/v1/segments", headers=auth(key)).status_code == 200

    eventually(accepted_everywhere, timeout=30)
    return key


def post_order(http: Clients, key: str, body: dict[str, Any]) -> None:
    response = http.ingest.post("/v1/orders", json=body, headers=auth(key))
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "accepted"


def profile_by_email(http: Clients, key: str, email: str) -> dict[str, Any]:
    response = http.profile.get("/v1/profiles", params={"email": email}, headers=auth(key))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    assert len(items) == 1, f"{len(items)} profiles for one e-mail"
    return items[0]


def all_pages(client: httpx.Client, path: str, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "1000"} | ({"cursor": cursor} if cursor else {})
        response = client.get(path, params=params, headers=auth(key))
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def assert_profiles_match(http: Clients, key: str, expected: dict[str, Expected]) -> dict[str, str]:
    """Every customer's profile has exactly the expected traits; returns e-mail -> profile id."""
    ids: dict[str, str] = {}
    for email, want in expected.items():
        profile = profile_by_email(http, key, email)
        assert profile["email"] == email
        assert (profile["orders_count"], Decimal(profile["total_spent"])) == (
            want.orders_count,
            want.total_spent,
        ), email
        ids[email] = profile["id"]
    return ids


def assert_logs_clean(services: ServiceStack, secrets: Iterable[str]) -> None:
    """Every log line is a JSON object, and none quotes an e-mail (as sent or normalised) or a key."""
    needles = {s for secret in secrets for s in (secret, secret.strip(), secret.strip().lower())}
    for name, text in services.logs().items():
        lines = text.splitlines()
        assert lines, f"{name} wrote no log at all"
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
            except ValueError:
                pytest.fail(f"{name}.log line {number} is not JSON: {line[:200]!r}")
            assert isinstance(entry, dict), f"{name}.log line {number} is not a JSON object"
        lowered = text.lower()
        leaked = sorted(n for n in needles if n.lower() in lowered)
        # The count only: repeating the values would put them in the test report.
        assert not leaked, f"{name}'s log contains personal data or secrets ({len(leaked)} values)"


def test_seller_flow(services: ServiceStack, http: Clients) -> None:
    key = create_tenant(http, "Loja da Maria")
    other_key = create_tenant(http, "Loja do Vizinho")

    created = http.segmentation.post(
        "/v1/segments",
        json={"name": "R$200 or more", "rule": {"field": "total_spent", "op": "gte", "value": "200"}},
        headers=auth(key),
    )
    assert created.status_code == 201, created.text
    segment_id = created.json()["id"]
    assert created.json()["size"] == 0

    customers = [
        "ana.souza@example.com",
        "bruno.lima@example.com.br",
        "carla_m@example.org",
        "diego+loja@example.net",
        "elisa.rocha@example.com",
        "fabio@example.com.br",
        "gabi.nunes@example.org",  # a cent below the threshold: 199.99
        "heitor.alves@example.com",  # exactly on it: 200.00 (gte includes it)
    ]
    rng = random.Random(20261120)
    # Each of the first six customers gets at least one order, then random ones of random amounts.
    plan = [(i if i < 6 else rng.randrange(6), money(rng.randint(990, 8_990))) for i in range(24)]
    plan += [(6, "19.90"), (6, "80.10"), (6, "99.99"), (7, "120.00"), (7, "50.00"), (7, "30.00")]
    rng.shuffle(plan)

    expected = {email: Expected() for email in customers}
    sent: list[str] = []
    for n, (customer, total) in enumerate(plan):
        email = spelling(customers[customer], n)
        sent.append(email)
        body = order_body(
            f"E2E-{n:03d}",
            email,
            total,
            source=SOURCES[n % len(SOURCES)],
            placed_at=f"2026-11-{1 + n % 28:02d}T10:{n % 60:02d}:00-03:00",
        )
        post_order(http, key, body)
        expected[customers[customer]].add(total)
    assert len(plan) == 30
    members = {email for email, want in expected.items() if want.total_spent >= THRESHOLD}
    assert 1 < len(members) < len(customers) - 1, "the data must put customers on each side"

    ids = eventually(lambda: assert_profiles_match(http, key, expected), timeout=60, interval=0.3)
    # A lookup normalises the e-mail it is given, like ingest did.
    assert profile_by_email(http, key, "  ANA.Souza@EXAMPLE.com ")["id"] == ids["ana.souza@example.com"]
    listed = all_pages(http.profile, "/v1/profiles", key)
    assert sorted(p["id"] for p in listed) == sorted(ids.values())
    assert all("***@" in p["email"] for p in listed), "lists mask e-mails"

    want_members = sorted(ids[email] for email in members)

    def segment_current() -> None:
        got = all_pages(http.segmentation, f"/v1/segments/{segment_id}/members", key)
        assert sorted(m["profile_id"] for m in got) == want_members
        segment = http.segmentation.get(f"/v1/segments/{segment_id}", headers=auth(key))
        assert segment.json()["size"] == len(want_members)

    eventually(segment_current, timeout=60, interval=0.3)

    # Another seller's key sees none of it: not even whether the ids exist.
    some_profile = ids["ana.souza@example.com"]
    assert http.profile.get(f"/v1/profiles/{some_profile}", headers=auth(other_key)).status_code == 404
    assert http.profile.get(f"/v1/profiles/{some_profile}", headers=auth(key)).status_code == 200
    for path in (f"/v1/segments/{segment_id}", f"/v1/segments/{segment_id}/members"):
        assert http.segmentation.get(path, headers=auth(other_key)).status_code == 404
        assert http.segmentation.get(path, headers=auth(key)).status_code == 200
    other_lookup = http.profile.get("/v1/profiles", params={"email": customers[0]}, headers=auth(other_key))
    assert other_lookup.status_code == 200
    assert other_lookup.json()["items"] == []
    assert http.segmentation.get("/v1/segments", headers=auth(other_key)).json()["items"] == []

    eventually(lambda: assert_metrics(http, orders=len(plan)), timeout=20, interval=1)
    assert_logs_clean(services, [*customers, *sent, key, other_key])


def samples(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A service's /metrics, parsed: (name, labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def total(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, topic: str = "", **labels: str
) -> float:
    """The sum of the samples of `name` with these labels (`topic`: the Kafka topic, whatever prefix)."""
    wanted = set(labels.items())
    return sum(
        v
        for (n, got), v in found.items()
        if n == name and wanted <= got and dict(got).get("topic", "").endswith(topic)
    )


def assert_metrics(http: Clients, *, orders: int) -> None:
    """What the ops dashboards read: every process counts what went through it."""
    ingest, profile, segmentation = samples(http.ingest), samples(http.profile), samples(http.segmentation)
    assert total(ingest, "clientela_http_request_duration_seconds_count", route="/v1/orders") >= orders
    assert total(ingest, "clientela_events_published_total", topic="ingest.orders.v1") >= orders
    assert (
        total(profile, "clientela_events_consumed_total", topic="ingest.orders.v1", outcome="applied")
        >= orders
    )
    assert total(profile, "clientela_events_published_total", topic="profile.profiles.v1") > 0
    assert total(segmentation, "clientela_events_consumed_total", topic="profile.profiles.v1") > 0
    for found in (ingest, profile, segmentation):
        assert total(found, "clientela_outbox_backlog") == 0  # everything was published
        assert total(found, "clientela_dead_letters_total") == 0
    lags = [v for (n, _), v in profile.items() if n == "clientela_consumer_lag"]
    assert lags, "the profile consumers report their lag (every few seconds)"
    assert all(v >= 0 for v in lags)
    assert "/v1/profiles/{profile_id}" in {
        dict(labels).get("route") for (n, labels) in profile if n.startswith("clientela_http_request")
    }


@dataclass
class Poster:
    """Posts orders in order from a background thread, counting how many ingest has accepted.

    It holds before order `hold_at` until `resume` is set, so the test knows it cannot run out of
    orders before the crash.
    """

    url: str
    key: str
    bodies: list[dict[str, Any]]
    resend: set[int]
    hold_at: int
    posted: int = 0
    errors: list[str] = field(default_factory=list)
    resume: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="e2e-poster", daemon=True)
        self.thread.start()

    def join(self, timeout: float) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"poster still running after {timeout} s"

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, headers=auth(self.key), timeout=30.0) as client:
                for n, body in enumerate(self.bodies):
                    while n == self.hold_at and not self.resume.wait(0.1):
                        if self.stop.is_set():
                            return
                    if self.stop.is_set():
                        return
                    self._expect(client.post("/v1/orders", json=body), n, 202, "accepted")
                    if n in self.resend:  # the channel resends the very same order
                        self._expect(client.post("/v1/orders", json=body), n, 200, "duplicate")
                    self.posted = n + 1
        except Exception as exc:  # reported by the test, not lost in the thread
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _expect(self, response: httpx.Response, n: int, code: int, outcome: str) -> None:
        if response.status_code != code or response.json().get("status") != outcome:
            self.errors.append(f"order {n}: {response.status_code} {response.text[:200]}")


@pytest.mark.faults
def test_restart_counts_every_order_exactly_once(services: ServiceStack, http: Clients) -> None:
    total_orders, customer_count = 400, 40
    key = create_tenant(http, "Loja Grande")

    rng = random.Random(400_40)
    customers = [f"cliente{c:02d}.e2e@example.com" for c in range(customer_count)]
    expected = {email: Expected() for email in customers}
    bodies: list[dict[str, Any]] = []
    for n in range(total_orders):
        customer = customers[n if n < customer_count else rng.randrange(customer_count)]
        total = money(rng.randint(100, 50_000))
        expected[customer].add(total)
        bodies.append(
            order_body(
                f"R-{n:04d}",
                spelling(customer, rng.randrange(5)),
                total,
                source=SOURCES[n % len(SOURCES)],
                placed_at=f"2026-11-{1 + n % 28:02d}T{n % 24:02d}:00:00-03:00",
            )
        )

    third = total_orders // 3
    poster = Poster(services.ingest_url, key, bodies, resend={7, 150, 260, 399}, hold_at=2 * third)
    poster.start()
    try:

        def posted_at_least(count: int) -> None:
            assert not poster.errors, poster.errors
            assert poster.posted >= count

        eventually(lambda: posted_at_least(third), timeout=60)

        def profile_service_busy() -> None:
            assert all_pages(http.profile, "/v1/profiles", key)

        eventually(profile_service_busy, timeout=30)  # crash it mid-stream, not before it began
        services.kill("profile")
        killed_at = poster.posted
        # Ingest keeps accepting orders while the profile service is down (up to the hold).
        eventually(lambda: posted_at_least(2 * third), timeout=60)
        assert killed_at < 2 * third, "no order was posted while the profile service was down"
        # Restart, and let the last third arrive while it starts up.
        services.start("profile", wait=False)
        poster.resume.set()
        services.wait_ready("profile")
        poster.join(timeout=60)
    finally:
        poster.stop.set()
        if poster.thread is not None:
            poster.thread.join(30)
    assert not poster.errors, poster.errors
    assert poster.posted == total_orders

    def every_order_counted_once() -> None:
        profiles = all_pages(http.profile, "/v1/profiles", key)
        assert sum(p["orders_count"] for p in profiles) == total_orders
        assert len(profiles) == customer_count
        assert_profiles_match(http, key, expected)

    eventually(every_order_counted_once, timeout=90, interval=0.5)
    # Redeliveries after the crash, if any are still in flight, must not count anything again.
    time.sleep(2)
    every_order_counted_once()

    assert_logs_clean(services, [*customers, *(b["customer"]["email"] for b in bodies), key])
