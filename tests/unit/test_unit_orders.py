"""services.ingest.orders: money in minor units, the Kafka key, and which order version is newer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from services.ingest.orders import _is_newer, customer_key, to_minor
from shared.records import Order

TENANT = UUID("0b6f3a52-6a43-4c83-9f57-0f1d3c9a7e01")
OTHER_TENANT = UUID("7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f")


def order(email: str = "maria.silva@example.com", **overrides: Any) -> Order:
    data: dict[str, Any] = {
        "external_id": "ML-2000001234",
        "source": "mercadolivre",
        "status": "paid",
        "placed_at": "2026-11-20T14:03:00-03:00",
        "total": "259.90",
        "customer": {"email": email},
    }
    data.update(overrides)
    return Order.model_validate(data)


@pytest.mark.parametrize(
    ("amount", "minor"),
    [
        ("259.90", 25990),
        ("259.9", 25990),
        ("10.5", 1050),
        ("0.01", 1),
        ("0", 0),
        ("7", 700),
        ("1E+2", 10000),
        ("999999999999.99", 99999999999999),
    ],
)
def test_to_minor(amount: str, minor: int) -> None:
    assert to_minor(Decimal(amount)) == minor


def test_to_minor_of_a_validated_float_is_exact() -> None:
    assert to_minor(order(total=19.99).total) == 1999
    assert to_minor(order(total=0.1).total) == 10


def test_customer_key_is_tenant_scoped_and_stable() -> None:
    key = customer_key(TENANT, order())
    tenant, digest = key.split(":")
    assert tenant == str(TENANT)
    assert len(digest) == 32
    assert int(digest, 16) >= 0
    assert customer_key(TENANT, order()) == key
    # Other orders of the same customer (after normalisation) share the key, so they stay in order.
    assert customer_key(TENANT, order(" Maria.Silva@Example.COM ", external_id="ML-2", total="1.00")) == key


def test_customer_key_differs_per_customer_and_tenant() -> None:
    key = customer_key(TENANT, order())
    assert customer_key(TENANT, order("joao@example.com")) != key
    assert customer_key(OTHER_TENANT, order()) != key


def test_customer_key_contains_no_email_text() -> None:
    key = customer_key(TENANT, order())
    for fragment in ("maria", "silva", "example", "@"):
        assert fragment not in key


NOW = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("new", "old", "expected"),
    [
        (None, None, True),
        (None, NOW, True),
        (NOW, None, True),
        (NOW + timedelta(seconds=1), NOW, True),
        (NOW, NOW, False),
        (NOW - timedelta(microseconds=1), NOW, False),
        # The same instant in another zone is not newer.
        (NOW.astimezone(timezone(timedelta(hours=-3))), NOW, False),
        (datetime(2026, 11, 20, 14, 0, 1, tzinfo=timezone(timedelta(hours=-3))), NOW, True),
    ],
)
def test_is_newer(new: datetime | None, old: datetime | None, expected: bool) -> None:
    assert _is_newer(new, old) is expected
