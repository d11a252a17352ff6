"""bench.stack: the least CPU and wall time of a pipeline on the card's stack, from its measured parts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from bench import stack
from shared.events import Envelope, ProfileUpdatedV2, decode
from shared.records import Order


def crossing(**cpu: float) -> dict[str, float]:
    parts = ("produce", "broker", "consume", "parse", "decode")
    return {f"{part}_cpu_s": cpu.get(part, 0.0) for part in parts}


def test_the_least_counts_parsing_and_the_decoded_figure_counts_decoding_instead() -> None:
    orders = crossing(produce=1.7, broker=0.4, consume=0.8, parse=0.9, decode=5.0)
    profiles = crossing(produce=0.5, broker=0.1, consume=0.2, parse=0.3, decode=0.4)
    found = stack.least(4.8, [orders, profiles], floor_s=1.2)
    assert found["least_cpu_s"] == 9.7  # 4.8 + 1.7 + 0.4 + 0.8 + 0.9 + 0.5 + 0.1 + 0.2 + 0.3
    assert found["least_wall_s"] == 4.8  # both cores busy all the time (9.7 / 2, rounded)
    assert found["decoded_cpu_s"] == 13.9  # decoding (5.0 + 0.4) in place of parsing (0.9 + 0.3)
    assert found["ratio_target_wall_s"] == 3.6  # 3 times the floor
    assert found["least_ratio"] == 4.0  # 4.85 / 1.2


def test_a_persons_first_profile_event_is_a_valid_event_with_what_their_order_says() -> None:
    order = Order.model_validate(
        {
            "external_id": "A-1",
            "source": "shopee",
            "status": "paid",
            "placed_at": "2026-11-20T14:03:00-03:00",
            "total": "259.90",
            "items": [
                {"sku": "B", "category": "casa", "unit_price": "100.00"},
                {"sku": "A", "category": "alimentos", "unit_price": "159.90"},
            ],
            "payments": [{"method": "pix", "amount": "259.90"}],
            "customer": {"email": "ana@example.com", "address": {"city": "Recife", "state": "PE"}},
        }
    )
    event = stack.profile_event(order)
    wire = Envelope.from_bytes(event.envelope(uuid.uuid4()).to_bytes())
    read = decode(wire)
    assert isinstance(read, ProfileUpdatedV2)
    assert (read.orders_count, read.total_spent, read.sources) == (1, Decimal("259.90"), ["shopee"])
    assert (read.categories, read.products) == (["alimentos", "casa"], ["A", "B"])
    assert (read.city, read.state, read.preferred_payment_method) == ("Recife", "PE", "pix")
    assert read.first_order_at == datetime(2026, 11, 20, 17, 3, tzinfo=UTC)


def test_a_cancelled_first_order_counts_as_no_spend() -> None:
    order = Order.model_validate(
        {
            "external_id": "A-2",
            "source": "site",
            "status": "cancelled",
            "placed_at": "2026-11-20T14:03:00-03:00",
            "total": "10.00",
            "customer": {"external_id": "C-9"},
        }
    )
    event = stack.profile_event(order)
    assert (event.orders_count, event.total_spent, event.average_order_value) == (0, Decimal("0.00"), None)
    assert event.sources == []
    assert event.first_order_at is None
