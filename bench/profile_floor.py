"""The profile consumer's floor: what an order costs at the least, whatever the design (`make bench-profiles`
measures it before its cases; alone: ``uv run python -m bench.profile_floor``).

The steps no design of the consumer can skip, each timed alone over the same generated orders, in one
process with the collector as the consumer has it (frozen and paused):

- *receive*: the Kafka record's value read as an envelope (`Envelope.from_bytes`);
- *validate*: the payload checked and typed (`shared.events.decode`: the consumer trusts no producer);
- *identifiers*: the order's identifiers and their keyed hashes (`identity.blind`);
- *seal*: what the order says about the person, sealed to be stored (`profiles.snapshot`, `seal_snapshot`);
- *announce*: one `profile.updated` outbox row per order, built from a payload already in JSON form
  (`outbox_row`: no pydantic model, sealed);
- *store*: the orders' rows and the outbox rows written with `COPY` in one transaction per 5,000, on a
  fresh database: the client's CPU, and PostgreSQL's (its backend process's, from `/proc`).

No identity graph, no traits, no probabilistic stage and no reading back: the sum is a bound the real
consumer cannot beat, and `orders/s per core` is 1,000,000 µs over it.
"""

from __future__ import annotations

import gc
import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlmodel import Session

from bench.ingest import PG, migrated_database
from services.profile import identity, profiles
from services.profile.models import ProfileOrder, seal_snapshot
from shared.db import bulk_insert, utcnow
from shared.events import Envelope, OrderIngested, ProfileUpdatedV2, decode
from shared.infra import OutboxMessage
from shared.outbox import outbox_row
from shared.records import to_minor

DATABASE = f"{PG}/clientela_profile_floor"
POLL = 5_000
T = TypeVar("T")


def _cpu_of(pid: int) -> float:
    """A process's user + system CPU seconds (Linux `/proc`)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(spent: dict[str, float], step: str, work: Callable[[], T]) -> T:
    started = time.process_time()
    result = work()
    spent[step] = time.process_time() - started
    return result


def _announcement(event: OrderIngested) -> dict[str, Any]:
    """A `profile.updated` payload in JSON form for a profile holding just this order."""
    order = event.order
    total = str(order.total)
    return {
        "profile_id": str(uuid.uuid4()),
        "profile_version": 1,
        "changed": ["orders_count", "total_spent"],
        "orders_count": 1,
        "total_spent": total,
        "average_order_value": total,
        "first_order_at": order.placed_at.isoformat(),
        "last_order_at": order.placed_at.isoformat(),
        "sources": [order.source],
        "categories": sorted({i.category for i in order.items if i.category})[:5],
        "products": sorted({i.sku for i in order.items})[:5],
        "preferred_payment_method": order.payments[0].method.value if order.payments else None,
        "birth_date": None,
        "gender": None,
        "city": None,
        "state": None,
        "zip": None,
        "consents": {},
        "rfm_group": None,
        "rfm_r": None,
        "rfm_f": None,
        "rfm_m": None,
        "clv_12m": None,
        "churn_probability": None,
        "next_order_at": None,
        "last_seen_at": None,
        "viewed_categories": {},
        "viewed_products": {},
        "cart_abandoned_at": None,
    }


def _order_row(envelope: Envelope, event: OrderIngested, sealed: dict[str, Any], ids: Any) -> dict[str, Any]:
    order = event.order
    return {
        "order_id": event.order_id,
        "tenant_id": envelope.tenant_id,
        "profile_id": uuid.uuid4(),
        "source": order.source,
        "order_version": event.order_version,
        "status": order.status.value,
        "total_minor": to_minor(order.total),
        "placed_at": order.placed_at,
        "items": [{"sku": i.sku, "category": i.category, "quantity": i.quantity} for i in order.items],
        "payments": [{"method": p.method.value, "installments": p.installments} for p in order.payments],
        "identifiers": [[kind, value] for kind, value in ids],
        "customer": sealed,
        "recorded_at": utcnow(),
    }


def measure(raws: list[bytes], database: str = DATABASE) -> dict[str, Any]:
    """Each step's CPU µs per order over these `order.ingested` records' values; *store* writes each order
    once (its first version: the rows' keys are unique) on a fresh `database`."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        spent: dict[str, float] = {}
        envelopes = _timed(spent, "receive", lambda: [Envelope.from_bytes(r) for r in raws])
        events = _timed(spent, "validate", lambda: [decode(e) for e in envelopes])
        pairs = [
            (env, ev) for env, ev in zip(envelopes, events, strict=True) if isinstance(ev, OrderIngested)
        ]
        blinded = _timed(
            spent,
            "identifiers",
            lambda: [identity.blind(env.tenant_id, profiles.identifiers_for(ev)) for env, ev in pairs],
        )
        sealed = _timed(
            spent,
            "seal",
            lambda: [
                seal_snapshot(
                    env.tenant_id,
                    profiles.snapshot(ev.order.customer, ev.order.consents, at=ev.order.placed_at),
                )
                for env, ev in pairs
            ],
        )
        outbox = _timed(
            spent,
            "announce",
            lambda: [
                outbox_row(
                    ProfileUpdatedV2, _announcement(ev), tenant_id=env.tenant_id, key=f"{env.tenant_id}:{i}"
                )
                for i, (env, ev) in enumerate(pairs)
            ],
        )
        first: dict[uuid.UUID, int] = {}
        for i, (_, ev) in enumerate(pairs):
            first.setdefault(ev.order_id, i)
        kept = sorted(first.values())
        rows = [_order_row(*pairs[i], sealed[i], blinded[i]) for i in kept]
        engine = migrated_database(database, "profile")
        try:
            with Session(engine) as session:
                backend = session.connection().execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
                session.commit()
                server_started, started = _cpu_of(backend), time.process_time()
                for start in range(0, len(kept), POLL):
                    bulk_insert(session, ProfileOrder, rows[start : start + POLL])
                    bulk_insert(session, OutboxMessage, [outbox[i] for i in kept[start : start + POLL]])
                    session.commit()
                spent["store"] = time.process_time() - started
                spent["store, PostgreSQL"] = _cpu_of(backend) - server_started
        finally:
            engine.dispose()
    finally:
        gc.enable()
        gc.unfreeze()
    per_order = {step: round(seconds * 1e6 / len(pairs), 1) for step, seconds in spent.items()}
    per_order["store"] = round(spent["store"] * 1e6 / len(kept), 1)
    per_order["store, PostgreSQL"] = round(spent["store, PostgreSQL"] * 1e6 / len(kept), 1)
    total = round(sum(per_order.values()), 1)
    return {
        "orders": len(pairs),
        "µs_per_order": per_order,
        "total_µs_per_order": total,
        "orders_per_s_per_core": round(1e6 / total),
    }


def main() -> None:
    from bench.profiles import events, generated_rows

    raws = events(generated_rows(30_000, 1), uuid.uuid4())[0]
    found = {"measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), **measure(raws)}
    print(json.dumps(found, indent=2, ensure_ascii=False))  # noqa: T201 - a benchmark's report


if __name__ == "__main__":
    main()
