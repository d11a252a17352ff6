"""bench.profile_floor on the real PostgreSQL: every step is timed, the total is their sum, and the store
wrote each order once, each identifier once, a profile per person holding its orders, and an announcement
per record."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from bench import profile_floor
from bench.ingest import PG
from bench.profiles import events
from shared.db import make_engine
from shared.events import Envelope, ProfileUpdatedV2, decode
from shared.outbox import open_body

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


def test_every_step_is_timed_and_each_row_stored_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile_floor, "POLL", 100)  # four polls: profiles inserted, then updated
    rows = [row(n) for n in range(300)] + [row(n, "delivered") for n in range(50)]  # 50 later versions
    found = profile_floor.measure(events(rows, uuid.uuid4())[0], DATABASE)
    steps = found["µs_per_order"]
    assert list(steps) == [
        "receive",
        "validate",
        "identifiers",
        "seal",
        "seal identifiers",
        "announce",
        "look up and store",
        "look up and store, PostgreSQL",
    ]
    # PostgreSQL's CPU is read from /proc in clock ticks (10 ms): a few hundred rows may take less.
    assert all(value > 0 for step, value in steps.items() if not step.endswith("PostgreSQL"))
    assert steps["look up and store, PostgreSQL"] >= 0
    assert abs(found["total_µs_per_order"] - sum(steps.values())) < 0.5
    assert found["orders_per_s_per_core"] == round(1e6 / found["total_µs_per_order"])
    assert (found["orders"], found["persons"], found["identifiers"], found["order_rows"]) == (
        350,
        40,
        40,
        300,
    )
    # The 40 buyers' profiles made in the first poll, updated in the next two (the fourth has only
    # later versions, which are not stored again).
    assert (found["profile_rows"], found["profile_updates"]) == (40, 80)
    engine = make_engine(DATABASE)
    try:
        with engine.connect() as conn:
            orders = conn.execute(
                sa.text("SELECT count(*), count(DISTINCT order_id) FROM profile_order")
            ).one()
            announced = conn.execute(sa.text("SELECT count(*) FROM outbox_message")).scalar_one()
            body = conn.execute(sa.text("SELECT body FROM outbox_message LIMIT 1")).scalar_one()
            held = conn.execute(sa.text("SELECT count(*), sum(orders_count) FROM profile")).one()
            # Each profile counts the orders whose rows name it.
            miscounted = conn.execute(
                sa.text(
                    "SELECT count(*) FROM profile p WHERE p.orders_count <>"
                    " (SELECT count(*) FROM profile_order o WHERE o.profile_id = p.id)"
                )
            ).scalar_one()
            owners = conn.execute(
                sa.text("SELECT count(DISTINCT profile_id) FROM profile_identifier")
            ).scalar_one()
    finally:
        engine.dispose()
    assert tuple(orders) == (300, 300)
    assert announced == 350
    event = decode(Envelope.from_bytes(open_body(body)))  # what the segmentation consumer would read
    assert isinstance(event, ProfileUpdatedV2)
    assert (event.orders_count, event.total_spent, event.sources) == (1, Decimal("10.00"), ["mercadolivre"])
    assert tuple(held) == (40, 300)
    assert miscounted == 0
    assert owners == 40
