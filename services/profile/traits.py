"""Purchase traits computed from a profile's orders (pure functions: no database, easy to test).

Only orders whose status counts (not cancelled or returned) add to spend, counts and interests;
cancellations and returns are counted apart.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.records import OrderStatus

COUNTED = {s.value for s in OrderStatus if s.counts_as_spend}
TOP = 5


@dataclass(frozen=True)
class OrderFacts:
    source: str
    status: str
    total_minor: int
    placed_at: datetime
    items: list[dict[str, Any]] = field(default_factory=list)  # sku, category, quantity
    payments: list[dict[str, Any]] = field(default_factory=list)  # method, installments


@dataclass(frozen=True)
class PurchaseTraits:
    orders_count: int
    total_spent_minor: int
    first_order_at: datetime | None
    last_order_at: datetime | None
    purchases: dict[str, Any]


def purchase_traits(orders: list[OrderFacts]) -> PurchaseTraits:
    counted = [o for o in orders if o.status in COUNTED]
    by_source: dict[str, dict[str, int]] = {}
    categories: Counter[str] = Counter()
    products: Counter[str] = Counter()
    methods: Counter[str] = Counter()
    installments: list[int] = []
    for order in counted:
        entry = by_source.setdefault(order.source, {"orders": 0, "spent_minor": 0})
        entry["orders"] += 1
        entry["spent_minor"] += order.total_minor
        for item in order.items:
            quantity = int(item.get("quantity") or 1)
            products[str(item["sku"])] += quantity
            if item.get("category"):
                categories[str(item["category"])] += quantity
        for payment in order.payments:
            methods[str(payment["method"])] += 1
            if payment["method"] == "credit_card":
                installments.append(int(payment.get("installments") or 1))
    placed = [o.placed_at for o in counted]
    return PurchaseTraits(
        orders_count=len(counted),
        total_spent_minor=sum(o.total_minor for o in counted),
        first_order_at=min(placed) if placed else None,
        last_order_at=max(placed) if placed else None,
        purchases={
            "by_source": dict(sorted(by_source.items())),
            "cancelled": sum(1 for o in orders if o.status == OrderStatus.cancelled.value),
            "returned": sum(1 for o in orders if o.status == OrderStatus.returned.value),
            # Most used first; ties by name, so the answer does not depend on order arrival.
            "preferred_payment_method": min(methods, key=lambda m: (-methods[m], m)) if methods else None,
            "average_installments": round(sum(installments) / len(installments), 1) if installments else None,
            "top_categories": [
                c for c, _ in sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]
            ],
            "top_products": [p for p, _ in sorted(products.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]],
        },
    )
