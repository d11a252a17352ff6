"""Purchase traits computed from a profile's orders (pure functions: no database, easy to test).

Only orders whose status counts (not cancelled or returned) add to spend, counts and interests;
cancellations and returns are counted apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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


# --- Demographics, location and consents: folded from the records' snapshots ----------------------------

ATTRIBUTES = ("name", "birth_date", "gender", "city", "state", "zip", "country")


def customer_traits(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Each attribute from the newest record that has it (a record lacking a field erases nothing), and each
    consent purpose's newest decision. A snapshot is `{"at": iso, "seq": tiebreak, <attribute>: value, ...,
    "consents": [{"purpose", "status", "at", ...}]}`; equal times are decided by arrival (`seq`)."""
    found: dict[str, Any] = dict.fromkeys(ATTRIBUTES)
    consents: dict[str, dict[str, Any]] = {}
    for snapshot in sorted(snapshots, key=lambda s: (s["at"], s.get("seq", ""))):
        for field_name in ATTRIBUTES:
            if snapshot.get(field_name) is not None:
                found[field_name] = snapshot[field_name]
        for consent in snapshot.get("consents", ()):
            current = consents.get(consent["purpose"])
            if current is None or consent["at"] >= current["at"]:
                consents[consent["purpose"]] = {k: v for k, v in consent.items() if k != "purpose"}
    found["consents"] = dict(sorted(consents.items()))
    return found


# What the probabilistic stage compares of a person (`probabilistic.match_fields`), and how many other
# combinations of them a profile keeps for it (`person_variants`).
PERSON = ("name", "birth_date", "zip", "city", "state")
MAX_VARIANTS = 3


def person_variants(snapshots: list[dict[str, Any]], person: dict[str, Any]) -> list[list[str | None]]:
    """The names, birth dates and addresses the records carried other than the profile's own (`person`, from
    `customer_traits`): newest first, at most `MAX_VARIANTS`, a field a record lacks taken from `person`.

    The probabilistic stage compares them too, so that whether two profiles of one person match does not
    depend on which of their records had arrived when they were scored: after a move, an order from the old
    address still finds the profile (two consumers of a group, 100,000 orders: most of the profiles made up
    differently from one consumer's were people who moved or whose name was written two ways)."""
    current = [person.get(f) for f in PERSON]
    found: list[list[str | None]] = []
    for snapshot in sorted(snapshots, key=lambda s: (s["at"], s.get("seq", "")), reverse=True):
        variant = [
            snapshot.get(f) if snapshot.get(f) is not None else current[i] for i, f in enumerate(PERSON)
        ]
        if variant != current and variant not in found:
            found.append(variant)
            if len(found) == MAX_VARIANTS:
                break
    return found


# --- Behaviour: from the stored behaviour events ---------------------------------------------------------

CART_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class BehaviourFacts:
    type: str
    occurred_at: datetime
    sku: str | None = None
    category: str | None = None


def behaviour_traits(
    events: list[BehaviourFacts], order_times: list[datetime], *, now: datetime
) -> dict[str, Any]:
    """Counts by type, last seen, the products and categories viewed most, and carts.

    A cart starts with an `add_to_cart` more than 24 h after the previous one; it is abandoned when no order
    was placed between its first add and 24 h after its last, once those 24 h are over."""
    counts: Counter[str] = Counter(e.type for e in events)
    viewed = [e for e in events if e.type == "product_view"]
    products = Counter(e.sku for e in viewed if e.sku)
    categories = Counter(e.category for e in viewed if e.category)
    adds = sorted(e.occurred_at for e in events if e.type == "add_to_cart")
    carts: list[tuple[datetime, datetime]] = []
    for at in adds:
        if carts and at - carts[-1][1] <= CART_WINDOW:
            carts[-1] = (carts[-1][0], at)
        else:
            carts.append((at, at))
    abandoned = [
        last
        for start, last in carts
        if last + CART_WINDOW < now and not any(start <= t <= last + CART_WINDOW for t in order_times)
    ]
    return {
        "counts": dict(sorted(counts.items())),
        "last_seen_at": max(e.occurred_at for e in events).isoformat() if events else None,
        "viewed_products": _top(products),
        "viewed_categories": _top(categories),
        "carts_started": len(carts),
        "carts_abandoned": len(abandoned),
        "cart_abandoned_at": max(abandoned).isoformat() if abandoned else None,
        # When each was last viewed (the most recent VIEWED_AT of each): what "viewed X in the last N days"
        # segments read.
        "products_viewed_at": _last_seen(viewed, lambda e: e.sku),
        "categories_viewed_at": _last_seen(viewed, lambda e: e.category),
    }


VIEWED_AT = 50


def _last_seen(events: list[BehaviourFacts], key: Callable[[BehaviourFacts], str | None]) -> dict[str, str]:
    last: dict[str, datetime] = {}
    for event in events:
        name = key(event)
        if name and (name not in last or event.occurred_at > last[name]):
            last[name] = event.occurred_at
    recent = sorted(last.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:VIEWED_AT]
    return {name: at.isoformat() for name, at in sorted(recent)}


def _top(counter: Counter[str]) -> list[str]:
    return [k for k, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]]
