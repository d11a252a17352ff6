"""shared.events: the envelope's wire format and decoding of typed, versioned events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID, uuid4

import orjson
import pytest
from pydantic import ValidationError

from shared.events import (
    EVENT_TYPES,
    Envelope,
    Event,
    OrderIngested,
    ProfileUpdated,
    SegmentMembershipChanged,
    TenantCreated,
    decode,
)
from shared.topics import ALL_TOPICS, Topic

TENANT = UUID("0b6f3a52-6a43-4c83-9f57-0f1d3c9a7e01")
PROFILE = UUID("5d2c7e1a-8b0f-4f4e-a8c6-1e9b2d3f4a50")
SAO_PAULO = timezone(timedelta(hours=-3))


def envelope(type_: str, version: int, payload: dict[str, object]) -> Envelope:
    return Envelope(
        event_id=uuid4(),
        type=type_,
        version=version,
        tenant_id=TENANT,
        occurred_at=datetime(2026, 11, 23, 9, 0, tzinfo=SAO_PAULO),
        correlation_id="req-5f0c2a",
        payload=payload,
    )


def profile_updated_payload() -> dict[str, object]:
    return {
        "profile_id": str(PROFILE),
        "profile_version": 3,
        "orders_count": 2,
        "total_spent": "259.90",
        "first_order_at": "2026-11-01T12:00:00Z",
        "last_order_at": "2026-11-20T17:03:00Z",
    }


def test_envelope_bytes_roundtrip() -> None:
    original = envelope("profile.updated", 1, profile_updated_payload())
    raw = original.to_bytes()
    assert isinstance(raw, bytes)
    restored = Envelope.from_bytes(raw)
    assert restored == original
    assert restored.occurred_at == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert restored.to_bytes() == raw


def test_envelope_wire_format() -> None:
    wire = orjson.loads(envelope("profile.updated", 1, profile_updated_payload()).to_bytes())
    assert set(wire) == {
        "event_id",
        "type",
        "version",
        "tenant_id",
        "occurred_at",
        "correlation_id",
        "payload",
    }
    assert wire["tenant_id"] == str(TENANT)
    assert wire["version"] == 1
    assert wire["payload"] == profile_updated_payload()


def test_envelope_ignores_unknown_fields_and_needs_an_aware_time() -> None:
    wire = orjson.loads(envelope("tenant.created", 1, {}).to_bytes())
    assert Envelope.from_bytes(orjson.dumps({**wire, "trace_flags": "01"})).type == "tenant.created"
    with pytest.raises(ValidationError):
        Envelope.from_bytes(orjson.dumps({**wire, "occurred_at": "2026-11-23T12:00:00"}))
    with pytest.raises(orjson.JSONDecodeError):
        Envelope.from_bytes(b"{not json")


def test_event_envelope_carries_type_version_and_tenant() -> None:
    event = SegmentMembershipChanged(
        segment_id=uuid4(), profile_id=PROFILE, change="entered", profile_version=4
    )
    first = event.envelope(TENANT, correlation_id="req-1")
    second = event.envelope(TENANT)
    assert (first.type, first.version) == ("segment.membership_changed", 1)
    assert first.tenant_id == TENANT
    assert first.correlation_id == "req-1"
    assert second.correlation_id is None
    assert first.event_id != second.event_id
    assert first.occurred_at.utcoffset() == timedelta(0)
    assert decode(Envelope.from_bytes(first.to_bytes())) == event


def test_decode_returns_the_typed_event() -> None:
    event = decode(envelope("profile.updated", 1, profile_updated_payload()))
    assert isinstance(event, ProfileUpdated)
    assert event.profile_id == PROFILE
    assert event.total_spent == Decimal("259.90")
    assert event.last_order_at == datetime(2026, 11, 20, 17, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("type_", "version"),
    [("profile.deleted", 1), ("profile.updated", 3), ("profile.updated", 0), ("", 1)],
)
def test_decode_ignores_unknown_type_or_version(type_: str, version: int) -> None:
    assert decode(envelope(type_, version, profile_updated_payload())) is None


def test_decode_ignores_unknown_payload_fields() -> None:
    payload = {**profile_updated_payload(), "lifetime_value": "1000.00", "tags": ["vip"]}
    event = decode(envelope("profile.updated", 1, payload))
    assert isinstance(event, ProfileUpdated)
    assert not hasattr(event, "lifetime_value")
    assert "lifetime_value" not in event.model_dump()


def test_decode_rejects_a_known_event_with_a_broken_payload() -> None:
    payload = {**profile_updated_payload(), "profile_version": 0}
    with pytest.raises(ValidationError):
        decode(envelope("profile.updated", 1, payload))
    with pytest.raises(ValidationError):
        decode(envelope("profile.updated", 1, {"profile_id": str(PROFILE)}))


def test_order_ingested_payload_roundtrips() -> None:
    payload = {
        "order_id": str(uuid4()),
        "order_version": 1,
        "order": {
            "external_id": "SHP-1",
            "source": "shopee",
            "status": "created",
            "placed_at": "2026-11-20T14:03:00-03:00",
            "total": 10.5,
            "customer": {"email": "Maria@Example.com"},
        },
    }
    event = decode(envelope("order.ingested", 1, payload))
    assert isinstance(event, OrderIngested)
    assert event.order.total == Decimal("10.5")
    assert event.order.customer.email == "maria@example.com"
    again = decode(event.envelope(TENANT))
    assert again == event


@pytest.mark.parametrize(("key", "cls"), list(EVENT_TYPES.items()), ids=lambda v: str(v))
def test_every_event_type_is_fully_declared(key: tuple[str, int], cls: type[Event]) -> None:
    assert isinstance(cls.TYPE, str)
    assert cls.TYPE
    assert isinstance(cls.VERSION, int)
    assert cls.VERSION >= 1
    assert isinstance(cls.TOPIC, Topic)
    assert cls.TOPIC in ALL_TOPICS
    assert key == (cls.TYPE, cls.VERSION)
    assert issubclass(cls, Event)
    assert cls.model_config.get("frozen") is True
    assert cls.model_config.get("extra") == "ignore"
    # Events are facts: past-tense names (STYLE.md, "Events and Kafka").
    assert cls.TYPE.rsplit(".", 1)[-1].endswith("ed")


def test_events_are_frozen() -> None:
    event = TenantCreated(name="Loja da Maria", created_at=datetime(2026, 11, 1, tzinfo=UTC))
    with pytest.raises(ValidationError):
        event.name = "Outra loja"  # type: ignore[misc]


def test_profile_updated_carries_no_contact_data() -> None:
    assert not {"email", "name", "phone", "cpf"} & set(ProfileUpdated.model_fields)
