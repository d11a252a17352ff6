"""services.ingest.api.whole_batch: a batch whose items are all valid is validated straight from its JSON
text, to the same records as one by one; a sender whose batch was not sends its next batches one by one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import orjson
import pytest

from services.ingest import api, intake


def order(external_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "source": " Shopee ",
        "status": "paid",
        "placed_at": "2026-11-20T14:03:00",  # no zone: Brazil's time
        "total": 259.9,  # a JSON number
        "items": [{"sku": "A", "quantity": "2", "unit_price": "129.95"}],
        "customer": {
            "name": "  maria  DA silva ",
            "email": " Maria@Example.COM ",
            "phone": "(11) 91234-5678",
            "document": "529.982.247-25",
            "address": {"state": "São Paulo", "zip": "01310-100"},
        },
        **changes,
    }


def body(*items: dict[str, Any]) -> bytes:
    return orjson.dumps({"items": list(items)})


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    api._one_by_one.clear()
    yield
    api._one_by_one.clear()


def test_a_valid_batch_gives_the_records_validating_each_item_gives() -> None:
    items = [order("A-1"), order("A-2", total="10.00", customer={"external_id": "c-2"})]
    whole = api.whole_batch(intake.ORDERS, uuid4(), body(*items))
    assert whole is not None
    one_by_one = [intake.ORDERS.adapter.validate_python(item) for item in items]
    assert [r.model_dump(mode="json") for r in whole] == [r.model_dump(mode="json") for r in one_by_one]
    assert whole[0].customer.phone == "+5511912345678"  # normalised the same way


def test_a_batch_with_an_invalid_item_goes_one_by_one_and_so_do_the_senders_next_ones() -> None:
    tenant, other = uuid4(), uuid4()
    valid, invalid = body(order("A-1")), body(order("A-1"), order("A-2", total="-1"))
    assert api.whole_batch(intake.ORDERS, tenant, invalid) is None
    for _ in range(api.RETRY_WHOLE_AFTER):
        assert api.whole_batch(intake.ORDERS, tenant, valid) is None  # not even tried
    assert api.whole_batch(intake.ORDERS, tenant, valid) is not None  # tried whole again
    assert api.whole_batch(intake.ORDERS, other, valid) is not None  # another sender is not held back
    customer = orjson.dumps({"items": [{"source": "site", "external_id": "C-1"}]})
    assert api.whole_batch(intake.CUSTOMERS, tenant, customer) is not None  # nor another kind


def test_what_is_not_a_batch_of_valid_items_is_left_to_the_one_by_one_checks() -> None:
    for raw in (b'{"items": [', b"[1, 2]", b'{"items": "x"}', body(*[order(f"A-{i}") for i in range(1001)])):
        api._one_by_one.clear()
        assert api.whole_batch(intake.ORDERS, uuid4(), raw) is None
