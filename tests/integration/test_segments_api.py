"""Segmentation on PostgreSQL without the other services: ProfileUpdated v1 and v2 applied by the real
consumer code (each delivered twice), memberships kept current, full evaluation in SQL, preview,
templates, invalid rules answered with the path of the offending part, and the rule schema in OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.segmentation import projection as projections
from services.segmentation import segments
from services.segmentation.app import create_app
from services.segmentation.consumer import workers
from services.segmentation.models import ProfileProjection, ProfileTag, Segment
from services.segmentation.rules import FIELDS, OPERATORS, parse_rule
from services.segmentation.settings import SegmentationSettings
from services.segmentation.templates import TEMPLATES
from shared.consumer import ConsumerWorker
from shared.db import make_engine
from shared.events import Event, ProfileUpdated
from shared.infra import OutboxMessage
from shared.outbox import open_body
from tests.support import ADMIN_TOKEN, add_tenant, auth, profile_updated

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


@dataclass
class Segmentation:
    client: TestClient
    engine: Engine
    profiles: ConsumerWorker
    tenant_id: UUID
    key: str
    other_key: str

    def deliver(self, *events: Event) -> None:
        """Each event twice, as after a crash between the DB commit and the offset commit."""
        raw = [e.envelope(self.tenant_id).to_bytes() for e in events]
        self.profiles.apply(raw + raw)

    def create(self, rule: dict[str, Any], name: str = "s") -> dict[str, Any]:
        response = self.client.post("/v1/segments", json={"name": name, "rule": rule}, headers=auth(self.key))
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def members(self, segment: dict[str, Any]) -> set[UUID]:
        response = self.client.get(f"/v1/segments/{segment['id']}/members", headers=auth(self.key))
        assert response.status_code == 200
        return {UUID(m["profile_id"]) for m in response.json()["items"]}

    def announced(self) -> list[tuple[str, UUID]]:
        with Session(self.engine) as session:
            rows = session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))).all()
        payloads = [
            orjson.loads(open_body(r.body))["payload"]
            for r in rows
            if r.event_type == "segment.membership_changed"
        ]
        return [(p["change"], UUID(p["profile_id"])) for p in payloads]


@pytest.fixture
def seg(clean_databases: dict[str, str]) -> Iterator[Segmentation]:
    settings = SegmentationSettings(
        database_url=clean_databases["segmentation"],
        run_workers=False,
        run_migrations=False,
        admin_token=ADMIN_TOKEN,
    )
    engine = make_engine(settings.database_url)
    worker = dict(workers(engine, settings))["segmentation-profiles"]
    assert isinstance(worker, ConsumerWorker)
    tenant_id, key = add_tenant(engine)
    _, other_key = add_tenant(engine)
    with TestClient(create_app(settings)) as client:
        yield Segmentation(client, engine, worker, tenant_id, key, other_key)
    engine.dispose()


def tags(engine: Engine, profile_id: UUID) -> dict[str, set[str]]:
    with Session(engine) as session:
        rows = session.exec(select(ProfileTag).where(ProfileTag.profile_id == profile_id)).all()
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row.kind, set()).add(row.value)
    return found


# -- the projection and incremental membership --------------------------------------------------------


def test_v2_events_fill_the_projection_and_move_profiles_in_and_out(seg: Segmentation) -> None:
    phones = seg.create(
        {
            "all": [
                {"field": "viewed_categories", "key": "celulares", "op": "within_last_days", "value": 7},
                {"field": "consent", "key": "marketing_whatsapp", "op": "eq", "value": "granted"},
                {"field": "age", "op": "gte", "value": 18},
            ]
        }
    )
    spenders = seg.create({"field": "total_spent", "op": "gte", "value": "300"})
    ana, bia = uuid4(), uuid4()
    seg.deliver(
        profile_updated(
            ana,
            1,
            birth_date=date(1990, 5, 1),
            consents={"marketing_whatsapp": "granted", "marketing_email": "denied"},
            viewed_categories={"celulares": NOW - timedelta(days=2)},
            orders_count=2,
            total_spent=Decimal("389.80"),
            average_order_value=Decimal("194.90"),
            categories=["alimentos"],
            sources=["site"],
        ),
        profile_updated(bia, 1, birth_date=date(2015, 1, 1), consents={"marketing_whatsapp": "granted"}),
    )
    assert seg.members(phones) == {ana}
    assert seg.members(spenders) == {ana}
    assert tags(seg.engine, ana) == {
        "viewed_category": {"celulares"},
        "consent_granted": {"marketing_whatsapp"},
        "consent_denied": {"marketing_email"},
        "bought_category": {"alimentos"},
        "source": {"site"},
    }

    # She revokes WhatsApp: she leaves one segment; a stale (older) version changes nothing.
    seg.deliver(
        profile_updated(
            ana, 3, ["consents"], **{**_ana_v1_traits(), "consents": {"marketing_whatsapp": "revoked"}}
        )
    )
    seg.deliver(
        profile_updated(ana, 2, birth_date=date(1990, 5, 1), consents={"marketing_whatsapp": "granted"})
    )
    assert seg.members(phones) == set()
    assert seg.members(spenders) == {ana}
    assert tags(seg.engine, ana)["consent_revoked"] == {"marketing_whatsapp"}
    assert seg.announced() == [("entered", ana), ("entered", ana), ("exited", ana)]


def _ana_v1_traits() -> dict[str, Any]:
    return {
        "birth_date": date(1990, 5, 1),
        "viewed_categories": {"celulares": NOW - timedelta(days=2)},
        "orders_count": 2,
        "total_spent": Decimal("389.80"),
        "average_order_value": Decimal("194.90"),
    }


def test_a_v1_event_fills_what_it_has_and_keeps_the_rest(seg: Segmentation) -> None:
    profile_id = uuid4()
    seg.deliver(
        profile_updated(
            profile_id, 1, birth_date=date(1980, 1, 1), state="SP", products=["SKU-1"], sources=["site"]
        )
    )
    v1 = ProfileUpdated(
        profile_id=profile_id,
        profile_version=2,
        orders_count=3,
        total_spent=Decimal("100.00"),
        first_order_at=NOW - timedelta(days=30),
        last_order_at=NOW - timedelta(days=1),
        sources=["shopee"],
        categories=["livros"],
        rfm_group="loyal",
        rfm_score="435",
        clv_12m=Decimal("250.50"),
        churn_probability=0.2,
    )
    seg.deliver(v1)
    with Session(seg.engine) as session:
        row = session.get(ProfileProjection, profile_id)
        assert row is not None
        assert (row.orders_count, row.total_spent_minor, row.average_order_value_minor) == (3, 10000, 3333)
        assert (row.rfm_group, row.rfm_r, row.rfm_f, row.rfm_m, row.clv_12m_minor) == (
            "loyal",
            4,
            3,
            5,
            25050,
        )
        assert (row.birth_date, row.state) == (date(1980, 1, 1), "SP")  # v1 does not carry these
    assert tags(seg.engine, profile_id) == {
        "source": {"shopee"},
        "bought_category": {"livros"},
        "bought_product": {"SKU-1"},
    }
    segment = seg.create(
        {"all": [{"field": "rfm_m", "op": "eq", "value": 5}, {"field": "state", "op": "eq", "value": "SP"}]}
    )
    assert seg.members(segment) == {profile_id}


def test_what_changed_is_found_by_comparing_the_stored_traits(seg: Segmentation) -> None:
    profile_id = uuid4()
    seg.deliver(profile_updated(profile_id, 1, state="SP", gender="female", sources=["site"]))
    by_state = seg.create({"field": "state", "op": "eq", "value": "SP"})
    by_source = seg.create({"field": "sources", "op": "contains", "value": "site"})
    # The event's own list of changes is not relied on (it is relative to the producer's previous
    # version, which this service may not have applied as such): the state change counts anyway.
    seg.deliver(profile_updated(profile_id, 2, ["gender"], state="RJ", gender="male", sources=["shopee"]))
    assert seg.members(by_state) == set()
    assert seg.members(by_source) == set()
    with Session(seg.engine) as session:
        event = profile_updated(
            profile_id, 3, [], state="RJ", gender="male", sources=["shopee", "site"], city="Niterói"
        )
        applied = projections.apply_event(session, seg.tenant_id, event)
        assert applied is not None
        assert applied.changed == frozenset({"source", "city"})
        assert projections.apply_event(session, seg.tenant_id, event) is None  # stale now


# -- full evaluation, preview, templates --------------------------------------------------------------


def _population(seg: Segmentation) -> list[UUID]:
    ids = sorted(uuid4() for _ in range(4))
    seg.deliver(
        profile_updated(
            ids[0], 1, orders_count=1, total_spent=Decimal("50"), cart_abandoned_at=NOW - timedelta(days=1)
        ),
        profile_updated(ids[1], 1, orders_count=1, total_spent=Decimal("500"), zip="01310100"),
        profile_updated(
            ids[2], 1, orders_count=4, total_spent=Decimal("900"), zip="20040002", rfm_group="champions"
        ),
        profile_updated(
            ids[3], 1, last_order_at=NOW - timedelta(days=400), orders_count=2, total_spent=Decimal("80")
        ),
    )
    return ids


def test_a_new_segment_is_evaluated_over_every_profile_in_sql(seg: Segmentation) -> None:
    ids = _population(seg)
    created = seg.create(
        {
            "any": [
                {"field": "zip", "op": "starts_with", "value": "01"},
                {"field": "total_spent", "op": "gt", "value": "800"},
            ]
        }
    )
    assert created["size"] == 2
    assert seg.members(created) == {ids[1], ids[2]}
    assert sorted(seg.announced()) == sorted([("entered", ids[1]), ("entered", ids[2])])


def test_preview_counts_and_samples_without_saving(seg: Segmentation) -> None:
    ids = _population(seg)
    body = {"rule": {"field": "orders_count", "op": "lte", "value": 2}, "sample_size": 2}
    response = seg.client.post("/v1/segments:preview", json=body, headers=auth(seg.key))
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["count"] == 3
    assert preview["sample"] == [str(i) for i in sorted([ids[0], ids[1], ids[3]])[:2]]
    assert seg.client.get("/v1/segments", headers=auth(seg.key)).json()["items"] == []
    assert seg.announced() == []
    # Another tenant's profiles are not counted.
    other = seg.client.post("/v1/segments:preview", json=body, headers=auth(seg.other_key))
    assert other.json()["count"] == 0
    assert seg.client.post("/v1/segments:preview", json={"name": "x"}).status_code == 401


def test_templates_are_listed_and_each_one_works(seg: Segmentation) -> None:
    ids = _population(seg)
    response = seg.client.get("/v1/segment-templates", headers=auth(seg.key))
    assert response.status_code == 200
    listed = response.json()["items"]
    assert [t["id"] for t in listed] == [t.id for t in TEMPLATES]
    assert {"rfm_champions", "one_time_buyers", "abandoned_cart_7d", "inactive_180d"} <= {
        t["id"] for t in listed
    }
    counts = {}
    for template in listed:
        preview = seg.client.post(
            "/v1/segments:preview", json={"rule": template["rule"]}, headers=auth(seg.key)
        )
        assert preview.status_code == 200, template["id"]
        counts[template["id"]] = preview.json()["count"]
    assert counts["one_time_buyers"] == 2
    assert counts["abandoned_cart_7d"] == 1
    assert counts["rfm_champions"] == 1
    assert counts["inactive_180d"] == 1
    created = seg.create(listed[0]["rule"], name=listed[0]["name"])
    assert seg.members(created) == {ids[2]}
    assert seg.client.get("/v1/segment-templates").status_code == 401


# -- invalid rules and the published schema -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/segments", "/v1/segments:preview"])
def test_an_invalid_rule_is_a_422_problem_naming_the_path(seg: Segmentation, path: str) -> None:
    rule = {
        "all": [
            {"field": "orders_count", "op": "gte", "value": 1},
            {"field": "city", "op": "eq", "value": "Recife"},
            {"field": "age", "op": "between", "value": "maria@example.com"},
        ]
    }
    body = {"name": "x", "rule": rule} if path == "/v1/segments" else {"rule": rule}
    response = seg.client.post(path, json=body, headers=auth(seg.key))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"] == [
        {
            "path": "rule.all[2].value",
            "loc": ["rule", "all", "2", "value"],
            "msg": "`between` takes [low, high].",
            "type": "rule_value",
        }
    ]
    assert "rule.all[2].value" in problem["detail"]
    assert "maria" not in response.text
    assert seg.client.get("/v1/segments", headers=auth(seg.key)).json()["items"] == []


def test_the_rule_schema_is_published_with_examples(seg: Segmentation) -> None:
    spec = seg.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    condition = schemas["Condition"]
    assert condition["properties"]["field"]["enum"] == list(FIELDS)
    assert condition["properties"]["op"]["enum"] == list(OPERATORS)
    assert condition["examples"]
    for name in FIELDS:
        assert f"`{name}`" in condition["description"]
    assert {"AllOf", "AnyOf", "NotRule"} <= set(schemas)
    create = schemas["SegmentCreate"]
    assert create["examples"]
    refs = str(create["properties"]["rule"])
    assert "#/components/schemas/Condition" in refs
    assert "#/components/schemas/AllOf" in refs
    assert "/v1/segments:preview" in spec["paths"]
    assert "/v1/segment-templates" in spec["paths"]
    preview_body = spec["paths"]["/v1/segments:preview"]["post"]["requestBody"]["content"]["application/json"]
    assert preview_body["schema"] == {"$ref": "#/components/schemas/SegmentPreviewRequest"}


def test_full_re_evaluation_follows_time(seg: Segmentation) -> None:
    profile_id = uuid4()
    seg.deliver(
        profile_updated(
            profile_id, 1, orders_count=1, total_spent=Decimal("10"), last_order_at=NOW - timedelta(days=5)
        )
    )
    recent = seg.create({"field": "last_order_at", "op": "within_last_days", "value": 7})
    assert seg.members(recent) == {profile_id}
    with Session(seg.engine) as session:
        segment = segments.get_segment(UUID(recent["id"]), tenant_id=seg.tenant_id, session=session)
        rule = parse_rule(segment.rule)
        assert segments.evaluate_segment(segment, rule, session=session, now=NOW) == (0, 0)
        assert segments.evaluate_segment(segment, rule, session=session, now=NOW + timedelta(days=3)) == (
            0,
            1,
        )
        session.commit()
    assert seg.members(recent) == set()
    assert seg.announced() == [("entered", profile_id), ("exited", profile_id)]


def test_a_stored_rule_that_no_longer_parses_does_not_stop_the_consumer(seg: Segmentation) -> None:
    broken = seg.create({"field": "orders_count", "op": "gte", "value": 1})
    working = seg.create({"field": "orders_count", "op": "gte", "value": 1})
    with Session(seg.engine) as session:
        segment = session.get(Segment, UUID(broken["id"]))
        assert segment is not None
        segment.rule = {"field": "orders_count", "op": "gt", "value": "2.5"}  # accepted by an older release
        session.add(segment)
        session.commit()
    profile_id = uuid4()
    seg.deliver(profile_updated(profile_id, 1, orders_count=3, total_spent=Decimal("30")))
    assert seg.members(working) == {profile_id}
    assert seg.members(broken) == set()


def test_segments_and_endpoints_are_listed_in_pages(seg: Segmentation) -> None:
    created = [
        seg.create({"field": "orders_count", "op": "gte", "value": n}, name=f"s{n}")["id"] for n in range(5)
    ]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = seg.client.get("/v1/segments", params=params, headers=auth(seg.key)).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created
    too_big = seg.client.get("/v1/segments", params={"limit": 1001}, headers=auth(seg.key))
    assert too_big.status_code == 422
    assert seg.client.get("/v1/segments", headers=auth(seg.other_key)).json()["items"] == []
    listed = seg.client.get("/v1/webhook-endpoints", params={"limit": 1000}, headers=auth(seg.key))
    assert listed.status_code == 200
    assert listed.json() == {"items": [], "next_cursor": None}
    assert (
        seg.client.get("/v1/webhook-endpoints", params={"limit": 0}, headers=auth(seg.key)).status_code == 422
    )
