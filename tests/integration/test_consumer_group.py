"""Several profile consumers in one consumer group give the same profiles as one consumer.

The same generated orders and customer records (with their identifier noise, merges and look-alikes) are
resolved twice, as two tenants of one database: once by a single consumer applying everything in arrival
order, once through the real Kafka topics, keyed as ingest keys them, by three consumers of one group that
split the partitions and run concurrently. Who owns what must come out the same: which records make up
each profile, and each profile's traits.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from cli.generate import generate
from services.ingest.intake import CUSTOMERS as CUSTOMER_KIND
from services.ingest.intake import ORDERS as ORDER_KIND
from services.profile.consumer import workers
from services.profile.models import Profile, ProfileIdentifier, ProfileOrder, ProfileRecord
from shared.consumer import ConsumerWorker
from shared.crypto import keyring
from shared.events import CustomerRecorded, Event, OrderIngested
from shared.infra import ProcessedEvent
from shared.records import CustomerRecord, Order
from shared.settings import ServiceSettings
from shared.topics import CUSTOMERS, ORDERS
from shared.web import WorkerThreads
from tests.support import SettingsFactory, eventually

pytestmark = pytest.mark.integration
OLIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "olist"
CONSUMERS = 3


@pytest.fixture
def settings(make_settings: SettingsFactory) -> ServiceSettings:
    result: ServiceSettings = make_settings("profile")
    return result


def records(folder: Path) -> list[tuple[str, Order | CustomerRecord]]:
    """Orders and customer records in arrival order (the generator's lines carry their send time)."""
    found: list[tuple[str, str, Order | CustomerRecord]] = []
    for line in (folder / "orders.jsonl").read_bytes().splitlines():
        order = Order.model_validate(orjson.loads(line))
        found.append((str(order.updated_at or order.placed_at), "order", order))
    for line in (folder / "customers.jsonl").read_bytes().splitlines():
        record = CustomerRecord.model_validate(orjson.loads(line))
        found.append((str(record.updated_at), "customer", record))
    return [(kind, record) for _, kind, record in sorted(found, key=lambda f: f[0])]


def events(tenant: uuid.UUID, data: list[tuple[str, Order | CustomerRecord]]) -> list[tuple[str, str, Event]]:
    """(topic name, key, event) as ingest would publish them, versions numbered per record."""
    ids: dict[tuple[str, str, str], uuid.UUID] = {}
    versions: dict[uuid.UUID, int] = defaultdict(int)
    out: list[tuple[str, str, Event]] = []
    for kind, record in data:
        record_id = ids.setdefault((kind, record.source, record.external_id or ""), uuid.uuid4())
        versions[record_id] += 1
        if isinstance(record, Order):
            event: Event = OrderIngested(order_id=record_id, order_version=versions[record_id], order=record)
            out.append((ORDERS.name, ORDER_KIND.kafka_key(tenant, record), event))
        else:
            event = CustomerRecorded(record_id=record_id, record_version=versions[record_id], customer=record)
            out.append((CUSTOMERS.name, CUSTOMER_KIND.kafka_key(tenant, record), event))
    return out


def outcome(engine: Engine, tenant: uuid.UUID) -> set[tuple[Any, ...]]:
    """Each active profile as what it holds (records by source and external id) and its traits, without
    ids or times: comparable across tenants."""
    found: set[tuple[Any, ...]] = set()
    with Session(engine) as session:
        held: dict[uuid.UUID, list[str]] = defaultdict(list)
        for stored, order in session.exec(
            select(ProfileOrder.profile_id, ProfileOrder.order_id).where(ProfileOrder.tenant_id == tenant)
        ):
            held[stored].append(f"order:{order}")
        for profile_id, kind, source, occurred in session.exec(
            select(
                ProfileRecord.profile_id, ProfileRecord.kind, ProfileRecord.source, ProfileRecord.occurred_at
            ).where(ProfileRecord.tenant_id == tenant)
        ):
            held[profile_id].append(f"{kind}:{source}:{occurred.isoformat()}")
        identifiers: dict[uuid.UUID, list[tuple[str, str]]] = defaultdict(list)
        for row in session.exec(select(ProfileIdentifier).where(ProfileIdentifier.tenant_id == tenant)):
            identifiers[row.profile_id].append((row.kind, keyring().open(row.tenant_id, row.sealed)))
        for profile in session.exec(
            select(Profile).where(Profile.tenant_id == tenant, Profile.status == "active")
        ):
            found.add(
                (
                    tuple(sorted(identifiers[profile.id])),
                    profile.orders_count,
                    profile.total_spent_minor,
                    profile.name,
                    profile.city,
                    orjson.dumps(profile.purchases, option=orjson.OPT_SORT_KEYS),
                    len(held[profile.id]),
                )
            )
    return found


@pytest.mark.parametrize("defer_busy", [True, False], ids=["deferring", "waiting"])
def test_three_consumers_in_a_group_give_the_profiles_of_one(
    engine: Engine, settings: ServiceSettings, producer: KafkaProducer, tmp_path: Path, defer_busy: bool
) -> None:
    """Both ways a member meets the profiles another member is writing (`consumer_defer_busy`): leaving
    their events for a transaction after its own (the default), or waiting for them."""
    settings = settings.model_copy(update={"consumer_defer_busy": defer_busy})
    generate(800, 21, tmp_path, olist_dir=OLIST)
    data = records(tmp_path)
    alone, group = uuid.uuid4(), uuid.uuid4()

    single = dict(workers(engine, settings))["profile-records"]
    assert isinstance(single, ConsumerWorker)
    published = events(alone, data)
    for start in range(0, len(published), 200):
        single.apply([e.envelope(alone).to_bytes() for _, _, e in published[start : start + 200]])

    for topic, key, event in events(group, data):
        full = (
            ORDERS.full(settings.topic_prefix)
            if topic == ORDERS.name
            else CUSTOMERS.full(settings.topic_prefix)
        )
        producer.send(full, key=key.encode(), value=event.envelope(group).to_bytes())
    producer.flush(timeout=30)
    threads = WorkerThreads(
        [(f"records-{i}", dict(workers(engine, settings))["profile-records"]) for i in range(CONSUMERS)]
    )
    threads.start()
    try:

        def all_applied() -> None:
            with Session(engine) as session:
                done = session.exec(select(func.count()).select_from(ProcessedEvent)).one()
            assert done == 2 * len(published)

        eventually(all_applied, timeout=240, interval=1.0)
    finally:
        threads.stop()

    expected, got = outcome(engine, alone), outcome(engine, group)
    missing, extra = sorted(expected - got, key=repr)[:3], sorted(got - expected, key=repr)[:3]
    assert got == expected, f"one consumer made {missing}, the group {extra}"


def test_where_a_poll_ends_changes_no_profile(
    engine: Engine, settings: ServiceSettings, tmp_path: Path
) -> None:
    """One consumer, the same records in polls of three sizes, as Kafka may deliver them: the same profiles.
    (The one case found where it did not, once in 100,000 generated orders, has its own test:
    `test_probabilistic`, a survivor found by the look-alikes of the profile it took in.)"""
    generate(800, 5, tmp_path, olist_dir=OLIST)
    data = records(tmp_path)
    worker = dict(workers(engine, settings))["profile-records"]
    assert isinstance(worker, ConsumerWorker)
    outcomes = []
    for size in (len(data), 150, 41):
        tenant = uuid.uuid4()
        published = [e.envelope(tenant).to_bytes() for _, _, e in events(tenant, data)]
        for start in range(0, len(published), size):
            worker.apply(published[start : start + size])
        outcomes.append(outcome(engine, tenant))
    assert outcomes[0] == outcomes[1] == outcomes[2]
