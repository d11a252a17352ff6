"""services.profile.traits: purchase traits from a profile's orders."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.profile.traits import OrderFacts, purchase_traits


def at(day: int) -> datetime:
    return datetime(2026, 11, day, 12, tzinfo=UTC)


def test_counted_orders_make_spend_and_interests_cancellations_and_returns_apart() -> None:
    orders = [
        OrderFacts(
            "mercadolivre",
            "delivered",
            10000,
            at(1),
            [{"sku": "CAFE", "category": "food", "quantity": 2}],
            [{"method": "credit_card", "installments": 3}],
        ),
        OrderFacts(
            "site",
            "paid",
            5000,
            at(5),
            [
                {"sku": "XICARA", "category": "home", "quantity": 1},
                {"sku": "CAFE", "category": "food", "quantity": 1},
            ],
            [{"method": "pix", "installments": 1}],
        ),
        OrderFacts(
            "site",
            "cancelled",
            99900,
            at(7),
            [{"sku": "TV", "category": "electronics", "quantity": 1}],
            [{"method": "credit_card", "installments": 10}],
        ),
        OrderFacts(
            "shopee", "returned", 2000, at(9), [{"sku": "MEIA", "category": "fashion", "quantity": 3}], []
        ),
        OrderFacts("site", "shipped", 3000, at(3), [], [{"method": "credit_card", "installments": 6}]),
    ]
    traits = purchase_traits(orders)
    assert (traits.orders_count, traits.total_spent_minor) == (3, 18000)
    assert (traits.first_order_at, traits.last_order_at) == (at(1), at(5))
    p = traits.purchases
    assert p["by_source"] == {
        "mercadolivre": {"orders": 1, "spent_minor": 10000},
        "site": {"orders": 2, "spent_minor": 8000},
    }
    assert (p["cancelled"], p["returned"]) == (1, 1)
    assert p["preferred_payment_method"] == "credit_card"
    assert p["average_installments"] == 4.5
    assert p["top_categories"] == ["food", "home"]
    assert p["top_products"] == ["CAFE", "XICARA"]


def test_no_orders_and_ties_are_deterministic() -> None:
    empty = purchase_traits([])
    assert (empty.orders_count, empty.total_spent_minor, empty.first_order_at) == (0, 0, None)
    assert empty.purchases["preferred_payment_method"] is None
    tie = [
        OrderFacts("a", "paid", 1, at(1), [], [{"method": "pix", "installments": 1}]),
        OrderFacts("a", "paid", 1, at(2), [], [{"method": "boleto", "installments": 1}]),
    ]
    assert purchase_traits(tie).purchases["preferred_payment_method"] == "boleto"
    assert purchase_traits(list(reversed(tie))).purchases == purchase_traits(tie).purchases


def test_customer_traits_take_each_field_from_the_newest_record_that_has_it() -> None:
    from services.profile.traits import customer_traits

    snapshots: list[dict[str, Any]] = [
        {"at": "2026-01-02T00:00:00+00:00", "city": "Recife", "consents": []},
        {"at": "2026-01-01T00:00:00+00:00", "name": "Ana", "city": "Olinda"},
        {
            "at": "2026-01-03T00:00:00+00:00",
            "consents": [
                {"purpose": "marketing_email", "status": "revoked", "at": "2026-01-03T00:00:00+00:00"}
            ],
        },
        {
            "at": "2026-01-01T00:00:00+00:00",
            "consents": [
                {"purpose": "marketing_email", "status": "granted", "at": "2026-01-01T00:00:00+00:00"}
            ],
        },
    ]
    found = customer_traits(snapshots)
    assert (found["name"], found["city"], found["state"]) == ("Ana", "Recife", None)
    assert found["consents"] == {"marketing_email": {"status": "revoked", "at": "2026-01-03T00:00:00+00:00"}}
    assert customer_traits(list(reversed(snapshots))) == found  # arrival order does not matter


def test_person_variants_are_the_other_names_and_addresses_newest_first() -> None:
    from services.profile.traits import MAX_VARIANTS, customer_traits, person_variants

    def at(day: int, **fields: Any) -> dict[str, Any]:
        return {"at": f"2026-01-{day:02d}T00:00:00+00:00", **fields}

    erechim = {"zip": "99700921", "city": "Erechim", "state": "RS"}
    snapshots: list[dict[str, Any]] = [
        at(1, name="Beatriz Martins", birth_date="1990-05-04", **erechim),
        at(2, name="Beatriz Martins", **erechim),  # no birth date: hers all the same, not another person
        at(3, name="Bia Martins"),  # the address the profile has now
        at(9, name="Beatriz Martins", zip="05857693", city="São Paulo", state="SP"),
    ]
    person = customer_traits(snapshots)
    assert (person["name"], person["city"]) == ("Beatriz Martins", "São Paulo")
    found = person_variants(snapshots, person)
    assert found == [
        ["Bia Martins", "1990-05-04", "05857693", "São Paulo", "SP"],
        ["Beatriz Martins", "1990-05-04", "99700921", "Erechim", "RS"],
    ]
    assert person_variants(list(reversed(snapshots)), person) == found  # arrival order does not matter
    many = [at(day, name=f"Name {day}") for day in range(10, 20)]
    assert [v[0] for v in person_variants(many, customer_traits(many))] == [
        f"Name {day}" for day in range(18, 18 - MAX_VARIANTS, -1)
    ]
    assert person_variants(snapshots[:1], customer_traits(snapshots[:1])) == []


def test_behaviour_traits_count_views_and_carts() -> None:
    from datetime import UTC, datetime, timedelta

    from services.profile.traits import BehaviourFacts, behaviour_traits

    t0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
    events = [
        BehaviourFacts("product_view", t0, "A", "books"),
        BehaviourFacts("product_view", t0, "B", "books"),
        BehaviourFacts("product_view", t0, "B", "games"),
        BehaviourFacts("add_to_cart", t0),
        BehaviourFacts("add_to_cart", t0 + timedelta(hours=2)),  # same cart
        BehaviourFacts("add_to_cart", t0 + timedelta(days=3)),  # a new cart, bought the next day
        BehaviourFacts("add_to_cart", t0 + timedelta(days=10)),  # still open: not abandoned yet
    ]
    orders = [t0 + timedelta(days=4)]
    found = behaviour_traits(events, orders, now=t0 + timedelta(days=10, hours=1))
    assert found["counts"] == {"add_to_cart": 4, "product_view": 3}
    assert found["viewed_products"] == ["B", "A"]
    assert found["viewed_categories"] == ["books", "games"]
    assert (found["carts_started"], found["carts_abandoned"]) == (3, 1)
    assert found["last_seen_at"] == (t0 + timedelta(days=10)).isoformat()
    assert found["cart_abandoned_at"] == (t0 + timedelta(hours=2)).isoformat()  # the first cart's last add
    assert found["products_viewed_at"] == {"A": t0.isoformat(), "B": t0.isoformat()}
    assert found["categories_viewed_at"] == {"books": t0.isoformat(), "games": t0.isoformat()}
    empty = behaviour_traits([], [], now=t0)
    assert empty["last_seen_at"] is None
    assert (empty["cart_abandoned_at"], empty["products_viewed_at"]) == (None, {})


def test_last_viewed_times_keep_the_latest_view_of_the_most_recent() -> None:
    from datetime import UTC, datetime, timedelta

    from services.profile.traits import VIEWED_AT, BehaviourFacts, behaviour_traits

    t0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
    events = [BehaviourFacts("product_view", t0 + timedelta(minutes=i), f"SKU-{i}") for i in range(80)]
    events.append(BehaviourFacts("product_view", t0 + timedelta(days=1), "SKU-0"))  # seen again, later
    found = behaviour_traits(events, [], now=t0 + timedelta(days=2))["products_viewed_at"]
    assert len(found) == VIEWED_AT
    assert found["SKU-0"] == (t0 + timedelta(days=1)).isoformat()
    assert "SKU-30" not in found  # among the oldest views
    assert "SKU-79" in found
