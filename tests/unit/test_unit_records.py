"""shared.records: the canonical Order (exact money, UTC timestamps, closed schema)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from shared.records import Customer, Order, OrderItem, OrderStatus


def order_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "external_id": "ML-2000001234",
        "source": "mercadolivre",
        "status": "paid",
        "placed_at": "2026-11-20T14:03:00-03:00",
        "currency": "BRL",
        "total": "259.90",
        "customer": {"email": " Maria.Silva@Example.com ", "external_id": "ML-998877", "name": "Maria Teste"},
        "items": [{"sku": "CAFE-500G", "name": "Café 500 g", "quantity": 2, "unit_price": "129.95"}],
    }
    data.update(overrides)
    return data


def error_types(exc: ValidationError) -> set[tuple[str, str]]:
    return {(".".join(str(p) for p in err["loc"]), err["type"]) for err in exc.errors()}


def test_valid_order_is_normalised() -> None:
    order = Order.model_validate(order_data())
    assert order.total == Decimal("259.90")
    assert isinstance(order.total, Decimal)
    assert order.customer.email == "maria.silva@example.com"
    assert order.status is OrderStatus.paid
    assert order.updated_at is None
    assert order.items[0].unit_price == Decimal("129.95")


def test_defaults() -> None:
    data = order_data()
    del data["currency"], data["items"]
    order = Order.model_validate(data)
    assert order.currency == "BRL"
    assert order.items == []


@pytest.mark.parametrize("total", ["1.234", 1.234, "0.001", "-1.234"])
def test_money_rejects_more_than_two_decimal_places(total: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Order.model_validate(order_data(total=total))
    assert {loc for loc, _ in error_types(caught.value)} == {"total"}


@pytest.mark.parametrize("total", ["-0.01", -1, "NaN", "Infinity", "-Infinity", float("nan"), float("inf")])
def test_money_rejects_negative_and_non_finite(total: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Order.model_validate(order_data(total=total))
    assert {loc for loc, _ in error_types(caught.value)} == {"total"}


def test_money_rejects_more_than_14_digits() -> None:
    assert Order.model_validate(order_data(total="999999999999.99")).total == Decimal("999999999999.99")
    with pytest.raises(ValidationError):
        Order.model_validate(order_data(total="1000000000000.00"))


def test_money_rejects_booleans() -> None:
    with pytest.raises(ValidationError):
        Order.model_validate(order_data(total=True))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (10.5, "10.50"),
        (19.99, "19.99"),
        (0.1, "0.10"),
        (259.9, "259.90"),
        (7, "7.00"),
        ("0", "0.00"),
        ("10.500", "10.50"),
    ],
)
def test_money_floats_and_ints_are_taken_exactly(given: object, expected: str) -> None:
    total = Order.model_validate(order_data(total=given)).total
    assert total == Decimal(expected)
    assert str(total) == expected  # cents, and not Decimal(0.1) = 0.1000000000000000055511151231257827...


def test_item_unit_price_is_money_too() -> None:
    item = {"sku": "X", "unit_price": "1.001"}
    with pytest.raises(ValidationError) as caught:
        Order.model_validate(order_data(items=[item]))
    assert {loc for loc, _ in error_types(caught.value)} == {"items.0.unit_price"}


def test_timestamps_are_converted_to_utc() -> None:
    order = Order.model_validate(
        order_data(placed_at="2026-11-20T14:03:00-03:00", updated_at="2026-11-21T09:30:00+05:30")
    )
    assert order.placed_at == datetime(2026, 11, 20, 17, 3, tzinfo=UTC)
    assert order.placed_at.tzinfo is UTC
    assert order.updated_at == datetime(2026, 11, 21, 4, 0, tzinfo=UTC)
    assert order.updated_at is not None
    assert order.updated_at.tzinfo is UTC


@pytest.mark.parametrize("field", ["placed_at", "updated_at"])
def test_naive_timestamps_are_read_as_brazil_time(field: str) -> None:
    order = Order.model_validate(order_data(**{field: "2026-11-20T14:03:00"}))
    assert getattr(order, field) == datetime(2026, 11, 20, 17, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("path", "model"),
    [((), Order), (("customer",), Customer), (("items", 0), OrderItem)],
)
def test_extra_fields_are_rejected(path: tuple[str | int, ...], model: type[object]) -> None:
    data = order_data()
    target: Any = data
    for step in path:
        target = target[step]
    target["nickname"] = "Mari 1990"
    with pytest.raises(ValidationError) as caught:
        Order.model_validate(data)
    expected_loc = ".".join(str(p) for p in (*path, "nickname"))
    assert error_types(caught.value) == {(expected_loc, "extra_forbidden")}


@pytest.mark.parametrize("source", ["mercadolivre", "shopee", "site", "mercado-livre", "loja_2", "a" * 40])
def test_source_pattern_accepts(source: str) -> None:
    assert Order.model_validate(order_data(source=source)).source == source


def test_source_is_lower_cased() -> None:
    assert Order.model_validate(order_data(source=" MercadoLivre ")).source == "mercadolivre"


@pytest.mark.parametrize("source", ["", "mercado livre", "loja/1", "loja.com", "a" * 41])
def test_source_pattern_rejects(source: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Order.model_validate(order_data(source=source))
    assert {loc for loc, _ in error_types(caught.value)} == {"source"}


@pytest.mark.parametrize("currency", ["brl", "BR", "BRLX", "R$"])
def test_currency_must_be_three_capitals(currency: str) -> None:
    with pytest.raises(ValidationError):
        Order.model_validate(order_data(currency=currency))


@pytest.mark.parametrize("status", list(OrderStatus))
def test_every_status_is_accepted(status: OrderStatus) -> None:
    assert Order.model_validate(order_data(status=status.value)).status is status


@pytest.mark.parametrize("status", ["lost", "PAID", "", "refunded"])
def test_unknown_status_is_rejected(status: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Order.model_validate(order_data(status=status))
    assert error_types(caught.value) == {("status", "enum")}


def test_malformed_customer_email_is_rejected_without_echo() -> None:
    with pytest.raises(ValidationError) as caught:
        Order.model_validate(order_data(customer={"email": "maria.silva@example"}))
    assert {loc for loc, _ in error_types(caught.value)} == {"customer.email"}
    assert all("maria" not in err["msg"] for err in caught.value.errors())


@pytest.mark.parametrize("quantity", [0, -1, 100_001])
def test_item_quantity_bounds(quantity: int) -> None:
    with pytest.raises(ValidationError):
        Order.model_validate(order_data(items=[{"sku": "X", "quantity": quantity, "unit_price": "1"}]))


def test_order_is_frozen() -> None:
    order = Order.model_validate(order_data())
    with pytest.raises(ValidationError):
        order.total = Decimal("1.00")


@pytest.mark.parametrize(
    ("status", "counts"),
    [
        (OrderStatus.created, True),
        (OrderStatus.paid, True),
        (OrderStatus.shipped, True),
        (OrderStatus.delivered, True),
        (OrderStatus.cancelled, False),
        (OrderStatus.returned, False),
    ],
)
def test_counts_as_spend(status: OrderStatus, counts: bool) -> None:
    assert status.counts_as_spend is counts


def test_counts_as_spend_covers_every_status() -> None:
    assert {s for s in OrderStatus if not s.counts_as_spend} == {OrderStatus.cancelled, OrderStatus.returned}
