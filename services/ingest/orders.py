"""Accepting orders: versioning, duplicate detection, and the OrderIngested event (via the outbox).

An order is identified by (tenant, source, external_id). The same order sent again is
- a *duplicate* when its canonical body is identical (no new event),
- *stale* when it carries an `updated_at` older than or equal to the stored version's (never overwrites),
- otherwise a new *version* (status change, return, ...), published as a new OrderIngested.
When either version lacks `updated_at`, the later arrival wins.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

import orjson
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from services.ingest.models import OrderRecord
from shared.db import utcnow
from shared.events import OrderIngested
from shared.outbox import add_event
from shared.records import Order


class Outcome(StrEnum):
    accepted = "accepted"
    updated = "updated"
    duplicate = "duplicate"
    stale = "stale"


@dataclass(frozen=True)
class IngestResult:
    order_id: UUID
    outcome: Outcome
    version: int


def to_minor(amount: Decimal) -> int:
    return int(amount.scaleb(2))


def customer_key(tenant_id: UUID, order: Order) -> str:
    """Kafka key that keeps one customer's orders in order: the strongest identifier, hashed (keys show
    up in tools and logs)."""
    customer = order.customer
    identity = (
        customer.document or customer.email or customer.phone or f"{order.source}:{customer.external_id}"
    )
    digest = hashlib.sha256(f"{tenant_id}:{identity}".encode()).hexdigest()[:32]
    return f"{tenant_id}:{digest}"


def _is_newer(new: datetime | None, old: datetime | None) -> bool:
    return new is None or old is None or new > old


def ingest_order(
    order: Order, *, tenant_id: UUID, session: Session, correlation_id: str | None = None, _retry: bool = True
) -> IngestResult:
    body = order.model_dump(mode="json")
    body_hash = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    record = session.exec(
        select(OrderRecord).where(
            OrderRecord.tenant_id == tenant_id,
            OrderRecord.source == order.source,
            OrderRecord.external_id == order.external_id,
        )
    ).first()
    if record is not None:
        if record.body_hash == body_hash:
            return IngestResult(record.id, Outcome.duplicate, record.version)
        if not _is_newer(order.updated_at, record.source_updated_at):
            return IngestResult(record.id, Outcome.stale, record.version)
        outcome = Outcome.updated
        record.version += 1
        record.updated_at = utcnow()
    else:
        outcome = Outcome.accepted
        record = OrderRecord(
            tenant_id=tenant_id,
            source=order.source,
            external_id=order.external_id,
            status=order.status.value,
            body_hash=body_hash,
            placed_at=order.placed_at,
            total_minor=to_minor(order.total),
            currency=order.currency,
            payload=body,
        )
    record.status = order.status.value
    record.body_hash = body_hash
    record.source_updated_at = order.updated_at
    record.placed_at = order.placed_at
    record.total_minor = to_minor(order.total)
    record.currency = order.currency
    record.payload = body
    session.add(record)
    add_event(
        session,
        OrderIngested(order_id=record.id, order_version=record.version, order=order),
        tenant_id=tenant_id,
        key=customer_key(tenant_id, order),
        correlation_id=correlation_id,
    )
    try:
        session.commit()
    except IntegrityError:
        # The same order was inserted concurrently: decide again against the row that won.
        session.rollback()
        if not _retry:
            raise
        return ingest_order(
            order, tenant_id=tenant_id, session=session, correlation_id=correlation_id, _retry=False
        )
    return IngestResult(record.id, outcome, record.version)
