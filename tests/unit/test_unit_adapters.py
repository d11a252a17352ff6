"""services.ingest.adapters: each marketplace's native order JSON to the canonical Order.

Fixtures (tests/fixtures/marketplaces/<platform>/*.json) are payloads shaped as each platform's public API
returns them, with fake personal data. Every fixture must map; then each platform's mapping is checked
field by field, and the traps (relay e-mails, masked or invalid personal fields, amounts as strings, floats
or cents, unix and zoned timestamps, statuses, payment methods, missing required fields) one by one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.adapters import ADAPTERS, AdapterError
from services.ingest.adapters import _common as common
from shared.records import ConsentPurpose, ConsentStatus, Order, OrderStatus, PaymentMethod

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "marketplaces"
CASES = sorted(FIXTURES.glob("*/*.json"))
PLATFORMS = ("mercadolivre", "shopee", "amazon", "shopify", "vtex", "magalu")

# The personal data in the fixtures: no error message may ever contain any of it.
PERSONAL_VALUES = (
    "68315727745",
    "10773865080",
    "12461567336",
    "16566228748",
    "91444147226",
    "41325657697",
    "16410343000164",
    "33976759000163",
    "msilva.8kq2x3@mail.mercadolivre.com",
    "3kq9x7v2m1abc4d@marketplace.amazon.com.br",
    "joana.teste@example.com",
    "paula.teste@example.com",
    "91234-5678",
    "99876-5432",
    "Maria",
    "Joana",
    "Paula",
)


def load(platform: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / platform / f"{name}.json").read_text(encoding="utf-8"))
    return data


def adapt(platform: str, payload: dict[str, Any]) -> Order:
    return ADAPTERS[platform](payload)


def fixture_order(platform: str, name: str) -> Order:
    return adapt(platform, load(platform, name))


def _parent(data: Any, path: str) -> tuple[Any, str | int]:
    steps: list[str | int] = [int(s) if s.isdigit() else s for s in path.split(".")]
    for step in steps[:-1]:
        data = data[step]
    return data, steps[-1]


def set_at(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """The payload with the value at a dotted path (`order.OrderTotal.Amount`, `items.0.price`) replaced."""
    parent, key = _parent(payload, path)
    parent[key] = value
    return payload


def drop_at(payload: dict[str, Any], path: str) -> dict[str, Any]:
    parent, key = _parent(payload, path)
    del parent[key]
    return payload


def assert_no_personal_data(message: str) -> None:
    for value in PERSONAL_VALUES:
        assert value not in message


# --- Every fixture


def test_adapters_are_registered_by_source_name() -> None:
    assert set(ADAPTERS) == set(PLATFORMS)
    assert issubclass(AdapterError, ValueError)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_each_platform_has_at_least_two_fixtures(platform: str) -> None:
    assert len(list((FIXTURES / platform).glob("*.json"))) >= 2


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_fixture_maps_to_a_canonical_order(path: Path) -> None:
    platform = path.parent.name
    payload = json.loads(path.read_text(encoding="utf-8"))
    untouched = copy.deepcopy(payload)

    order = ADAPTERS[platform](payload)

    assert payload == untouched  # adapters never mutate the platform's payload
    assert order.source == platform
    assert order.placed_at.tzinfo is UTC
    assert order.updated_at is None or order.updated_at >= order.placed_at
    for amount in (order.total, order.discount, order.shipping):
        assert isinstance(amount, Decimal)
        assert amount == amount.quantize(Decimal("0.01"))
    assert all(isinstance(i.unit_price, Decimal) for i in order.items)
    assert all(isinstance(p.amount, Decimal) for p in order.payments)
    assert order.customer.has_identifier()
    # What ingest publishes parses back to the same order.
    assert Order.model_validate_json(order.model_dump_json()) == order
    assert ADAPTERS[platform](payload) == order


# --- Mercado Livre


def test_mercadolivre_paid_order_with_full_buyer() -> None:
    order = fixture_order("mercadolivre", "paid_delivered_full_buyer")

    assert order.external_id == "2000007812345678"
    assert order.status is OrderStatus.delivered  # "paid" with the "delivered" tag
    assert order.placed_at == datetime(2026, 3, 2, 14, 15, 30, tzinfo=UTC)  # -04:00 on the wire
    assert order.updated_at == datetime(2026, 3, 6, 22, 2, 11, tzinfo=UTC)
    assert order.currency == "BRL"
    # total_amount 259.8 (a float) + the payment's shipping_cost 18.9, exactly.
    assert (order.total, order.shipping, order.discount) == (
        Decimal("278.70"),
        Decimal("18.90"),
        Decimal("0.00"),
    )
    assert order.coupon is None
    [item] = order.items
    assert (item.sku, item.name, item.category, item.quantity, item.unit_price) == (
        "CAFE-500G",
        "Café Torrado em Grãos 500 g",
        "MLB264051",
        2,
        Decimal("129.90"),
    )
    [payment] = order.payments
    assert (payment.method, payment.installments, payment.amount) == (
        PaymentMethod.credit_card,
        3,
        Decimal("278.70"),
    )
    buyer = order.customer
    assert buyer.external_id == "123456789"
    assert buyer.name == "Maria da Silva Teste"
    assert buyer.email == "msilva.8kq2x3@mail.mercadolivre.com"  # the relay, as the API gives it
    assert buyer.phone == "+5511912345678"
    assert buyer.document == "68315727745"
    assert buyer.document_type == "cpf"


def test_mercadolivre_cancelled_order_drops_invalid_buyer_fields() -> None:
    order = fixture_order("mercadolivre", "cancelled_invalid_buyer_fields")

    assert order.status is OrderStatus.cancelled
    assert order.placed_at == datetime(2026, 3, 5, 0, 40, 2, tzinfo=UTC)
    assert order.total == Decimal("89.90")
    # The listing id stands in for a missing seller SKU.
    assert [(i.sku, i.unit_price) for i in order.items] == [("MLB3344556677", Decimal("89.90"))]
    # The rejected card payment never happened; the refunded pix did.
    assert [(p.method, p.amount) for p in order.payments] == [(PaymentMethod.pix, Decimal("89.90"))]
    buyer = order.customer
    assert buyer.external_id == "555000111"
    assert buyer.name == "Jose Pereira Teste"
    assert (buyer.email, buyer.phone, buyer.document) == (None, None, None)


def test_mercadolivre_boleto_coupon_and_merged_billing_info() -> None:
    order = fixture_order("mercadolivre", "payment_in_process_boleto_cnpj")

    assert order.status is OrderStatus.created
    assert (order.total, order.discount, order.coupon) == (Decimal("149.90"), Decimal("15.00"), "VOLTA15")
    assert order.items[0].sku == "ORG-KIT-3"  # seller_custom_field when there is no seller_sku
    assert [(p.method, p.amount) for p in order.payments] == [(PaymentMethod.boleto, Decimal("149.90"))]
    assert order.customer.document == "16410343000164"  # billing_info v2, merged in
    assert order.customer.document_type == "cnpj"


def test_mercadolivre_refunded_attempt_beside_an_approved_retry_counts_once() -> None:
    payload = load("mercadolivre", "paid_delivered_full_buyer")
    retry = copy.deepcopy(payload["payments"][0])
    payload["payments"][0].update(status="refunded", payment_type="account_money")
    payload["payments"].append(retry)
    order = adapt("mercadolivre", payload)
    assert (order.total, order.shipping) == (Decimal("278.70"), Decimal("18.90"))
    assert [p.method for p in order.payments] == [PaymentMethod.credit_card]


def test_mercadolivre_relay_email_identifies_only_within_the_source() -> None:
    payload = load("mercadolivre", "paid_delivered_full_buyer")
    assert adapt("mercadolivre", payload).customer.external_id == "123456789"

    del payload["buyer"]["email"], payload["buyer"]["phone"], payload["buyer"]["billing_info"]
    customer = adapt("mercadolivre", payload).customer
    assert customer.external_id == "123456789"  # the buyer id alone still identifies the customer
    assert (customer.email, customer.phone, customer.document) == (None, None, None)


@pytest.mark.parametrize(
    ("status", "tags", "shipment", "expected"),
    [
        ("confirmed", [], None, OrderStatus.created),
        ("payment_required", [], None, OrderStatus.created),
        ("payment_in_process", [], None, OrderStatus.created),
        ("partially_paid", [], None, OrderStatus.created),
        ("paid", ["paid", "not_delivered"], None, OrderStatus.paid),
        ("paid", ["paid"], "shipped", OrderStatus.shipped),
        ("paid", ["paid"], "delivered", OrderStatus.delivered),
        ("paid", ["paid", "delivered"], None, OrderStatus.delivered),
        ("partially_refunded", [], None, OrderStatus.paid),
        ("cancelled", ["delivered"], None, OrderStatus.cancelled),
        ("pending_cancel", [], None, OrderStatus.cancelled),
        ("invalid", [], None, OrderStatus.cancelled),
    ],
)
def test_mercadolivre_status(
    status: str, tags: list[str], shipment: str | None, expected: OrderStatus
) -> None:
    payload = load("mercadolivre", "paid_delivered_full_buyer")
    payload.update(status=status, tags=tags)
    if shipment:
        payload["shipping"]["status"] = shipment
    assert adapt("mercadolivre", payload).status is expected


@pytest.mark.parametrize(
    ("payment_type", "method_id", "expected"),
    [
        ("credit_card", "visa", PaymentMethod.credit_card),
        ("debit_card", "debelo", PaymentMethod.debit_card),
        ("account_money", "account_money", PaymentMethod.wallet),
        ("ticket", "bolbradesco", PaymentMethod.boleto),
        ("ticket", "pec", PaymentMethod.boleto),
        ("bank_transfer", "pix", PaymentMethod.pix),
        ("digital_currency", "consumer_credits", PaymentMethod.other),
        ("something_new", "unknown", PaymentMethod.other),
    ],
)
def test_mercadolivre_payment_method(payment_type: str, method_id: str, expected: PaymentMethod) -> None:
    payload = load("mercadolivre", "paid_delivered_full_buyer")
    payload["payments"][0].update(payment_type=payment_type, payment_method_id=method_id)
    assert adapt("mercadolivre", payload).payments[0].method is expected


# --- Shopee


def test_shopee_completed_order() -> None:
    order = fixture_order("shopee", "completed_full_recipient")

    assert order.external_id == "260305ABCD1234"
    assert order.status is OrderStatus.delivered
    assert order.placed_at == datetime(2026, 3, 5, 12, 0, tzinfo=UTC)  # unix seconds 1772712000
    assert order.updated_at == datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert order.total == Decimal("157.80")  # the float 157.8, exactly
    assert [(i.sku, i.name, i.quantity, i.unit_price) for i in order.items] == [
        ("GT-1L", "Garrafa Térmica Inox 1 L", 2, Decimal("69.90")),
        ("22334455999:99887766", "Caneca Esmaltada", 1, Decimal("12.00")),
    ]
    assert [(p.method, p.amount) for p in order.payments] == [(PaymentMethod.pix, Decimal("157.80"))]
    buyer = order.customer
    assert buyer.external_id == "987654321"
    assert buyer.email is None
    assert buyer.name == "Ana Souza Teste"
    assert buyer.phone == "+5511912345678"  # "5511912345678": country code without "+"
    assert buyer.document == "10773865080"
    assert buyer.address is not None
    assert (buyer.address.district, buyer.address.city, buyer.address.state, buyer.address.zip) == (
        "Bela Vista",
        "São Paulo",
        "SP",
        "01310100",
    )


def test_shopee_masked_phone_and_invalid_address_parts_are_dropped() -> None:
    order = fixture_order("shopee", "cancelled_masked_recipient")

    assert order.status is OrderStatus.cancelled
    assert order.total == Decimal("49.00")  # an integer amount
    assert order.items[0].sku == "CAPA-X1-TR"  # the model's SKU before the item's
    assert [(p.method, p.amount) for p in order.payments] == [(PaymentMethod.credit_card, Decimal("49.00"))]
    buyer = order.customer
    assert buyer.external_id == "123123123"
    assert (buyer.phone, buyer.name, buyer.document) == (None, None, None)  # all masked by Shopee
    assert buyer.address is not None
    assert (buyer.address.city, buyer.address.state, buyer.address.zip) == ("Campinas", None, None)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("UNPAID", OrderStatus.created),
        ("READY_TO_SHIP", OrderStatus.paid),
        ("PROCESSED", OrderStatus.paid),
        ("RETRY_SHIP", OrderStatus.paid),
        ("INVOICE_PENDING", OrderStatus.paid),
        ("SHIPPED", OrderStatus.shipped),
        ("TO_CONFIRM_RECEIVE", OrderStatus.delivered),
        ("COMPLETED", OrderStatus.delivered),
        ("IN_CANCEL", OrderStatus.cancelled),
        ("CANCELLED", OrderStatus.cancelled),
        ("TO_RETURN", OrderStatus.returned),
    ],
)
def test_shopee_status(status: str, expected: OrderStatus) -> None:
    payload = set_at(load("shopee", "completed_full_recipient"), "order_status", status)
    assert adapt("shopee", payload).status is expected


@pytest.mark.parametrize(
    ("name", "cod", "expected"),
    [
        ("Pix", False, PaymentMethod.pix),
        ("Boleto Bancário", False, PaymentMethod.boleto),
        ("Cartão de crédito", False, PaymentMethod.credit_card),
        ("Credit Card", False, PaymentMethod.credit_card),
        ("Gift Card", False, PaymentMethod.voucher),
        ("ShopeePay", False, PaymentMethod.wallet),
        ("SPayLater", False, PaymentMethod.other),
        ("Cash on Delivery", True, PaymentMethod.cash),
    ],
)
def test_shopee_payment_method(name: str, cod: bool, expected: PaymentMethod) -> None:
    payload = load("shopee", "completed_full_recipient")
    payload.update(payment_method=name, cod=cod)
    assert adapt("shopee", payload).payments[0].method is expected


def test_shopee_unpaid_order_without_payment_method_has_no_payment() -> None:
    payload = load("shopee", "completed_full_recipient")
    payload.update(order_status="UNPAID", payment_method="", pay_time=0)
    order = adapt("shopee", payload)
    assert (order.status, order.payments) == (OrderStatus.created, [])


# --- Amazon


def test_amazon_shipped_order_with_buyer_info() -> None:
    order = fixture_order("amazon", "shipped_full_buyer")

    assert order.external_id == "701-1234567-1234567"
    assert order.status is OrderStatus.shipped
    assert order.placed_at == datetime(2026, 2, 10, 14, 22, 5, tzinfo=UTC)
    assert (order.currency, order.total, order.shipping) == ("BRL", Decimal("219.80"), Decimal("20.00"))
    # ItemPrice is the line's price: 199.80 for 2 units.
    assert [(i.sku, i.quantity, i.unit_price) for i in order.items] == [("LIVRO-PY-01", 2, Decimal("99.90"))]
    assert [(p.method, p.amount) for p in order.payments] == [(PaymentMethod.credit_card, Decimal("219.80"))]
    buyer = order.customer
    relay = "3kq9x7v2m1abc4d@marketplace.amazon.com.br"
    assert (buyer.email, buyer.external_id) == (relay, relay)  # Amazon's only buyer key, scoped by source
    assert buyer.name == "Carla Mendes Teste"
    assert buyer.document == "12461567336"
    assert buyer.phone == "+5541998765432"
    assert buyer.address is not None
    assert (buyer.address.street, buyer.address.complement, buyer.address.district) == (
        "Rua das Flores, 100",
        "Apto 12",
        "Centro",
    )
    assert (buyer.address.city, buyer.address.state, buyer.address.zip) == ("Curitiba", "PR", "80010000")


def test_amazon_canceled_order_without_order_total_is_summed_from_items() -> None:
    order = fixture_order("amazon", "canceled_without_order_total")

    assert order.status is OrderStatus.cancelled
    assert order.placed_at == datetime(2026, 2, 11, 11, 0, tzinfo=UTC)
    # 59.90 + 9.90 shipping - 5.00 promotion; the line with QuantityOrdered 0 is left out.
    assert (order.total, order.shipping, order.discount) == (
        Decimal("64.80"),
        Decimal("9.90"),
        Decimal("5.00"),
    )
    assert [(i.sku, i.quantity) for i in order.items] == [("B0TESTE002", 1)]
    assert order.payments == []  # "Standard" names no method
    buyer = order.customer
    assert buyer.external_id == "9zz8yy7xx6ww5vv@marketplace.amazon.com.br"
    assert (buyer.name, buyer.phone, buyer.document) == (None, None, None)  # masked, "0000", bad CPF
    assert buyer.address is not None
    assert buyer.address.state == "MG"  # "Minas Gerais"


def test_amazon_non_relay_email_is_not_an_external_id() -> None:
    payload = set_at(load("amazon", "shipped_full_buyer"), "order.BuyerInfo.BuyerEmail", "c@example.com")
    customer = adapt("amazon", payload).customer
    assert (customer.email, customer.external_id) == ("c@example.com", None)


def test_amazon_order_items_may_be_a_plain_list_and_buyer_info_flat() -> None:
    payload = load("amazon", "shipped_full_buyer")
    payload["items"] = payload["items"]["OrderItems"]
    payload["order"].update(payload["order"].pop("BuyerInfo"))
    order = adapt("amazon", payload)
    assert order.items[0].sku == "LIVRO-PY-01"
    assert order.customer.email == "3kq9x7v2m1abc4d@marketplace.amazon.com.br"


def test_amazon_without_buyer_info_is_refused_with_a_hint() -> None:
    payload = load("amazon", "canceled_without_order_total")
    del payload["order"]["BuyerInfo"]
    with pytest.raises(AdapterError) as caught:
        adapt("amazon", payload)
    assert caught.value.path == "order.BuyerInfo.BuyerEmail"
    assert "Restricted Data Token" in caught.value.problem


def test_amazon_without_order_total_or_priced_items_is_refused() -> None:
    payload = load("amazon", "canceled_without_order_total")
    del payload["items"][0]["ItemPrice"]
    with pytest.raises(AdapterError) as caught:
        adapt("amazon", payload)
    assert caught.value.path == "order.OrderTotal.Amount"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Pending", OrderStatus.created),
        ("PendingAvailability", OrderStatus.created),
        ("Unshipped", OrderStatus.paid),
        ("PartiallyShipped", OrderStatus.shipped),
        ("Shipped", OrderStatus.shipped),
        ("InvoiceUnconfirmed", OrderStatus.shipped),
        ("Canceled", OrderStatus.cancelled),
        ("Unfulfillable", OrderStatus.cancelled),
    ],
)
def test_amazon_status(status: str, expected: OrderStatus) -> None:
    payload = set_at(load("amazon", "shipped_full_buyer"), "order.OrderStatus", status)
    assert adapt("amazon", payload).status is expected


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        (["CreditCard"], [PaymentMethod.credit_card]),
        (["Standard", "Pix"], [PaymentMethod.pix]),
        (["Boleto"], [PaymentMethod.boleto]),
        (["GC"], [PaymentMethod.voucher]),
        (["COD"], [PaymentMethod.cash]),
        (["Standard"], []),
        (["CreditCard", "GC"], []),  # split unknown: no guessed amounts
    ],
)
def test_amazon_payment_method_details(details: list[str], expected: list[PaymentMethod]) -> None:
    payload = set_at(load("amazon", "shipped_full_buyer"), "order.PaymentMethodDetails", details)
    assert [p.method for p in adapt("amazon", payload).payments] == expected


def test_amazon_payment_execution_detail_gives_amounts() -> None:
    payload = load("amazon", "shipped_full_buyer")
    payload["order"]["PaymentExecutionDetail"] = [
        {"Payment": {"CurrencyCode": "BRL", "Amount": "200.00"}, "PaymentMethod": "COD"},
        {"Payment": {"CurrencyCode": "BRL", "Amount": "19.80"}, "PaymentMethod": "GC"},
    ]
    assert [(p.method, p.amount) for p in adapt("amazon", payload).payments] == [
        (PaymentMethod.cash, Decimal("200.00")),
        (PaymentMethod.voucher, Decimal("19.80")),
    ]


# --- Shopify


def test_shopify_paid_order_with_customer_and_consents() -> None:
    order = fixture_order("shopify", "orders_create_paid_full_customer")

    assert order.external_id == "5551234567890"
    assert order.status is OrderStatus.paid
    assert order.placed_at == datetime(2026, 1, 15, 12, 30, tzinfo=UTC)
    # Strings, exactly: 2 x 99.95 - 20.00 + 10.00.
    assert (order.total, order.discount, order.shipping, order.coupon) == (
        Decimal("189.90"),
        Decimal("20.00"),
        Decimal("10.00"),
        "BEMVINDA20",
    )
    [item] = order.items
    assert (item.sku, item.name, item.category, item.quantity, item.unit_price) == (
        "CAMISETA-M-AZUL",
        "Camiseta Básica",
        "Vestuário",
        2,
        Decimal("99.95"),
    )
    assert [(p.method, p.amount) for p in order.payments] == [(PaymentMethod.pix, Decimal("189.90"))]
    buyer = order.customer
    assert buyer.external_id == "7001234567"
    assert buyer.name == "Joana Teste Lima"  # "JOANA TESTE LIMA"
    assert buyer.email == "joana.teste@example.com"
    assert buyer.phone == "+5521998765432"
    assert buyer.document == "16566228748"  # from note_attributes
    assert buyer.address is not None
    assert (buyer.address.street, buyer.address.complement, buyer.address.city) == (
        "Rua Voluntários da Pátria, 45",
        "Casa 2",
        "Rio de Janeiro",
    )
    assert (buyer.address.state, buyer.address.zip, buyer.address.country) == ("RJ", "22270000", "BR")
    consents = {(c.purpose, c.status, c.at, c.source) for c in order.consents}
    assert consents == {
        (
            ConsentPurpose.marketing_email,
            ConsentStatus.granted,
            datetime(2026, 1, 15, 12, 29, 55, tzinfo=UTC),
            "shopify",
        ),
        (ConsentPurpose.marketing_sms, ConsentStatus.denied, None, "shopify"),
    }


def test_shopify_refunded_guest_order() -> None:
    order = fixture_order("shopify", "orders_updated_refunded_guest")

    assert order.status is OrderStatus.returned  # refunded after fulfilment
    assert order.total == Decimal("59.90")
    assert order.items[0].sku == "44012345600001"  # the variant id for a blank SKU
    # The sale transaction, not the refund; Mercado Pago takes several methods.
    assert [(p.method, p.amount) for p in order.payments] == [(PaymentMethod.other, Decimal("59.90"))]
    buyer = order.customer
    assert buyer.external_id is None  # a guest checkout has no customer
    assert buyer.email == "visitante.teste@example.com"
    assert buyer.name == "Visitante Teste"
    assert buyer.phone is None  # "123"
    assert buyer.address is not None
    assert (buyer.address.state, buyer.address.zip) == ("RS", "90010")
    assert [(c.purpose, c.status) for c in order.consents] == [
        (ConsentPurpose.marketing_email, ConsentStatus.denied)  # buyer_accepts_marketing false
    ]


def _shopify(**changes: Any) -> dict[str, Any]:
    payload = load("shopify", "orders_create_paid_full_customer")
    payload.update(changes)
    return payload


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"financial_status": "pending"}, OrderStatus.created),
        ({"financial_status": "partially_paid"}, OrderStatus.created),
        ({"financial_status": "authorized"}, OrderStatus.paid),
        ({"financial_status": "paid"}, OrderStatus.paid),
        ({"financial_status": "partially_refunded"}, OrderStatus.paid),
        ({"fulfillment_status": "partial"}, OrderStatus.shipped),
        ({"fulfillment_status": "fulfilled"}, OrderStatus.shipped),
        (
            {"fulfillment_status": "fulfilled", "fulfillments": [{"shipment_status": "delivered"}]},
            OrderStatus.delivered,
        ),
        ({"financial_status": "refunded"}, OrderStatus.cancelled),  # nothing had shipped
        ({"financial_status": "refunded", "fulfillment_status": "fulfilled"}, OrderStatus.returned),
        ({"financial_status": "voided"}, OrderStatus.cancelled),
        ({"fulfillment_status": "restocked"}, OrderStatus.cancelled),
        ({"cancelled_at": "2026-01-16T10:00:00-03:00"}, OrderStatus.cancelled),
    ],
)
def test_shopify_status(changes: dict[str, Any], expected: OrderStatus) -> None:
    assert adapt("shopify", _shopify(**changes)).status is expected


@pytest.mark.parametrize(
    ("gateways", "expected"),
    [
        (["pix"], [PaymentMethod.pix]),
        (["Boleto Bancário"], [PaymentMethod.boleto]),
        (["gift_card"], [PaymentMethod.voucher]),
        (["Cash on Delivery (COD)"], [PaymentMethod.cash]),
        (["paypal"], [PaymentMethod.wallet]),
        (["manual"], [PaymentMethod.other]),
        (["gift_card", "pix"], []),  # split unknown without transactions
    ],
)
def test_shopify_gateway_payment_method(gateways: list[str], expected: list[PaymentMethod]) -> None:
    payments = adapt("shopify", _shopify(payment_gateway_names=gateways)).payments
    assert [p.method for p in payments] == expected


def test_shopify_card_transaction_and_failed_ones() -> None:
    transactions = [
        {"kind": "sale", "status": "failure", "gateway": "pagar_me", "amount": "189.90"},
        {
            "kind": "authorization",
            "status": "success",
            "gateway": "pagar_me",
            "amount": "189.90",
            "payment_details": {"credit_card_company": "Visa"},
        },
    ]
    payments = adapt("shopify", _shopify(transactions=transactions)).payments
    assert [(p.method, p.amount) for p in payments] == [(PaymentMethod.credit_card, Decimal("189.90"))]


@pytest.mark.parametrize(
    ("consent", "expected"),
    [
        ({"state": "subscribed"}, [ConsentStatus.granted]),
        ({"state": "not_subscribed"}, [ConsentStatus.denied]),
        ({"state": "unsubscribed"}, [ConsentStatus.revoked]),
        ({"state": "pending"}, []),
        ({"state": "redacted"}, []),
    ],
)
def test_shopify_email_marketing_consent(consent: dict[str, Any], expected: list[ConsentStatus]) -> None:
    payload = _shopify()
    payload["customer"]["email_marketing_consent"] = consent
    del payload["customer"]["sms_marketing_consent"]
    assert [c.status for c in adapt("shopify", payload).consents] == expected


# --- VTEX


def test_vtex_invoiced_order_in_cents() -> None:
    order = fixture_order("vtex", "invoiced_full_client")

    assert order.external_id == "1412345678901-01"
    assert order.status is OrderStatus.shipped
    # Seven fractional digits on the wire.
    assert order.placed_at == datetime(2026, 4, 1, 13, 45, 10, 123456, tzinfo=UTC)
    # Cents: value 31980, Discounts -500, Shipping 2500, sellingPrice 14740.
    assert (order.total, order.discount, order.shipping, order.coupon) == (
        Decimal("319.80"),
        Decimal("5.00"),
        Decimal("25.00"),
        "FRETE5",
    )
    [item] = order.items
    assert (item.sku, item.name, item.category, item.quantity, item.unit_price) == (
        "TENIS-CORRIDA-42",
        "Tênis Corrida Leve 42",
        "Tênis",
        2,
        Decimal("147.40"),
    )
    [payment] = order.payments
    assert (payment.method, payment.installments, payment.amount) == (
        PaymentMethod.credit_card,
        4,
        Decimal("319.80"),
    )
    buyer = order.customer
    assert buyer.external_id == "8d9a1c2e-4b5f-4a6b-9c7d-0e1f2a3b4c5d"
    assert buyer.email == "a1b2c3d4e5f60718293a4b5c6d7e8f90@ct.vtex.com.br"  # the masked relay, as given
    assert (buyer.name, buyer.phone, buyer.document) == ("Bruno Teste Costa", "+5531987654321", "91444147226")
    assert buyer.address is not None
    assert (buyer.address.street, buyer.address.number, buyer.address.district) == (
        "Avenida Afonso Pena",
        "1500",
        "Centro",
    )
    assert (buyer.address.zip, buyer.address.country) == ("30130010", "BR")  # country "BRA"


def test_vtex_canceled_corporate_order() -> None:
    order = fixture_order("vtex", "canceled_corporate_boleto")

    assert order.status is OrderStatus.cancelled
    assert order.total == Decimal("150.00")
    assert [(i.sku, i.quantity, i.unit_price) for i in order.items] == [("5678", 3, Decimal("50.00"))]
    assert [(p.method, p.amount) for p in order.payments] == [(PaymentMethod.boleto, Decimal("150.00"))]
    buyer = order.customer
    assert buyer.document == "33976759000163"  # corporateDocument
    assert buyer.document_type == "cnpj"
    assert buyer.phone is None  # "+55 11 1234"


def test_vtex_invalid_person_document_is_dropped() -> None:
    payload = load("vtex", "canceled_corporate_boleto")
    payload["clientProfileData"]["isCorporate"] = False
    assert adapt("vtex", payload).customer.document is None  # "00000000000"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("order-created", OrderStatus.created),
        ("payment-pending", OrderStatus.created),
        ("waiting-for-seller-decision", OrderStatus.created),
        ("payment-approved", OrderStatus.paid),
        ("window-to-cancel", OrderStatus.paid),
        ("ready-for-handling", OrderStatus.paid),
        ("handling", OrderStatus.paid),
        ("invoiced", OrderStatus.shipped),
        ("payment-denied", OrderStatus.cancelled),
        ("cancellation-requested", OrderStatus.cancelled),
        ("canceled", OrderStatus.cancelled),
    ],
)
def test_vtex_status(status: str, expected: OrderStatus) -> None:
    payload = set_at(load("vtex", "invoiced_full_client"), "status", status)
    assert adapt("vtex", payload).status is expected


def test_vtex_delivered_and_returned_from_packages() -> None:
    payload = load("vtex", "invoiced_full_client")
    set_at(payload, "packageAttachment.packages.0.courierStatus.finished", True)
    assert adapt("vtex", payload).status is OrderStatus.delivered

    payload["packageAttachment"]["packages"].append({"type": "Input", "invoiceValue": 31980})
    assert adapt("vtex", payload).status is OrderStatus.returned


@pytest.mark.parametrize(
    ("group", "name", "expected"),
    [
        ("creditCard", "Visa", PaymentMethod.credit_card),
        ("debitCard", "Maestro", PaymentMethod.debit_card),
        ("bankInvoice", "Boleto Bancário", PaymentMethod.boleto),
        ("pix", "Pix", PaymentMethod.pix),
        ("instantPayment", "Pix", PaymentMethod.pix),
        ("giftCard", "Vale", PaymentMethod.voucher),
        ("promissory", "Promissory", PaymentMethod.other),
        ("custom201", "PicPay", PaymentMethod.wallet),
    ],
)
def test_vtex_payment_method(group: str, name: str, expected: PaymentMethod) -> None:
    payload = load("vtex", "invoiced_full_client")
    payload["paymentData"]["transactions"][0]["payments"][0].update(group=group, paymentSystemName=name)
    assert adapt("vtex", payload).payments[0].method is expected


# --- Magalu


def test_magalu_delivered_order() -> None:
    order = fixture_order("magalu", "delivered_full_customer")

    assert order.external_id == "LU-1234567890123456"
    assert order.status is OrderStatus.delivered
    # No zone on the wire: Brazil's time.
    assert order.placed_at == datetime(2026, 5, 10, 19, 20, tzinfo=UTC)
    assert (order.total, order.shipping, order.discount) == (
        Decimal("329.80"),
        Decimal("29.90"),
        Decimal("0"),
    )
    assert [(i.sku, i.quantity, i.unit_price) for i in order.items] == [("LIQ-PRO-01", 1, Decimal("299.90"))]
    [payment] = order.payments
    assert (payment.method, payment.installments, payment.amount) == (
        PaymentMethod.credit_card,
        10,
        Decimal("329.80"),
    )
    buyer = order.customer
    assert buyer.external_id is None  # IntegraCommerce has no buyer id
    assert (buyer.name, buyer.email) == ("Paula Ribeiro Teste", "paula.teste@example.com")
    assert (buyer.document, buyer.phone) == ("41325657697", "+551134567890")
    assert buyer.birth_date is not None
    assert buyer.birth_date.isoformat() == "1990-07-21"
    assert buyer.address is not None
    assert (buyer.address.street, buyer.address.number, buyer.address.complement) == (
        "Avenida Paulista",
        "1578",
        "Conj. 41",
    )
    assert (buyer.address.city, buyer.address.state, buyer.address.zip) == ("Sao Paulo", "SP", "01310200")


def test_magalu_canceled_company_order_with_invalid_fields() -> None:
    order = fixture_order("magalu", "canceled_pj_invalid_fields")

    assert order.status is OrderStatus.cancelled
    assert order.total == Decimal("120.50")  # amounts as strings
    assert [(p.method, p.installments) for p in order.payments] == [(PaymentMethod.pix, 1)]  # 0 installments
    buyer = order.customer
    assert (buyer.document, buyer.name) == ("16410343000164", "Loja Teste Ltda")
    assert (buyer.email, buyer.phone, buyer.birth_date) == (None, None, None)
    assert buyer.address is not None
    assert (buyer.address.state, buyer.address.zip) == ("SP", None)


def test_magalu_without_any_buyer_identifier_is_refused() -> None:
    payload = load("magalu", "canceled_pj_invalid_fields")
    payload["CustomerPjCnpj"] = "16.410.343/0001-00"  # wrong check digits: dropped, nothing left
    with pytest.raises(AdapterError) as caught:
        adapt("magalu", payload)
    assert caught.value.path == "CustomerPfCpf"
    assert "16410343" not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("NEW", OrderStatus.created),
        ("APPROVED", OrderStatus.paid),
        ("INVOICED", OrderStatus.paid),
        ("SHIPPED", OrderStatus.shipped),
        ("SHIPMENT_EXCEPTION", OrderStatus.shipped),
        ("DELIVERED", OrderStatus.delivered),
        ("CANCELED", OrderStatus.cancelled),
    ],
)
def test_magalu_status(status: str, expected: OrderStatus) -> None:
    payload = set_at(load("magalu", "delivered_full_customer"), "OrderStatus", status)
    assert adapt("magalu", payload).status is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Cartão de Crédito", PaymentMethod.credit_card),
        ("Cartão de Débito", PaymentMethod.debit_card),
        ("Boleto", PaymentMethod.boleto),
        ("Pix", PaymentMethod.pix),
        ("MagaluPay", PaymentMethod.wallet),
        ("Vale Presente", PaymentMethod.voucher),
        ("Cartão Presente", PaymentMethod.voucher),
        ("Crediário", PaymentMethod.other),
    ],
)
def test_magalu_payment_method(name: str, expected: PaymentMethod) -> None:
    payload = set_at(load("magalu", "delivered_full_customer"), "Payments.0.Name", name)
    assert adapt("magalu", payload).payments[0].method is expected


# --- Refusals: a missing id, total or date; malformed amounts and times. Never a personal value.

REQUIRED = [
    ("mercadolivre", "paid_delivered_full_buyer", "id", "id"),
    ("mercadolivre", "paid_delivered_full_buyer", "total_amount", "total_amount"),
    ("mercadolivre", "paid_delivered_full_buyer", "date_created", "date_created"),
    ("mercadolivre", "paid_delivered_full_buyer", "buyer.id", "buyer.id"),
    ("shopee", "completed_full_recipient", "order_sn", "order_sn"),
    ("shopee", "completed_full_recipient", "total_amount", "total_amount"),
    ("shopee", "completed_full_recipient", "create_time", "create_time"),
    ("shopee", "completed_full_recipient", "buyer_user_id", "buyer_user_id"),
    ("amazon", "shipped_full_buyer", "order.AmazonOrderId", "order.AmazonOrderId"),
    ("amazon", "canceled_without_order_total", "items", "order.OrderTotal.Amount"),
    ("amazon", "shipped_full_buyer", "order.PurchaseDate", "order.PurchaseDate"),
    ("amazon", "shipped_full_buyer", "order", "order"),
    ("shopify", "orders_create_paid_full_customer", "id", "id"),
    ("shopify", "orders_create_paid_full_customer", "total_price", "total_price"),
    ("shopify", "orders_create_paid_full_customer", "created_at", "created_at"),
    ("vtex", "invoiced_full_client", "orderId", "orderId"),
    ("vtex", "invoiced_full_client", "value", "value"),
    ("vtex", "invoiced_full_client", "creationDate", "creationDate"),
    ("magalu", "delivered_full_customer", "IdOrder", "IdOrder"),
    ("magalu", "delivered_full_customer", "TotalAmount", "TotalAmount"),
    ("magalu", "delivered_full_customer", "PurchasedDate", "PurchasedDate"),
    ("magalu", "delivered_full_customer", "Products.0.IdSku", "Products[0].IdSku"),
]


@pytest.mark.parametrize(("platform", "fixture", "field", "path"), REQUIRED)
def test_missing_required_field_is_an_adapter_error(
    platform: str, fixture: str, field: str, path: str
) -> None:
    payload = drop_at(load(platform, fixture), field)
    with pytest.raises(AdapterError) as caught:
        adapt(platform, payload)
    assert caught.value.path == path
    assert str(caught.value) == f"{path}: missing"


@pytest.mark.parametrize(("platform", "fixture", "field", "path"), REQUIRED[:3])
def test_null_or_blank_required_field_counts_as_missing(
    platform: str, fixture: str, field: str, path: str
) -> None:
    for blank in (None, "", "  "):
        with pytest.raises(AdapterError, match="missing"):
            adapt(platform, set_at(load(platform, fixture), field, blank))


@pytest.mark.parametrize(
    ("platform", "fixture", "field", "value", "problem"),
    [
        (
            "mercadolivre",
            "paid_delivered_full_buyer",
            "total_amount",
            259.805,
            "more than two decimal places",
        ),
        ("mercadolivre", "paid_delivered_full_buyer", "total_amount", -1, "negative amount"),
        ("mercadolivre", "paid_delivered_full_buyer", "total_amount", True, "not an amount"),
        ("shopify", "orders_create_paid_full_customer", "total_price", "189,90", "not an amount"),
        ("shopify", "orders_create_paid_full_customer", "total_price", "NaN", "not a finite amount"),
        ("vtex", "invoiced_full_client", "value", 319.8, "not a whole number of cents"),
        ("shopee", "completed_full_recipient", "create_time", "yesterday", "not an ISO 8601 timestamp"),
        ("shopee", "completed_full_recipient", "create_time", -5, "not a timestamp"),
        ("shopee", "completed_full_recipient", "create_time", 68315727745, "timestamp out of range"),
        ("magalu", "delivered_full_customer", "Products.0.Quantity", "two", "not an integer"),
        ("amazon", "shipped_full_buyer", "order.OrderStatus", "Teleported", "unknown status"),
    ],
)
def test_malformed_values_are_adapter_errors(
    platform: str, fixture: str, field: str, value: Any, problem: str
) -> None:
    with pytest.raises(AdapterError) as caught:
        adapt(platform, set_at(load(platform, fixture), field, value))
    assert caught.value.problem == problem


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_payload_that_is_not_an_object_is_refused(platform: str) -> None:
    with pytest.raises(AdapterError, match="not a JSON object"):
        ADAPTERS[platform](cast(Any, ["not", "an", "order"]))


@pytest.mark.parametrize(
    ("platform", "fixture", "field"),
    [
        ("mercadolivre", "paid_delivered_full_buyer", "total_amount"),
        ("mercadolivre", "paid_delivered_full_buyer", "status"),
        ("shopee", "completed_full_recipient", "order_status"),
        ("shopify", "orders_create_paid_full_customer", "created_at"),
        ("vtex", "invoiced_full_client", "value"),
        ("magalu", "delivered_full_customer", "OrderStatus"),
    ],
)
def test_errors_never_quote_personal_data(platform: str, fixture: str, field: str) -> None:
    for leaked in (
        "Maria da Silva",
        "msilva.8kq2x3@mail.mercadolivre.com",
        "683.157.277-45",
        "(11) 91234-5678",
    ):
        with pytest.raises(AdapterError) as caught:
            adapt(platform, set_at(load(platform, fixture), field, leaked))
        assert leaked not in str(caught.value)
        assert_no_personal_data(str(caught.value))
        assert caught.value.__cause__ is None


def test_canonical_refusals_name_the_field_not_the_value() -> None:
    payload = load("mercadolivre", "paid_delivered_full_buyer")
    payload["order_items"][0]["quantity"] = 1_000_000
    payload["currency_id"] = "R$"
    with pytest.raises(AdapterError) as caught:
        adapt("mercadolivre", payload)
    assert caught.value.path == "currency, items.0.quantity"
    assert "1000000" not in str(caught.value)
    assert "R$" not in str(caught.value)
    assert_no_personal_data(str(caught.value))


# --- The conversions themselves


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (129.9, "129.90"),
        (0.1, "0.10"),
        (19.99, "19.99"),
        (1e2, "100.00"),
        (7, "7.00"),
        ("259.90", "259.90"),
        (" 10.5 ", "10.50"),
        ("10.500", "10.50"),
        (Decimal("3.3"), "3.30"),
    ],
)
def test_amounts_are_exact(value: Any, expected: str) -> None:
    amount = common.to_amount(value, "x")
    assert str(amount) == expected  # not Decimal(0.1) = 0.1000000000000000055511151231257827...


@given(st.decimals(min_value=0, max_value=Decimal("9999999999.99"), places=2))
def test_any_two_place_amount_sent_as_a_float_is_read_back_exactly(amount: Decimal) -> None:
    assert common.to_amount(float(amount), "x") == amount


@pytest.mark.parametrize(
    ("value", "expected"), [(12990, "129.90"), ("500", "5.00"), (1, "0.01"), (0, "0.00"), (1990.0, "19.90")]
)
def test_cents_are_scaled(value: Any, expected: str) -> None:
    assert str(common.from_cents(value, "x")) == expected


def test_negative_cents_only_where_signed() -> None:
    assert common.from_cents(-500, "totals[1].value", signed=True) == Decimal("-5.00")
    with pytest.raises(AdapterError, match="negative amount"):
        common.from_cents(-500, "value")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1772712000, datetime(2026, 3, 5, 12, 0, tzinfo=UTC)),
        ("1772712000", datetime(2026, 3, 5, 12, 0, tzinfo=UTC)),
        (1772712000123, datetime(2026, 3, 5, 12, 0, 0, 123000, tzinfo=UTC)),
        ("2026-03-05T12:00:00Z", datetime(2026, 3, 5, 12, 0, tzinfo=UTC)),
        ("2026-03-05T09:00:00.000-03:00", datetime(2026, 3, 5, 12, 0, tzinfo=UTC)),
        ("2026-03-05T12:00:00.1234567+00:00", datetime(2026, 3, 5, 12, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_timestamps(value: Any, expected: datetime) -> None:
    parsed = common.to_datetime(value, "x")
    assert parsed == expected
    assert parsed.utcoffset() is not None


def test_a_timestamp_without_zone_stays_naive_for_the_canonical_model() -> None:
    parsed = common.to_datetime("2026-05-10T16:20:00", "x")
    assert parsed.tzinfo is None
    assert parsed + timedelta(hours=3) == datetime(2026, 5, 10, 19, 20)


@pytest.mark.parametrize(
    ("dropper", "value"),
    [
        (common.phone, "******5678"),
        (common.phone, "XXXX-XXXX"),
        (common.phone, "123"),
        (common.document, "123.456.789-00"),
        (common.document, "*******5080"),
        (common.email, "not-an-email"),
        (common.email, "m****a@example.com"),
        (common.person_name, "A****a"),
        (common.person_name, "x" * 201),
    ],
)
def test_invalid_personal_values_are_dropped(dropper: Callable[[Any], object], value: str) -> None:
    assert dropper(value) is None
