"""services.ingest.intake: how a record arriving again is classified, and the Kafka keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest

from services.ingest.intake import BEHAVIOUR, CUSTOMERS, ORDERS, Outcome, _State, customer_identity, decide
from shared.events import Envelope, decode
from shared.records import BehaviourEvent, Customer, CustomerRecord, Order, from_minor, to_minor

TENANT = UUID("0b6f3a52-6a43-4c83-9f57-0f1d3c9a7e01")
OTHER_TENANT = UUID("7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f")
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def order(**customer: Any) -> Order:
    return Order.model_validate(
        {
            "external_id": "ML-1",
            "source": "mercadolivre",
            "status": "paid",
            "placed_at": "2026-11-20T14:03:00-03:00",
            "total": "259.90",
            "customer": customer or {"email": "maria.silva@example.com"},
        }
    )


def stored(body_hash: str = "h1", updated_at: datetime | None = T0) -> _State:
    return _State(uuid4(), 1, body_hash, updated_at, new=False)


@pytest.mark.parametrize(
    ("stored_at", "arriving_at", "body_hash", "immutable", "expected"),
    [
        (T0, T0 + timedelta(seconds=1), "h2", False, Outcome.updated),
        (T0, T0, "h2", False, Outcome.stale),
        (T0, T0 - timedelta(days=1), "h2", False, Outcome.stale),
        (T0, T0 + timedelta(days=1), "h1", False, Outcome.duplicate),  # identical body wins over time
        (None, T0, "h2", False, Outcome.updated),  # either side without updated_at: later arrival wins
        (T0, None, "h2", False, Outcome.updated),
        (None, None, "h2", False, Outcome.updated),
        (T0, T0 + timedelta(days=1), "h2", True, Outcome.duplicate),  # behaviour events are immutable
    ],
)
def test_decide(
    stored_at: datetime | None,
    arriving_at: datetime | None,
    body_hash: str,
    immutable: bool,
    expected: Outcome,
) -> None:
    assert decide(stored("h1", stored_at), body_hash, arriving_at, immutable=immutable) == expected


def test_customer_identity_prefers_the_strongest_identifier() -> None:
    full = Customer.model_validate(
        {"document": "529.982.247-25", "email": "a@example.com", "phone": "11912345678", "external_id": "X"}
    )
    assert customer_identity(full, "site") == "document:52998224725"
    assert customer_identity(
        Customer.model_validate({"email": "a@example.com", "phone": "11912345678"}), "s"
    ) == ("email:a@example.com")
    assert customer_identity(Customer.model_validate({"phone": "11912345678"}), "s") == "phone:+5511912345678"
    assert (
        customer_identity(Customer.model_validate({"external_id": "B-1"}), "shopee")
        == "customer_id:shopee:B-1"
    )


def test_kafka_keys_are_stable_per_tenant_and_carry_no_personal_data() -> None:
    a, b = order(email="maria.silva@example.com"), order(email="Maria.Silva@Example.com ")
    key = ORDERS.kafka_key(TENANT, a)
    assert key == ORDERS.kafka_key(TENANT, b)
    assert key.startswith(f"{TENANT}:")
    assert "maria" not in key
    assert ORDERS.kafka_key(OTHER_TENANT, a).split(":")[1] != key.split(":")[1]


def test_customer_records_without_an_id_are_keyed_by_a_hash_of_their_identifier() -> None:
    record = CustomerRecord.model_validate({"source": "site", "email": "ana@example.com"})
    external_id = CUSTOMERS.external_id(record, "bodyhash")
    assert external_id.startswith("h:")
    assert "ana" not in external_id
    with_id = CustomerRecord.model_validate(
        {"source": "site", "email": "ana@example.com", "external_id": "C-9"}
    )
    assert CUSTOMERS.external_id(with_id, "bodyhash") == "C-9"


def test_behaviour_events_without_an_id_are_keyed_by_their_content_and_anonymous_ones_by_device() -> None:
    event = BehaviourEvent.model_validate(
        {"type": "search", "anonymous_id": "dev-1", "occurred_at": T0.isoformat()}
    )
    assert BEHAVIOUR.external_id(event, "abc123") == "h:abc123"
    assert BEHAVIOUR.kafka_key(TENANT, event) == BEHAVIOUR.kafka_key(TENANT, event)
    known = BehaviourEvent.model_validate(
        {"type": "search", "customer": {"email": "ana@example.com"}, "occurred_at": T0.isoformat()}
    )
    assert BEHAVIOUR.kafka_key(TENANT, known) != BEHAVIOUR.kafka_key(TENANT, event)


@pytest.mark.parametrize(
    ("amount", "minor"), [("259.90", 25990), ("10.5", 1050), ("0.01", 1), ("0", 0), ("7", 700)]
)
def test_minor_units(amount: str, minor: int) -> None:
    from decimal import Decimal

    assert to_minor(Decimal(amount)) == minor
    assert from_minor(minor) == Decimal(amount)


@pytest.mark.parametrize("kind", [ORDERS, CUSTOMERS, BEHAVIOUR], ids=lambda k: k.name)
def test_bulk_event_payloads_are_the_events_contract(kind: Any) -> None:
    samples = {
        "order": order().model_dump(mode="json"),
        "customer": CustomerRecord.model_validate({"source": "site", "email": "a@example.com"}).model_dump(
            mode="json"
        ),
        "behaviour": BehaviourEvent.model_validate(
            {"type": "search", "anonymous_id": "d", "occurred_at": T0.isoformat()}
        ).model_dump(mode="json"),
    }
    record_id = uuid4()
    payload = kind.payload(record_id, 2, samples[kind.name])
    event = kind.event_type.model_validate(payload)
    assert event.model_dump(mode="json") == payload
    # `accept` hands the record over already serialised (its canonical JSON): the same event on the wire.
    canonical = orjson.Fragment(orjson.dumps(samples[kind.name], option=orjson.OPT_SORT_KEYS))
    event_id, occurred_at, raw = kind.event_type.envelope_bytes(
        kind.payload(record_id, 2, canonical), TENANT, correlation_id="c-1"
    )
    envelope = Envelope.from_bytes(raw)
    assert (envelope.event_id, envelope.occurred_at, envelope.type) == (
        event_id,
        occurred_at,
        kind.event_type.TYPE,
    )
    assert envelope.to_bytes() == raw  # the bulk path writes exactly what Envelope would
    assert decode(envelope) == event
