"""Nothing accepted is lost: with the Kafka broker stopped, ingest keeps accepting (the outbox holds the
events); when the broker is back, everything is published, in order per key.

This test stops and restarts the real broker with deploy/kafka.sh.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition
from sqlmodel import Session, col, select

from shared.db import make_engine
from shared.events import Envelope
from shared.infra import OutboxMessage
from shared.outbox import open_body
from shared.topics import ORDERS
from shared.web import kafka_reachable
from tests.support import KAFKA, Stack, auth, eventually, order_body

pytestmark = [pytest.mark.integration, pytest.mark.faults]
KAFKA_SH = Path(__file__).resolve().parents[2] / "deploy" / "kafka.sh"


@pytest.fixture
def ingest_db(clean_databases: dict[str, str]) -> Iterator[sa.Engine]:
    engine = make_engine(clean_databases["ingest"])
    yield engine
    engine.dispose()


def broker(action: str) -> None:
    subprocess.run([str(KAFKA_SH), action], check=True, timeout=120)


def unpublished(engine: sa.Engine) -> list[tuple[int, str, str]]:
    with Session(engine) as session:
        rows = session.exec(
            select(OutboxMessage.id, OutboxMessage.key, OutboxMessage.event_type)
            .where(col(OutboxMessage.published_at).is_(None))
            .order_by(col(OutboxMessage.id))
        ).all()
        return [(int(i or 0), k, t) for i, k, t in rows]


def read_orders(topic: str, expect: int) -> list[tuple[bytes, Envelope]]:
    consumer = KafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        found: list[tuple[bytes, Envelope]] = []
        for _ in range(100):
            for records in consumer.poll(timeout_ms=200).values():
                found.extend((r.key, Envelope.from_bytes(r.value)) for r in records)
            if len(found) >= expect:
                break
        return found
    finally:
        consumer.close()


def test_ingest_accepts_while_kafka_is_down_and_publishes_everything_in_order_after(
    stack: Stack, ingest_db: sa.Engine, topic_prefix: str
) -> None:
    key = stack.create_tenant()
    broker("down")
    try:
        if kafka_reachable(KAFKA):
            pytest.fail("the broker on 127.0.0.1:9092 was not started by deploy/kafka.sh: cannot stop it")
        accepted = []
        for i in range(30):
            customer = f"c{i % 3}@example.com"
            body = order_body(f"OUT-{i}", customer, f"{10 + i}.00")
            response = stack.ingest.post("/v1/orders", json=body, headers=auth(key))
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])
        # A new version of an order while the broker is still down: published after its first version.
        update = order_body(
            "OUT-0", "c0@example.com", "10.00", status="cancelled", updated_at="2026-11-23T00:00:00Z"
        )
        assert stack.ingest.post("/v1/orders", json=update, headers=auth(key)).json()["status"] == "updated"
        waiting = unpublished(ingest_db)
        assert len(waiting) == 31
    finally:
        broker("up")

    eventually(lambda: _empty(unpublished(ingest_db)), timeout=90, interval=0.5)
    on_kafka = read_orders(ORDERS.full(topic_prefix), expect=31)
    first_versions = [str(e.payload["order_id"]) for _, e in on_kafka if e.payload["order_version"] == 1]
    assert sorted(first_versions) == sorted(accepted)
    got: dict[str, list[str]] = defaultdict(list)
    for message_key, envelope in on_kafka:
        got[message_key.decode()].append(_label(envelope))
    # Per key, Kafka holds the events in the order they were accepted (the outbox id order).
    want: dict[str, list[str]] = defaultdict(list)
    with Session(ingest_db) as session:
        rows = session.exec(
            select(OutboxMessage.key, OutboxMessage.body).order_by(col(OutboxMessage.id))
        ).all()
    for outbox_key, outbox_body in rows:
        stored = Envelope.from_bytes(open_body(outbox_body))
        if stored.type == "order.ingested":
            want[outbox_key].append(_label(stored))
    assert got == want
    assert len(waiting) == sum(len(v) for v in want.values())


def _label(envelope: Envelope) -> str:
    return f"{envelope.payload['order']['external_id']}@{envelope.payload['order_version']}"


def _empty(rows: list[tuple[int, str, str]]) -> None:
    assert rows == []
