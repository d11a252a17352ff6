"""`Tally.valid` counts each tracked field present in a record, walking the record once (`quality._TREES`):
the same counts as looking every dotted path up from the top."""

from collections import Counter
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.ingest import quality


def looked_up(kind: str, body: dict[str, Any]) -> Counter[str]:
    """The plain way: every tracked path from the top; present when its value is truthy."""
    counts: Counter[str] = Counter()
    for path in quality.TRACKED[kind]:
        value: Any = body
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value:
            counts[f"present:{path}"] += 1
    return counts


def present(tally: quality.Tally) -> Counter[str]:
    return Counter({k: v for k, v in tally.counts.items() if k.startswith("present:")})


values = st.one_of(st.none(), st.just(""), st.just("x"), st.just([]), st.just([{"sku": "1"}]), st.just(0))
address = st.one_of(st.none(), st.just("not a dict"), st.fixed_dictionaries({}, optional={
    "zip": values, "city": values, "state": values, "street": values}))  # fmt: skip
person = {"email": values, "phone": values, "document": values, "name": values, "birth_date": values,
          "gender": values, "address": address}  # fmt: skip
customer = st.one_of(st.none(), st.just({}), st.fixed_dictionaries({}, optional=person))
order = st.fixed_dictionaries({}, optional={"customer": customer, "items": values, "payments": values})
record = st.fixed_dictionaries({}, optional=person)
behaviour = st.fixed_dictionaries({}, optional={"customer": customer, "anonymous_id": values})


@given(st.lists(order, max_size=5))
def test_orders_count_as_looking_every_path_up(bodies: list[dict[str, Any]]) -> None:
    tally = quality.Tally("order")
    for body in bodies:
        tally.valid(body)
    assert present(tally) == sum((looked_up("order", b) for b in bodies), Counter())
    assert (tally.counts["received"], tally.counts["valid"]) == (len(bodies), len(bodies))


@given(record)
def test_customer_records_count_as_looking_every_path_up(body: dict[str, Any]) -> None:
    tally = quality.Tally("customer")
    tally.valid(body)
    assert present(tally) == looked_up("customer", body)


@given(behaviour)
def test_behaviour_events_count_as_looking_every_path_up(body: dict[str, Any]) -> None:
    tally = quality.Tally("behaviour")
    tally.valid(body)
    assert present(tally) == looked_up("behaviour", body)


def test_a_full_order_counts_every_tracked_field_once() -> None:
    full = {
        "customer": {
            "email": "a@b.c", "phone": "+5511912345678", "document": "52998224725", "name": "Ana",
            "birth_date": "1990-01-01", "gender": "female",
            "address": {"zip": "01310100", "city": "São Paulo", "state": "SP"},
        },
        "items": [{"sku": "1"}],
        "payments": [{"method": "pix"}],
    }  # fmt: skip
    tally = quality.Tally("order")
    tally.valid(full)
    assert present(tally) == Counter({f"present:{path}": 1 for path in quality.TRACKED["order"]})
