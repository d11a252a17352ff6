"""Segment membership on PostgreSQL: the segment lifecycle (create with a purpose, PATCH, DELETE), full
evaluations in the background with progress, time-relative rules re-evaluated on a schedule (an injected
clock: nothing sleeps), the history of entries and exits and the statistics computed from it, exports
(CSV and JSON Lines, streamed, filtered by consent) and SegmentMembershipChanged v2 on the outbox.
Profile events go through the real consumer code, each delivered twice."""

from __future__ import annotations

import csv
import io
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select
from standardwebhooks import Webhook

from services.segmentation import export
from services.segmentation.app import create_app
from services.segmentation.consumer import workers
from services.segmentation.delivery import WebhookDispatcher
from services.segmentation.evaluations import SegmentEvaluator
from services.segmentation.models import (
    Segment,
    SegmentEvaluation,
    SegmentMember,
    SegmentMembershipEvent,
    WebhookDelivery,
    WebhookEndpoint,
)
from services.segmentation.settings import SegmentationSettings
from services.segmentation.ssrf import Guard
from shared.consumer import ConsumerWorker
from shared.db import make_engine, utcnow
from shared.events import Envelope, Event, ProfileUpdatedV2, SegmentMembershipChangedV2, decode
from shared.infra import OutboxMessage
from shared.migrations import downgrade, upgrade
from shared.outbox import open_body
from tests.support import ADMIN_TOKEN, FakeClock, add_tenant, auth, profile_updated

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Service:
    client: TestClient
    engine: Engine
    profiles: ConsumerWorker
    evaluator: SegmentEvaluator
    clock: FakeClock
    tenant_id: UUID
    key: str
    other_key: str

    def deliver(self, *events: Event) -> None:
        """Each event twice, as after a crash between the DB commit and the offset commit."""
        raw = [e.envelope(self.tenant_id).to_bytes() for e in events]
        self.profiles.apply(raw + raw)

    def create(self, rule: dict[str, Any], name: str = "s", **extra: Any) -> dict[str, Any]:
        body = {"name": name, "rule": rule, **extra}
        response = self.client.post("/v1/segments", json=body, headers=auth(self.key))
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def get(self, path: str, key: str | None = None, **params: Any) -> Any:
        response = self.client.get(path, params=params, headers=auth(key or self.key))
        assert response.status_code == 200, response.text
        return response.json()

    def members(self, segment: dict[str, Any]) -> set[UUID]:
        items = self.get(f"/v1/segments/{segment['id']}/members", limit=1000)["items"]
        return {UUID(m["profile_id"]) for m in items}

    def announced(self) -> list[SegmentMembershipChangedV2]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(OutboxMessage)
                .where(OutboxMessage.event_type == "segment.membership_changed")
                .order_by(col(OutboxMessage.id))
            ).all()
        events = [decode(Envelope.from_bytes(open_body(r.body))) for r in rows]
        assert all(isinstance(e, SegmentMembershipChangedV2) for e in events)
        return [e for e in events if isinstance(e, SegmentMembershipChangedV2)]

    def history(self, segment_id: UUID | str) -> list[tuple[str, UUID, str]]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(SegmentMembershipEvent)
                .where(SegmentMembershipEvent.segment_id == UUID(str(segment_id)))
                .order_by(col(SegmentMembershipEvent.id))
            ).all()
        return [(r.change, r.profile_id, r.reason) for r in rows]


def _service(url: str, *, inline_max: int, chunk: int) -> Iterator[Service]:
    settings = SegmentationSettings(
        database_url=url,
        run_workers=False,
        run_migrations=False,
        admin_token=ADMIN_TOKEN,
        webhook_allow_private=True,
        evaluate_inline_max_profiles=inline_max,
    )
    engine = make_engine(settings.database_url)
    worker = dict(workers(engine, settings))["segmentation-profiles"]
    assert isinstance(worker, ConsumerWorker)
    clock = FakeClock()
    evaluator = SegmentEvaluator(engine, every=timedelta(hours=24), chunk=chunk, clock=clock)
    tenant_id, key = add_tenant(engine)
    _, other_key = add_tenant(engine)
    with TestClient(create_app(settings)) as client:
        yield Service(client, engine, worker, evaluator, clock, tenant_id, key, other_key)
    engine.dispose()


@pytest.fixture
def seg(clean_databases: dict[str, str]) -> Iterator[Service]:
    """Small tenants: segments are evaluated within the request."""
    yield from _service(clean_databases["segmentation"], inline_max=5000, chunk=1000)


@pytest.fixture
def bg(clean_databases: dict[str, str]) -> Iterator[Service]:
    """Every evaluation in the background, two profiles per step."""
    yield from _service(clean_databases["segmentation"], inline_max=0, chunk=2)


def spender(profile_id: UUID, total: str, version: int = 1, **traits: Any) -> ProfileUpdatedV2:
    return profile_updated(
        profile_id,
        version,
        orders_count=1,
        total_spent=Decimal(total),
        average_order_value=Decimal(total),
        state="SP",
        **traits,
    )


BIG = {"field": "total_spent", "op": "gte", "value": "100"}


# -- a receiver of webhooks --------------------------------------------------------------------------------


@dataclass
class Receiver:
    bodies: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def endpoint(svc: Service, url: str, **extra: Any) -> dict[str, Any]:
    body = {"url": url, "event_types": ["segment.entered", "segment.exited"], **extra}
    response = svc.client.post("/v1/webhook-endpoints", json=body, headers=auth(svc.key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def dispatcher(svc: Service) -> WebhookDispatcher:
    return WebhookDispatcher(svc.engine, guard=Guard(allow_private=True), clock=svc.clock)


# -- the lifecycle -----------------------------------------------------------------------------------------


def test_create_answers_with_members_purpose_and_the_evaluation(seg: Service) -> None:
    ana, bia = uuid4(), uuid4()
    seg.deliver(spender(ana, "150.00"), spender(bia, "50.00"))
    created = seg.create(BIG, name="VIP", purpose="marketing_email")
    assert created["size"] == 1
    assert created["purpose"] == "marketing_email"
    assert created["time_relative"] is False
    evaluation = created["evaluation"]
    assert evaluation["reason"] == "segment_created"
    assert evaluation["status"] == "done"
    assert (evaluation["profiles_total"], evaluation["processed"], evaluation["progress"]) == (2, 2, 1.0)
    assert (evaluation["entered"], evaluation["exited"]) == (1, 0)
    assert evaluation["duration_s"] is not None
    assert seg.members(created) == {ana}
    assert seg.get(f"/v1/segments/{created['id']}")["evaluation"]["id"] == evaluation["id"]
    listed = seg.get(f"/v1/segments/{created['id']}/evaluations")["items"]
    assert [e["id"] for e in listed] == [evaluation["id"]]
    assert seg.get(f"/v1/segments/{created['id']}/evaluations/{evaluation['id']}") == evaluation

    relative = seg.create({"field": "last_order_at", "op": "within_last_days", "value": 30})
    assert relative["time_relative"] is True
    bad = seg.client.post(
        "/v1/segments", json={"name": "x", "rule": BIG, "purpose": "telepathy"}, headers=auth(seg.key)
    )
    assert bad.status_code == 422


def test_patch_changes_name_purpose_and_rule(seg: Service) -> None:
    ana, bia = uuid4(), uuid4()
    seg.deliver(spender(ana, "150.00"), spender(bia, "500.00"))
    created = seg.create(BIG, name="VIP", purpose="marketing_sms")
    path = f"/v1/segments/{created['id']}"

    renamed = seg.client.patch(path, json={"name": "Clientes VIP", "purpose": None}, headers=auth(seg.key))
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["purpose"]) == ("Clientes VIP", None)
    assert renamed.json()["rule"] == created["rule"]
    assert renamed.json()["evaluation"]["id"] == created["evaluation"]["id"]  # no new evaluation
    assert seg.members(created) == {ana, bia}

    same_rule = seg.client.patch(path, json={"rule": BIG}, headers=auth(seg.key))
    assert same_rule.json()["evaluation"]["id"] == created["evaluation"]["id"]

    higher = {"field": "total_spent", "op": "gte", "value": "300"}
    changed = seg.client.patch(path, json={"rule": higher}, headers=auth(seg.key))
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["rule"] == {**higher, "value": "300.00"}  # stored in its canonical form
    assert body["size"] == 1
    assert body["evaluation"]["reason"] == "rule_changed"
    assert (body["evaluation"]["status"], body["evaluation"]["exited"]) == ("done", 1)
    assert seg.members(created) == {bia}
    exit_event = seg.announced()[-1]
    assert (exit_event.change, exit_event.profile_id, exit_event.reason) == ("exited", ana, "rule_changed")
    assert exit_event.segment_name == "Clientes VIP"
    assert seg.history(created["id"])[-1] == ("exited", ana, "rule_changed")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"rule": {"all": [BIG, {"field": "state", "op": "eq", "value": 12}]}}, "rule.all[1].value"),
        ({"rule": None}, None),
        ({"name": None}, None),
        ({"name": ""}, None),
        ({"colour": "blue"}, None),
        ({"purpose": "telepathy"}, None),
    ],
)
def test_patch_refuses_what_is_not_valid(seg: Service, body: dict[str, Any], path: str | None) -> None:
    created = seg.create(BIG)
    response = seg.client.patch(f"/v1/segments/{created['id']}", json=body, headers=auth(seg.key))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if path is not None:
        assert [e["path"] for e in response.json()["errors"]] == [path]
    assert seg.get(f"/v1/segments/{created['id']}")["rule"] == created["rule"]


def test_another_tenant_gets_404_on_every_segment_route(seg: Service) -> None:
    created = seg.create(BIG)
    base = f"/v1/segments/{created['id']}"
    evaluation = created["evaluation"]["id"]
    calls = [
        ("GET", base, None),
        ("PATCH", base, {"name": "mine now"}),
        ("GET", f"{base}/members", None),
        ("GET", f"{base}/export", None),
        ("GET", f"{base}/stats", None),
        ("GET", f"{base}/history", None),
        ("GET", f"{base}/evaluations", None),
        ("POST", f"{base}/evaluations", None),
        ("GET", f"{base}/evaluations/{evaluation}", None),
        ("DELETE", base, None),
    ]
    for method, url, body in calls:
        response = seg.client.request(method, url, json=body, headers=auth(seg.other_key))
        assert response.status_code == 404, (method, url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert seg.get(base)["name"] == "s"
    unknown = seg.client.get(f"{base}/evaluations/{uuid4()}", headers=auth(seg.key))
    assert unknown.status_code == 404


def test_delete_removes_members_history_and_stops_webhooks(seg: Service, receiver: Receiver) -> None:
    ana, bia = uuid4(), uuid4()
    seg.deliver(spender(ana, "150.00"))
    vip = seg.create(BIG, name="VIP")
    other = seg.create({"field": "orders_count", "op": "gte", "value": 1}, name="Buyers")
    only_vip = endpoint(seg, receiver.url, segment_ids=[vip["id"]])
    every = endpoint(seg, receiver.url)
    seg.deliver(spender(bia, "300.00"))  # enters both: a pending delivery per endpoint and segment
    with Session(seg.engine) as session:
        pending = session.exec(select(WebhookDelivery).where(WebhookDelivery.status == "pending")).all()
        assert sorted(str(d.segment_id) for d in pending) == sorted([vip["id"], vip["id"], other["id"]])

    response = seg.client.delete(f"/v1/segments/{vip['id']}", headers=auth(seg.key))
    assert response.status_code == 204
    assert seg.client.get(f"/v1/segments/{vip['id']}", headers=auth(seg.key)).status_code == 404
    assert seg.client.delete(f"/v1/segments/{vip['id']}", headers=auth(seg.key)).status_code == 404
    with Session(seg.engine) as session:
        segment_id = UUID(vip["id"])
        assert session.exec(select(SegmentMember).where(SegmentMember.segment_id == segment_id)).all() == []
        assert seg.history(segment_id) == []
        assert (
            session.exec(select(SegmentEvaluation).where(SegmentEvaluation.segment_id == segment_id)).all()
            == []
        )
        deliveries = session.exec(select(WebhookDelivery)).all()
        stopped = [d for d in deliveries if str(d.segment_id) == vip["id"]]
        assert {(d.status, d.error) for d in stopped} == {("failed", "segment_deleted")}
        assert [d.status for d in deliveries if str(d.segment_id) == other["id"]] == ["pending"]
        filtered = session.get(WebhookEndpoint, UUID(only_vip["id"]))
        assert filtered is not None
        assert filtered.segment_ids == []
    # Consumers of the Kafka topic learn that both members left.
    exits = [e for e in seg.announced() if e.reason == "segment_deleted"]
    assert sorted((e.change, e.profile_id) for e in exits) == sorted([("exited", ana), ("exited", bia)])
    assert all(e.traits is not None and e.segment_name == "VIP" for e in exits)

    # Later changes send nothing about it; the other segment goes on.
    seg.deliver(spender(ana, "10.00", version=2))
    with Session(seg.engine) as session:
        after = session.exec(select(WebhookDelivery).where(WebhookDelivery.status == "pending")).all()
    assert {str(d.segment_id) for d in after} == {other["id"]}
    assert {d.endpoint_id for d in after} == {UUID(every["id"])}
    assert seg.members(other) == {ana, bia}


# -- background evaluation -------------------------------------------------------------------------------


def _five(svc: Service) -> list[UUID]:
    ids = sorted(uuid4() for _ in range(5))
    svc.deliver(
        *(spender(p, total) for p, total in zip(ids, ["50", "150", "250", "350", "450"], strict=True))
    )
    return ids


def test_a_large_tenant_is_evaluated_in_the_background_with_progress(bg: Service) -> None:
    ids = _five(bg)
    created = bg.create({"field": "total_spent", "op": "gte", "value": "200"})
    assert created["size"] == 0
    assert created["evaluation"]["status"] == "queued"
    assert (created["evaluation"]["profiles_total"], created["evaluation"]["progress"]) == (5, 0.0)
    path = f"/v1/segments/{created['id']}/evaluations/{created['evaluation']['id']}"

    claimed = bg.evaluator.claim()
    assert claimed is not None
    seen = []
    while bg.evaluator.step(claimed):
        progress = bg.get(path)
        seen.append((progress["status"], progress["processed"], progress["progress"]))
    assert seen == [("running", 2, 0.4), ("running", 4, 0.8), ("running", 5, 1.0)]
    done = bg.get(path)
    assert (done["status"], done["progress"], done["entered"], done["exited"]) == ("done", 1.0, 3, 0)
    assert done["finished_at"] is not None
    assert bg.members(created) == set(ids[2:])
    assert bg.get(f"/v1/segments/{created['id']}")["size"] == 3
    assert {(e.change, e.reason) for e in bg.announced()} == {("entered", "segment_created")}
    assert bg.evaluator.claim() is None


def test_patching_the_rule_re_evaluates_in_the_background_and_cancels_the_old_run(bg: Service) -> None:
    ids = _five(bg)
    created = bg.create({"field": "total_spent", "op": "gte", "value": "200"})
    first = bg.evaluator.claim()
    assert first is not None
    assert bg.evaluator.step(first)  # one chunk done; then the rule changes

    lower = {"field": "total_spent", "op": "gte", "value": "100"}
    changed = bg.client.patch(f"/v1/segments/{created['id']}", json={"rule": lower}, headers=auth(bg.key))
    assert changed.status_code == 200, changed.text
    evaluation = changed.json()["evaluation"]
    assert (evaluation["reason"], evaluation["status"]) == ("rule_changed", "queued")
    assert evaluation["id"] != created["evaluation"]["id"]
    assert not bg.evaluator.step(first)  # the old run stops at its next chunk
    old = bg.get(f"/v1/segments/{created['id']}/evaluations/{created['evaluation']['id']}")
    assert old["status"] == "cancelled"

    # Profile events keep being applied meanwhile, with the new rule.
    bg.deliver(spender(ids[0], "120", version=2))
    assert bg.evaluator.run_pending() == 1
    done = bg.get(f"/v1/segments/{created['id']}")["evaluation"]
    assert (done["id"], done["status"], done["processed"]) == (evaluation["id"], "done", 5)
    assert bg.members(created) == set(ids)
    entries = [e.profile_id for e in bg.announced() if e.change == "entered"]
    assert sorted(entries) == sorted(ids)  # each one announced once, whichever path put it in
    assert sorted(p for _, p, _ in bg.history(created["id"])) == sorted(ids)
    listed = bg.get(f"/v1/segments/{created['id']}/evaluations")["items"]
    assert [e["status"] for e in listed] == ["done", "cancelled"]


def test_an_evaluation_can_be_requested_and_a_lost_worker_is_taken_over(bg: Service) -> None:
    ids = _five(bg)
    created = bg.create({"field": "total_spent", "op": "gte", "value": "200"})
    assert bg.evaluator.run_pending() == 1
    # Someone removed a member by hand: a requested evaluation puts things right.
    with Session(bg.engine) as session:
        member = session.get(SegmentMember, (UUID(created["id"]), ids[4]))
        session.delete(member)
        session.commit()
    requested = bg.client.post(f"/v1/segments/{created['id']}/evaluations", headers=auth(bg.key))
    assert requested.status_code == 202
    again = bg.client.post(f"/v1/segments/{created['id']}/evaluations", headers=auth(bg.key))
    assert again.json()["id"] == requested.json()["id"]  # one pending evaluation per segment
    claimed = bg.evaluator.claim()
    assert claimed is not None
    assert bg.evaluator.step(claimed)
    # That worker dies; its lease runs out and another one resumes after the last chunk it committed.
    bg.clock.advance(minutes=10)
    successor = bg.evaluator.claim()
    assert successor is not None
    assert successor.token != claimed.token
    assert not bg.evaluator.step(claimed)
    bg.evaluator.execute(successor)
    done = bg.get(f"/v1/segments/{created['id']}/evaluations/{requested.json()['id']}")
    assert (done["status"], done["reason"], done["processed"], done["entered"]) == ("done", "requested", 5, 1)
    assert bg.members(created) == set(ids[2:])


# -- the schedule ---------------------------------------------------------------------------------------


def test_time_relative_segments_are_re_evaluated_on_schedule(seg: Service, receiver: Receiver) -> None:
    cart, spent = uuid4(), uuid4()
    now = seg.clock()
    seg.deliver(spender(cart, "10", cart_abandoned_at=now - timedelta(days=1)), spender(spent, "500"))
    abandoned = seg.create({"field": "cart_abandoned_at", "op": "within_last_days", "value": 7}, name="Cart")
    vip = seg.create(BIG, name="VIP")
    assert seg.members(abandoned) == {cart}
    hook = endpoint(seg, receiver.url)

    assert seg.evaluator.schedule_due() == 0  # evaluated at creation, less than a day ago
    seg.clock.advance(days=8)
    assert seg.evaluator.schedule_due() == 1  # only the time-relative one
    assert seg.evaluator.schedule_due() == 0  # already queued
    assert seg.evaluator.run_pending() == 1
    assert seg.members(abandoned) == set()
    assert seg.members(vip) == {spent}

    exited = seg.announced()[-1]
    assert (exited.change, exited.profile_id, exited.reason) == ("exited", cart, "schedule")
    assert exited.traits is not None
    assert exited.traits.total_spent == Decimal("10.00")
    assert seg.history(abandoned["id"])[-1] == ("exited", cart, "schedule")
    latest = seg.get(f"/v1/segments/{abandoned['id']}")["evaluation"]
    assert (latest["reason"], latest["status"], latest["exited"]) == ("schedule", "done", 1)

    assert dispatcher(seg).dispatch_due() == 1
    [(headers, body)] = receiver.bodies
    payload = Webhook(hook["secret"]).verify(body, headers)
    assert payload["type"] == "segment.exited"
    assert payload["data"]["profile_id"] == str(cart)
    assert payload["data"]["segment_id"] == abandoned["id"]

    assert seg.evaluator.schedule_due() == 0  # next time in a day
    seg.clock.advance(hours=25)
    assert seg.evaluator.schedule_due() == 1


# -- history and stats ------------------------------------------------------------------------------------


def test_history_lists_entries_and_exits_newest_first(seg: Service) -> None:
    ana, bia = uuid4(), uuid4()
    seg.deliver(spender(ana, "150.00"))
    created = seg.create(BIG)
    seg.deliver(spender(bia, "200.00"), spender(ana, "10.00", version=2))
    path = f"/v1/segments/{created['id']}/history"
    first = seg.get(path, limit=2)
    assert [(e["change"], e["profile_id"], e["reason"]) for e in first["items"]] == [
        ("exited", str(ana), "profile_updated"),
        ("entered", str(bia), "profile_updated"),
    ]
    assert first["items"][0]["profile_version"] == 2
    rest = seg.get(path, limit=2, cursor=first["next_cursor"])
    assert [(e["change"], e["reason"]) for e in rest["items"]] == [("entered", "segment_created")]
    assert rest["next_cursor"] is None
    only_ana = seg.get(path, profile_id=str(ana))
    assert [e["change"] for e in only_ana["items"]] == ["exited", "entered"]
    assert seg.client.get(path, params={"cursor": "x"}, headers=auth(seg.key)).status_code == 422


def test_stats_follow_a_scripted_history(seg: Service) -> None:
    created = seg.create(BIG, name="VIP", purpose="marketing_whatsapp")
    segment_id = UUID(created["id"])
    now = utcnow()
    today = now.date()
    people = [uuid4() for _ in range(6)]

    def at(days: int, hours: int = 0) -> datetime:
        return datetime.combine(today - timedelta(days=days), datetime.min.time(), tzinfo=UTC) + timedelta(
            hours=hours
        )

    # Entries and exits over the last 40 days; the people still in are 0, 1, 3 and 5.
    script = [
        (people[0], "entered", at(40, 9)),
        (people[1], "entered", at(20, 9)),
        (people[2], "entered", at(20, 10)),
        (people[3], "entered", at(5, 9)),
        (people[4], "entered", at(5, 10)),
        (people[2], "exited", at(3, 9)),
        (people[4], "exited", at(0)),
        (people[5], "entered", at(0)),
    ]
    with Session(seg.engine) as session:
        for profile_id, change, when in script:
            session.add(
                SegmentMembershipEvent(
                    tenant_id=seg.tenant_id,
                    segment_id=segment_id,
                    profile_id=profile_id,
                    change=change,
                    reason="profile_updated",
                    profile_version=1,
                    at=when,
                )
            )
        for i in (0, 1, 3, 5):
            session.add(SegmentMember(segment_id=segment_id, profile_id=people[i], tenant_id=seg.tenant_id))
        session.commit()
    # Two of the members accept WhatsApp messages (their traits keep them in: no change to the history).
    seg.deliver(
        spender(people[0], "500", consents={"marketing_whatsapp": "granted"}),
        spender(people[1], "500", consents={"marketing_whatsapp": "revoked"}),
        spender(people[3], "500", consents={"marketing_whatsapp": "granted", "marketing_email": "granted"}),
    )

    stats = seg.get(f"/v1/segments/{segment_id}/stats", days=7)
    assert stats["size"] == 4
    assert (stats["purpose"], stats["reachable"]) == ("marketing_whatsapp", 2)
    windows = {w["days"]: (w["entered"], w["exited"]) for w in stats["windows"]}
    # The last 24 hours hold today's two changes (at midnight: less than a day ago).
    assert windows == {1: (1, 1), 7: (3, 2), 30: (5, 2)}
    daily = [(d["day"], d["size"], d["entered"], d["exited"]) for d in stats["daily"]]
    day = [str(today - timedelta(days=n)) for n in range(7)]
    assert daily == [
        (day[6], 3, 0, 0),
        (day[5], 5, 2, 0),
        (day[4], 5, 0, 0),
        (day[3], 4, 0, 1),
        (day[2], 4, 0, 0),
        (day[1], 4, 0, 0),
        (day[0], 4, 1, 1),
    ]
    assert stats["history_since"].startswith(str(today - timedelta(days=40)))
    assert stats["last_evaluation"]["reason"] == "segment_created"
    assert len(seg.get(f"/v1/segments/{segment_id}/stats")["daily"]) == 30
    too_many = seg.client.get(f"/v1/segments/{segment_id}/stats", params={"days": 400}, headers=auth(seg.key))
    assert too_many.status_code == 422


# -- exports ---------------------------------------------------------------------------------------------


def _audience(seg: Service) -> tuple[dict[str, Any], dict[str, UUID]]:
    people = {name: uuid4() for name in ("ana", "bia", "caio", "duda")}
    seg.deliver(
        spender(
            people["ana"],
            "389.80",
            consents={"marketing_email": "granted", "marketing_sms": "denied"},
            sources=["site", "shopee"],
            categories=["alimentos"],
            city="=HYPERLINK(1)",
            last_order_at=datetime(2026, 11, 20, 17, 3, tzinfo=UTC),
        ),
        spender(people["bia"], "150.00", consents={"marketing_email": "revoked"}),
        spender(people["caio"], "120.00"),
        spender(people["duda"], "10.00", consents={"marketing_email": "granted"}),
    )
    segment = seg.create(BIG, name="VIP", purpose="marketing_email")
    return segment, people


def _export(seg: Service, segment: dict[str, Any], **params: str) -> tuple[Any, bytes]:
    with seg.client.stream(
        "GET", f"/v1/segments/{segment['id']}/export", params=params, headers=auth(seg.key)
    ) as response:
        assert response.status_code == 200, response.read()
        body = b"".join(response.iter_bytes())
    return response, body


def test_export_csv_keeps_only_members_who_granted_the_purpose(seg: Service) -> None:
    segment, people = _audience(seg)
    response, body = _export(seg, segment)
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["x-consent-filter"] == "marketing_email"
    assert f'filename="segment-{segment["id"]}.csv"' in response.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(body.decode())))
    assert table[0] == list(export.CSV_COLUMNS)
    rows = [dict(zip(table[0], row, strict=True)) for row in table[1:]]
    assert [r["profile_id"] for r in rows] == [str(people["ana"])]
    ana = rows[0]
    assert (ana["total_spent"], ana["average_order_value"], ana["orders_count"]) == ("389.80", "389.80", "1")
    assert ana["sources"] == "shopee|site"
    assert ana["bought_categories"] == "alimentos"
    assert ana["city"] == "'=HYPERLINK(1)"  # never a formula in a spreadsheet
    assert ana["last_order_at"] == "2026-11-20T17:03:00Z"
    assert (ana["consent_marketing_email"], ana["consent_marketing_sms"], ana["consent_profiling"]) == (
        "granted",
        "denied",
        "",
    )
    assert "@" not in body.decode()

    _, everyone = _export(seg, segment, consent="all")
    table = list(csv.reader(io.StringIO(everyone.decode())))
    assert sorted(r[0] for r in table[1:]) == sorted(str(people[n]) for n in ("ana", "bia", "caio"))


def test_export_jsonl_and_a_segment_without_purpose(seg: Service) -> None:
    segment, people = _audience(seg)
    response, body = _export(seg, segment, format="jsonl")
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in body.splitlines()]
    assert [line["profile_id"] for line in lines] == [str(people["ana"])]
    assert lines[0]["consents"] == {"marketing_email": "granted", "marketing_sms": "denied"}
    assert lines[0]["sources"] == ["shopee", "site"]
    assert lines[0]["total_spent"] == "389.80"

    seg.client.patch(f"/v1/segments/{segment['id']}", json={"purpose": None}, headers=auth(seg.key))
    response, body = _export(seg, segment, format="jsonl")
    assert response.headers["x-consent-filter"] == "none"
    assert len(body.splitlines()) == 3
    empty = seg.create({"field": "total_spent", "op": "gte", "value": "100000"})
    _, nothing = _export(seg, empty)
    assert nothing.decode().splitlines() == [",".join(export.CSV_COLUMNS)]
    _, nothing = _export(seg, empty, format="jsonl")
    assert nothing == b""
    wrong = seg.client.get(
        f"/v1/segments/{segment['id']}/export", params={"format": "xlsx"}, headers=auth(seg.key)
    )
    assert wrong.status_code == 422


def test_export_reads_members_a_chunk_at_a_time(seg: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _five(seg)
    segment = seg.create({"field": "orders_count", "op": "gte", "value": 1})
    chunks: list[int] = []
    original = export._chunk

    def counting(*args: Any, **kwargs: Any) -> Any:
        found = original(*args, **kwargs)
        chunks.append(len(found))
        return found

    monkeypatch.setattr(export, "_chunk", counting)
    with Session(seg.engine) as session:
        stored = session.get(Segment, UUID(segment["id"]))
        assert stored is not None
    reading = {"api_key_id": None, "route": "export", "request_id": None}
    rows = list(export.rows(seg.engine, stored, purpose=None, reader=reading, chunk=2))
    assert [r["profile_id"] for r in rows] == ids
    assert chunks == [2, 2, 1, 0]


# -- events ------------------------------------------------------------------------------------------------


def test_membership_events_are_v2_with_the_segment_name_and_key_traits(seg: Service) -> None:
    ana = uuid4()
    segment = seg.create(BIG, name="VIP")
    seg.deliver(spender(ana, "150.00", rfm_group="champions", clv_12m=Decimal("90.5")))
    with Session(seg.engine) as session:
        row = session.exec(
            select(OutboxMessage).where(OutboxMessage.event_type == "segment.membership_changed")
        ).one()
    envelope = Envelope.from_bytes(open_body(row.body))
    assert (envelope.type, envelope.version) == ("segment.membership_changed", 2)
    assert row.key == f"{seg.tenant_id}:{ana}"
    payload = envelope.payload
    assert payload["segment_id"] == segment["id"]
    assert payload["segment_name"] == "VIP"
    assert (payload["change"], payload["reason"], payload["profile_version"]) == (
        "entered",
        "profile_updated",
        1,
    )
    assert payload["traits"]["total_spent"] == "150.00"
    assert payload["traits"]["clv_12m"] == "90.50"
    assert payload["traits"]["rfm_group"] == "champions"
    assert payload["traits"]["state"] == "SP"
    assert set(payload["traits"]) == {
        "orders_count",
        "total_spent",
        "average_order_value",
        "first_order_at",
        "last_order_at",
        "rfm_group",
        "clv_12m",
        "churn_probability",
        "next_order_at",
        "state",
    }
    with Session(seg.engine) as session:
        assert session.get(Segment, UUID(segment["id"])) is not None


# -- the migration ---------------------------------------------------------------------------------------


def test_the_migration_backfills_time_relative_history_and_delivery_segments(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'segmentation.db'}"
    service_dir = ROOT / "services" / "segmentation"
    upgrade(service_dir, url, "0003")
    tenant, relative, plain, gone = uuid4(), uuid4(), uuid4(), uuid4()
    ana, bia = uuid4(), uuid4()
    entered = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    engine = make_engine(url)
    with engine.begin() as conn:
        for segment_id, rule in (
            (relative, {"all": [BIG, {"not": {"field": "age", "op": "gte", "value": 18}}]}),
            (plain, BIG),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO segment (id, tenant_id, name, rule, created_at, updated_at) "
                    "VALUES (:id, :tenant, 'x', :rule, :at, :at)"
                ),
                {
                    "id": segment_id.hex,
                    "tenant": tenant.hex,
                    "rule": orjson.dumps(rule).decode(),
                    "at": entered,
                },
            )
        for segment_id, profile_id in ((relative, ana), (plain, ana), (plain, bia), (gone, bia)):
            conn.execute(
                sa.text(
                    "INSERT INTO segment_member (segment_id, profile_id, tenant_id, entered_at) "
                    "VALUES (:segment, :profile, :tenant, :at)"
                ),
                {"segment": segment_id.hex, "profile": profile_id.hex, "tenant": tenant.hex, "at": entered},
            )
        conn.execute(
            sa.text(
                "INSERT INTO profile_projection (profile_id, tenant_id, profile_version, orders_count, "
                "total_spent_minor, updated_at) VALUES (:id, :tenant, 7, 1, 100, :at)"
            ),
            {"id": ana.hex, "tenant": tenant.hex, "at": entered},
        )
        payload = orjson.dumps({"type": "segment.entered", "data": {"segment_id": str(plain)}})
        for delivery_id, status in ((uuid4(), "pending"), (uuid4(), "delivered")):
            conn.execute(
                sa.text(
                    "INSERT INTO webhook_delivery (id, tenant_id, endpoint_id, message_id, event_type, "
                    "payload, status, attempts, created_at) VALUES "
                    "(:id, :tenant, :endpoint, 'msg_1', 'segment.entered', :payload, :status, 0, :at)"
                ),
                {
                    "id": delivery_id.hex,
                    "tenant": tenant.hex,
                    "endpoint": uuid4().hex,
                    "payload": payload,
                    "status": status,
                    "at": entered,
                },
            )
    engine.dispose()

    upgrade(service_dir, url)
    engine = make_engine(url)
    with Session(engine) as session:
        flags = {s.id: s.time_relative for s in session.exec(select(Segment)).all()}
        assert flags == {relative: True, plain: False}
        members = session.exec(select(SegmentMember.segment_id, SegmentMember.profile_id)).all()
        assert sorted(members) == sorted([(relative, ana), (plain, ana), (plain, bia)])  # `gone` is gone
        rows = session.exec(select(SegmentMembershipEvent)).all()
        assert sorted((r.segment_id, r.profile_id, r.profile_version) for r in rows) == sorted(
            [(relative, ana, 7), (plain, ana, 7), (plain, bia, 0)]
        )
        assert {(r.change, r.reason, r.at) for r in rows} == {("entered", "backfill", entered)}
        deliveries = session.exec(select(WebhookDelivery)).all()
        assert {d.status: d.segment_id for d in deliveries} == {"pending": plain, "delivered": None}
    engine.dispose()
    downgrade(service_dir, url, "0003")
    upgrade(service_dir, url)


def test_a_background_evaluation_racing_with_profile_events_ends_right(bg: Service) -> None:
    """Profile events applied while the evaluation runs (two threads, like the consumer and the evaluator
    worker): the members end as the rule says, and each profile's history alternates entered / exited,
    announced once per change."""
    rng = random.Random(5)
    ids = sorted(uuid4() for _ in range(120))
    totals = {p: rng.choice(["50", "150"]) for p in ids}
    bg.deliver(*(spender(p, totals[p]) for p in ids))
    created = bg.create(BIG)
    evaluator = SegmentEvaluator(bg.engine, chunk=7, clock=bg.clock)
    done = threading.Event()

    def evaluate() -> None:
        try:
            evaluator.run_pending()
        finally:
            done.set()

    thread = threading.Thread(target=evaluate)
    thread.start()
    version = 1
    while not done.is_set() or version < 4:
        version += 1
        changed = rng.sample(ids, 30)
        for p in changed:
            totals[p] = rng.choice(["50", "150"])
        batch = [spender(p, totals[p], version=version) for p in changed]
        for attempt in range(5):
            try:
                bg.deliver(*batch)
                break
            except OperationalError:  # a deadlock with the evaluation: the consumer retries its batch
                assert attempt < 4
    thread.join(timeout=60)
    assert bg.get(f"/v1/segments/{created['id']}")["evaluation"]["status"] == "done"

    expected = {p for p in ids if totals[p] == "150"}
    assert bg.members(created) == expected
    changes: dict[UUID, list[str]] = {}
    for change, profile_id, _ in bg.history(created["id"]):
        changes.setdefault(profile_id, []).append(change)
    for profile_id, sequence in changes.items():
        assert sequence[::2] == ["entered"] * len(sequence[::2]), sequence
        assert sequence[1::2] == ["exited"] * len(sequence[1::2]), sequence
        assert (sequence[-1] == "entered") == (profile_id in expected)
    assert len(bg.announced()) == sum(len(s) for s in changes.values())
