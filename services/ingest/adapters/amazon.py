"""Amazon: an order from the Selling Partner API Orders v0 to a canonical order. The payload joins two
answers: `{"order": <getOrder payload>, "items": <getOrderItems OrderItems list, or its payload>}`.

- `total` is `OrderTotal.Amount` (a string). Amazon leaves `OrderTotal` out of some Pending and Canceled
  orders: the total is then summed from the items (`ItemPrice` + `ShippingPrice` - `PromotionDiscount` -
  `ShippingDiscount`; Amazon.com.br prices include taxes) when every item is priced, else the order is
  refused.
- `ItemPrice` is the line's price (unit price x quantity); the unit price is derived from it. Lines with
  `QuantityOrdered` 0 (cancelled lines) are left out.
- Status: Pending and PendingAvailability are `created`; Unshipped (payment authorised) is `paid`;
  PartiallyShipped, Shipped and InvoiceUnconfirmed are `shipped`; Canceled and Unfulfillable are `cancelled`.
  The Orders API reports neither deliveries nor returns.
- Payments: `PaymentExecutionDetail` (with amounts) when present; else one payment of the total when
  `PaymentMethodDetails` (or else `PaymentMethod`: COD, CVS) names a single method (`CreditCard`, `Pix`,
  `Boleto`, ...); else none ("Standard" and "Other" name no method).
- The buyer: Amazon gives sellers no buyer id and only a relay e-mail (`...@marketplace.amazon.com.br`, one
  per buyer and seller). The relay address is kept as the e-mail and also used as the customer's
  `external_id`, the only stable buyer key Amazon offers; it identifies the buyer only within Amazon, never
  the same person on another source. `BuyerInfo` is restricted data: an order read without a Restricted Data
  Token carries no buyer identifier at all and is refused. The CPF/CNPJ comes from
  `BuyerInfo.BuyerTaxInfo.TaxClassifications` or `BuyerTaxInformation.BuyerTaxRegistrationId`. Name, phone
  and address fall back on `ShippingAddress` (the recipient's).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from services.ingest.adapters import _common as c
from shared.records import Order, OrderStatus, PaymentMethod

SOURCE = "amazon"

_RELAY = re.compile(r"@marketplace\.amazon\.[a-z.]+$")
_STATUSES = {
    "pending": OrderStatus.created,
    "pendingavailability": OrderStatus.created,
    "unshipped": OrderStatus.paid,
    "partiallyshipped": OrderStatus.shipped,
    "shipped": OrderStatus.shipped,
    "invoiceunconfirmed": OrderStatus.shipped,
    "canceled": OrderStatus.cancelled,
    "unfulfillable": OrderStatus.cancelled,
}
_METHODS = {
    "creditcard": PaymentMethod.credit_card,
    "debitcard": PaymentMethod.debit_card,
    "pix": PaymentMethod.pix,
    "boleto": PaymentMethod.boleto,
    "giftcertificate": PaymentMethod.voucher,
    "gc": PaymentMethod.voucher,
    "giftcard": PaymentMethod.voucher,
    "pointsaccount": PaymentMethod.voucher,
    "cod": PaymentMethod.cash,
    "cashondelivery": PaymentMethod.cash,
    "cvs": PaymentMethod.cash,
    "directpayment": PaymentMethod.bank_transfer,
    "invoice": PaymentMethod.other,
    "other": PaymentMethod.other,
}
# "Standard" and "Other" say nothing about the method.
_UNSPECIFIED = {"standard", "other"}


def _method(name: str | None) -> PaymentMethod:
    key = (name or "").replace("_", "").replace(" ", "").lower()
    return _METHODS.get(key) or c.method_from_words(name)


def _lines(payload: c.Node) -> list[c.Node]:
    items = payload.raw("items")
    if isinstance(items, dict):
        wrapper = payload.obj("items")
        wrapper = wrapper.obj("payload") if wrapper.has("payload") else wrapper
        return wrapper.objs("OrderItems")
    return payload.objs("items")


def _money(node: c.Node, key: str) -> Decimal | None:
    return node.obj(key).amount("Amount")


def _items(lines: list[c.Node]) -> list[dict[str, Any]]:
    items = []
    for line in lines:
        quantity = line.count("QuantityOrdered")
        if quantity is None:
            raise c.AdapterError(line.at("QuantityOrdered"), "missing")
        if quantity <= 0:
            continue
        price = _money(line, "ItemPrice")
        if price is None:
            raise c.AdapterError(line.at("ItemPrice.Amount"), "missing")
        items.append(
            c.item(
                sku=line.text("SellerSKU") or line.required_text("ASIN"),
                name=line.text("Title"),
                category=None,
                quantity=quantity,
                unit_price=c.unit_price(price, quantity),
            )
        )
    return items


def _sum(lines: list[c.Node], *keys: str) -> Decimal:
    return c.total_of(_money(line, key) for line in lines for key in keys)


def _total(order: c.Node, lines: list[c.Node]) -> Decimal:
    total = order.obj("OrderTotal").amount("Amount")
    if total is not None:
        return total
    if not lines or any(_money(line, "ItemPrice") is None for line in lines):
        raise c.AdapterError(order.at("OrderTotal.Amount"), "missing")
    charged = _sum(lines, "ItemPrice", "ShippingPrice")
    return max(charged - _sum(lines, "PromotionDiscount", "ShippingDiscount"), Decimal("0.00"))


def _payments(order: c.Node, total: Decimal) -> list[dict[str, Any]]:
    executed = order.objs("PaymentExecutionDetail")
    if executed:
        return [
            c.payment(_method(p.text("PaymentMethod")), p.obj("Payment").required_amount("Amount"))
            for p in executed
        ]
    details = [d for d in order.strings("PaymentMethodDetails") if d.lower() not in _UNSPECIFIED]
    details = details or [d for d in order.strings("PaymentMethod") if d.lower() not in _UNSPECIFIED]
    methods = {_method(d) for d in details}
    return [c.payment(methods.pop(), total)] if len(methods) == 1 else []


def _document(order: c.Node, buyer: c.Node) -> str | None:
    classifications = buyer.obj("BuyerTaxInfo").objs("TaxClassifications")
    return c.first_document(
        *(entry.raw("Value") for entry in classifications),
        order.obj("BuyerTaxInformation").raw("BuyerTaxRegistrationId"),
    )


def _customer(order: c.Node) -> dict[str, Any]:
    # getOrder nests the buyer under BuyerInfo; getOrderBuyerInfo answers with the same fields flat.
    buyer = order.obj("BuyerInfo") if order.has("BuyerInfo") else order
    shipping = order.obj("ShippingAddress")
    buyer_email = c.email(buyer.raw("BuyerEmail"))
    complement = " ".join(
        t for t in (shipping.text("AddressLine2"), shipping.text("AddressLine3")) if t is not None
    )
    fields = c.customer(
        external_id=buyer_email if buyer_email and _RELAY.search(buyer_email) else None,
        name=c.person_name(buyer.raw("BuyerName")) or c.person_name(shipping.raw("Name")),
        email=buyer_email,
        phone=c.phone(shipping.raw("Phone")),
        document=_document(order, buyer),
        address=c.address(
            street=shipping.raw("AddressLine1"),
            complement=complement,
            district=shipping.raw("District") or shipping.raw("County"),
            city=shipping.raw("City") or shipping.raw("Municipality"),
            state=shipping.raw("StateOrRegion"),
            zip_code=shipping.raw("PostalCode"),
            country=shipping.raw("CountryCode"),
        ),
    )
    return c.identified(
        fields,
        order.at("BuyerInfo.BuyerEmail"),
        "missing: no buyer identifier (BuyerInfo is restricted data: read the order with a Restricted Data "
        "Token)",
    )


def to_order(payload: dict[str, Any]) -> Order:
    root = c.Node(payload)
    if not root.has("order"):
        raise c.AdapterError("order", "missing")
    order = root.obj("order")
    lines = _lines(root)
    total = _total(order, lines)
    return c.build_order(
        {
            "external_id": order.required_text("AmazonOrderId"),
            "source": SOURCE,
            "status": c.status_of(_STATUSES, order.text("OrderStatus"), order.at("OrderStatus")),
            "placed_at": order.required_time("PurchaseDate"),
            "updated_at": order.time("LastUpdateDate"),
            "currency": order.obj("OrderTotal").text("CurrencyCode")
            or next((cur for line in lines if (cur := line.obj("ItemPrice").text("CurrencyCode"))), None),
            "total": total,
            "discount": _sum(lines, "PromotionDiscount", "ShippingDiscount"),
            "shipping": _sum(lines, "ShippingPrice"),
            "items": _items(lines),
            "payments": _payments(order, total),
            "customer": _customer(order),
        }
    )
