"""Shopee: one entry of `response.order_list` from Open Platform v2 `v2.order.get_order_detail` (requested
with the buyer, recipient, item and payment optional fields) to a canonical order.

- Times are unix seconds (`create_time`, `update_time`); `total_amount` is what the buyer paid, shipping
  included, as a JSON number (read through `Decimal(str(x))`).
- Status: UNPAID is `created`; READY_TO_SHIP, PROCESSED, RETRY_SHIP and INVOICE_PENDING are `paid`; SHIPPED
  is `shipped`; TO_CONFIRM_RECEIVE (delivered, awaiting the buyer's confirmation) and COMPLETED are
  `delivered`; IN_CANCEL (a pending cancellation; a refusal comes back as a newer version) and CANCELLED are
  `cancelled`; TO_RETURN is `returned`.
- Items: `model_discounted_price` is the unit price after discounts; the SKU is the model's, the item's, or
  else Shopee's `item_id`/`model_id`.
- The buyer: `buyer_user_id` is always the customer's `external_id` (Shopee gives sellers no e-mail). Shopee
  masks what the seller may not see (`recipient_address.phone` like `******5678`, names, `buyer_cpf_id`):
  masked values are dropped, never a reason to refuse the order. Name, phone and address are the
  recipient's, the only ones Shopee gives.
- Payment: one payment of the order total, the method read from `payment_method`'s display name (`Pix`,
  `Boleto Bancário`, `Cartão de crédito`, `ShopeePay`, ...) or `cod`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.ingest.adapters import _common as c
from shared.records import Order, OrderStatus, PaymentMethod

SOURCE = "shopee"

_STATUSES = {
    "unpaid": OrderStatus.created,
    "ready_to_ship": OrderStatus.paid,
    "processed": OrderStatus.paid,
    "retry_ship": OrderStatus.paid,
    "invoice_pending": OrderStatus.paid,
    "shipped": OrderStatus.shipped,
    "to_confirm_receive": OrderStatus.delivered,
    "completed": OrderStatus.delivered,
    "in_cancel": OrderStatus.cancelled,
    "cancelled": OrderStatus.cancelled,
    "to_return": OrderStatus.returned,
}


def _sku(line: c.Node) -> str:
    sku = line.text("model_sku", "item_sku")
    if sku:
        return sku
    item_id = line.required_text("item_id")
    model_id = line.text("model_id")
    return f"{item_id}:{model_id}" if model_id and model_id != "0" else item_id


def _items(order: c.Node) -> list[dict[str, Any]]:
    items = []
    for line in order.objs("item_list"):
        quantity = line.count("model_quantity_purchased", "quantity_purchased")
        if quantity is None:
            raise c.AdapterError(line.at("model_quantity_purchased"), "missing")
        if quantity <= 0:
            continue
        items.append(
            c.item(
                sku=_sku(line),
                name=line.text("item_name"),
                category=None,
                quantity=quantity,
                unit_price=line.required_amount("model_discounted_price", "model_original_price"),
            )
        )
    return items


def _payments(order: c.Node, total: Decimal) -> list[dict[str, Any]]:
    if order.flag("cod"):
        return [c.payment(PaymentMethod.cash, total)]
    name = order.text("payment_method")
    return [c.payment(c.method_from_words(name), total)] if name else []


def _customer(order: c.Node) -> dict[str, Any]:
    recipient = order.obj("recipient_address")
    return c.customer(
        external_id=order.required_text("buyer_user_id"),
        name=c.person_name(recipient.raw("name")),
        phone=c.phone(recipient.raw("phone")),
        document=c.document(order.raw("buyer_cpf_id")),
        address=c.address(
            district=recipient.raw("district") or recipient.raw("town"),
            city=recipient.raw("city"),
            state=recipient.raw("state"),
            zip_code=recipient.raw("zipcode"),
            country=recipient.raw("region") or order.raw("region"),
        ),
    )


def to_order(payload: dict[str, Any]) -> Order:
    order = c.Node(payload)
    total = order.required_amount("total_amount")
    return c.build_order(
        {
            "external_id": order.required_text("order_sn"),
            "source": SOURCE,
            "status": c.status_of(_STATUSES, order.text("order_status"), order.at("order_status")),
            "placed_at": order.required_time("create_time"),
            "updated_at": order.time("update_time"),
            "currency": order.text("currency"),
            "total": total,
            "items": _items(order),
            "payments": _payments(order, total),
            "customer": _customer(order),
        }
    )
