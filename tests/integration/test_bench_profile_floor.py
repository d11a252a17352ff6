"""bench.profile_floor on the real PostgreSQL: every step is timed, the total is their sum, and the store
step wrote each order once with its announcement."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from bench.ingest import PG
from bench.profile_floor import measure
from bench.profiles import events
from shared.db import make_engine

DATABASE = f"{PG}/clientela_test_profile_floor"


def row(n: int, status: str = "paid") -> dict[str, Any]:
    return {
        "external_id": f"ML-{n}",
        "source": "mercadolivre",
        "status": status,
        "placed_at": "2026-11-20T14:03:00-03:00",
        "total": "10.00",
        "items": [{"sku": f"SKU-{n % 7}", "category": "livros", "quantity": 1, "unit_price": "10.00"}],
        "customer": {"email": f"buyer{n % 40}@example.com.br", "name": "Ana Souza"},
    }


def test_every_step_is_timed_and_each_order_stored_once() -> None:
    rows = [row(n) for n in range(300)] + [row(n, "delivered") for n in range(50)]  # 50 later versions
    found = measure(events(rows, uuid.uuid4())[0], DATABASE)
    steps = found["µs_per_order"]
    assert list(steps) == [
        "receive",
        "validate",
        "identifiers",
        "seal",
        "announce",
        "store",
        "store, PostgreSQL",
    ]
    # PostgreSQL's CPU is read from /proc in clock ticks (10 ms): a few hundred rows may take less.
    assert all(value > 0 for step, value in steps.items() if step != "store, PostgreSQL")
    assert steps["store, PostgreSQL"] >= 0
    assert found["orders"] == 350
    assert abs(found["total_µs_per_order"] - sum(steps.values())) < 0.5
    assert found["orders_per_s_per_core"] == round(1e6 / found["total_µs_per_order"])
    engine = make_engine(DATABASE)
    try:
        with engine.connect() as conn:
            orders = conn.execute(
                sa.text("SELECT count(*), count(DISTINCT order_id) FROM profile_order")
            ).one()
            announced = conn.execute(sa.text("SELECT count(*) FROM outbox_message")).scalar_one()
    finally:
        engine.dispose()
    assert tuple(orders) == (300, 300)
    assert announced == 300
