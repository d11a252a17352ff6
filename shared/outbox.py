"""Transactional outbox: events are written with the state change and published afterwards by a relay.

`add_event` stages a row in the caller's session (written with the transaction's other events in one bulk
insert, `shared.db.stage_insert`; `insert_rows` for callers that build rows themselves); the caller
commits. `OutboxRelay` publishes the unpublished rows in id order and marks them published. A crash
between publish and mark re-publishes the batch (at-least-once): consumers deduplicate by event id. The
commit of a transaction that added rows wakes this process's relays at once (`OUTBOX_WRITTEN`); they also
look every `outbox_poll_interval_s` for rows other processes wrote (another replica, the CLI).

Event bodies carry personal data (an `order.ingested` holds the whole order, customer included), so they
are stored sealed (AES-GCM, `shared.crypto`, under the key the keyring derives for no tenant in
particular: the relay publishes every tenant's rows), opened by the relay as it publishes them
(`open_body`; a body an older release wrote in clear or sealed as text is published as it is). And the
outbox is not an archive: the relay deletes published rows once they are older than
`outbox_retention_minutes` (default 60: time to look into a consumer's problem), checking at most once a
minute; `purge_published` deletes every published row at once (an erasure calls it). Kafka keeps its own
copy for the topics' retention.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

import sqlalchemy as sa
from kafka import KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from shared.crypto import BINARY, keyring
from shared.db import bulk_insert, stage_insert, table_of, utcnow
from shared.doorbell import Doorbell
from shared.events import Event
from shared.infra import OutboxMessage
from shared.kafka import make_producer
from shared.metrics import EVENTS_PUBLISHED
from shared.settings import ServiceSettings

log = logging.getLogger("clientela.outbox")

# Only one relay per database publishes at a time (several replicas may run): PostgreSQL advisory lock id.
_RELAY_LOCK_ID = 0x636C_6E74_6F62
PURGE_EVERY_S = 60.0
_PURGE_CHUNK = 10_000


# A commit that added rows wakes this process's relays.
OUTBOX_WRITTEN = Doorbell("outbox")


# The keyring derives a key per tenant; outbox bodies are sealed under the one it derives for this id.
_OUTBOX_KEY = UUID(int=0)


def seal_body(body: bytes) -> bytes:
    """An event's wire form as the outbox stores it (`Keyring.seal_bytes`)."""
    return keyring().seal_bytes(_OUTBOX_KEY, body)


def open_body(stored: bytes) -> bytes:
    """An outbox row's body as it is published (the event's wire form, JSON)."""
    if stored[:1] == BINARY:
        return keyring().open_bytes(_OUTBOX_KEY, stored)
    if stored[:1] == b"{":  # written in clear by a release before bodies were sealed
        return stored
    # Sealed as a text token by a release before bodies were sealed as bytes.
    return keyring().open(_OUTBOX_KEY, stored.decode()).encode()


def outbox_row(
    event_type: type[Event],
    payload: dict[str, Any],
    *,
    tenant_id: UUID,
    key: str,
    correlation_id: str | None = None,
) -> dict[str, Any]:
    """The outbox row for an event whose payload is already JSON-ready, for bulk inserts."""
    return _row(
        event_type, key, *event_type.envelope_bytes(payload, tenant_id, correlation_id=correlation_id)
    )


def _row(
    event_type: type[Event], key: str, event_id: UUID, occurred_at: datetime, body: bytes
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "topic": event_type.TOPIC.name,
        "key": key,
        "event_type": event_type.TYPE,
        "body": seal_body(body),
        "created_at": occurred_at,
    }


class Staged(NamedTuple):
    """What `add_event` staged: the event's id and time, as its envelope carries them."""

    event_id: UUID
    occurred_at: datetime


def add_event(
    session: Session, event: Event, *, tenant_id: UUID, key: str, correlation_id: str | None = None
) -> Staged:
    """Stage `event` for publication in the caller's transaction (`shared.db.stage_insert`: written with
    the transaction's other events in one bulk insert; nothing if it rolls back)."""
    event_id, occurred_at, body = type(event).envelope_bytes(
        event.model_dump(mode="json"), tenant_id, correlation_id=correlation_id
    )
    stage_insert(session, OutboxMessage, _row(type(event), key, event_id, occurred_at, body))
    OUTBOX_WRITTEN.ring_after_commit(session)
    return Staged(event_id, occurred_at)


def insert_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Write outbox rows (`outbox_row`) in the caller's transaction, in one bulk insert; its commit wakes
    this process's relays."""
    bulk_insert(session, OutboxMessage, rows)
    OUTBOX_WRITTEN.ring_after_commit(session)


def purge_published(session: Session, *, published_before: datetime | None = None) -> int:
    """Delete the published rows (those published before `published_before`, when given) in the caller's
    transaction; the caller commits. Returns how many were deleted. Unpublished rows stay: they are
    deleted after their turn, once published."""
    published = col(OutboxMessage.published_at)
    condition = published.is_not(None) if published_before is None else published < published_before
    result = session.execute(sa.delete(OutboxMessage).where(condition))
    return int(result.rowcount)  # type: ignore[attr-defined]


_outbox = table_of(OutboxMessage)
_TRY_LOCK = sa.select(sa.func.pg_try_advisory_xact_lock(_RELAY_LOCK_ID))
_UNPUBLISHED = (
    sa.select(_outbox.c.id, _outbox.c.topic, _outbox.c.key, _outbox.c.body)
    .where(_outbox.c.published_at.is_(None))
    .order_by(_outbox.c.id)
    .limit(sa.bindparam("n"))
)
_MARK = (
    sa.update(_outbox)
    .where(_outbox.c.id.in_(sa.bindparam("ids", expanding=True)))
    .values(published_at=sa.bindparam("at", type_=_outbox.c.published_at.type))
)
# On PostgreSQL the ids are one array parameter: an expanding IN renders a thousand placeholders into the
# statement for every batch (5 % of a relay's time, measured).
_MARK_ARRAY = (
    sa.update(_outbox)
    .where(_outbox.c.id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(_outbox.c.id.type))))
    .values(published_at=sa.bindparam("at", type_=_outbox.c.published_at.type))
)


class OutboxRelay:
    def __init__(self, engine: Engine, settings: ServiceSettings, *, batch_size: int = 1000) -> None:
        self.engine = engine
        self.settings = settings
        self.batch_size = batch_size
        self.published_total = 0
        self._purged_at: float | None = None  # time.monotonic() of the last purge

    def publish_batch(self, producer: KafkaProducer) -> int:
        """Publish up to `batch_size` rows in order; return how many were published."""
        with self.engine.begin() as connection:
            if self.engine.dialect.name == "postgresql" and not connection.execute(_TRY_LOCK).scalar():
                return 0
            rows = connection.execute(_UNPUBLISHED, {"n": self.batch_size}).all()
            if not rows:
                return 0
            prefix = self.settings.topic_prefix
            futures = [
                producer.send(prefix + topic, key=key.encode(), value=open_body(body))
                for _id, topic, key, body in rows
            ]
            producer.flush(timeout=10)
            for future in futures:
                future.get(timeout=0)  # raises the send error, if any: nothing is marked then
            mark = _MARK_ARRAY if self.engine.dialect.name == "postgresql" else _MARK
            connection.execute(mark, {"ids": [row[0] for row in rows], "at": utcnow()})
        self.published_total += len(rows)
        for topic, count in Counter(row[1] for row in rows).items():
            EVENTS_PUBLISHED.labels(self.settings.service_name, prefix + topic).inc(count)
        return len(rows)

    def purge_expired(self) -> int:
        """Delete the rows published more than `outbox_retention_minutes` ago, in chunks (short
        transactions: the relay and the writers are not held up); return how many."""
        cutoff = utcnow() - timedelta(minutes=self.settings.outbox_retention_minutes)
        deleted = 0
        while True:
            with Session(self.engine) as session:
                ids = session.exec(
                    select(OutboxMessage.id)
                    .where(col(OutboxMessage.published_at) < cutoff)
                    .limit(_PURGE_CHUNK)
                ).all()
                if ids:
                    session.execute(sa.delete(OutboxMessage).where(col(OutboxMessage.id).in_(ids)))
                    session.commit()
            deleted += len(ids)
            if len(ids) < _PURGE_CHUNK:
                return deleted

    def _purge_now_and_then(self) -> None:
        now = time.monotonic()
        if self._purged_at is None or now - self._purged_at >= PURGE_EVERY_S:
            self._purged_at = now  # a failed purge is tried again a minute later, not at every poll
            self.purge_expired()

    def run(self, stop: threading.Event) -> None:
        with OUTBOX_WRITTEN.listening() as wake:
            self._run(stop, wake)

    def _run(self, stop: threading.Event, wake: threading.Event) -> None:
        producer: KafkaProducer | None = None
        backoff = 0.5
        try:
            while not stop.is_set():
                try:
                    if producer is None:
                        producer = make_producer(self.settings)
                    wake.clear()  # rows committed from now on ring again
                    published = self.publish_batch(producer)
                    self._purge_now_and_then()
                    backoff = 0.5
                    if published == 0 and wake.wait(self.settings.outbox_poll_interval_s):
                        # Woken by a commit: the ones right behind it go in the same publish (fewer, fuller
                        # produce requests under load, for a few ms of latency).
                        stop.wait(self.settings.outbox_linger_s)
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
