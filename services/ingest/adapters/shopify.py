"""Shopify: the body of an `orders/create`, `orders/updated` (or `orders/paid`, `orders/cancelled`) webhook,
which is the REST Admin API order resource, to a canonical order.

- Amounts are strings in the shop's currency (`total_price`, `total_discounts`, line `price` per unit);
  shipping is `total_shipping_price_set.shop_money.amount`, else the sum of `shipping_lines[].price`.
- Status: `cancelled_at` (or financial_status voided/expired, or fulfillment_status restocked) is
  `cancelled`; financial_status refunded is `returned` when something had been fulfilled or a refund restocks
  a return, else `cancelled`; then every fulfilment delivered is `delivered`, fulfillment_status
  fulfilled/partial is `shipped`, financial_status paid/partially_refunded/authorized is `paid`, and anything
  else (pending, partially_paid, no status) is `created`.
- Payments: successful `transactions` (sale/capture, else authorization) when the payload carries them, with
  the method from card details or the gateway's name; else one payment of the total when
  `payment_gateway_names` names a single gateway. A gateway that takes several methods (Mercado Pago,
  Pagar.me) maps to `other`.
- The buyer: `customer.id` is the `external_id` (absent on a guest checkout, which is identified by the
  order's `email`/`phone`). Name, phone and address fall back from the customer to `billing_address` then
  `shipping_address`. Shopify has no CPF field: a CPF/CNPJ is read from `note_attributes` named cpf, cnpj,
  cpf_cnpj or documento (what Brazilian checkout apps write) when its check digits are valid.
- Consents: `email_marketing_consent`/`sms_marketing_consent` states subscribed → granted,
  not_subscribed → denied, unsubscribed → revoked (pending, invalid and redacted are no decision); the legacy
  `accepts_marketing` flag is used only when the e-mail consent object is absent.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.ingest.adapters import _common as c
from shared import normalize
from shared.records import ConsentPurpose, ConsentStatus, Order, OrderStatus, PaymentMethod

SOURCE = "shopify"

_CONSENT_STATES = {
    "subscribed": ConsentStatus.granted,
    "not_subscribed": ConsentStatus.denied,
    "unsubscribed": ConsentStatus.revoked,
}
_GATEWAYS = {
    "gift_card": PaymentMethod.voucher,
    "cash on delivery (cod)": PaymentMethod.cash,
    "cash_on_delivery": PaymentMethod.cash,
    "bank deposit": PaymentMethod.bank_transfer,
    "bank_deposit": PaymentMethod.bank_transfer,
    "manual": PaymentMethod.other,
}
_DOCUMENT_NOTES = {"cpf", "cnpj", "cpf/cnpj", "cpf_cnpj", "cpf-cnpj", "documento", "document"}


def _status(order: c.Node) -> OrderStatus:
    financial = (order.text("financial_status") or "").lower()
    fulfillment = (order.text("fulfillment_status") or "").lower()
    if order.has("cancelled_at") or financial in ("voided", "expired") or fulfillment == "restocked":
        return OrderStatus.cancelled
    if financial == "refunded":
        returned = fulfillment in ("fulfilled", "partial") or any(
            (line.text("restock_type") or "").lower() == "return"
            for refund in order.objs("refunds")
            for line in refund.objs("refund_line_items")
        )
        return OrderStatus.returned if returned else OrderStatus.cancelled
    fulfillments = order.objs("fulfillments")
    if (
        fulfillment == "fulfilled"
        and fulfillments
        and all((f.text("shipment_status") or "").lower() == "delivered" for f in fulfillments)
    ):
        return OrderStatus.delivered
    if fulfillment in ("fulfilled", "partial"):
        return OrderStatus.shipped
    if financial in ("paid", "partially_refunded", "authorized"):
        return OrderStatus.paid
    return OrderStatus.created


def _gateway_method(gateway: str | None) -> PaymentMethod:
    return _GATEWAYS.get((gateway or "").strip().lower()) or c.method_from_words(gateway)


def _payments(order: c.Node, total: Decimal) -> list[dict[str, Any]]:
    succeeded = [
        t for t in order.objs("transactions") if (t.text("status") or "success").lower() == "success"
    ]
    settled = [t for t in succeeded if (t.text("kind") or "").lower() in ("sale", "capture")]
    settled = settled or [t for t in succeeded if (t.text("kind") or "").lower() == "authorization"]
    if settled:
        return [
            c.payment(
                PaymentMethod.credit_card
                if t.obj("payment_details").has("credit_card_company", "credit_card_bin")
                else _gateway_method(t.text("gateway")),
                t.required_amount("amount"),
            )
            for t in settled
        ]
    gateways = order.strings("payment_gateway_names") or order.strings("gateway")
    return [c.payment(_gateway_method(gateways[0]), total)] if len(set(gateways)) == 1 else []


def _items(order: c.Node) -> list[dict[str, Any]]:
    items = []
    for line in order.objs("line_items"):
        quantity = line.count("quantity")
        if quantity is None:
            raise c.AdapterError(line.at("quantity"), "missing")
        if quantity <= 0:
            continue
        items.append(
            c.item(
                sku=line.text("sku", "variant_id", "product_id") or line.required_text("id"),
                name=line.text("title", "name"),
                category=line.text("product_type"),
                quantity=quantity,
                unit_price=line.required_amount("price"),
            )
        )
    return items


def _consent(purpose: ConsentPurpose, consent: c.Node) -> dict[str, Any] | None:
    status = _CONSENT_STATES.get((consent.text("state") or "").lower())
    if status is None:
        return None
    return {
        "purpose": purpose,
        "status": status,
        "at": consent.time("consent_updated_at"),
        "source": SOURCE,
    }


def _consents(order: c.Node) -> list[dict[str, Any]]:
    buyer = order.obj("customer")
    consents = [
        _consent(ConsentPurpose.marketing_email, buyer.obj("email_marketing_consent")),
        _consent(ConsentPurpose.marketing_sms, buyer.obj("sms_marketing_consent")),
    ]
    if not buyer.has("email_marketing_consent"):
        flag = buyer.raw("accepts_marketing")
        flag = order.raw("buyer_accepts_marketing") if flag is None else flag
        if isinstance(flag, bool):
            consents[0] = {
                "purpose": ConsentPurpose.marketing_email,
                "status": ConsentStatus.granted if flag else ConsentStatus.denied,
                "at": buyer.time("accepts_marketing_updated_at"),
                "source": SOURCE,
            }
    return [{k: v for k, v in consent.items() if v is not None} for consent in consents if consent]


def _document(order: c.Node) -> str | None:
    notes = order.objs("note_attributes")
    return c.first_document(
        *(n.raw("value") for n in notes if normalize.fold(n.text("name") or "") in _DOCUMENT_NOTES)
    )


def _name(buyer: c.Node, addresses: list[c.Node]) -> str | None:
    for node in (buyer, *addresses):
        name = c.person_name(node.raw("first_name"), node.raw("last_name")) or c.person_name(node.raw("name"))
        if name is not None:
            return name
    return None


def _customer(order: c.Node) -> dict[str, Any]:
    buyer = order.obj("customer")
    addresses = [a for a in (order.obj("billing_address"), order.obj("shipping_address")) if a.data]
    home = addresses[0] if addresses else c.Node({})
    fields = c.customer(
        external_id=buyer.text("id"),
        name=_name(buyer, addresses),
        email=c.first_email(buyer.raw("email"), order.raw("email"), order.raw("contact_email")),
        phone=c.first_phone(buyer.raw("phone"), order.raw("phone"), *(a.raw("phone") for a in addresses)),
        document=_document(order),
        address=c.address(
            street=home.raw("address1"),
            complement=home.raw("address2"),
            city=home.raw("city"),
            state=home.raw("province_code") or home.raw("province"),
            zip_code=home.raw("zip"),
            country=home.raw("country_code") or home.raw("country"),
        ),
    )
    return c.identified(fields, buyer.at("id"))


def to_order(payload: dict[str, Any]) -> Order:
    order = c.Node(payload)
    total = order.required_amount("total_price")
    shipping = order.obj("total_shipping_price_set").obj("shop_money").amount("amount")
    if shipping is None:
        shipping = c.total_of(line.amount("price") for line in order.objs("shipping_lines"))
    codes = order.objs("discount_codes")
    return c.build_order(
        {
            "external_id": order.required_text("id"),
            "source": SOURCE,
            "status": _status(order),
            "placed_at": order.required_time("created_at"),
            "updated_at": order.time("updated_at"),
            "currency": order.text("currency"),
            "total": total,
            "discount": order.amount("total_discounts"),
            "shipping": shipping,
            "coupon": c.clipped(codes[0].text("code"), 100) if codes else None,
            "items": _items(order),
            "payments": _payments(order, total),
            "customer": _customer(order),
            "consents": _consents(order),
        }
    )
