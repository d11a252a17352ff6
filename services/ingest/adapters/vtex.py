"""VTEX: an order from the OMS API (`GET /api/oms/pvt/orders/{orderId}`) to a canonical order.

- Every amount is an integer in cents: `value` (the total), `totals[]` (Items, Discounts — negative —,
  Shipping, Tax), item `price`/`sellingPrice` (per unit; `sellingPrice` is after discounts), payment `value`.
- Status: order-created, order-completed, on-order-completed, payment-pending, approve-payment,
  waiting-for-*-authorization and order-accepted are `created`; payment-approved, authorize-fulfillment,
  window-to-cancel, ready-for-handling, start-handling, handling and invoice-after-cancellation-deny are
  `paid`; invoiced is `shipped`, or `delivered` when every package's `courierStatus.finished` is true;
  payment-denied, request-cancel, cancellation-requested, canceled and replaced are `cancelled`; an order
  with a return invoice (`packageAttachment.packages[].type` "Input") is `returned`.
- Payments: `paymentData.transactions[].payments[]`, the method from `group` (creditCard, debitCard,
  bankInvoice, pix, giftCard, ...) or else `paymentSystemName`.
- The buyer: `clientProfileData.userProfileId` is the customer's `external_id`. VTEX masks e-mails for
  orders from marketplaces and with data masking on (`...@ct.vtex.com.br`): such a relay address is kept as
  given, but it identifies the buyer only within VTEX, never the same person on another source. A corporate
  buyer's document is `corporateDocument` (CNPJ).
"""

from __future__ import annotations

from typing import Any

from services.ingest.adapters import _common as c
from shared.records import Order, OrderStatus, PaymentMethod

SOURCE = "vtex"

_STATUSES = {
    **dict.fromkeys(
        (
            "order-created",
            "order-completed",
            "on-order-completed",
            "payment-pending",
            "approve-payment",
            "waiting-for-authorization",
            "waiting-for-order-authorization",
            "waiting-for-manual-authorization",
            "waiting-for-seller-decision",
            "waiting-ffmt-authorization",
            "order-accepted",
        ),
        OrderStatus.created,
    ),
    **dict.fromkeys(
        (
            "payment-approved",
            "authorize-fulfillment",
            "window-to-cancel",
            "ready-for-handling",
            "start-handling",
            "handling",
            "invoice-after-cancellation-deny",
        ),
        OrderStatus.paid,
    ),
    "invoiced": OrderStatus.shipped,
    **dict.fromkeys(
        (
            "payment-denied",
            "request-cancel",
            "cancellation-requested",
            "cancel",
            "canceled",
            "cancelled",
            "replaced",
        ),
        OrderStatus.cancelled,
    ),
}
_GROUPS = {
    "creditcard": PaymentMethod.credit_card,
    "debitcard": PaymentMethod.debit_card,
    "bankinvoice": PaymentMethod.boleto,
    "pix": PaymentMethod.pix,
    "instantpayment": PaymentMethod.pix,
    "giftcard": PaymentMethod.voucher,
    "promissory": PaymentMethod.other,
}


def _status(order: c.Node) -> OrderStatus:
    status = c.status_of(_STATUSES, order.text("status"), order.at("status"))
    packages = order.obj("packageAttachment").objs("packages")
    if any((p.text("type") or "").lower() == "input" for p in packages):
        return OrderStatus.returned
    outgoing = [p for p in packages if (p.text("type") or "output").lower() == "output"]
    if (
        status is OrderStatus.shipped
        and outgoing
        and all(p.obj("courierStatus").flag("finished") for p in outgoing)
    ):
        return OrderStatus.delivered
    return status


def _totals(order: c.Node) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for entry in order.objs("totals"):
        key = (entry.text("id") or "").lower()
        value = entry.cents("value", signed=True)
        if key and value is not None:
            found[key] = abs(value)
    return found


def _items(order: c.Node) -> list[dict[str, Any]]:
    items = []
    for line in order.objs("items"):
        quantity = line.count("quantity")
        if quantity is None:
            raise c.AdapterError(line.at("quantity"), "missing")
        if quantity <= 0:
            continue
        categories = line.obj("additionalInfo").objs("categories")
        items.append(
            c.item(
                sku=line.text("refId", "sellerSku") or line.required_text("id"),
                name=line.text("name"),
                category=categories[0].text("name") if categories else None,
                quantity=quantity,
                unit_price=line.required_cents("sellingPrice", "price"),
            )
        )
    return items


def _payments(order: c.Node) -> list[dict[str, Any]]:
    return [
        c.payment(
            _GROUPS.get((p.text("group") or "").lower()) or c.method_from_words(p.text("paymentSystemName")),
            p.required_cents("value"),
            p.count("installments"),
        )
        for transaction in order.obj("paymentData").objs("transactions")
        for p in transaction.objs("payments")
    ]


def _customer(order: c.Node) -> dict[str, Any]:
    client = order.obj("clientProfileData")
    address = order.obj("shippingData").obj("address")
    corporate = client.flag("isCorporate")
    fields = c.customer(
        external_id=client.text("userProfileId", "customerCode"),
        name=c.person_name(client.raw("firstName"), client.raw("lastName")),
        email=c.email(client.raw("email")),
        phone=c.first_phone(client.raw("phone"), client.raw("corporatePhone")),
        document=c.first_document(client.raw("corporateDocument"), client.raw("document"))
        if corporate
        else c.document(client.raw("document")),
        address=c.address(
            street=address.raw("street"),
            number=address.raw("number"),
            complement=address.raw("complement"),
            district=address.raw("neighborhood"),
            city=address.raw("city"),
            state=address.raw("state"),
            zip_code=address.raw("postalCode"),
            country=address.raw("country"),
        ),
    )
    return c.identified(fields, client.at("userProfileId"))


def to_order(payload: dict[str, Any]) -> Order:
    order = c.Node(payload)
    totals = _totals(order)
    coupon = order.obj("marketingData").text("coupon")
    return c.build_order(
        {
            "external_id": order.required_text("orderId"),
            "source": SOURCE,
            "status": _status(order),
            "placed_at": order.required_time("creationDate"),
            "updated_at": order.time("lastChange"),
            "currency": order.obj("storePreferencesData").text("currencyCode"),
            "total": order.required_cents("value"),
            "discount": totals.get("discounts"),
            "shipping": totals.get("shipping"),
            "coupon": c.clipped(coupon, 100),
            "items": _items(order),
            "payments": _payments(order),
            "customer": _customer(order),
        }
    )
