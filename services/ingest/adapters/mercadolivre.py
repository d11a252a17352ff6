"""Mercado Livre: an order from the Orders API (`GET /orders/{id}`) to a canonical order.

- `total` is `total_amount` (the items, after the seller's discounts) plus the shipping charged to the buyer
  on the order's payments (`payments[].shipping_cost`); `discount` is `coupon.amount`.
- Status: confirmed, payment_required, payment_in_process and partially_paid are `created`; paid (and
  partially_refunded) is `paid`, or `delivered` when `tags` holds "delivered", or `shipped`/`delivered` when a
  `shipping.status` merged in from the Shipments API says so; cancelled, pending_cancel and invalid are
  `cancelled`.
- Payments: the approved ones when there are any, else all but those rejected or cancelled (so a cancelled
  order keeps its refunded payment); the method comes from `payment_method_id` (pix, boleto ids) and else
  `payment_type` (credit_card, account_money, ticket, ...). The shipping cost is read from the same payments.
- The buyer: `buyer.id` is always the customer's `external_id`. The e-mail, when the API gives one, is usually
  a relay address (`...@mail.mercadolivre.com`): it is kept as given, but it identifies the buyer only within
  Mercado Livre (and only toward this seller), never the same person on another source. The CPF/CNPJ is
  read from `buyer.billing_info` (`doc_type`/`doc_number`, older payloads) or from a `billing_info` object
  merged in from `/orders/{id}/billing_info` (v1 `doc_number` or v2 `identification.number`); other
  document types (DNI, RUT, ...) are ignored.
"""

from __future__ import annotations

from typing import Any

from services.ingest.adapters import _common as c
from shared.records import Order, OrderStatus, PaymentMethod

SOURCE = "mercadolivre"

_STATUSES = {
    "confirmed": OrderStatus.created,
    "payment_required": OrderStatus.created,
    "payment_in_process": OrderStatus.created,
    "partially_paid": OrderStatus.created,
    "paid": OrderStatus.paid,
    "partially_refunded": OrderStatus.paid,
    "pending_cancel": OrderStatus.cancelled,
    "cancelled": OrderStatus.cancelled,
    "invalid": OrderStatus.cancelled,
}
_SHIPMENT_STATUSES = {"shipped": OrderStatus.shipped, "delivered": OrderStatus.delivered}

_PAYMENT_METHOD_IDS = {
    "pix": PaymentMethod.pix,
    "bolbradesco": PaymentMethod.boleto,
    "pec": PaymentMethod.boleto,
    "account_money": PaymentMethod.wallet,
}
_PAYMENT_TYPES = {
    "credit_card": PaymentMethod.credit_card,
    "debit_card": PaymentMethod.debit_card,
    "prepaid_card": PaymentMethod.debit_card,
    "account_money": PaymentMethod.wallet,
    "digital_wallet": PaymentMethod.wallet,
    "ticket": PaymentMethod.boleto,
    "bank_transfer": PaymentMethod.bank_transfer,
    "atm": PaymentMethod.bank_transfer,
    "voucher_card": PaymentMethod.voucher,
    "digital_currency": PaymentMethod.other,
    "consumer_credits": PaymentMethod.other,
}
_DROPPED_PAYMENTS = {"rejected", "cancelled"}
_APPROVED_PAYMENTS = {"approved", "authorized"}
_DOCUMENT_TYPES = {"CPF", "CNPJ"}


def _status(order: c.Node) -> OrderStatus:
    status = c.status_of(_STATUSES, order.text("status"), order.at("status"))
    if status is not OrderStatus.paid:
        return status
    shipment = _SHIPMENT_STATUSES.get((order.obj("shipping").text("status") or "").lower())
    if "delivered" in {tag.lower() for tag in order.strings("tags")}:
        return OrderStatus.delivered
    return shipment or status


def _method(payment: c.Node) -> PaymentMethod:
    method_id = (payment.text("payment_method_id") or "").lower()
    payment_type = (payment.text("payment_type", "payment_type_id") or "").lower()
    return _PAYMENT_METHOD_IDS.get(method_id) or _PAYMENT_TYPES.get(payment_type) or PaymentMethod.other


def _payments(order: c.Node) -> list[c.Node]:
    """The payments that count: the approved ones when there are any (a refunded first attempt beside an
    approved retry would count twice), else every one that was not rejected or cancelled."""
    kept = [p for p in order.objs("payments") if (p.text("status") or "").lower() not in _DROPPED_PAYMENTS]
    approved = [p for p in kept if (p.text("status") or "").lower() in _APPROVED_PAYMENTS]
    return approved or kept


def _document(order: c.Node) -> str | None:
    merged = order.obj("billing_info")  # the /orders/{id}/billing_info answer (v1 or v2), when merged in
    sources = (
        order.obj("buyer").obj("billing_info"),
        merged,
        merged.obj("billing_info"),
        merged.obj("buyer").obj("billing_info"),
    )
    for info in sources:
        identification = info.obj("identification")
        doc_type = (info.text("doc_type") or identification.text("type") or "").upper()
        if doc_type and doc_type not in _DOCUMENT_TYPES:
            continue
        found = c.first_document(info.raw("doc_number"), identification.raw("number"))
        if found is not None:
            return found
    return None


def _phone(buyer: c.Node) -> str | None:
    numbers: list[str] = []
    for phone in (buyer.obj("phone"), buyer.obj("alternative_phone")):
        area, number = phone.raw("area_code"), phone.raw("number")
        if number is not None:
            numbers.append(f"({area}) {number}" if area is not None else str(number))
    return c.first_phone(*numbers)


def _customer(order: c.Node) -> dict[str, Any]:
    buyer = order.obj("buyer")
    return c.customer(
        external_id=buyer.required_text("id"),
        name=c.person_name(buyer.raw("first_name"), buyer.raw("last_name")),
        email=c.email(buyer.raw("email")),
        phone=_phone(buyer),
        document=_document(order),
    )


def to_order(payload: dict[str, Any]) -> Order:
    order = c.Node(payload)
    payments = _payments(order)
    shipping = c.total_of(p.amount("shipping_cost") for p in payments)
    items = []
    for line in order.objs("order_items"):
        item = line.obj("item")
        quantity = line.count("quantity")
        if quantity is None:
            raise c.AdapterError(line.at("quantity"), "missing")
        if quantity <= 0:
            continue
        items.append(
            c.item(
                sku=item.text("seller_sku", "seller_custom_field") or item.required_text("id"),
                name=item.text("title"),
                category=item.text("category_id"),
                quantity=quantity,
                unit_price=line.required_amount("unit_price"),
            )
        )
    coupon = order.obj("coupon")
    return c.build_order(
        {
            "external_id": order.required_text("id"),
            "source": SOURCE,
            "status": _status(order),
            "placed_at": order.required_time("date_created"),
            "updated_at": order.time("last_updated"),
            "currency": order.text("currency_id"),
            "total": order.required_amount("total_amount") + shipping,
            "discount": coupon.amount("amount"),
            "shipping": shipping,
            "coupon": c.clipped(coupon.text("id", "code"), 100),
            "items": items,
            "payments": [
                c.payment(
                    _method(p),
                    p.required_amount("total_paid_amount", "transaction_amount"),
                    p.count("installments"),
                )
                for p in payments
            ],
            "customer": _customer(order),
        }
    )
