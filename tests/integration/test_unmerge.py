"""Undoing a wrong merge, on the profile service's real database: what goes back, what stays, and that the
result is what the history would have given without the wrong link.

Events are applied through the profile's own consumer (`ConsumerWorker.apply`), as Kafka would deliver them.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.profile import identity, unmerge
from services.profile.models import MergeRecord, Profile, ProfileIdentifier, ProfileOrder
from shared.consumer import ConsumerWorker
from shared.crypto import keyring
from shared.errors import Conflict, NotFound
from shared.events import BehaviourRecorded, CustomerRecorded, OrderIngested
from shared.infra import OutboxMessage
from shared.records import BehaviourEvent, CustomerRecord, Order
from shared.settings import ServiceSettings
from tests.support import SettingsFactory, order_body

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(make_settings: SettingsFactory) -> ServiceSettings:
    result: ServiceSettings = make_settings("profile")
    return result


def order(tenant: UUID, number: str, total: str, source: str = "site", **customer: Any) -> bytes:
    body = order_body(number, "unused@example.com", total, source=source)
    body["customer"] = customer
    event = OrderIngested(order_id=uuid4(), order_version=1, order=Order.model_validate(body))
    return event.envelope(tenant).to_bytes()


def record(tenant: UUID, **fields: Any) -> bytes:
    customer = CustomerRecord.model_validate({"source": "site", **fields})
    event = CustomerRecorded(record_id=uuid4(), record_version=1, customer=customer)
    return event.envelope(tenant).to_bytes()


def viewed(tenant: UUID, sku: str, **customer: Any) -> bytes:
    event = BehaviourEvent.model_validate(
        {
            "type": "product_view",
            "customer": customer,
            "properties": {"sku": sku},
            "occurred_at": "2026-11-10T10:00:00Z",
        }
    )
    return BehaviourRecorded(record_id=uuid4(), event=event).envelope(tenant).to_bytes()


def active(engine: Engine, tenant: UUID) -> list[Profile]:
    with Session(engine) as session:
        query = select(Profile).where(Profile.tenant_id == tenant, Profile.status == "active")
        return list(session.exec(query.order_by(col(Profile.created_at))))


def summary(engine: Engine, profile: Profile) -> dict[str, Any]:
    """What a profile is, without ids and times: comparable across tenants."""
    with Session(engine) as session:
        identifiers = sorted(
            (r.kind, keyring().open(r.tenant_id, r.sealed))
            for r in session.exec(select(ProfileIdentifier).where(ProfileIdentifier.profile_id == profile.id))
        )
        totals = sorted(
            o.total_minor
            for o in session.exec(select(ProfileOrder).where(ProfileOrder.profile_id == profile.id))
        )
    return {
        "identifiers": identifiers,
        "orders": totals,
        "orders_count": profile.orders_count,
        "spent": profile.total_spent_minor,
        "name": profile.name,
        "city": profile.city,
        "email": profile.email and keyring().open(profile.tenant_id, profile.email),
        "purchases": profile.purchases,
        "behaviour": {k: v for k, v in profile.behaviour.items() if k != "carts_abandoned"},
    }


def family(tenant: UUID, *, wrong_link: bool) -> list[bytes]:
    """Ana and her son Caio; Caio once buys on Shopee with his mother's e-mail (the wrong link)."""
    return [
        order(tenant, "A-1", "100.00", email="ana@example.com", external_id="ana-site", name="Ana Souza"),
        record(tenant, external_id="ana-site", email="ana@example.com", address={"city": "Recife"}),
        order(tenant, "S-1", "40.00", source="shopee", external_id="caio-9", phone="11912345678"),
        viewed(tenant, "GAME-1", phone="11912345678"),
        order(
            tenant,
            "S-2",
            "60.00",
            source="shopee",
            external_id="caio-9",
            **({"email": "ana@example.com"} if wrong_link else {}),
        ),
        # After the link: Caio again with a new e-mail of his own, and Ana with her e-mail.
        order(tenant, "S-3", "25.00", source="shopee", external_id="caio-9", email="caio@example.com"),
        order(tenant, "A-2", "10.00", email="ana@example.com", external_id="ana-site"),
    ]


def test_unmerge_gives_what_the_history_gives_without_the_wrong_link(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    wrong, right = uuid4(), uuid4()
    for event in family(wrong, wrong_link=True):
        profile_records.apply([event])
    for event in family(right, wrong_link=False):
        profile_records.apply([event])
    [merged_one] = active(engine, wrong)
    assert merged_one.orders_count == 5
    ana, caio = active(engine, right)

    with Session(engine) as session:
        [merge] = session.exec(select(MergeRecord).where(MergeRecord.tenant_id == wrong)).all()
        assert merge.linked_identifiers == [
            ["email", keyring().index(merge.tenant_id, "email", "ana@example.com")]
        ]
        done = unmerge.unmerge(session, merge)
        session.commit()
        survivor_id, restored_id, merge_id = done.survivor.id, done.restored.id, merge.id
    with Session(engine) as session:
        survivor, restored = session.get(Profile, survivor_id), session.get(Profile, restored_id)
        assert survivor is not None
        assert restored is not None
        assert (restored.status, restored.merged_into, survivor.merges, restored.merges) == (
            "active",
            None,
            0,
            0,
        )
        assert summary(engine, survivor) == summary(engine, ana)
        assert summary(engine, restored) == summary(engine, caio)
        assert restored.orders_count == 3  # S-1, the linking S-2 (his buyer id is stronger) and S-3
        assert restored.behaviour["viewed_products"] == ["GAME-1"]
        events = [m.event_type for m in session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id)))]
        assert events[-3:] == ["profile.unmerged", "profile.updated", "profile.updated"]
        with pytest.raises(Conflict):
            unmerge.unmerge(session, session.get(MergeRecord, merge_id) or merge)

    # The two stay apart: the same wrong link again attaches to the strongest identifier's owner.
    profile_records.apply(
        [order(wrong, "S-4", "5.00", source="shopee", external_id="caio-9", email="ana@example.com")]
    )
    first, second = active(engine, wrong)
    assert (first.id, second.id) == (survivor_id, restored_id)
    assert (first.orders_count, second.orders_count) == (2, 4)


def test_unmerge_by_identifier_brings_back_the_profiles_merged_into_the_restored_one(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    tenant = uuid4()
    profile_records.apply([order(tenant, "P-1", "10.00", email="pedro@example.com")])  # Pedro
    profile_records.apply([order(tenant, "B-1", "20.00", source="amazon", external_id="amz-1")])  # Bia
    profile_records.apply([order(tenant, "B-2", "30.00", source="magalu", external_id="mgl-1")])  # Bia again
    # Bia's two marketplace ids linked by her e-mail (right).
    profile_records.apply(
        [order(tenant, "B-3", "1.00", source="amazon", external_id="amz-1", email="bia@example.com")]
    )
    profile_records.apply(
        [order(tenant, "B-4", "2.00", source="magalu", external_id="mgl-1", email="bia@example.com")]
    )
    profile_records.apply([order(tenant, "X-1", "3.00", email="pedro@example.com", phone="11955554444")])
    # The wrong link: Pedro's e-mail on an order of Bia's Amazon account.
    profile_records.apply(
        [order(tenant, "X-2", "4.00", source="amazon", external_id="amz-1", email="pedro@example.com")]
    )
    [everyone] = active(engine, tenant)
    assert everyone.orders_count == 7

    with Session(engine) as session:
        owner = session.get(Profile, everyone.id)
        assert owner is not None
        merges = session.exec(select(MergeRecord).where(MergeRecord.tenant_id == tenant)).all()
        assert len(merges) == 2
        wrong = unmerge.find_merge(session, owner, identifier=("customer_id", "amazon:amz-1"))
        done = unmerge.unmerge(session, wrong)
        session.commit()
        restored_id = done.restored.id
    pedro, bia = sorted(active(engine, tenant), key=lambda p: p.total_spent_minor)
    assert bia.id == restored_id
    assert pedro.total_spent_minor == 1300  # P-1 + X-1
    assert bia.total_spent_minor == 5700  # B-1..B-4 + X-2 (her buyer id is its strongest identifier)
    with Session(engine) as session:
        bia_profiles = session.exec(select(Profile).where(Profile.merged_into == bia.id)).all()
        assert len(bia_profiles) == 1  # the magalu profile merged into hers before, still pointing at her


def test_what_cannot_be_undone_says_why(engine: Engine, profile_records: ConsumerWorker) -> None:
    tenant = uuid4()
    profile_records.apply([order(tenant, "Q-1", "10.00", email="quem@example.com")])
    with Session(engine) as session:
        [profile] = session.exec(select(Profile).where(Profile.tenant_id == tenant)).all()
        with pytest.raises(Conflict):
            unmerge.find_merge(session, profile, identifier=("email", "quem@example.com"))
        with pytest.raises(NotFound):
            unmerge.find_merge(session, profile, merge_id=uuid4())


def test_unmerge_over_http_and_segments_follow(stack: Any) -> None:
    from tests.support import auth, eventually

    key = stack.create_tenant()
    h = auth(key)
    first = order_body("H-1", "lu@example.com", "70.00")
    second = order_body("H-2", "mae.da.lu@example.com", "30.00", source="shopee")
    second["customer"]["external_id"] = "shp-5"
    link = order_body("H-3", "lu@example.com", "5.00", source="shopee")
    link["customer"]["external_id"] = "shp-5"
    for body in (first, second):
        assert stack.ingest.post("/v1/orders", json=body, headers=h).status_code == 202

    def two() -> None:
        assert len(stack.profile.get("/v1/profiles", headers=h).json()["items"]) == 2

    eventually(two)
    segment = stack.segmentation.post(
        "/v1/segments",
        json={"name": "buyers", "rule": {"field": "orders_count", "op": "gte", "value": 1}},
        headers=h,
    ).json()
    assert stack.ingest.post("/v1/orders", json=link, headers=h).status_code == 202

    def merged() -> dict[str, Any]:
        items = stack.profile.get("/v1/profiles", headers=h).json()["items"]
        assert [p["orders_count"] for p in items] == [3]
        return dict(items[0])

    survivor = eventually(merged)
    [merge] = stack.profile.get(f"/v1/profiles/{survivor['id']}/merges", headers=h).json()["items"]
    url = f"/v1/profiles/{survivor['id']}/unmerge"
    for bad in ({}, {"merge_id": merge["id"], "identifier": {"kind": "email", "value": "lu@example.com"}}):
        response = stack.profile.post(url, json=bad, headers=h)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
    response = stack.profile.post(url, json={"merge_id": merge["id"]}, headers=h)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["restored"]["id"] == merge["merged_id"]
    assert (result["survivor"]["orders_count"], result["restored"]["orders_count"]) in ((1, 2), (2, 1))
    assert result["restored"]["status"] == "active"
    again = stack.profile.post(url, json={"merge_id": merge["id"]}, headers=h)
    assert again.status_code == 409
    assert "lu@" not in again.text

    def both_in_the_segment() -> None:
        members = stack.segmentation.get(f"/v1/segments/{segment['id']}/members", headers=h).json()["items"]
        assert sorted(m["profile_id"] for m in members) == sorted([survivor["id"], merge["merged_id"]])

    eventually(both_in_the_segment)
    history = stack.profile.get(f"/v1/profiles/{survivor['id']}/merges", headers=h).json()["items"]
    assert history[0]["undone_at"] is not None


def test_a_block_moves_with_the_profile_merged_in_a_batch(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    """A profile kept apart from another (an undone merge) that merges into a third moves the block to the
    survivor: the other stays apart from it too. (A batch knows which of its profiles are in no block and
    skips their blocks; these are in one.)"""
    tenant = uuid4()
    profile_records.apply([order(tenant, "B-1", "10.00", email="ana@example.com")])
    profile_records.apply([order(tenant, "B-2", "10.00", email="carla@example.com", external_id="carla-1")])
    profile_records.apply([order(tenant, "B-3", "10.00", email="bia@example.com")])
    ana, carla, bia = active(engine, tenant)
    with Session(engine) as session:
        identity.add_block(session, tenant, ana.id, bia.id, merge_id=None)
        session.commit()
    # Bia's e-mail on Carla's customer id: Bia (younger) merges into Carla, with her block.
    profile_records.apply([order(tenant, "B-4", "10.00", email="bia@example.com", external_id="carla-1")])
    assert [p.id for p in active(engine, tenant)] == [ana.id, carla.id]
    with Session(engine) as session:
        assert identity.is_blocked(session, ana.id, carla.id)
    # Ana's e-mail on Carla's customer id: kept apart.
    profile_records.apply([order(tenant, "B-5", "10.00", email="ana@example.com", external_id="carla-1")])
    assert [p.id for p in active(engine, tenant)] == [ana.id, carla.id]
