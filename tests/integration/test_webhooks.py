"""Webhooks on PostgreSQL with a real HTTP receiver on 127.0.0.1: deliveries queued with the membership
changes that cause them, signed so that `standardwebhooks` verifies them, retried on the schedule with a
stable webhook-id (an injected clock: nothing sleeps for minutes), Retry-After, 410, redirects, automatic
disabling, redelivery, the SSRF guard at registration and at connection time, and one slow endpoint next
to a fast one."""

from __future__ import annotations

import ipaddress
import itertools
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from standardwebhooks import Webhook, WebhookVerificationError

from services.segmentation import webhooks
from services.segmentation.app import create_app
from services.segmentation.consumer import workers
from services.segmentation.delivery import Policy, WebhookDispatcher
from services.segmentation.models import WebhookDelivery, WebhookEndpoint
from services.segmentation.settings import SegmentationSettings
from services.segmentation.ssrf import Guard, IPAddress
from shared.consumer import ConsumerWorker
from shared.db import make_engine, utcnow
from shared.events import Event, ProfilesMerged, ProfileUpdatedV2
from shared.migrations import upgrade
from shared.web import WorkerThreads
from tests.support import ADMIN_TOKEN, FakeClock, add_tenant, auth, eventually, profile_updated

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


# -- a receiver --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """An HTTP server in a thread on 127.0.0.1 that records what it gets. The path picks the answer:
    `/ok` 200, `/fail` 500, `/busy` 429 with `Retry-After`, `/gone` 410, `/redirect` 302 to `/ok`,
    `/slow` 200 after `slow_s`; `answers` overrides a path's status. `stop` and `start` again keep the
    port (a receiver that goes down and comes back)."""

    port: int = 0
    slow_s: float = 3.0
    retry_after: str = "120"
    answers: dict[str, int] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0  # the most requests it was answering at once
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                with receiver._lock:
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
                if path == "/slow":
                    time.sleep(receiver.slow_s)
                with receiver._lock:
                    receiver.in_flight -= 1
                    receiver.requests.append(
                        Received(
                            path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                        )
                    )
                status = receiver.answers.get(path) or {
                    "/fail": 500,
                    "/busy": 429,
                    "/gone": 410,
                    "/redirect": 302,
                }.get(path, 200)
                self.send_response(status)
                if status == 302:
                    self.send_header("location", "/ok")
                if status in (429, 503):
                    self.send_header("retry-after", receiver.retry_after)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def got(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


# -- the service -------------------------------------------------------------------------------------------


@dataclass
class Hooks:
    client: TestClient
    engine: Engine
    profiles: ConsumerWorker
    tenant_id: UUID
    key: str
    other_key: str
    clock: FakeClock
    dispatcher: WebhookDispatcher

    def deliver(self, *events: Event) -> None:
        """Each event twice, as after a crash between the DB commit and the offset commit."""
        raw = [e.envelope(self.tenant_id).to_bytes() for e in events]
        self.profiles.apply(raw + raw)

    def endpoint(self, url: str, event_types: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        body = {"url": url, "event_types": event_types or ["segment.entered", "segment.exited"], **extra}
        response = self.client.post("/v1/webhook-endpoints", json=body, headers=auth(self.key))
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def segment(self, rule: dict[str, Any], name: str = "VIP") -> dict[str, Any]:
        response = self.client.post("/v1/segments", json={"name": name, "rule": rule}, headers=auth(self.key))
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def deliveries(self, endpoint: dict[str, Any], **params: str) -> list[dict[str, Any]]:
        response = self.client.get(
            f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", params=params, headers=auth(self.key)
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def read(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        response = self.client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=auth(self.key))
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def test_delivery(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(f"/v1/webhook-endpoints/{endpoint['id']}/test", headers=auth(self.key))
        assert response.status_code == 202, response.text
        queued: dict[str, Any] = response.json()
        return queued


def dispatcher(engine: Engine, clock: FakeClock, parallelism: int = 8, **policy: Any) -> WebhookDispatcher:
    return WebhookDispatcher(
        engine,
        policy=Policy(**{"timeout_s": 5.0, **policy}),
        guard=Guard(allow_private=True),
        clock=clock,
        rng=random.Random(1),
        poll_interval_s=0.02,
        parallelism=parallelism,
    )


@pytest.fixture
def hooks(clean_databases: dict[str, str]) -> Iterator[Hooks]:
    settings = SegmentationSettings(
        database_url=clean_databases["segmentation"],
        run_workers=False,
        run_migrations=False,
        admin_token=ADMIN_TOKEN,
        webhook_allow_private=True,
    )
    engine = make_engine(settings.database_url)
    worker = dict(workers(engine, settings))["segmentation-profiles"]
    assert isinstance(worker, ConsumerWorker)
    tenant_id, key = add_tenant(engine)
    _, other_key = add_tenant(engine)
    clock = FakeClock()
    with TestClient(create_app(settings)) as client:
        yield Hooks(client, engine, worker, tenant_id, key, other_key, clock, dispatcher(engine, clock))
    engine.dispose()


def profile(profile_id: UUID, version: int, total: str, **traits: Any) -> ProfileUpdatedV2:
    """A buyer of `total` in São Paulo (CEP 01310-100), with `traits` on top."""
    place = {"city": "São Paulo", "state": "SP", "zip": "01310100"}
    spent = {"orders_count": 1, "total_spent": Decimal(total), "average_order_value": Decimal(total)}
    return profile_updated(profile_id, version, **{**spent, "sources": ["site"], **place, **traits})


def verified(secret: str, request: Received) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


BIG = {"field": "total_spent", "op": "gte", "value": "100"}


# -- tests -------------------------------------------------------------------------------------------------


def test_entries_and_exits_are_delivered_signed_with_the_profiles_traits(
    hooks: Hooks, receiver: Receiver
) -> None:
    endpoint = hooks.endpoint(receiver.url("/ok"))
    secret = endpoint["secret"]
    segment = hooks.segment(BIG)
    maria, joao = uuid4(), uuid4()

    hooks.deliver(profile(maria, 1, "150.00"), profile(joao, 1, "20.00"))  # each twice
    assert hooks.dispatcher.dispatch_due() == 1
    [entered] = receiver.got()
    payload = verified(secret, entered)
    assert payload["type"] == "segment.entered"
    assert entered.headers["webhook-id"].startswith("msg_")
    assert entered.headers["content-type"] == "application/json"
    data = payload["data"]
    assert data["segment_id"] == segment["id"]
    assert data["segment_name"] == "VIP"
    assert data["profile_id"] == str(maria)
    assert data["profile_version"] == 1
    assert data["traits"]["total_spent"] == "150.00"
    assert data["traits"]["state"] == "SP"
    for personal in (b"01310100", "São Paulo".encode(), b"email", b"phone"):
        assert personal not in entered.body

    hooks.deliver(profile(maria, 2, "50.00"))
    assert hooks.dispatcher.dispatch_due() == 1
    exited = receiver.got()[1]
    assert verified(secret, exited)["type"] == "segment.exited"
    assert verified(secret, exited)["data"]["profile_version"] == 2
    assert exited.headers["webhook-id"] != entered.headers["webhook-id"]
    assert hooks.dispatcher.dispatch_due() == 0  # nothing left

    listed = hooks.deliveries(endpoint)
    assert [d["event_type"] for d in listed] == ["segment.exited", "segment.entered"]  # newest first
    for delivery in listed:
        assert delivery["status"] == "delivered"
        assert delivery["attempts"] == 1
        assert delivery["response_status"] == 200
        assert delivery["latency_ms"] >= 0
    assert {d["message_id"] for d in listed} == {r.headers["webhook-id"] for r in receiver.got()}


def test_a_new_segment_announces_its_members_and_filters_apply(hooks: Hooks, receiver: Receiver) -> None:
    ana, bia, caio = uuid4(), uuid4(), uuid4()
    hooks.deliver(*(profile(p, 1, "500.00") for p in (ana, bia, caio)))
    hooks.endpoint(receiver.url("/all"))
    hooks.endpoint(receiver.url("/exits"), event_types=["segment.exited"])
    vip = hooks.segment(BIG)  # evaluated in SQL at creation: three entries
    hooks.endpoint(receiver.url("/vip"), segment_ids=[vip["id"]])
    hooks.segment({"field": "orders_count", "op": "gte", "value": 1}, name="Buyers")  # three more
    while hooks.dispatcher.dispatch_due():
        pass
    entered = receiver.got("/all")
    assert len(entered) == 6
    assert {(r.payload["data"]["segment_name"], r.payload["data"]["profile_id"]) for r in entered} == {
        (name, str(p)) for name in ("VIP", "Buyers") for p in (ana, bia, caio)
    }
    assert all(r.payload["data"]["traits"]["total_spent"] == "500.00" for r in entered)
    assert receiver.got("/vip") == []  # subscribed after VIP's entries; Buyers is not its segment
    assert receiver.got("/exits") == []

    hooks.deliver(profile(ana, 2, "10.00"))  # leaves VIP only
    while hooks.dispatcher.dispatch_due():
        pass
    for path in ("/all", "/exits", "/vip"):
        [exited] = [r for r in receiver.got(path) if r.payload["type"] == "segment.exited"]
        assert exited.payload["data"]["segment_id"] == vip["id"]
        assert exited.payload["data"]["profile_id"] == str(ana)


def test_retries_keep_the_webhook_id_and_follow_the_schedule(hooks: Hooks, receiver: Receiver) -> None:
    endpoint = hooks.endpoint(receiver.url("/flaky"))
    receiver.answers["/flaky"] = 500
    hooks.segment(BIG)
    hooks.deliver(profile(uuid4(), 1, "150.00"))

    schedule = Policy().schedule_s
    for attempt in range(1, 4):
        assert hooks.dispatcher.dispatch_due() == 1, attempt
        assert hooks.dispatcher.dispatch_due() == 0  # not due again before its delay
        [delivery] = hooks.deliveries(endpoint)
        assert delivery["status"] == "pending"
        assert delivery["attempts"] == attempt
        assert delivery["response_status"] == 500
        wait = datetime.fromisoformat(delivery["next_attempt_at"]) - hooks.clock()
        assert schedule[attempt - 1] * 0.9 - 1 <= wait.total_seconds() <= schedule[attempt - 1] * 1.1
        hooks.clock.advance(seconds=wait.total_seconds() + 0.001)
    receiver.answers["/flaky"] = 204
    assert hooks.dispatcher.dispatch_due() == 1
    [delivery] = hooks.deliveries(endpoint)
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 4
    ids = {r.headers["webhook-id"] for r in receiver.got()}
    assert len(receiver.got()) == 4
    assert ids == {delivery["message_id"]}  # one id for every attempt
    bodies = {r.body for r in receiver.got()}
    assert len(bodies) == 1  # the same body too; only the timestamp and signature change
    for request in receiver.got():
        verified(endpoint["secret"], request)
    assert hooks.read(endpoint)["failing_since"] is None  # a success resets the clock


def test_a_delivery_fails_after_the_last_attempt(hooks: Hooks, receiver: Receiver) -> None:
    hooks.dispatcher = dispatcher(hooks.engine, hooks.clock, disable_after=timedelta(days=30))
    endpoint = hooks.endpoint(receiver.url("/fail"))
    hooks.test_delivery(endpoint)
    for _ in range(Policy().max_attempts):
        assert hooks.dispatcher.dispatch_due() == 1
        hooks.clock.advance(hours=30)
    assert hooks.dispatcher.dispatch_due() == 0
    [delivery] = hooks.deliveries(endpoint)
    assert delivery["status"] == "failed"
    assert delivery["attempts"] == 10
    assert delivery["next_attempt_at"] is None
    assert len(receiver.got("/fail")) == 10
    assert hooks.deliveries(endpoint, status="failed") == [delivery]
    assert hooks.deliveries(endpoint, status="pending") == []


def test_retry_after_is_honoured_and_pauses_the_endpoint(hooks: Hooks, receiver: Receiver) -> None:
    endpoint = hooks.endpoint(receiver.url("/busy"))
    first, second = hooks.test_delivery(endpoint), hooks.test_delivery(endpoint)
    assert hooks.dispatcher.dispatch_due() == 1  # 429: the endpoint is paused, the second one waits
    rows = {d["id"]: d for d in hooks.deliveries(endpoint)}
    assert rows[first["id"]]["response_status"] == 429
    assert rows[second["id"]]["attempts"] == 0
    wait = datetime.fromisoformat(rows[first["id"]]["next_attempt_at"]) - hooks.clock()
    assert 119 <= wait.total_seconds() <= 120  # Retry-After, longer than the schedule's 5 s
    hooks.clock.advance(seconds=60)
    assert hooks.dispatcher.dispatch_due() == 0  # the endpoint is paused: not even the second one
    receiver.answers["/busy"] = 200
    hooks.clock.advance(seconds=61)
    assert hooks.dispatcher.dispatch_due() == 2
    assert {d["status"] for d in hooks.deliveries(endpoint)} == {"delivered"}

    receiver.answers["/busy"] = 503
    receiver.retry_after = (hooks.clock() + timedelta(minutes=10)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    hooks.test_delivery(endpoint)
    assert hooks.dispatcher.dispatch_due() == 1
    latest = hooks.deliveries(endpoint)[0]
    wait = datetime.fromisoformat(latest["next_attempt_at"]) - hooks.clock()
    assert 540 <= wait.total_seconds() <= 601  # an HTTP date


def test_410_gone_disables_the_endpoint(hooks: Hooks, receiver: Receiver) -> None:
    endpoint = hooks.endpoint(receiver.url("/gone"))
    hooks.segment(BIG)
    first = hooks.test_delivery(endpoint)
    hooks.deliver(profile(uuid4(), 1, "150.00"))
    assert hooks.dispatcher.dispatch_due() == 1  # the test delivery: 410, and the endpoint is disabled
    read = hooks.read(endpoint)
    assert read["enabled"] is False
    assert read["disabled_reason"] == "gone"
    rows = {d["id"]: d for d in hooks.deliveries(endpoint)}
    assert rows.pop(first["id"])["response_status"] == 410
    [other] = rows.values()
    assert other["status"] == "failed"
    assert other["error"] == "endpoint_disabled"
    assert other["attempts"] == 0
    hooks.deliver(profile(uuid4(), 1, "150.00"))
    assert len(hooks.deliveries(endpoint)) == 2  # nothing is queued for a disabled endpoint
    assert hooks.dispatcher.dispatch_due() == 0
    assert len(receiver.got()) == 1
    response = hooks.client.post(f"/v1/webhook-endpoints/{endpoint['id']}/test", headers=auth(hooks.key))
    assert response.status_code == 409


def test_redirects_are_never_followed(hooks: Hooks, receiver: Receiver) -> None:
    endpoint = hooks.endpoint(receiver.url("/redirect"))
    hooks.test_delivery(endpoint)
    assert hooks.dispatcher.dispatch_due() == 1
    [delivery] = hooks.deliveries(endpoint)
    assert delivery["response_status"] == 302
    assert delivery["error"] == "redirect_not_followed"
    assert delivery["status"] == "pending"  # a failure: retried on the schedule
    assert [r.path for r in receiver.got()] == ["/redirect"]  # /ok was never called


def test_an_endpoint_failing_for_the_whole_period_is_disabled(hooks: Hooks, receiver: Receiver) -> None:
    hooks.dispatcher = dispatcher(hooks.engine, hooks.clock, disable_after=timedelta(hours=12))
    endpoint = hooks.endpoint(receiver.url("/fail"))
    hooks.test_delivery(endpoint)
    assert hooks.dispatcher.dispatch_due() == 1
    started = hooks.read(endpoint)["failing_since"]
    assert started is not None
    hooks.clock.advance(hours=6)
    hooks.test_delivery(endpoint)
    assert hooks.dispatcher.dispatch_due() == 2  # both fail; 6 h of failures only
    assert hooks.read(endpoint)["enabled"] is True
    assert hooks.read(endpoint)["failing_since"] == started
    hooks.clock.advance(hours=7)
    assert hooks.dispatcher.dispatch_due() == 1  # the first attempt to fail after 12 h disables it
    read = hooks.read(endpoint)
    assert read["enabled"] is False
    assert read["disabled_reason"] == "failing"
    assert {d["status"] for d in hooks.deliveries(endpoint)} == {"failed"}

    response = hooks.client.patch(
        f"/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": True}, headers=auth(hooks.key)
    )
    assert response.status_code == 200
    assert response.json()["enabled"] is True
    assert response.json()["failing_since"] is None
    assert response.json()["disabled_reason"] is None


def news(receiver: Receiver, person: UUID) -> list[tuple[str, int]]:
    """What the receiver got about `person`, in the order it arrived: (type, profile version)."""
    return [
        (r.payload["type"], r.payload["data"]["profile_version"])
        for r in sorted(receiver.got(), key=lambda r: r.at)
        if r.payload["data"]["profile_id"] == str(person)
    ]


def test_an_endpoint_gets_several_requests_at_once_and_each_profiles_news_in_order(
    hooks: Hooks, receiver: Receiver
) -> None:
    receiver.slow_s = 0.1
    hooks.endpoint(receiver.url("/slow"))
    hooks.segment(BIG)
    people = [uuid4() for _ in range(8)]
    for version, total in ((1, "150.00"), (2, "50.00"), (3, "150.00")):  # in, out, in again
        hooks.deliver(*(profile(p, version, total) for p in people))
    while hooks.dispatcher.dispatch_due():
        pass
    assert len(receiver.got()) == 24
    for person in people:
        assert news(receiver, person) == [
            ("segment.entered", 1),
            ("segment.exited", 2),
            ("segment.entered", 3),
        ]
    assert 1 < receiver.most_in_flight <= 8


def test_with_parallelism_1_an_endpoint_gets_everything_in_order_one_at_a_time(
    hooks: Hooks, receiver: Receiver
) -> None:
    hooks.endpoint(receiver.url("/ok"))
    hooks.segment(BIG)
    people = [uuid4() for _ in range(5)]
    for version, total in ((1, "150.00"), (2, "50.00")):
        hooks.deliver(*(profile(p, version, total) for p in people))
    one_at_a_time = dispatcher(hooks.engine, hooks.clock, parallelism=1)
    while one_at_a_time.dispatch_due():
        pass
    got = [(r.payload["data"]["profile_id"], r.payload["data"]["profile_version"]) for r in receiver.got()]
    assert got == [(str(p), 1) for p in people] + [(str(p), 2) for p in people]  # as they were made
    assert receiver.most_in_flight == 1


def test_one_slow_endpoint_does_not_delay_another(hooks: Hooks, receiver: Receiver) -> None:
    receiver.slow_s = 5.0
    slow = hooks.endpoint(receiver.url("/slow"))
    fast = hooks.endpoint(receiver.url("/ok"))
    live = WebhookDispatcher(
        hooks.engine, policy=Policy(timeout_s=10.0), guard=Guard(allow_private=True), poll_interval_s=0.05
    )
    stop = threading.Event()
    thread = threading.Thread(target=live.run, args=(stop,), daemon=True)
    thread.start()
    try:
        for _ in range(2):
            hooks.test_delivery(slow)
        time.sleep(0.5)  # the slow endpoint's first request is in progress
        started = time.monotonic()
        for _ in range(5):
            hooks.test_delivery(fast)
        eventually(lambda: _count(receiver, "/ok", 5), timeout=10)
        assert time.monotonic() - started < 3.5  # while the slow endpoint still answers its first
        assert len(receiver.got("/slow")) == 0
        eventually(lambda: _count(receiver, "/slow", 2), timeout=20)
    finally:
        stop.set()
        thread.join(15)
    slow_times = [r.at for r in receiver.got("/slow")]
    assert all(b - a >= 4.5 for a, b in itertools.pairwise(slow_times))  # one at a time
    assert {d["status"] for d in hooks.deliveries(slow)} == {"delivered"}


def test_a_queued_delivery_wakes_the_dispatcher_and_so_does_stopping(
    hooks: Hooks, receiver: Receiver
) -> None:
    endpoint = hooks.endpoint(receiver.url("/ok"))
    # It looks for due deliveries once a minute here: only the commit's wake-up call can get the delivery
    # sent within the test's time, and only the stop's can end its wait.
    live = WebhookDispatcher(hooks.engine, guard=Guard(allow_private=True), poll_interval_s=60)
    workers = WorkerThreads([("dispatcher", live)])
    workers.start()
    try:
        time.sleep(0.5)  # it found nothing and waits
        hooks.test_delivery(endpoint)
        eventually(lambda: _count(receiver, "/ok", 1), timeout=20)
    finally:
        workers.stop(timeout=20)
    assert not any(thread.is_alive() for thread in workers.threads)


def _count(receiver: Receiver, path: str, expected: int) -> None:
    assert len(receiver.got(path)) == expected


def test_redelivery_of_one_delivery_and_of_a_time_range(hooks: Hooks, receiver: Receiver) -> None:
    hooks.dispatcher = dispatcher(hooks.engine, hooks.clock, schedule_s=(1.0,))  # two attempts
    endpoint = hooks.endpoint(receiver.url("/down"))
    receiver.answers["/down"] = 500
    started = utcnow()
    queued = [hooks.test_delivery(endpoint) for _ in range(3)]
    for _ in range(2):
        while hooks.dispatcher.dispatch_due():
            pass
        hooks.clock.advance(seconds=5)
    assert {d["status"] for d in hooks.deliveries(endpoint)} == {"failed"}
    receiver.answers["/down"] = 200
    url = f"/v1/webhook-endpoints/{endpoint['id']}"

    one = hooks.client.post(f"{url}/deliveries/{queued[0]['id']}/redeliver", headers=auth(hooks.key))
    assert one.status_code == 202, one.text
    assert one.json()["message_id"] == queued[0]["message_id"]
    assert one.json()["redelivery_of"] == queued[0]["id"]
    assert one.json()["status"] == "pending"
    again = hooks.client.post(f"{url}/deliveries/{queued[0]['id']}/redeliver", headers=auth(hooks.key))
    assert again.status_code == 409  # already pending
    assert hooks.dispatcher.dispatch_due() == 1

    window = {"since": started.isoformat(), "until": (utcnow() + timedelta(seconds=1)).isoformat()}
    ranged = hooks.client.post(f"{url}/redeliver", json=window, headers=auth(hooks.key))
    assert ranged.status_code == 202, ranged.text
    assert ranged.json() == {"queued": 2}  # the first message was delivered by its redelivery
    assert hooks.dispatcher.dispatch_due() == 2
    delivered = [r for r in receiver.got() if r.headers.get("webhook-id") and r.path == "/down"][-3:]
    assert sorted(r.headers["webhook-id"] for r in delivered) == sorted(q["message_id"] for q in queued)
    everything = {**window, "include_delivered": True}
    ranged = hooks.client.post(f"{url}/redeliver", json=everything, headers=auth(hooks.key))
    assert ranged.json() == {"queued": 3}
    naive = hooks.client.post(
        f"{url}/redeliver", json={"since": "2026-11-20T00:00:00"}, headers=auth(hooks.key)
    )
    assert naive.status_code == 422
    backwards = {"since": window["until"], "until": window["since"]}
    assert hooks.client.post(f"{url}/redeliver", json=backwards, headers=auth(hooks.key)).status_code == 422


def test_a_rotation_signs_with_both_secrets_for_24_hours(hooks: Hooks, receiver: Receiver) -> None:
    endpoint = hooks.endpoint(receiver.url("/ok"))
    old = endpoint["secret"]
    rotated = hooks.client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=auth(hooks.key)
    )
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new.startswith("whsec_")
    assert new != old
    expires = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert timedelta(hours=23) < expires - utcnow() <= timedelta(hours=24)
    assert hooks.read(endpoint)["previous_secret_expires_at"] is not None

    hooks.test_delivery(endpoint)
    hooks.dispatcher.dispatch_due()
    during = receiver.got()[-1]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    verified(old, during)
    verified(new, during)

    hooks.clock.advance(hours=25)
    hooks.test_delivery(endpoint)
    hooks.dispatcher.dispatch_due()
    after = receiver.got()[-1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    verified(new, after)
    with pytest.raises(WebhookVerificationError):
        verified(old, after)


def test_secrets_are_shown_once_and_stored_sealed(hooks: Hooks, receiver: Receiver) -> None:
    endpoint = hooks.endpoint(receiver.url("/ok"), description="CRM")
    secret = endpoint["secret"]
    for response in (
        hooks.client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=auth(hooks.key)),
        hooks.client.get("/v1/webhook-endpoints", headers=auth(hooks.key)),
    ):
        assert response.status_code == 200
        assert "secret" not in response.text.replace("previous_secret_expires_at", "")
        assert secret.removeprefix("whsec_") not in response.text
    with Session(hooks.engine) as session:
        row = session.get(WebhookEndpoint, UUID(endpoint["id"]))
        assert row is not None
        assert secret.removeprefix("whsec_") not in row.secret
        assert webhooks.signing_secrets(row, utcnow()) == [secret]


def test_endpoints_are_validated_updated_and_deleted(hooks: Hooks, receiver: Receiver) -> None:
    post = hooks.client.post
    for body, loc in (
        ({"url": receiver.url("/ok"), "event_types": []}, "event_types"),
        ({"url": receiver.url("/ok"), "event_types": ["order.created"]}, "event_types"),
        (
            {"url": receiver.url("/ok"), "event_types": ["segment.entered"], "segment_ids": [str(uuid4())]},
            "segment_ids",
        ),
        ({"url": "https://169.254.169.254/latest", "event_types": ["segment.entered"]}, "url"),
        ({"url": "ftp://127.0.0.1/x", "event_types": ["segment.entered"]}, "url"),
        ({"url": receiver.url("/ok"), "event_types": ["segment.entered"], "extra": 1}, "(unknown field)"),
    ):
        response = post("/v1/webhook-endpoints", json=body, headers=auth(hooks.key))
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
        assert any(loc in error["loc"] for error in response.json()["errors"]), response.text
        assert "169.254.169.254" not in response.text
    other_segment = hooks.client.post(
        "/v1/segments", json={"name": "theirs", "rule": BIG}, headers=auth(hooks.other_key)
    ).json()
    response = post(
        "/v1/webhook-endpoints",
        json={
            "url": receiver.url("/ok"),
            "event_types": ["segment.entered"],
            "segment_ids": [other_segment["id"]],
        },
        headers=auth(hooks.key),
    )
    assert response.status_code == 422  # another tenant's segment

    endpoint = hooks.endpoint(receiver.url("/ok"), event_types=["segment.entered", "segment.entered"])
    assert endpoint["event_types"] == ["segment.entered"]
    url = f"/v1/webhook-endpoints/{endpoint['id']}"
    patched = hooks.client.patch(
        url, json={"event_types": ["profile.merged"], "description": "ERP"}, headers=auth(hooks.key)
    )
    assert patched.status_code == 200
    assert patched.json()["event_types"] == ["profile.merged"]
    assert patched.json()["description"] == "ERP"
    assert patched.json()["url"] == receiver.url("/ok")
    bads: list[dict[str, Any]] = [
        {"url": None},
        {"url": "https://169.254.169.254/"},
        {"event_types": []},
        {"enabled": None},
    ]
    for bad in bads:
        assert hooks.client.patch(url, json=bad, headers=auth(hooks.key)).status_code == 422, bad

    queued = hooks.test_delivery(endpoint)
    disabled = hooks.client.patch(url, json={"enabled": False}, headers=auth(hooks.key))
    assert disabled.json()["disabled_reason"] == "manual"
    [failed] = hooks.deliveries(endpoint)
    assert (failed["id"], failed["status"], failed["error"]) == (queued["id"], "failed", "endpoint_disabled")
    assert (
        hooks.client.post(f"{url}/deliveries/{queued['id']}/redeliver", headers=auth(hooks.key)).status_code
        == 409
    )
    hooks.client.patch(url, json={"enabled": True}, headers=auth(hooks.key))
    assert (
        hooks.client.post(f"{url}/deliveries/{queued['id']}/redeliver", headers=auth(hooks.key)).status_code
        == 202
    )

    for method, path in (
        ("GET", url),
        ("PATCH", url),
        ("DELETE", url),
        ("POST", f"{url}/test"),
        ("POST", f"{url}/rotate-secret"),
        ("GET", f"{url}/deliveries"),
        ("POST", f"{url}/deliveries/{queued['id']}/redeliver"),
    ):
        response = hooks.client.request(
            method,
            path,
            json={"description": "x"} if method == "PATCH" else None,
            headers=auth(hooks.other_key),
        )
        assert response.status_code == 404, (method, path)
    assert hooks.client.get("/v1/webhook-endpoints", headers=auth(hooks.other_key)).json()["items"] == []
    random_delivery = f"{url}/deliveries/{uuid4()}/redeliver"
    assert hooks.client.post(random_delivery, headers=auth(hooks.key)).status_code == 404

    assert hooks.client.delete(url, headers=auth(hooks.key)).status_code == 204
    assert hooks.client.get(url, headers=auth(hooks.key)).status_code == 404
    with Session(hooks.engine) as session:
        assert session.exec(select(WebhookDelivery)).all() == []


def test_private_addresses_need_the_development_setting(clean_databases: dict[str, str]) -> None:
    settings = SegmentationSettings(
        database_url=clean_databases["segmentation"], run_workers=False, run_migrations=False
    )
    assert settings.webhook_allow_private is False
    engine = make_engine(settings.database_url)
    _, key = add_tenant(engine)
    try:
        with TestClient(create_app(settings)) as client:
            for url, kind in (
                ("http://127.0.0.1:9/hook", "url.scheme"),
                ("https://127.0.0.1:9/hook", "url.loopback"),
                ("https://localhost/hook", "url.loopback"),
                ("https://10.0.0.1/hook", "url.private"),
                ("https://[::ffff:127.0.0.1]/hook", "url.ipv4_mapped"),
                ("https://100.64.0.1/hook", "url.cgnat"),
            ):
                response = client.post(
                    "/v1/webhook-endpoints",
                    json={"url": url, "event_types": ["segment.entered"]},
                    headers=auth(key),
                )
                assert response.status_code == 422, url
                assert response.json()["errors"][0]["type"] == kind
    finally:
        engine.dispose()


def test_the_address_is_checked_again_at_connection_time(hooks: Hooks, receiver: Receiver) -> None:
    """DNS rebinding: the host resolved to a public address at registration, to loopback now."""
    answers = {"hooks.example.com": ["93.184.215.14"]}

    def resolver(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in answers[host]]

    with Session(hooks.engine) as session:
        endpoint, _ = webhooks.create_endpoint(
            url=f"http://hooks.example.com:{receiver.port}/ok",
            event_types=["segment.entered"],
            segment_ids=None,
            description=None,
            tenant_id=hooks.tenant_id,
            guard=Guard(allow_private=True, resolver=resolver),
            session=session,
        )
        endpoint_id = endpoint.id
    answers["hooks.example.com"] = ["127.0.0.1"]
    strict = WebhookDispatcher(
        hooks.engine, guard=Guard(allow_private=False, resolver=resolver), clock=hooks.clock
    )
    read = {"id": str(endpoint_id)}
    hooks.test_delivery(read)
    assert strict.dispatch_due() == 1
    [delivery] = hooks.deliveries(read)
    assert delivery["error"] == "blocked_address:loopback"
    assert delivery["response_status"] is None
    assert receiver.got() == []  # no connection was made
    answers["hooks.example.com"] = ["93.184.215.14", "10.0.0.7"]
    hooks.clock.advance(seconds=10)
    assert strict.dispatch_due() == 1
    assert hooks.deliveries(read)[0]["error"] == "blocked_address:private"
    # Allowed (development setting): the connection goes to the checked address, the Host header stays.
    local = WebhookDispatcher(
        hooks.engine, guard=Guard(allow_private=True, resolver=resolver), clock=hooks.clock
    )
    answers["hooks.example.com"] = ["127.0.0.1"]
    hooks.clock.advance(minutes=10)
    assert local.dispatch_due() == 1
    [request] = receiver.got()
    assert request.headers["host"] == f"hooks.example.com:{receiver.port}"


def test_profile_merges_reach_their_subscribers_whatever_the_segment_filter(
    hooks: Hooks, receiver: Receiver
) -> None:
    vip = hooks.segment(BIG)
    merges = hooks.endpoint(receiver.url("/merges"), event_types=["profile.merged"], segment_ids=[vip["id"]])
    hooks.endpoint(receiver.url("/segments"))
    survivor, merged = uuid4(), uuid4()
    hooks.deliver(profile(survivor, 1, "150.00"), profile(merged, 1, "150.00"))
    merge_id = uuid4()
    hooks.deliver(ProfilesMerged(survivor_id=survivor, merged_id=merged, rule="email", merge_id=merge_id))
    while hooks.dispatcher.dispatch_due():
        pass
    [merge] = receiver.got("/merges")
    payload = verified(merges["secret"], merge)
    assert payload["type"] == "profile.merged"
    assert payload["data"] == {
        "survivor_id": str(survivor),
        "merged_id": str(merged),
        "merge_id": str(merge_id),
        "rule": "email",
    }
    kinds = sorted((r.payload["type"], r.payload["data"]["profile_id"]) for r in receiver.got("/segments"))
    assert kinds == sorted(
        [
            ("segment.entered", str(survivor)),
            ("segment.entered", str(merged)),
            ("segment.exited", str(merged)),
        ]
    )


def test_finished_deliveries_are_purged_after_the_retention_period(hooks: Hooks, receiver: Receiver) -> None:
    endpoint = hooks.endpoint(receiver.url("/ok"))
    hooks.test_delivery(endpoint)
    hooks.dispatcher.dispatch_due()
    hooks.test_delivery(endpoint)  # still pending: kept
    hooks.clock.advance(days=31)
    assert hooks.dispatcher.purge() == 1
    [left] = hooks.deliveries(endpoint)
    assert left["status"] == "pending"


def test_the_dispatcher_works_on_sqlite_too(tmp_path: Path, receiver: Receiver) -> None:
    """`make run` uses SQLite: no SKIP LOCKED there, the conditional lease update alone keeps one
    dispatcher per endpoint."""
    url = f"sqlite:///{tmp_path / 'segmentation.db'}"
    upgrade(ROOT / "services" / "segmentation", url)
    engine = make_engine(url)
    try:
        tenant_id, _ = add_tenant(engine)
        guard = Guard(allow_private=True)
        with Session(engine) as session:
            endpoint, secret = webhooks.create_endpoint(
                url=receiver.url("/ok"),
                event_types=["segment.entered"],
                segment_ids=None,
                description=None,
                tenant_id=tenant_id,
                guard=guard,
                session=session,
            )
            endpoint_id = endpoint.id
        with Session(engine) as session:
            webhooks.send_test(endpoint_id, tenant_id=tenant_id, session=session)
            webhooks.send_test(endpoint_id, tenant_id=tenant_id, session=session)
        clock = FakeClock()
        first, second = dispatcher(engine, clock), dispatcher(engine, clock)
        assert len(first.claim(10)) == 1
        assert second.claim(10) == []  # leased to the first
        clock.advance(minutes=5)  # the lease expired (a crashed dispatcher): the endpoint is free again
        [(claimed, token)] = second.claim(10)
        assert claimed == endpoint_id
        assert second.serve(claimed, token, threading.Event()) == 2
        assert len(receiver.got("/ok")) == 2
        for request in receiver.got("/ok"):
            verified(secret, request)
    finally:
        engine.dispose()
