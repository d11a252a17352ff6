"""Magalu: an order from the Magalu marketplace's IntegraCommerce API (`GET /api/Order/{id}`) to a canonical
order.

- Amounts are JSON numbers in reais (`TotalAmount`, the total with freight; `TotalFreight`;
  `TotalDiscount`; product `Price` per unit; payment `Amount`). Dates carry no zone and are Brazil's time.
- Status: NEW is `created`; APPROVED and INVOICED (the NF-e is issued before dispatch) are `paid`; SHIPPED and
  SHIPMENT_EXCEPTION are `shipped`; DELIVERED is `delivered`; CANCELED (and UNAVAILABLE) are `cancelled`.
- Payments: `Payments[]`, the method read from the display `Name` (`Cartão de Crédito`, `Boleto`, `Pix`,
  `MagaluPay`, ...).
- The buyer: IntegraCommerce gives no buyer id, so the customer is identified by the CPF
  (`CustomerPfCpf`) or CNPJ (`CustomerPjCnpj`), the e-mail and the phone; a buyer id is used as
  `external_id` only if the payload carries one (`CustomerId`, `IdCustomer`). `CustomerMail` is kept as
  given; should Magalu hand out a relay address there, it identifies the buyer only within Magalu.
"""

from __future__ import annotations

from typing import Any

from services.ingest.adapters import _common as c
from shared.records import Order, OrderStatus

SOURCE = "magalu"

_STATUSES = {
    "new": OrderStatus.created,
    "approved": OrderStatus.paid,
    "invoiced": OrderStatus.paid,
    "shipped": OrderStatus.shipped,
    "shipment_exception": OrderStatus.shipped,
    "delivered": OrderStatus.delivered,
    "canceled": OrderStatus.cancelled,
    "cancelled": OrderStatus.cancelled,
    "unavailable": OrderStatus.cancelled,
}


def _items(order: c.Node) -> list[dict[str, Any]]:
    items = []
    for line in order.objs("Products"):
        quantity = line.count("Quantity")
        if quantity is None:
            raise c.AdapterError(line.at("Quantity"), "missing")
        if quantity <= 0:
            continue
        items.append(
            c.item(
                sku=line.required_text("IdSku"),
                name=line.text("Name", "Title"),
                category=None,
                quantity=quantity,
                unit_price=line.required_amount("Price"),
            )
        )
    return items


def _payments(order: c.Node) -> list[dict[str, Any]]:
    return [
        c.payment(c.method_from_words(p.text("Name")), p.required_amount("Amount"), p.count("Installments"))
        for p in order.objs("Payments")
    ]


def _customer(order: c.Node) -> dict[str, Any]:
    fields = c.customer(
        external_id=order.text("CustomerId", "IdCustomer"),
        name=c.person_name(order.raw("CustomerPfName"))
        or c.person_name(order.raw("CustomerPjCorporatename")),
        email=c.email(order.raw("CustomerMail")),
        phone=c.first_phone(
            order.raw("TelephoneMainNumber"),
            order.raw("TelephoneSecundaryNumber"),
            order.raw("TelephoneBusinessNumber"),
        ),
        document=c.first_document(order.raw("CustomerPfCpf"), order.raw("CustomerPjCnpj")),
        birth_date=c.birth_date(order.raw("CustomerBirthDate")),
        address=c.address(
            street=order.raw("DeliveryAddressStreet"),
            number=order.raw("DeliveryAddressNumber"),
            complement=order.raw("DeliveryAddressAdditionalInfo"),
            district=order.raw("DeliveryAddressNeighborhood"),
            city=order.raw("DeliveryAddressCity"),
            state=order.raw("DeliveryAddressState"),
            zip_code=order.raw("DeliveryAddressZipcode"),
            country="BR",
        ),
    )
    return c.identified(fields, order.at("CustomerPfCpf"))


def to_order(payload: dict[str, Any]) -> Order:
    order = c.Node(payload)
    return c.build_order(
        {
            "external_id": order.required_text("IdOrder"),
            "source": SOURCE,
            "status": c.status_of(_STATUSES, order.text("OrderStatus"), order.at("OrderStatus")),
            "placed_at": order.required_time("PurchasedDate"),
            "updated_at": order.time("UpdatedDate"),
            "total": order.required_amount("TotalAmount"),
            "discount": order.amount("TotalDiscount"),
            "shipping": order.amount("TotalFreight"),
            "items": _items(order),
            "payments": _payments(order),
            "customer": _customer(order),
        }
    )
