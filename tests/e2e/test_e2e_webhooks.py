"""End to end: webhooks from the segmentation service (a process) to a seller's receiver (in this test),
verified with the `standardwebhooks` package as a seller's system would.

Orders go in at ingest; profiles enter a segment and `segment.entered` arrives signed; an order is
cancelled and `segment.exited` arrives; the receiver goes down, more orders come in, the receiver comes
back: every delivery arrives, and no event ever arrives under two different webhook-ids.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.support import ADMIN_TOKEN, auth, eventually, order_body

if TYPE_CHECKING:  # annotations only: pytest itself loads the conftest that defines the fixtures
    from tests.e2e.conftest import ServiceStack

pytestmark = pytest.mark.e2e

# The receiver is on 127.0.0.1: the development-only setting lets the service call it. Retries every
# half second (instead of the production schedule's minutes and hours) so that a receiver that is down
# for a while gets everything within the test's time.
WEBHOOK_ENV = {
    "SEGMENTATION_WEBHOOK_ALLOW_PRIVATE": "true",
    "SEGMENTATION_WEBHOOK_RETRY_SCHEDULE_S": json.dumps([0.5] * 120),
    "SEGMENTATION_WEBHOOK_POLL_INTERVAL_S": "0.05",
}


@dataclass
class SellerReceiver:
    """The seller's webhook receiver: verifies each request with the endpoint's secret and records it
    (an unverifiable one gets 400). `stop` and `start` again keep its port."""

    secret: str = ""
    port: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                except WebhookVerificationError:
                    with receiver._lock:
                        receiver.rejected += 1
                    self.send_response(400)
                else:
                    with receiver._lock:
                        receiver.received.append({"id": headers["webhook-id"], **payload})
                    self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/clientela"

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)


@pytest.fixture
def hooked(services: ServiceStack) -> ServiceStack:
    """The three services, segmentation restarted with the webhook settings above."""
    segmentation = services.services["segmentation"]
    segmentation.stop()
    segmentation.env.update(WEBHOOK_ENV)
    services.start("segmentation")
    return services


@pytest.fixture
def receiver() -> Iterator[SellerReceiver]:
    server = SellerReceiver()
    server.start()
    yield server
    server.stop()


@pytest.mark.faults
def test_webhooks_arrive_signed_once_per_event_across_a_receiver_outage(
    hooked: ServiceStack, receiver: SellerReceiver
) -> None:
    with (
        httpx.Client(base_url=hooked.ingest_url, timeout=15.0) as ingest,
        httpx.Client(base_url=hooked.profile_url, timeout=15.0) as profiles,
        httpx.Client(base_url=hooked.segmentation_url, timeout=15.0) as segmentation,
    ):
        created = ingest.post("/v1/tenants", json={"name": "Loja Webhooks"}, headers=auth(ADMIN_TOKEN))
        assert created.status_code == 201, created.text
        key = created.json()["api_key"]
        eventually(lambda: _ok(segmentation.get("/v1/segment-templates", headers=auth(key))), timeout=30)
        eventually(lambda: _ok(profiles.get("/v1/profiles", headers=auth(key))), timeout=30)

        segment = segmentation.post(
            "/v1/segments",
            json={"name": "R$200 or more", "rule": {"field": "total_spent", "op": "gte", "value": "200"}},
            headers=auth(key),
        )
        assert segment.status_code == 201, segment.text
        endpoint = segmentation.post(
            "/v1/webhook-endpoints",
            json={"url": receiver.url, "event_types": ["segment.entered", "segment.exited"]},
            headers=auth(key),
        )
        assert endpoint.status_code == 201, endpoint.text
        receiver.secret = endpoint.json()["secret"]
        endpoint_id = endpoint.json()["id"]

        def order(number: str, email: str, total: str, trace: str | None = None, **extra: Any) -> None:
            headers = auth(key) if trace is None else {**auth(key), "X-Request-Id": trace}
            response = ingest.post(
                "/v1/orders", json=order_body(number, email, total, **extra), headers=headers
            )
            assert response.status_code == 202, response.text

        def profile_id(email: str) -> str:
            found = profiles.get("/v1/profiles", params={"email": email}, headers=auth(key)).json()["items"]
            assert len(found) == 1
            return str(found[0]["id"])

        def arrived(expected: set[tuple[str, str]]) -> None:
            got = {(e["type"], e["data"]["profile_id"]) for e in receiver.events()}
            assert got == expected

        # Two customers enter the segment (one with two orders), one stays out.
        order("W-1", "ana.webhook@example.com", "250.00")
        order("W-2", "bruno.webhook@example.com", "150.00")
        order("W-3", "carla.webhook@example.com", "120.00")
        order("W-4", "carla.webhook@example.com", "100.00")
        ana = eventually(lambda: profile_id("ana.webhook@example.com"), timeout=60)
        carla = eventually(lambda: profile_id("carla.webhook@example.com"), timeout=60)
        bruno = eventually(lambda: profile_id("bruno.webhook@example.com"), timeout=60)
        expected = {("segment.entered", ana), ("segment.entered", carla)}
        eventually(lambda: arrived(expected), timeout=60, interval=0.2)

        # Ana's order is cancelled: she leaves.
        order(
            "W-1", "ana.webhook@example.com", "250.00", status="cancelled", updated_at="2026-11-21T10:00:00Z"
        )
        expected.add(("segment.exited", ana))
        eventually(lambda: arrived(expected), timeout=60, interval=0.2)

        # The receiver goes down; Bruno enters, Carla leaves, Diego arrives and enters.
        receiver.stop()
        order("W-5", "bruno.webhook@example.com", "100.00")
        order(
            "W-4", "carla.webhook@example.com", "100.00", status="returned", updated_at="2026-11-21T10:00:00Z"
        )
        order("W-6", "diego.webhook@example.com", "900.00", trace="trace-order-w6")
        diego = eventually(lambda: profile_id("diego.webhook@example.com"), timeout=60)
        expected |= {("segment.entered", bruno), ("segment.exited", carla), ("segment.entered", diego)}

        def failing_while_down() -> None:
            deliveries = segmentation.get(
                f"/v1/webhook-endpoints/{endpoint_id}/deliveries",
                params={"status": "pending"},
                headers=auth(key),
            ).json()["items"]
            assert len(deliveries) == 3
            assert all(d["attempts"] >= 2 and d["error"] == "connection_failed" for d in deliveries)

        eventually(failing_while_down, timeout=60, interval=0.2)
        receiver.start()  # back, on the same port
        eventually(lambda: arrived(expected), timeout=60, interval=0.2)

        events = receiver.events()
        assert receiver.rejected == 0
        ids_per_event: dict[tuple[str, str, int], set[str]] = {}
        for event in events:
            key_of = (event["type"], event["data"]["profile_id"], event["data"]["profile_version"])
            ids_per_event.setdefault(key_of, set()).add(event["id"])
            assert event["data"]["segment_id"] == segment.json()["id"]
            assert event["data"]["segment_name"] == "R$200 or more"
        assert all(len(ids) == 1 for ids in ids_per_event.values()), "an event arrived under two ids"
        assert len(ids_per_event) == len(expected)
        body = json.dumps(events)
        for personal in ("@example.com", "webhook@", "ana.", "carla."):
            assert personal not in body

        def all_delivered() -> list[dict[str, Any]]:
            # The receiver keeps an event when it arrives, before it answers: the delivery is marked
            # delivered once the answer is back, a moment later.
            found: list[dict[str, Any]] = segmentation.get(
                f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=auth(key)
            ).json()["items"]
            assert len(found) == len(expected)
            assert {d["status"] for d in found} == {"delivered"}
            return found

        deliveries = eventually(all_delivered, timeout=30, interval=0.2)
        assert {d["message_id"] for d in deliveries} == {e["id"] for e in events}
        assert sum(1 for d in deliveries if d["attempts"] > 1) == 3  # the ones sent while it was down

    # The correlation id follows Diego's order from its POST (the request id) through Kafka to the webhook
    # attempts that told the seller he entered the segment.
    logs = hooked.logs()
    traced = {
        name: [json.loads(line) for line in text.splitlines() if "trace-order-w6" in line]
        for name, text in logs.items()
    }
    assert any(e.get("request_id") == "trace-order-w6" for e in traced["ingest"])
    attempts = [e for e in traced["segmentation"] if e["msg"] == "webhook attempt"]
    assert attempts, "the webhook attempts for Diego's entry are logged with the order's correlation id"
    assert all(e["correlation_id"] == "trace-order-w6" for e in attempts)
    assert any(200 <= (e.get("status") or 0) < 300 for e in attempts), "and the one that got through"

    logs = hooked.logs()
    assert receiver.secret.removeprefix("whsec_") not in logs["segmentation"]
    for email in ("ana.webhook@example.com", "carla.webhook@example.com", "diego.webhook@example.com"):
        assert all(email not in text for text in logs.values())


def _ok(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
