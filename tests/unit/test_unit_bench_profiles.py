"""bench.profiles: the events a consumer group's members each apply are those of the partitions Kafka's range
assignor would give them, by the partition ingest's producer would send each order to, in their order."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from bench.profiles import events
from services.ingest.intake import _order_key
from shared.events import Envelope, OrderIngested, decode
from shared.kafka import KeyPartitioner
from shared.records import Order
from shared.topics import ORDERS
from tests.unit.test_unit_kafka import Cluster


def row(n: int) -> dict[str, Any]:
    return {
        "external_id": f"ML-{n}",
        "source": "mercadolivre",
        "status": "paid",
        "placed_at": "2026-11-20T14:03:00-03:00",
        "total": "10.00",
        "customer": {"email": f"buyer{n % 40}@example.com.br"},
    }


def partition(tenant_id: uuid.UUID, raw: dict[str, Any]) -> int:
    """Where ingest's producer sends this order (`KeyPartitioner`, the orders topic's partitions)."""
    key = _order_key(tenant_id, Order.model_validate(raw)).encode()
    return int(KeyPartitioner().partition("orders", key, key, None, None, Cluster(ORDERS.partitions)))


def external_ids(share: list[bytes]) -> list[str]:
    found = []
    for raw in share:
        event = decode(Envelope.from_bytes(raw))
        assert isinstance(event, OrderIngested)
        found.append(event.order.external_id)
    return found


@pytest.mark.parametrize("members", [1, 2, 3])
def test_each_member_gets_its_range_of_partitions_in_order(members: int) -> None:
    tenant_id = uuid.uuid4()
    rows = [row(n) for n in range(200)]
    shares = events(rows, tenant_id, members)
    assert len(shares) == members
    per_member = ORDERS.partitions // members
    expected = [
        [r["external_id"] for r in rows if partition(tenant_id, r) // per_member == member]
        for member in range(members)
    ]
    assert [external_ids(share) for share in shares] == expected
    assert all(shares)  # 40 buyers: every member has some


def test_later_versions_of_an_order_follow_it_with_their_version() -> None:
    tenant_id = uuid.uuid4()
    first, again = row(1), {**row(1), "status": "delivered"}
    (share,) = events([first, row(2), again], tenant_id)
    decoded = [decode(Envelope.from_bytes(raw)) for raw in share]
    assert [(e.order.external_id, e.order_version) for e in decoded if isinstance(e, OrderIngested)] == [
        ("ML-1", 1),
        ("ML-2", 1),
        ("ML-1", 2),
    ]


def test_an_orders_id_is_the_same_in_every_case() -> None:
    """Two cases (tenants, numbers of members) give an order one id: their profiles compare order by order."""

    def ids(share: list[bytes]) -> dict[str, uuid.UUID]:
        found = {}
        for raw in share:
            event = decode(Envelope.from_bytes(raw))
            assert isinstance(event, OrderIngested)
            found[event.order.external_id] = event.order_id
        return found

    rows = [row(n) for n in range(50)]
    (alone,) = events(rows, uuid.uuid4())
    first, second = events(rows, uuid.uuid4(), 2)
    assert ids(alone) == ids(first) | ids(second)
    assert len(set(ids(alone).values())) == 50
