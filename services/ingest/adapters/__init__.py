"""Marketplace adapters: each platform's native order JSON (as its public API returns it) to the canonical
`shared.records.Order`.

`ADAPTERS[source](payload)` returns an `Order` whose `source` is that platform's name, or raises
`AdapterError` (a `ValueError`) naming the field path that is missing or invalid, never its value.

Rules every adapter follows:
- The order id, its total and its creation time are required; without them the order is refused.
- `total` is what the buyer owes for the order (items after discounts, plus shipping and taxes);
  `discount` and `shipping` are informational parts of it.
- An optional personal field the platform sends in a form the shared normalisers refuse (a CPF with wrong
  check digits, a masked phone, a malformed e-mail, an unknown state) is dropped, not the whole order: the
  platform's data is what it is.
- `customer.external_id` is the platform's buyer id whenever the platform has one, so an identity can
  always be scoped by source. Relay e-mails (Mercado Livre, Amazon, VTEX) are kept as given, but they
  identify a buyer only within that marketplace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.ingest.adapters import amazon, magalu, mercadolivre, shopee, shopify, vtex
from services.ingest.adapters._common import AdapterError
from shared.records import Order

Adapter = Callable[[dict[str, Any]], Order]

ADAPTERS: dict[str, Adapter] = {
    module.SOURCE: module.to_order for module in (mercadolivre, shopee, amazon, shopify, vtex, magalu)
}

__all__ = ["ADAPTERS", "Adapter", "AdapterError"]
