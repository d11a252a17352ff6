"""Transactional outbox: events are written with the state change and published afterwards by a relay.

`add_event` only adds a row to the caller's session; the caller commits. `OutboxRelay` publishes the
unpublished rows in id order and marks them published. A crash between publish and mark re-publishes
the batch (at-least-once): consumers deduplicate by event id.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from kafka import KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from shared.db import utcnow
from shared.events import Envelope, Event
from shared.infra import OutboxMessage
from shared.kafka import make_producer
from shared.settings import ServiceSettings

log = logging.getLogger("clientela.outbox")

# Only one relay per database publishes at a time (several replicas may run): PostgreSQL advisory lock id.
_RELAY_LOCK_ID = 0x636C_6E74_6F62


def outbox_row(
    event_type: type[Event],
    payload: dict[str, Any],
    *,
    tenant_id: UUID,
    key: str,
    correlation_id: str | None = None,
) -> dict[str, Any]:
    """The outbox row for an event whose payload is already JSON-ready, for bulk inserts."""
    event_id, occurred_at, body = event_type.envelope_bytes(payload, tenant_id, correlation_id=correlation_id)
    return {
        "event_id": event_id,
        "topic": event_type.TOPIC.name,
        "key": key,
        "event_type": event_type.TYPE,
        "body": body,
        "created_at": occurred_at,
    }


def add_event(
    session: Session, event: Event, *, tenant_id: UUID, key: str, correlation_id: str | None = None
) -> Envelope:
    """Stage `event` for publication in the caller's transaction."""
    row = outbox_row(
        type(event),
        event.model_dump(mode="json"),
        tenant_id=tenant_id,
        key=key,
        correlation_id=correlation_id,
    )
    session.add(OutboxMessage(**row))
    return Envelope.from_bytes(row["body"])


class OutboxRelay:
    def __init__(self, engine: Engine, settings: ServiceSettings, *, batch_size: int = 1000) -> None:
        self.engine = engine
        self.settings = settings
        self.batch_size = batch_size
        self.published_total = 0

    def publish_batch(self, producer: KafkaProducer) -> int:
        """Publish up to `batch_size` rows in order; return how many were published."""
        with Session(self.engine) as session:
            if self.engine.dialect.name == "postgresql":
                got = session.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_RELAY_LOCK_ID))).scalar()
                if not got:
                    return 0
            rows = session.exec(
                select(OutboxMessage.id, OutboxMessage.topic, OutboxMessage.key, OutboxMessage.body)
                .where(col(OutboxMessage.published_at).is_(None))
                .order_by(col(OutboxMessage.id))
                .limit(self.batch_size)
            ).all()
            if not rows:
                return 0
            prefix = self.settings.topic_prefix
            futures = [
                producer.send(prefix + topic, key=key.encode(), value=body) for _id, topic, key, body in rows
            ]
            producer.flush(timeout=10)
            for future in futures:
                future.get(timeout=0)  # raises the send error, if any: nothing is marked then
            ids = [row[0] for row in rows]
            session.execute(
                sa.update(OutboxMessage).where(col(OutboxMessage.id).in_(ids)).values(published_at=utcnow())
            )
            session.commit()
            self.published_total += len(ids)
            return len(ids)

    def run(self, stop: threading.Event) -> None:
        producer: KafkaProducer | None = None
        backoff = 0.5
        try:
            while not stop.is_set():
                try:
                    if producer is None:
                        producer = make_producer(self.settings)
                    published = self.publish_batch(producer)
                    backoff = 0.5
                    if published == 0:
                        stop.wait(self.settings.outbox_poll_interval_s)
                except (KafkaError, SQLAlchemyError) as exc:
                    log.warning(
                        "outbox relay cannot publish; retrying", extra={"error_type": type(exc).__name__}
                    )
                    if producer is not None and isinstance(exc, KafkaError):
                        close_quietly(producer, timeout=1)
                        producer = None
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:  # whatever ends the loop, the producer is closed here, not left to the garbage collector
            if producer is not None:
                close_quietly(producer, timeout=5)


def close_quietly(producer: KafkaProducer, *, timeout: float) -> None:
    """Close a producer that may be unable to flush (broker gone): the relay re-sends what was not marked."""
    try:
        producer.close(timeout=timeout)
    except KafkaError:
        log.warning("producer closed without flushing")
