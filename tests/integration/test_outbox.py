"""The transactional outbox against real PostgreSQL and Kafka: publish after commit only, in order; published
rows purged after the retention window, or at once on demand."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from shared.db import utcnow
from shared.events import Envelope, TenantCreated
from shared.infra import OutboxMessage
from shared.outbox import OutboxRelay, add_event, purge_published
from shared.settings import ServiceSettings
from shared.topics import TENANTS
from shared.web import WorkerThreads
from tests.support import KAFKA, SettingsFactory, eventually

pytestmark = pytest.mark.integration


def read_topic(topic: str, *, expect: int, timeout_s: float = 10.0) -> list[Envelope]:
    """Every message on `topic` (all partitions, from the start), once `expect` have arrived or time is up."""
    consumer = KafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        found: list[Envelope] = []
        attempts = int(timeout_s / 0.2)
        for _ in range(attempts):
            for records in consumer.poll(timeout_ms=200).values():
                found.extend(Envelope.from_bytes(r.value) for r in records)
            if len(found) >= expect:
                # One more short poll: anything beyond `expect` would be a duplicate to report.
                for records in consumer.poll(timeout_ms=500).values():
                    found.extend(Envelope.from_bytes(r.value) for r in records)
                break
        return found
    finally:
        consumer.close()


@pytest.fixture
def settings(make_settings: SettingsFactory) -> ServiceSettings:
    result: ServiceSettings = make_settings("ingest")
    return result


def tenant_created() -> TenantCreated:
    return TenantCreated(name="Loja", created_at=utcnow())


def test_relay_publishes_committed_events_only(
    engine: Engine, settings: ServiceSettings, producer: KafkaProducer
) -> None:
    relay = OutboxRelay(engine, settings)
    tenant_id = uuid4()

    with Session(engine) as session:
        add_event(session, tenant_created(), tenant_id=tenant_id, key=str(tenant_id))
        session.flush()  # the row exists inside this open transaction...
        assert relay.publish_batch(producer) == 0  # ...but the relay cannot see it
        session.rollback()
    assert relay.publish_batch(producer) == 0  # rolled back: never published

    with Session(engine) as session:
        committed = add_event(session, tenant_created(), tenant_id=tenant_id, key=str(tenant_id))
        session.commit()
    assert relay.publish_batch(producer) == 1
    assert relay.publish_batch(producer) == 0  # marked as published

    on_kafka = read_topic(TENANTS.full(settings.topic_prefix), expect=1)
    assert [e.event_id for e in on_kafka] == [committed.event_id]
    assert (on_kafka[0].event_id, on_kafka[0].occurred_at) == committed
    assert on_kafka[0].type == TenantCreated.TYPE
    with Session(engine) as session:
        unpublished = session.exec(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at == None)  # noqa: E711
        ).one()
        assert unpublished == 0


def test_relay_keeps_the_order_of_events_with_the_same_key(
    engine: Engine, settings: ServiceSettings, producer: KafkaProducer
) -> None:
    relay = OutboxRelay(engine, settings, batch_size=40)  # several batches
    tenant_id = uuid4()
    written = []
    for _ in range(5):
        with Session(engine) as session:
            written += [
                add_event(session, tenant_created(), tenant_id=tenant_id, key=str(tenant_id)).event_id
                for _ in range(30)
            ]
            session.commit()
    while relay.publish_batch(producer):
        pass
    on_kafka = read_topic(TENANTS.full(settings.topic_prefix), expect=len(written))
    assert [e.event_id for e in on_kafka] == written


def _stage(engine: Engine, count: int) -> list[UUID]:
    tenant_id = uuid4()
    with Session(engine) as session:
        ids = [
            add_event(session, tenant_created(), tenant_id=tenant_id, key=str(tenant_id)).event_id
            for _ in range(count)
        ]
        session.commit()
    return ids


def _published_at(engine: Engine, event_ids: list[UUID], at: datetime) -> None:
    with Session(engine) as session:
        session.execute(
            sa.update(OutboxMessage).where(col(OutboxMessage.event_id).in_(event_ids)).values(published_at=at)
        )
        session.commit()


def _left(engine: Engine) -> set[UUID]:
    with Session(engine) as session:
        return set(session.exec(select(OutboxMessage.event_id)).all())


def test_purge_published_deletes_every_published_row_and_keeps_the_rest(
    engine: Engine, settings: ServiceSettings, producer: KafkaProducer
) -> None:
    published = _stage(engine, 3)
    assert OutboxRelay(engine, settings).publish_batch(producer) == 3
    waiting = _stage(engine, 2)
    with Session(engine) as session:
        assert purge_published(session) == 3
        session.rollback()  # the caller's transaction: nothing happens without its commit
    assert _left(engine) == {*published, *waiting}
    with Session(engine) as session:
        assert purge_published(session) == 3
        session.commit()
    assert _left(engine) == set(waiting)  # not yet published: published first, purged later


def test_the_relay_purges_rows_published_longer_ago_than_the_retention_at_most_once_a_minute(
    engine: Engine, make_settings: SettingsFactory, producer: KafkaProducer
) -> None:
    settings = make_settings("ingest", outbox_retention_minutes=60)
    relay = OutboxRelay(engine, settings)
    old, recent = _stage(engine, 4), _stage(engine, 3)
    assert relay.publish_batch(producer) == 7
    _published_at(engine, old, utcnow() - timedelta(minutes=61))
    unpublished = _stage(engine, 2)
    assert relay.purge_expired() == 4
    assert _left(engine) == {*recent, *unpublished}

    # The running relay publishes and purges at once, then not again within the minute.
    _published_at(engine, recent, utcnow() - timedelta(minutes=61))
    stop = threading.Event()
    runner = threading.Thread(target=relay.run, args=(stop,))
    runner.start()
    try:
        eventually(lambda: _assert_equal(_left(engine), set(unpublished)), timeout=10)
        eventually(lambda: _assert_equal(relay.published_total, 9), timeout=10)
        _published_at(engine, unpublished, utcnow() - timedelta(minutes=61))
        time.sleep(1.0)
        assert _left(engine) == set(unpublished)  # the next purge is a minute later
    finally:
        stop.set()
        runner.join(10)


def _assert_equal(found: object, expected: object) -> None:
    assert found == expected


def test_a_commit_wakes_the_relay_of_its_process_and_so_does_stopping(
    engine: Engine, make_settings: SettingsFactory
) -> None:
    # The relay looks for other processes' rows once a minute here: only the commit's wake-up call can
    # get the row published within the test's time, and only the stop's can end the relay's wait.
    settings = make_settings("ingest", outbox_poll_interval_s=60)
    relay = OutboxRelay(engine, settings)
    workers = WorkerThreads([("relay", relay)])
    workers.start()
    try:
        time.sleep(0.5)  # the relay found nothing and waits
        tenant_id = uuid4()
        with Session(engine) as session:
            committed = add_event(session, tenant_created(), tenant_id=tenant_id, key=str(tenant_id))
            session.commit()
        eventually(lambda: _assert_equal(relay.published_total, 1), timeout=20)
        [published] = read_topic(TENANTS.full(settings.topic_prefix), expect=1)
        assert published.event_id == committed.event_id
    finally:
        workers.stop(timeout=20)
    assert not any(thread.is_alive() for thread in workers.threads)
