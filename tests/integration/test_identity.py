"""Identity resolution in the profile service, on its real database: links, merges, protection.

Events are applied through the profile's own consumer (`ConsumerWorker.apply`), as Kafka would deliver them.
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.profile import identity
from services.profile.consumer import workers as profile_workers
from services.profile.models import MergeRecord, Profile, ProfileIdentifier, ProfileOrder, ProfileRecord
from services.profile.profiles import ProfileBatch
from shared.consumer import ConsumerWorker
from shared.events import CustomerRecorded, Envelope, OrderIngested, ProfileUpdatedV2, decode
from shared.infra import OutboxMessage
from shared.outbox import open_body
from shared.records import CustomerRecord, Order
from shared.settings import ServiceSettings
from tests.support import SettingsFactory, eventually, order_body

pytestmark = pytest.mark.integration
TENANT = uuid4()


@pytest.fixture
def settings(make_settings: SettingsFactory) -> ServiceSettings:
    result: ServiceSettings = make_settings("profile")
    return result


def order(order_id: str, total: str = "10.00", source: str = "site", **customer: Any) -> bytes:
    body = order_body(order_id, "unused@example.com", total, source=source)
    body["customer"] = customer
    return (
        OrderIngested(order_id=uuid4(), order_version=1, order=Order.model_validate(body))
        .envelope(TENANT)
        .to_bytes()
    )


def active(engine: Engine) -> list[Profile]:
    with Session(engine) as session:
        return list(
            session.exec(select(Profile).where(Profile.status == "active").order_by(col(Profile.created_at)))
        )


def owner(engine: Engine, kind: str, value: str) -> UUID:
    with Session(engine) as session:
        ((_, index),) = identity.blind(TENANT, [(kind, value)])
        row = session.get(ProfileIdentifier, (TENANT, kind, index))
        assert row is not None
        return row.profile_id


def test_an_order_linking_two_profiles_merges_them_into_the_older(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    first = order("A-1", "10.00", email="ana@example.com")
    second = order("B-1", "20.00", source="shopee", external_id="buyer-9", phone="11912345678")
    profile_records.apply([first])
    profile_records.apply([second])
    older, newer = active(engine)
    assert (older.orders_count, newer.orders_count) == (1, 1)

    # The same person: her e-mail and her Shopee buyer id on one order.
    link = order("C-1", "30.00", source="shopee", external_id="buyer-9", email="ana@example.com")
    profile_records.apply([link])
    [survivor] = active(engine)
    assert survivor.id == older.id
    assert (survivor.orders_count, survivor.total_spent_minor, survivor.merges) == (3, 6000, 1)
    with Session(engine) as session:
        merged = session.get(Profile, newer.id)
        assert merged is not None
        assert (merged.status, merged.merged_into) == ("merged", older.id)
        [record] = session.exec(select(MergeRecord)).all()
        # The order belongs to the buyer id's owner (the stronger identifier); the older profile was
        # linked to it through her e-mail, and survives.
        assert (record.survivor_id, record.merged_id, record.rule) == (older.id, newer.id, "email")
        assert record.linked_by == ["email"]
        assert sorted(k for k, _ in record.moved_identifiers) == ["customer_id", "phone"]
        events = [m.event_type for m in session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id)))]
    assert events.count("profile.merged") == 1
    assert owner(engine, "phone", "+5511912345678") == older.id

    profile_records.apply([link])  # redelivered: nothing changes
    [again] = active(engine)
    assert (again.orders_count, again.merges, again.version) == (3, 1, survivor.version)


def test_a_batch_takes_its_owners_locks_all_at_once_or_waits_holding_none(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    profile_records.apply([order("L-1", email="ana@example.com"), order("L-2", email="bia@example.com")])
    low, high = sorted([owner(engine, "email", "ana@example.com"), owner(engine, "email", "bia@example.com")])
    lock = sa.text("SELECT id FROM profile WHERE id = :id FOR UPDATE NOWAIT")
    with engine.connect() as holder:
        holder.execute(lock, {"id": high})  # another writer holds one of the batch's owners
        batch = threading.Thread(
            target=profile_records.apply,
            args=([order("L-3", email="ana@example.com"), order("L-4", email="bia@example.com")],),
        )
        batch.start()
        time.sleep(1.0)  # the batch has met the lock and waits
        free = 0
        for _ in range(10):
            # While it waits, the owner it would take first is nobody's: a waiting batch holds none of its
            # owners, so it cannot be one side of a deadlock. (Taking them in order and waiting at `high`,
            # it would hold `low` all along.)
            with engine.connect() as probe:
                try:
                    probe.execute(lock, {"id": low})
                    free += 1
                except sa.exc.OperationalError:
                    pass
                probe.rollback()
            time.sleep(0.1)
        assert batch.is_alive()
        holder.rollback()
    batch.join(timeout=30)
    assert not batch.is_alive()
    assert free >= 8
    assert sorted(p.orders_count for p in active(engine)) == [2, 2]


def orders_of(engine: Engine, kind: str, value: str) -> int:
    with Session(engine) as session:
        found = session.get(Profile, owner(engine, kind, value))
        assert found is not None
        return found.orders_count


def test_a_batch_leaves_the_events_of_a_profile_another_transaction_holds_for_after_its_commit(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    """With `consumer_defer_busy`: another member of the group is changing Bia's profile, so the batch
    applies Ana's and Carla's orders and commits without waiting for it, then applies Bia's once the other
    transaction is done."""
    profile_records.apply([order("D-1", email="ana@example.com"), order("D-2", email="bia@example.com")])
    lock = sa.text("SELECT id FROM profile WHERE id = :id FOR UPDATE")
    with engine.connect() as holder:
        holder.execute(lock, {"id": owner(engine, "email", "bia@example.com")})
        batch = threading.Thread(
            target=profile_records.apply,
            kwargs={"may_defer": True},
            args=(
                [
                    order("D-3", email="ana@example.com"),
                    order("D-4", email="bia@example.com"),
                    # Linked to Bia's order by her CPF: one person's events stay together.
                    order("D-5", email="bia.work@example.com", document="529.982.247-25"),
                    order("D-6", email="bia@example.com", document="529.982.247-25"),
                    order("D-7", email="carla@example.com"),
                ],
            ),
        )
        batch.start()

        def committed_but_bia() -> None:
            assert orders_of(engine, "email", "ana@example.com") == 2
            assert orders_of(engine, "email", "carla@example.com") == 1

        eventually(committed_but_bia, timeout=10)
        assert batch.is_alive()
        assert orders_of(engine, "email", "bia@example.com") == 1
        with Session(engine) as session:
            ((_, work),) = identity.blind(TENANT, [("email", "bia.work@example.com")])
            assert session.get(ProfileIdentifier, (TENANT, "email", work)) is None
        holder.rollback()
    batch.join(timeout=30)
    assert not batch.is_alive()
    assert orders_of(engine, "email", "bia@example.com") == 4
    assert owner(engine, "email", "bia.work@example.com") == owner(engine, "email", "bia@example.com")
    assert sorted(p.orders_count for p in active(engine)) == [1, 2, 4]  # Carla, Ana, Bia


def test_a_batch_that_waited_reads_the_owners_again_a_merge_moved_meanwhile(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    """The batch reads who owns Fia's e-mail (her Shopee profile), then waits for that profile's lock while
    another member merges it into her older one. Once it has the lock, it reads the owners again: her order
    goes to the survivor, not to the merged profile."""
    profile_records.apply([order("F-1", email="fia@example.com")])
    profile_records.apply([order("F-2", source="shopee", external_id="fia-s", email="fia.s@example.com")])
    older, newer = (p.id for p in active(engine))
    with engine.connect() as holder:
        holder.execute(sa.text("SELECT id FROM profile WHERE id = :id FOR UPDATE"), {"id": newer})
        batch = threading.Thread(
            target=profile_records.apply, args=([order("F-3", email="fia.s@example.com")],)
        )
        batch.start()
        time.sleep(1.0)  # it has read the owners and waits for the lock
        assert batch.is_alive()
        # The other member merges the Shopee profile into the older one (as `identity.merge` leaves them).
        holder.execute(
            sa.text("UPDATE profile_identifier SET profile_id = :older WHERE profile_id = :newer"),
            {"older": older, "newer": newer},
        )
        holder.execute(
            sa.text("UPDATE profile_order SET profile_id = :older WHERE profile_id = :newer"),
            {"older": older, "newer": newer},
        )
        holder.execute(
            sa.text("UPDATE profile SET status = 'merged', merged_into = :older WHERE id = :newer"),
            {"older": older, "newer": newer},
        )
        holder.commit()
    batch.join(timeout=30)
    assert not batch.is_alive()
    with Session(engine) as session:
        placed = session.exec(select(ProfileOrder.profile_id).where(ProfileOrder.tenant_id == TENANT)).all()
    assert set(placed) == {older}
    assert owner(engine, "email", "fia.s@example.com") == older


@pytest.mark.parametrize("defer", [False, True])
def test_a_new_identifier_another_member_is_storing_waits_for_it(
    engine: Engine,
    settings: ServiceSettings,
    profile_records: ConsumerWorker,
    monkeypatch: pytest.MonkeyPatch,
    defer: bool,
) -> None:
    """Two members of the group see Dora's new e-mail at once. The second waits for the first to commit
    (with `consumer_defer_busy`, only Dora's order waits: the rest of its batch commits at once) and puts
    her order in the profile the first made: not a second profile, and no batch failing at its commit to be
    applied again whole."""
    other_member = dict(profile_workers(engine, settings))["profile-records"]
    assert isinstance(other_member, ConsumerWorker)
    hooks = other_member.hooks
    assert isinstance(hooks, ProfileBatch)
    finish, storing, go_on = hooks.finish, threading.Event(), threading.Event()

    def finish_and_wait(session: Session) -> None:
        finish(session)
        storing.set()
        assert go_on.wait(30)

    monkeypatch.setattr(hooks, "finish", finish_and_wait)
    first = threading.Thread(target=other_member.apply, args=([order("N-1", email="dora@example.com")],))
    first.start()
    assert storing.wait(30)  # Dora's profile made, not committed
    second = threading.Thread(
        target=profile_records.apply,
        kwargs={"may_defer": defer},
        args=([order("N-2", email="dora@example.com"), order("N-3", email="eva@example.com")],),
    )
    second.start()
    if defer:
        eventually(lambda: orders_of(engine, "email", "eva@example.com") == 1, timeout=10)
    else:
        time.sleep(1.0)
        assert len(active(engine)) == 0  # nothing committed: the batch waits, holding no lock
    assert second.is_alive()  # Dora's order waits
    go_on.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert not first.is_alive()
    assert not second.is_alive()
    assert orders_of(engine, "email", "dora@example.com") == 2
    assert sorted(p.orders_count for p in active(engine)) == [1, 2]


def test_merges_within_one_poll_move_what_each_merged_profile_held(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    """Three profiles made and merged in one batch (their rows not yet written when they merge, and the
    middle one merged on into the oldest): each merge record names the orders its merge moved, as merging
    them one poll at a time does, and every order and identifier ends with the survivor."""
    tenant_orders = [
        order("P-1", "10.00", email="rita@example.com"),
        order("P-2", "20.00", source="shopee", external_id="rita-s"),
        order("P-3", "30.00", source="meli", external_id="rita-m"),
        order("P-4", "40.00", source="shopee", external_id="rita-s", email="rita@example.com"),
        order("P-5", "50.00", source="meli", external_id="rita-m", email="rita@example.com"),
    ]
    profile_records.apply(tenant_orders)
    [survivor] = [p for p in active(engine) if p.id == owner(engine, "email", "rita@example.com")]
    assert (survivor.orders_count, survivor.total_spent_minor, survivor.merges) == (5, 15000, 2)
    with Session(engine) as session:
        records = session.exec(select(MergeRecord).where(MergeRecord.survivor_id == survivor.id)).all()
        assert sorted(len(r.moved_orders) for r in records) == [1, 1]
        assert all(r.method == "deterministic" for r in records)
        owners = session.exec(
            select(ProfileIdentifier.profile_id).where(ProfileIdentifier.tenant_id == TENANT)
        )
        moved = {str(r.merged_id) for r in records}
        assert moved.isdisjoint({str(pid) for pid in owners})
    for kind, value in (("customer_id", "shopee:rita-s"), ("customer_id", "meli:rita-m")):
        assert owner(engine, kind, value) == survivor.id


def test_a_profile_merged_on_within_one_poll_takes_what_it_took_in_with_it(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    """In one batch the Mercado Livre buyer's profile merges into the Shopee buyer's (one document), which
    then merges into the oldest (one e-mail): the second merge moved the Shopee profile's orders, the one it
    took in among them, as merging them one poll at a time does; nothing points at a merged profile."""
    cpf = "529.982.247-25"
    profile_records.apply(
        [
            order("Q-1", "10.00", email="lia@example.com"),
            order("Q-2", "20.00", source="shopee", external_id="lia-s"),
            order("Q-3", "30.00", source="meli", external_id="lia-m", document=cpf),
            order("Q-4", "40.00", source="shopee", external_id="lia-s", document=cpf),
            order("Q-5", "50.00", source="shopee", external_id="lia-s", email="lia@example.com"),
        ]
    )
    survivor_id = owner(engine, "email", "lia@example.com")
    with Session(engine) as session:
        survivor = session.get(Profile, survivor_id)
        assert survivor is not None
        assert (survivor.orders_count, survivor.total_spent_minor, survivor.merges) == (5, 15000, 2)
        first, second = session.exec(select(MergeRecord).order_by(col(MergeRecord.created_at))).all()
        assert (len(first.moved_orders), first.survivor_id) == (1, second.merged_id)
        assert (len(second.moved_orders), second.survivor_id) == (3, survivor_id)
        assert set(first.moved_orders) < set(second.moved_orders)
        merged = session.exec(select(Profile).where(Profile.status == "merged")).all()
        assert {p.merged_into for p in merged if p.id in (first.merged_id, second.merged_id)} == {survivor_id}


def test_a_customer_record_and_its_next_version_in_one_poll_keep_the_newest(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    """Versions 1 and 2 of one CRM record in the same poll, then version 1 delivered again later: the
    profile keeps one record, version 2 (its name), whatever the poll held (`known_records`)."""
    record_id = uuid4()

    def version(number: int, name: str) -> bytes:
        customer = CustomerRecord.model_validate(
            {"source": "crm", "external_id": "K-1", "email": "kai@example.com", "name": name}
        )
        event = CustomerRecorded(record_id=record_id, record_version=number, customer=customer)
        return event.envelope(TENANT).to_bytes()

    profile_records.apply(
        [order("K-0", email="kai@example.com"), version(1, "Kai Souza"), version(2, "Kai Lima")]
    )
    profile_records.apply([version(1, "Kai Souza")])  # an older version, late (another event id)
    with Session(engine) as session:
        [stored] = session.exec(select(ProfileRecord).where(ProfileRecord.id == record_id)).all()
        assert stored.record_version == 2
        profile = session.get(Profile, owner(engine, "email", "kai@example.com"))
        assert profile is not None
        assert profile.name == "Kai Lima"


def test_two_different_documents_never_merge(engine: Engine, profile_records: ConsumerWorker) -> None:
    profile_records.apply([order("D-1", email="casa@example.com", document="529.982.247-25")])
    profile_records.apply([order("D-2", phone="11988887777", document="111.444.777-35")])
    # A shared family e-mail on the second person's order: it is hers (her document decides), no merge.
    profile_records.apply([order("D-3", email="casa@example.com", document="111.444.777-35")])
    first, second = active(engine)
    assert (first.orders_count, second.orders_count) == (1, 2)
    assert owner(engine, "document", "11144477735") == second.id
    assert owner(engine, "email", "casa@example.com") == first.id
    with Session(engine) as session:
        assert session.exec(select(MergeRecord)).all() == []


def test_a_new_document_on_a_shared_e_mail_is_another_person(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    profile_records.apply([order("S-1", email="familia@example.com", document="529.982.247-25")])
    # The family's e-mail with a document nobody holds yet: not a second CPF dropped from the first
    # person's profile, but somebody new; the e-mail stays where it was.
    profile_records.apply([order("S-2", email="familia@example.com", document="111.444.777-35")])
    first, second = active(engine)
    assert (first.orders_count, second.orders_count) == (1, 1)
    assert owner(engine, "document", "52998224725") == first.id
    assert owner(engine, "document", "11144477735") == second.id
    assert owner(engine, "email", "familia@example.com") == first.id
    # Without a document of its own, the e-mail's records still join its profile.
    profile_records.apply([order("S-3", email="familia@example.com")])
    assert [p.orders_count for p in active(engine)] == [2, 1]


def test_a_shared_phone_alone_never_merges(engine: Engine, profile_records: ConsumerWorker) -> None:
    profile_records.apply([order("F-1", email="pai@example.com", phone="11977776666")])
    profile_records.apply([order("F-2", email="filha@example.com")])
    profile_records.apply([order("F-3", email="filha@example.com", phone="11977776666")])
    assert [p.orders_count for p in active(engine)] == [1, 2]


@pytest.mark.parametrize("arrival", list(itertools.permutations(range(3))))
def test_an_order_with_a_phone_alone_joins_its_person_whenever_it_arrives(
    engine: Engine, profile_records: ConsumerWorker, arrival: tuple[int, ...]
) -> None:
    # Her e-mail; her e-mail and phone; her phone alone (another Kafka partition: it may come first). The
    # phone-only order's profile holds nobody known, so the order that links its phone to her joins them.
    orders = [
        order("P-1", email="maria@example.com"),
        order("P-2", email="maria@example.com", phone="11987654321"),
        order("P-3", phone="+55 11 98765-4321"),
    ]
    for index in arrival:
        profile_records.apply([orders[index]])
    assert [p.orders_count for p in active(engine)] == [3]


def test_placeholder_values_identify_nobody(engine: Engine, profile_records: ConsumerWorker) -> None:
    profile_records.apply([order("T-1", email="teste@teste.com", external_id="x1")])
    profile_records.apply([order("T-2", email="TESTE@teste.com", external_id="x2")])
    assert len(active(engine)) == 2
    with Session(engine) as session:
        kinds = {row.kind for row in session.exec(select(ProfileIdentifier))}
    assert kinds == {"customer_id"}


def test_a_merged_id_keeps_answering_and_explains_the_merge(stack: Any) -> None:
    from tests.support import auth, eventually

    key = stack.create_tenant()
    bodies = [
        order_body("M-1", "lia@example.com", "100.00"),
        order_body("M-2", "lia.work@example.com", "50.00"),
    ]
    bodies[1]["customer"]["external_id"] = "LIA-7"
    link = order_body("M-3", "lia@example.com", "25.00")
    link["customer"]["external_id"] = "LIA-7"
    for body in bodies:
        assert stack.ingest.post("/v1/orders", json=body, headers=auth(key)).status_code == 202

    def two() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = stack.profile.get("/v1/profiles", headers=auth(key)).json()["items"]
        assert len(items) == 2
        return items

    first, second = sorted(eventually(two), key=lambda p: p["created_at"])
    segment = stack.segmentation.post(
        "/v1/segments",
        json={"name": "any", "rule": {"field": "orders_count", "op": "gte", "value": 1}},
        headers=auth(key),
    ).json()
    assert stack.ingest.post("/v1/orders", json=link, headers=auth(key)).status_code == 202
    # The two orders may have been consumed in either order (different keys, different partitions):
    # whichever profile is older survives.
    merged_id = second["id"]

    def merged() -> dict[str, Any]:
        profile: dict[str, Any] = stack.profile.get(f"/v1/profiles/{merged_id}", headers=auth(key)).json()
        assert profile["status"] == "merged"
        return profile

    pointer = eventually(merged)
    assert pointer["merged_into"] == first["id"]
    survivor = stack.profile.get(f"/v1/profiles/{pointer['merged_into']}", headers=auth(key)).json()
    assert (survivor["status"], survivor["orders_count"], survivor["total_spent"]) == ("active", 3, "175.00")
    merges = stack.profile.get(f"/v1/profiles/{merged_id}/merges", headers=auth(key)).json()["items"]
    assert [(m["survivor_id"], m["merged_id"]) for m in merges] == [(survivor["id"], merged_id)]
    # The order belongs to the owner of its strongest identifier (the buyer id, on the lia.work profile);
    # the other profile was linked to it through her e-mail.
    assert merges[0]["rule"] == "email"
    moved_identifiers = 2 if pointer["email"] == "lia.work@example.com" else 1  # e-mail + buyer id, or e-mail
    assert merges[0]["moved"] == {"identifiers": moved_identifiers, "orders": 1}
    assert "lia" not in str(merges)  # the record says which kinds linked them, not the values
    timeline = stack.profile.get(f"/v1/profiles/{merged_id}/timeline", headers=auth(key)).json()["items"]
    assert sorted(e["type"] for e in timeline) == ["merge", "order", "order", "order"]
    assert {e["total"] for e in timeline if e["type"] == "order"} == {"100.00", "50.00", "25.00"}

    def segment_has_only_the_survivor() -> None:
        members = stack.segmentation.get(f"/v1/segments/{segment['id']}/members", headers=auth(key)).json()
        assert [m["profile_id"] for m in members["items"]] == [survivor["id"]]

    eventually(segment_has_only_the_survivor)


def test_customer_records_and_behaviour_build_the_profile(stack: Any) -> None:
    from tests.support import auth, eventually

    key = stack.create_tenant()
    h = auth(key)
    # Anonymous browsing first, then a sign-up form on the same device, then an order.
    browse = {
        "type": "product_view",
        "anonymous_id": "dev-42",
        "occurred_at": "2026-11-18T10:00:00-03:00",
        "properties": {"sku": "CAFE"},
    }
    assert stack.ingest.post("/v1/events", json=browse, headers=h).status_code == 202
    signup = {
        "type": "signup",
        "anonymous_id": "dev-42",
        "customer": {"email": "rita@example.com"},
        "occurred_at": "2026-11-19T10:00:00-03:00",
    }
    assert stack.ingest.post("/v1/events", json=signup, headers=h).status_code == 202
    record = {
        "source": "site",
        "external_id": "C-42",
        "name": "RITA DE CÁSSIA",
        "email": "rita@example.com",
        "birth_date": "1990-05-20",
        "gender": "F",
        "address": {"city": "curitiba", "state": "Paraná", "zip": "80010-000"},
        "updated_at": "2026-11-19T11:00:00-03:00",
        "consents": [
            {
                "purpose": "marketing_email",
                "status": "granted",
                "at": "2026-11-19T11:00:00-03:00",
                "text_version": "v2",
            }
        ],
    }
    assert stack.ingest.post("/v1/customers", json=record, headers=h).status_code == 202
    revoked = order_body("R-1", "rita@example.com", "80.00")
    revoked["consents"] = [
        {"purpose": "marketing_email", "status": "revoked", "at": "2026-11-20T09:00:00-03:00"}
    ]
    assert stack.ingest.post("/v1/orders", json=revoked, headers=h).status_code == 202

    def complete() -> dict[str, Any]:
        items = stack.profile.get("/v1/profiles", params={"email": "rita@example.com"}, headers=h).json()[
            "items"
        ]
        assert len(items) == 1
        profile: dict[str, Any] = items[0]
        assert profile["orders_count"] == 1
        assert profile["behaviour"]["counts"] == {"product_view": 1, "signup": 1}
        assert profile["name"] == "Rita de Cássia"
        return profile

    profile = eventually(complete)
    assert (profile["gender"], profile["birth_date"]) == ("female", "1990-05-20")
    assert profile["age"] >= 36
    assert profile["location"] == {"city": "Curitiba", "state": "PR", "zip": "80010000", "country": "BR"}
    assert profile["consents"]["marketing_email"]["status"] == "revoked"  # the later decision wins
    assert profile["last_seen_at"] == "2026-11-19T13:00:00Z"
    assert profile["behaviour"]["viewed_products"] == ["CAFE"]
    assert profile["behaviour"]["carts_started"] == 0
    # The anonymous browsing profile and the known one were one person all along: one active profile.
    assert len(stack.profile.get("/v1/profiles", headers=h).json()["items"]) == 1
    by_device = stack.profile.get("/v1/profiles/" + profile["id"] + "/merges", headers=h).json()["items"]
    assert [m["rule"] for m in by_device] in ([], ["anonymous_id"])
    timeline = stack.profile.get(f"/v1/profiles/{profile['id']}/timeline", headers=h).json()["items"]
    kinds = [e["type"] for e in timeline if e["type"] != "merge"]
    assert kinds == ["order", "customer_record", "signup", "product_view"]  # newest first
    assert timeline[-1]["properties"] == {"sku": "CAFE"}
    assert "rita" not in str(timeline).lower()  # the timeline says what happened, not who


def test_profile_updated_carries_every_segmentable_trait_and_what_changed(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    first = order("U-1", "120.00", email="lia@example.com", phone="11977776666", name="Lia Prado")
    profile_records.apply([first])
    second = order_body("U-2", "lia@example.com", "80.00", source="shopee")
    second["customer"]["birth_date"] = "1991-04-02"
    profile_records.apply(
        [
            OrderIngested(order_id=uuid4(), order_version=1, order=Order.model_validate(second))
            .envelope(TENANT)
            .to_bytes()
        ]
    )
    profile_records.apply([first])  # redelivered: no new version
    with Session(engine) as session:
        updates = [
            decode(Envelope.from_bytes(open_body(m.body)))
            for m in session.exec(
                select(OutboxMessage)
                .where(OutboxMessage.event_type == "profile.updated")
                .order_by(col(OutboxMessage.id))
            )
        ]
    assert [type(u) for u in updates] == [ProfileUpdatedV2, ProfileUpdatedV2]
    one, two = (u for u in updates if isinstance(u, ProfileUpdatedV2))
    assert (one.profile_version, two.profile_version) == (1, 2)
    assert set(one.changed) == set(ProfileUpdatedV2.model_fields) - {
        "profile_id",
        "profile_version",
        "changed",
    }
    assert set(two.changed) == {
        "orders_count",
        "total_spent",
        "average_order_value",
        "sources",
        "birth_date",
    }  # placed at the same time as the first: last_order_at stays
    assert (two.orders_count, two.total_spent, two.average_order_value) == (
        2,
        Decimal("200.00"),
        Decimal("100.00"),
    )
    assert two.sources == ["shopee", "site"]
    assert two.birth_date == date(1991, 4, 2)
    text = two.model_dump_json()
    for personal in ("lia@example.com", "77776666", "Lia", "Prado"):
        assert personal not in text


def test_profile_lists_filter_by_place_orders_and_time_and_mask_contact_data(stack: Any) -> None:
    from tests.support import auth, eventually

    key = stack.create_tenant()
    h = auth(key)
    people = (
        ("F-1", "ana@example.com", "Curitiba", "PR", 2),
        ("F-2", "bia@example.com", "Curitiba", "PR", 1),
        ("F-3", "caio@example.com", "Santos", "SP", 1),
    )
    for number, email, city, state, orders in people:
        for n in range(orders):
            body = order_body(f"{number}-{n}", email, "10.00")
            body["customer"]["phone"] = f"1198888{int(number[-1]):04d}"
            body["customer"]["address"] = {"city": city, "state": state}
            assert stack.ingest.post("/v1/orders", json=body, headers=h).status_code == 202

    def listed(**params: Any) -> list[dict[str, Any]]:
        response = stack.profile.get("/v1/profiles", params=params, headers=h)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def all_there() -> None:
        assert sum(p["orders_count"] for p in listed()) == 4

    eventually(all_there)
    in_pr = listed(state="pr")
    assert sorted(p["email"] for p in in_pr) == ["a***@example.com", "b***@example.com"]
    assert all(p["phone"].startswith("+5511") and "*" in p["phone"] for p in in_pr)
    assert [p["email"] for p in listed(city="curitiba", min_orders=2)] == ["a***@example.com"]
    assert listed(updated_since="2999-01-01T00:00:00Z") == []
    assert len(listed(updated_since="2020-01-01T00:00:00Z")) == 3
    bad = stack.profile.get("/v1/profiles", params={"updated_since": "2026-01-01T00:00:00"}, headers=h)
    assert bad.status_code == 422
    assert stack.profile.get("/v1/profiles", params={"state": "São Paulo"}, headers=h).status_code == 422


def test_consents_put_by_the_seller_keep_their_history_and_leave_segments_at_once(stack: Any) -> None:
    from tests.support import auth, eventually

    key = stack.create_tenant()
    h = auth(key)
    body = order_body("C-1", "rui@example.com", "90.00")
    body["consents"] = [{"purpose": "marketing_email", "status": "granted", "at": "2026-11-20T10:00:00Z"}]
    assert stack.ingest.post("/v1/orders", json=body, headers=h).status_code == 202
    segment = stack.segmentation.post(
        "/v1/segments",
        json={
            "name": "newsletter",
            "rule": {"field": "consent", "key": "marketing_email", "op": "eq", "value": "granted"},
        },
        headers=h,
    )
    assert segment.status_code == 201
    members = f"/v1/segments/{segment.json()['id']}/members"

    def member() -> str:
        items = stack.segmentation.get(members, headers=h).json()["items"]
        assert len(items) == 1
        return str(items[0]["profile_id"])

    profile_id = eventually(member)
    url = f"/v1/profiles/{profile_id}/consents"
    revoke = {
        "consents": [
            {
                "purpose": "marketing_email",
                "status": "revoked",
                "source": "preference_centre",
                "text_version": "v3",
            }
        ]
    }
    response = stack.profile.put(url, json=revoke, headers=h)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["consents"]["marketing_email"]["status"] == "revoked"
    assert [(c["status"], c["origin"]) for c in answer["history"]] == [
        ("revoked", "api"),
        ("granted", "order"),
    ]

    def gone() -> None:
        assert stack.segmentation.get(members, headers=h).json()["items"] == []

    eventually(gone)
    assert stack.profile.get(url, headers=h).json() == answer
    timeline = stack.profile.get(f"/v1/profiles/{profile_id}/timeline", headers=h).json()["items"]
    assert timeline[0]["type"] == "consent_update"
    bad = stack.profile.put(
        url, json={"consents": [{"purpose": "telepathy", "status": "granted"}]}, headers=h
    )
    assert bad.status_code == 422
    other = auth(stack.create_tenant())
    assert stack.profile.put(url, json=revoke, headers=other).status_code == 404


def test_an_earlier_record_arriving_later_moves_the_first_sighting_back(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    """Contested identifiers go to the profile of the earliest record, so each identifier keeps when it
    was first seen: a record from before, delivered after, moves it back (written once per batch)."""

    def placed(number: str, at: str, **customer: Any) -> bytes:
        body = order_body(number, "unused@example.com", "10.00", placed_at=at)
        body["customer"] = customer
        event = OrderIngested(order_id=uuid4(), order_version=1, order=Order.model_validate(body))
        return event.envelope(TENANT).to_bytes()

    def first_seen(kind: str, value: str) -> str:
        with Session(engine) as session:
            ((_, index),) = identity.blind(TENANT, [(kind, value)])
            row = session.get(ProfileIdentifier, (TENANT, kind, index))
            assert row is not None
            assert row.seen_at is not None
            return row.seen_at.isoformat()

    email, phone = "sighting@example.com", "+5511912345670"
    profile_records.apply([placed("S-1", "2026-11-20T10:00:00-03:00", email=email, phone="11912345670")])
    profile_records.apply(
        [
            placed("S-2", "2026-11-01T10:00:00-03:00", email=email),
            placed("S-3", "2026-11-05T10:00:00-03:00", email=email),
        ]
    )
    assert first_seen("email", email) == "2026-11-01T13:00:00+00:00"
    assert first_seen("phone", phone) == "2026-11-20T13:00:00+00:00"
    assert owner(engine, "email", email) == owner(engine, "phone", phone)
