"""The profile consumer's floor: what an order costs at the least, whatever the design (`make bench-profiles`
measures it before its cases; alone: ``uv run python -m bench.profile_floor``).

The steps no design of the consumer can skip, each timed alone over the same generated orders, in one
process with the collector as the consumer has it (frozen and paused):

- *receive*: the Kafka record's value read as an envelope (`Envelope.from_bytes`);
- *validate*: the payload checked and typed (`shared.events.decode`: the consumer trusts no producer);
- *identifiers*: the order's identifiers and their keyed hashes (`identity.blind`);
- *seal*: what the order says about the person, sealed to be stored (`profiles.snapshot`, `seal_snapshot`);
- *seal identifiers*: each new identifier's readable value, sealed to be stored with its keyed hash;
- *announce*: one `profile.updated` outbox row per order, built from a payload already in JSON form
  (`outbox_row`: no pydantic model, sealed);
- then on a fresh database, in one transaction per poll of 5,000 orders, the client's CPU and
  PostgreSQL's (its backend process's, from `/proc`) together as *look up and store*: the owners of the
  poll's identifiers looked up in one query (`identity._owners_of`, what any design must ask), the new
  identifiers, the orders, one profile row per person (inserted the first time, updated once per poll
  after: a person here is the holder of an order's strongest identifier, with no resolution) and the outbox
  rows, written with `COPY` and one `UPDATE` (each order once: its first version).

No merges, no traits but two counters, no probabilistic stage and no reading of profiles back; and, as in
`bench.profiles`, no Kafka (kafka-python's own cost of consuming a record is in `make bench-stack`). The sum
is a bound the real consumer cannot beat, and `orders/s per core` is 1,000,000 µs over it.
"""

from __future__ import annotations

import gc
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlmodel import Session

from bench import report
from bench.ingest import PG, cpu_seconds, migrated_database
from bench.stack import cpu_of
from services.profile import identity, profiles
from services.profile.models import Profile, ProfileIdentifier, ProfileOrder, seal_snapshot
from shared.crypto import keyring
from shared.db import bulk_insert, new_row, table_of, utcnow
from shared.events import Envelope, OrderIngested, ProfileUpdatedV2, decode
from shared.infra import OutboxMessage
from shared.outbox import outbox_row
from shared.records import to_minor

DATABASE = f"{PG}/clientela_profile_floor"
POLL = 5_000


@dataclass(frozen=True)
class _Held:
    """What `profiles.segmentable_traits` reads of a profile, for one that holds just one order."""

    orders_count: int
    total_spent_minor: int
    first_order_at: datetime
    last_order_at: datetime
    purchases: dict[str, Any]
    predicted: dict[str, Any] = field(default_factory=dict)
    behaviour: dict[str, Any] = field(default_factory=dict)
    consents: dict[str, Any] = field(default_factory=dict)
    birth_date: None = None
    gender: None = None
    city: None = None
    state: None = None
    zip: None = None


def _announcement(event: OrderIngested) -> dict[str, Any]:
    """A `profile.updated` payload in JSON form (the service's `segmentable_traits`) for a profile holding
    just this order."""
    order = event.order
    held = _Held(
        orders_count=1,
        total_spent_minor=to_minor(order.total),
        first_order_at=order.placed_at,
        last_order_at=order.placed_at,
        purchases={
            "by_source": {order.source: {"orders": 1}},
            "top_categories": sorted({i.category for i in order.items if i.category})[:5],
            "top_products": sorted({i.sku for i in order.items})[:5],
            "preferred_payment_method": order.payments[0].method.value if order.payments else None,
        },
    )
    traits = profiles.segmentable_traits(cast(Profile, held))
    return {**traits, "profile_id": str(uuid.uuid4()), "profile_version": 1, "changed": sorted(traits)}


def _order_row(
    envelope: Envelope, event: OrderIngested, profile_id: uuid.UUID, sealed: dict[str, Any], ids: Any
) -> dict[str, Any]:
    return {
        "order_id": event.order_id,
        "tenant_id": envelope.tenant_id,
        "profile_id": profile_id,
        "source": event.order.source,
        "order_version": event.order_version,
        **profiles.order_facts(event.order),
        "identifiers": [[kind, value] for kind, value in ids],
        "customer": sealed,
        "recorded_at": utcnow(),
    }


def measure(raws: list[bytes], database: str = DATABASE) -> dict[str, Any]:
    """Each step's CPU µs per order (per record: later versions of an order count) over these
    `order.ingested` records' values; the store writes each order once (its first version, the rows' keys
    being unique) on a fresh `database`."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        spent: dict[str, float] = {}
        with cpu_of(spent, "receive"):
            envelopes = [Envelope.from_bytes(r) for r in raws]
        with cpu_of(spent, "validate"):
            events = [decode(e) for e in envelopes]
        pairs = [
            (env, ev) for env, ev in zip(envelopes, events, strict=True) if isinstance(ev, OrderIngested)
        ]
        with cpu_of(spent, "identifiers"):
            readable = [profiles.identifiers_for(ev) for _, ev in pairs]
            blinded = [
                identity.blind(env.tenant_id, ids) for (env, _), ids in zip(pairs, readable, strict=True)
            ]
        with cpu_of(spent, "seal"):
            sealed = [
                seal_snapshot(
                    env.tenant_id,
                    profiles.snapshot(ev.order.customer, ev.order.consents, at=ev.order.placed_at),
                )
                for env, ev in pairs
            ]
        # A person: the holder of an order's strongest identifier (no resolution); each identifier's first
        # order.
        persons: dict[tuple[Any, ...], uuid.UUID] = {}
        person_of: list[uuid.UUID] = []
        first_seen: dict[tuple[uuid.UUID, str, str], tuple[int, str]] = {}
        for i, ((env, ev), ids) in enumerate(zip(pairs, blinded, strict=True)):
            key = (env.tenant_id, *ids[0]) if ids else (ev.order_id,)
            person_of.append(persons.setdefault(key, uuid.uuid4()))
            for (kind, value), (_, clear) in zip(ids, readable[i], strict=True):
                first_seen.setdefault((env.tenant_id, kind, value), (i, clear))
        with cpu_of(spent, "seal identifiers"):
            identifier_rows = {
                key: {
                    "tenant_id": key[0],
                    "kind": key[1],
                    "value": key[2],
                    "sealed": keyring().seal(key[0], clear),
                    "profile_id": person_of[i],
                    "seen_at": pairs[i][1].order.placed_at,
                    "created_at": utcnow(),
                }
                for key, (i, clear) in first_seen.items()
            }
        with cpu_of(spent, "announce"):
            outbox = [
                outbox_row(
                    ProfileUpdatedV2, _announcement(ev), tenant_id=env.tenant_id, key=f"{env.tenant_id}:{i}"
                )
                for i, (env, ev) in enumerate(pairs)
            ]
        engine = migrated_database(database, "profile")
        try:
            with Session(engine) as session:
                backend = session.connection().execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
                session.commit()
                server_started = cpu_seconds([backend])
                with cpu_of(spent, "look up and store"):
                    stored = _store(session, pairs, blinded, sealed, person_of, identifier_rows, outbox)
                spent["look up and store, PostgreSQL"] = cpu_seconds([backend]) - server_started
        finally:
            engine.dispose()
    finally:
        gc.enable()
        gc.unfreeze()
    per_order = {step: round(seconds * 1e6 / len(pairs), 1) for step, seconds in spent.items()}
    total = round(sum(per_order.values()), 1)
    return {
        "orders": len(pairs),
        "persons": len(persons),
        **stored,
        "µs_per_order": per_order,
        "total_µs_per_order": total,
        "orders_per_s_per_core": round(1e6 / total),
    }


_ADD_TO_PROFILES = sa.text(
    "UPDATE profile SET orders_count = profile.orders_count + v.n,"
    " total_spent_minor = profile.total_spent_minor + v.t, version = profile.version + 1"
    " FROM unnest(CAST(:ids AS uuid[]), CAST(:ns AS int[]), CAST(:ts AS bigint[])) AS v(id, n, t)"
    " WHERE profile.id = v.id"
)


_PROFILE_COLUMNS = [column.key for column in table_of(Profile).columns]


def _profile_row(
    profile_id: uuid.UUID, tenant_id: uuid.UUID, orders: int, spent_minor: int
) -> dict[str, Any]:
    """A new profile's row, every column (the others' defaults, as `new_row` gives them)."""
    row = new_row(
        Profile, id=profile_id, tenant_id=tenant_id, orders_count=orders, total_spent_minor=spent_minor
    )
    return {name: row.__dict__.get(name) for name in _PROFILE_COLUMNS}


def _store(
    session: Session,
    pairs: list[tuple[Envelope, OrderIngested]],
    blinded: list[list[identity.Identifier]],
    sealed: list[dict[str, Any]],
    person_of: list[uuid.UUID],
    identifier_rows: dict[tuple[uuid.UUID, str, str], dict[str, Any]],
    outbox: list[dict[str, Any]],
) -> dict[str, int]:
    """The polls' transactions (see the module's docstring); how many rows of each kind were written."""
    sa.orm.configure_mappers()  # before `new_row` builds the first instance (the service's queries do it)
    orders: set[uuid.UUID] = set()
    made: set[uuid.UUID] = set()
    written = {"identifiers": 0, "order_rows": 0, "profile_rows": 0, "profile_updates": 0}
    for start in range(0, len(pairs), POLL):
        poll = range(start, min(start + POLL, len(pairs)))
        keys = {(pairs[i][0].tenant_id, *identifier) for i in poll for identifier in blinded[i]}
        owned = identity._owners_of(session, keys)
        new_identifiers = [
            identifier_rows.pop(key) for key in sorted(keys - owned.keys()) if key in identifier_rows
        ]
        firsts = []
        for i in poll:
            if pairs[i][1].order_id not in orders:
                orders.add(pairs[i][1].order_id)
                firsts.append(i)
        # Each person's orders in the poll: tenant, how many, spent.
        added: dict[uuid.UUID, tuple[uuid.UUID, int, int]] = {}
        for i in firsts:
            tenant_id, count, spent = added.get(person_of[i], (pairs[i][0].tenant_id, 0, 0))
            added[person_of[i]] = (tenant_id, count + 1, spent + to_minor(pairs[i][1].order.total))
        bulk_insert(session, ProfileIdentifier, new_identifiers)
        bulk_insert(
            session,
            ProfileOrder,
            [_order_row(*pairs[i], person_of[i], sealed[i], blinded[i]) for i in firsts],
        )
        touched = [pid for pid in added if pid in made]
        fresh = [pid for pid in added if pid not in made]
        made.update(fresh)
        bulk_insert(session, Profile, [_profile_row(pid, *added[pid]) for pid in fresh])
        if touched:
            session.execute(
                _ADD_TO_PROFILES,
                {"ids": touched, "ns": [added[p][1] for p in touched], "ts": [added[p][2] for p in touched]},
            )
        bulk_insert(session, OutboxMessage, [outbox[i] for i in poll])
        session.commit()
        written["identifiers"] += len(new_identifiers)
        written["order_rows"] += len(firsts)
        written["profile_rows"] += len(fresh)
        written["profile_updates"] += len(touched)
    return written


def main() -> None:
    from bench.profiles import events, generated_rows  # it runs this module: imported here

    raws = events(generated_rows(100_000, 1)[:30_000], uuid.uuid4())[0]  # as `make bench-profiles`
    found = {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "reference_seconds": report.reference_seconds(),
        **measure(raws),
    }
    print(json.dumps(found, indent=2, ensure_ascii=False))  # noqa: T201 - a benchmark's report


if __name__ == "__main__":
    main()
