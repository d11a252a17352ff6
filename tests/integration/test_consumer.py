"""The idempotent consumer against real Kafka and PostgreSQL: duplicates, poison messages, dead letters, a
client that lost its heartbeat."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

import shared.kafka
from services.profile.consumer import workers
from services.profile.models import Profile, ProfileOrder
from shared import consumer as consumer_module
from shared.consumer import ConsumerWorker
from shared.events import OrderIngested
from shared.infra import OutboxMessage, ProcessedEvent
from shared.records import Order
from shared.settings import ServiceSettings
from shared.topics import ORDERS, PROFILE_DLQ
from shared.web import WorkerThreads
from tests.support import KAFKA, SettingsFactory, eventually, order_body

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(make_settings: SettingsFactory) -> ServiceSettings:
    result: ServiceSettings = make_settings("profile")
    return result


def orders_worker(engine: Engine, settings: ServiceSettings) -> ConsumerWorker:
    worker = dict(workers(engine, settings))["profile-records"]
    assert isinstance(worker, ConsumerWorker)
    return worker


def order_event(tenant_id: UUID, external_id: str, email: str, total: str) -> bytes:
    order = Order.model_validate(order_body(external_id, email, total))
    return OrderIngested(order_id=uuid4(), order_version=1, order=order).envelope(tenant_id).to_bytes()


def count(engine: Engine, model: type[Profile] | type[ProfileOrder] | type[ProcessedEvent]) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(model)).one())


def test_the_same_event_delivered_twice_leaves_one_effect(
    engine: Engine, settings: ServiceSettings, producer: KafkaProducer
) -> None:
    tenant_id = uuid4()
    raw = order_event(tenant_id, "A-1", "maria@example.com", "100.00")
    topic = ORDERS.full(settings.topic_prefix)
    for _ in range(2):  # a redelivery, as after a crash between DB commit and offset commit
        producer.send(topic, key=b"k", value=raw).get(timeout=10)

    worker = orders_worker(engine, settings)
    threads = WorkerThreads([("orders", worker)])
    threads.start()
    try:

        def both_seen() -> None:
            assert worker.applied_total == 1
            assert count(engine, ProcessedEvent) == 1

        eventually(both_seen)
    finally:
        threads.stop()

    assert worker.apply([raw]) == 0  # and once more, directly: already processed
    with Session(engine) as session:
        profile = session.exec(select(Profile)).one()
        assert (profile.orders_count, profile.total_spent_minor, profile.version) == (1, 10000, 1)
        assert count(engine, ProfileOrder) == 1
        events = session.exec(select(OutboxMessage.event_type)).all()
        assert events == ["profile.updated"]  # one effect, one announcement


def dead_letters(topic: str, expect: int) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = KafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False, group_id=None)
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        found: list[tuple[bytes, dict[str, bytes]]] = []
        for _ in range(50):
            for records in consumer.poll(timeout_ms=200).values():
                found.extend((r.value, dict(r.headers)) for r in records)
            if len(found) >= expect:
                break
        return found
    finally:
        consumer.close()


@pytest.mark.faults
def test_poison_messages_go_to_the_dead_letter_topic_and_the_partition_keeps_flowing(
    engine: Engine, settings: ServiceSettings, producer: KafkaProducer
) -> None:
    tenant_id = uuid4()
    topic = ORDERS.full(settings.topic_prefix)
    good_before = order_event(tenant_id, "G-1", "ana@example.com", "10.00")
    # Valid JSON, impossible content: a negative total.
    impossible = orjson.loads(order_event(tenant_id, "P-1", "ana@example.com", "20.00"))
    impossible["payload"]["order"]["total"] = "-5.00"
    not_json = b"\x00not json"
    good_after = order_event(tenant_id, "G-2", "ana@example.com", "30.00")
    sent = [good_before, orjson.dumps(impossible), not_json, good_after]
    metadata = [producer.send(topic, key=b"same-key", value=v).get(timeout=10) for v in sent]
    assert len({m.partition for m in metadata}) == 1  # one partition: the poison sits between good ones

    threads = WorkerThreads([("orders", orders_worker(engine, settings))])
    threads.start()
    try:

        def both_good_orders_applied() -> None:
            with Session(engine) as session:
                profile = session.exec(select(Profile)).first()
                assert profile is not None
                assert profile.orders_count == 2
                assert Decimal(profile.total_spent_minor) == Decimal(4000)

        eventually(both_good_orders_applied)
        letters = eventually(lambda: _two(dead_letters(PROFILE_DLQ.full(settings.topic_prefix), expect=2)))
    finally:
        threads.stop()

    assert [value for value, _ in letters] == [orjson.dumps(impossible), not_json]
    for (_, headers), original in zip(letters, metadata[1:3], strict=True):
        assert headers["dlq.original.topic"] == topic.encode()
        assert headers["dlq.original.partition"] == str(original.partition).encode()
        assert headers["dlq.original.offset"] == str(original.offset).encode()
    assert b"ValidationError" in letters[0][1]["dlq.error"]
    assert b"order.total" in letters[0][1]["dlq.error"]
    assert b"ana@example.com" not in b"".join(h for _, hs in letters for h in hs.values())


def _two(letters: list[tuple[bytes, dict[str, bytes]]]) -> list[tuple[bytes, dict[str, bytes]]]:
    assert len(letters) == 2
    return letters


def test_a_consumer_that_lost_its_heartbeat_joins_its_group_again(
    engine: Engine,
    settings: ServiceSettings,
    producer: KafkaProducer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kafka-python 3.0.12 on a saturated machine: its heartbeat task off while it believes it is a stable
    member, so the broker drops it and every poll spins. Made to happen here on the real client; the
    worker must notice (its idle polls use the CPU), join again, and go on consuming."""
    made: list[KafkaConsumer] = []
    make_consumer = shared.kafka.make_consumer

    def tracked(*args: Any, **kwargs: Any) -> KafkaConsumer:
        made.append(make_consumer(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(consumer_module, "make_consumer", tracked)
    monkeypatch.setattr(consumer_module, "SPIN_REJOIN_S", 3.0)  # a session timeout (10 s) in production
    worker = orders_worker(engine, settings)
    threads = WorkerThreads([("orders", worker)])
    threads.start()
    try:

        def heartbeating() -> None:  # joined, and a heartbeat answered since (the join turns them on)
            assert made
            assert made[0].assignment()
            heartbeat = made[0]._coordinator.heartbeat
            assert heartbeat.last_receive > heartbeat.last_reset

        eventually(heartbeating)
        made[0]._coordinator._disable_heartbeat()  # the client's state in the runs where it happened

        def joined_again() -> None:
            assert len(made) == 2
            assert made[1].assignment()

        eventually(joined_again, timeout=30)
        raw = order_event(uuid4(), "A-1", "maria@example.com", "100.00")
        producer.send(ORDERS.full(settings.topic_prefix), key=b"k", value=raw).get(timeout=10)

        def applied() -> None:
            assert worker.applied_total == 1

        eventually(applied)
    finally:
        threads.stop()
    assert "idle polls keep using the CPU; joining the group again" in caplog.messages


def test_work_after_the_commit_that_fails_leaves_the_batch_applied(
    engine: Engine,
    settings: ServiceSettings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = orders_worker(engine, settings)
    assert worker.hooks is not None

    def fails(session: Session) -> None:
        raise ValueError("a bug in the hook")

    monkeypatch.setattr(worker.hooks, "after_commit", fails)
    raw = order_event(uuid4(), "A-1", "maria@example.com", "100.00")
    assert worker.apply([raw]) == 1
    assert worker.applied_total == 1
    assert count(engine, ProcessedEvent) == 1
    assert count(engine, ProfileOrder) == 1
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "work after the batch's commit failed"
    ]
    assert "maria" not in caplog.text
