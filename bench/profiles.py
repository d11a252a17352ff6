"""`make bench-profiles`: how fast the profile service's consumer turns orders into profiles.

Builds `order.ingested` events from generated orders (and from the Olist extract) and applies them through
the profile service's own records consumer (`ConsumerWorker.apply`, batches as large as a Kafka poll
delivers them: `CLIENTELA_CONSUMER_MAX_POLL_RECORDS`, 5,000 by default) on a fresh
PostgreSQL database. Kafka itself is left out, to measure the profile side: identity resolution, stored
orders, traits and the outbox. Writes bench/results/profiles.json and the
table in bench/README.md.

The generated orders are applied three times: by one consumer (one process); by two consumer processes
of one group, each applying the orders of the partitions a consumer group would assign it (the orders
topic's 12 partitions by the events' Kafka keys, six each), both at once on the same database: what the
machine's two cores give; then by two such processes that wait for the profiles the other is writing
(`CLIENTELA_CONSUMER_DEFER_BUSY=false`) instead of leaving their events for after their commit. The two
must make the same profiles as the one (the cases' *profiles unlike one consumer's*).

First it measures the consumer's *floor* on the first 30,000 of the orders (`bench.profile_floor`): what an
order costs at the least, whatever the design; kept in the JSON as `floor`.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa

from bench import profile_floor, report
from bench.ingest import CACHE, OLIST_SUBSET, PG, migrated_database, orders_file
from services.ingest import importers
from services.ingest.intake import _order_key
from services.profile.consumer import workers
from services.profile.settings import ProfileSettings
from shared.consumer import ConsumerWorker
from shared.db import is_deadlock, make_engine
from shared.events import OrderIngested
from shared.kafka import murmur2
from shared.records import Order
from shared.topics import ORDERS
from shared.web import tune_gc

# The orders' ids follow from their source and external id: the same in every case, so that the profiles of
# two cases compare order by order (`order_groups`).
_ORDER_IDS = uuid.UUID("6f1c1f43-5d0e-4c59-9a55-3c2d8f0b7a10")


def events(rows: list[dict[str, Any]], tenant_id: uuid.UUID, members: int = 1) -> list[list[bytes]]:
    """The rows' `order.ingested` events, as the consumer group's `members` would each receive them: by
    the partition of their Kafka key (as ingest keys them, `KeyPartitioner`), the partitions shared out in
    ranges as Kafka's range assignor does."""
    versions: dict[uuid.UUID, int] = {}
    out: list[list[bytes]] = [[] for _ in range(members)]
    for row in rows:
        order = Order.model_validate(row)
        order_id = uuid.uuid5(_ORDER_IDS, f"{order.source}\x1f{order.external_id}")
        versions[order_id] = versions.get(order_id, 0) + 1
        event = OrderIngested(order_id=order_id, order_version=versions[order_id], order=order)
        partition = (murmur2(_order_key(tenant_id, order).encode()) & 0x7FFFFFFF) % ORDERS.partitions
        out[partition * members // ORDERS.partitions].append(event.envelope(tenant_id).to_bytes())
    return out


def generated_rows(orders: int, seed: int) -> list[dict[str, Any]]:
    """The first `orders` lines of `clientela generate --orders <orders> --seed <seed>`, parsed."""
    return [orjson.loads(line) for line in orders_file(orders, seed).read_bytes().splitlines()[:orders]]


DATABASE = f"{PG}/clientela_profile_bench"
# Two processes that wait for the profiles the other is writing (`consumer_defer_busy` false).
WAITING = "generated, 2 processes, waiting"


class _Record(NamedTuple):
    """What `ConsumerWorker.handle` reads of a Kafka record."""

    value: bytes
    topic: str
    key: bytes | None = None
    partition: int = 0
    offset: int = 0


def _no_dead_letters() -> Any:
    raise RuntimeError("the benchmark's orders are all valid: none is dead-lettered")


def _apply(raws: list[bytes], start: Any, defer: bool | None = None) -> tuple[float, float, dict[str, int]]:
    """One consumer process of the group: its events through the records consumer's `handle`, as the
    service's poll loop calls it (a batch that meets a concurrent write of the other process is applied
    again; one that still deadlocks is delivered again, as after the service's reconnect), from when
    `start` is set; wall and CPU seconds, and what the consumer logged, counted."""
    engine = make_engine(DATABASE)
    try:
        settings = ProfileSettings(database_url=DATABASE, topic_prefix="bench.")
        if defer is not None:
            settings = settings.model_copy(update={"consumer_defer_busy": defer})
        worker = dict(workers(engine, settings))["profile-records"]
        assert isinstance(worker, ConsumerWorker)
        batch, topic = settings.consumer_max_poll_records, ORDERS.full("bench.")
        retried: Counter[str] = Counter()

        def count_retries(record: logging.LogRecord) -> bool:
            retried[record.getMessage()] += 1
            return True

        consumer_log = logging.getLogger("clientela.consumer")
        consumer_log.setLevel(logging.INFO)
        consumer_log.addFilter(count_retries)
        tune_gc(settings)
        start.wait()
        began, cpu_began = time.perf_counter(), time.process_time()
        for first in range(0, len(raws), batch):
            records = [_Record(raw, topic) for raw in raws[first : first + batch]]
            while True:
                try:
                    worker.handle(records, _no_dead_letters)
                    break
                except sa.exc.OperationalError as exc:
                    if not is_deadlock(exc):
                        raise
                    # Deadlocked again after the consumer's own retries: the service's poll loop reconnects
                    # after a second and Kafka delivers the batch again (`ConsumerWorker.run`).
                    retried["consumer error; reconnecting"] += 1
                    time.sleep(1.0)
        return time.perf_counter() - began, time.process_time() - cpu_began, dict(retried)
    finally:
        engine.dispose()


def order_groups(conn: sa.Connection) -> set[tuple[str, ...]]:
    """Each active profile as the orders it holds (their ids, sorted)."""
    query = "SELECT array_agg(order_id::text ORDER BY order_id) FROM profile_order GROUP BY profile_id"
    return {tuple(group) for group in conn.execute(sa.text(query)).scalars()}


def run_case(
    name: str,
    rows: list[dict[str, Any]],
    processes: int = 1,
    groups: dict[str, set[tuple[str, ...]]] | None = None,
    defer: bool | None = None,
) -> dict[str, Any]:
    """Apply the rows' orders in `processes` consumer processes on a fresh database; the case's numbers.
    `groups`, when given, gets the case's `order_groups` under its name. `defer`: the processes'
    `consumer_defer_busy` (by default the service's)."""
    engine = migrated_database(DATABASE, "profile")
    try:
        settings = ProfileSettings(database_url=DATABASE, topic_prefix="bench.")
        shares = events(rows, uuid.uuid4(), processes)
        if processes == 1:
            seconds, cpu = report.apply_in_polls(
                workers(engine, settings), "profile-records", settings, shares[0]
            )
        else:
            context = multiprocessing.get_context("spawn")
            with context.Manager() as manager, context.Pool(processes) as pool:
                start = manager.Event()
                pending = [pool.apply_async(_apply, (share, start, defer)) for share in shares]
                time.sleep(2)  # every process started, its engine and consumer made
                start.set()
                began = time.perf_counter()
                timings = [p.get() for p in pending]
                seconds = time.perf_counter() - began
            cpu = sum(c for _, c, _ in timings)
            retried: Counter[str] = Counter()
            for _, _, counts in timings:
                retried.update(counts)
        with engine.connect() as conn:
            profiles = conn.execute(
                sa.text("SELECT count(*) FROM profile WHERE status = 'active'")
            ).scalar_one()
            merged = conn.execute(sa.text("SELECT count(*) FROM merge_record")).scalar_one()
            if groups is not None:
                groups[name] = order_groups(conn)
    finally:
        engine.dispose()
    orders = sum(len(share) for share in shares)
    return {
        "case": name,
        "processes": processes,
        "orders": orders,
        "seconds": round(seconds, 2),
        "orders_per_s": round(orders / seconds),
        "consumer_cpu_seconds": round(cpu, 1),
        "profiles": profiles,
        "merges": merged,
        **({"consumer_log": dict(sorted(retried.items()))} if processes > 1 else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    generated = generated_rows(args.orders, args.seed)
    names = {role: OLIST_SUBSET / f"{stem}.csv.gz" for role, stem in importers.OLIST_FILES.items()}
    with tempfile.TemporaryDirectory() as tmp:
        olist = [row for _, row in importers.read_olist(names, Path(tmp))]
    # What an order costs at the least (`bench.profile_floor`), on the first 30,000 of the same orders.
    floor = profile_floor.measure(events(generated[:30_000], uuid.uuid4())[0])
    groups: dict[str, set[tuple[str, ...]]] = {}
    cases = [
        run_case("generated", generated, groups=groups),
        run_case("generated, 2 processes", generated, processes=2, groups=groups),
        run_case(WAITING, generated, processes=2, groups=groups, defer=False),
        run_case("olist-extract", olist),  # last: `bench.segmentation` reads the database it leaves
    ]
    # The profiles two processes made that one consumer did not make of the same orders.
    for case in cases[1:3]:
        case["unlike_one_process"] = len(groups[case["case"]] - groups["generated"])
    results = report.publish(
        "profiles",
        cases,
        columns=[
            ("case", lambda c: c["case"]),
            ("orders", lambda c: c["orders"]),
            ("orders/s", lambda c: c["orders_per_s"]),
            ("seconds", lambda c: c["seconds"]),
            ("consumer CPU s", lambda c: c["consumer_cpu_seconds"]),
            ("profiles", lambda c: c["profiles"]),
            ("merges", lambda c: c["merges"]),
            ("profiles unlike one consumer's", lambda c: c.get("unlike_one_process", "—")),
        ],
        note="The two processes' CPU is their sum; *profiles unlike one consumer's*: the two processes' "
        "profiles that do not hold the same orders as one of the single consumer's; *waiting*: with "
        "`CLIENTELA_CONSUMER_DEFER_BUSY=false` (a batch waits for the profiles the other process is "
        "writing instead of applying their events after its commit). *Floor* (`bench.profile_floor`: only "
        "the steps no design can skip, each alone, PostgreSQL's CPU included): "
        f"{floor['total_µs_per_order']:,} µs an order, {floor['orders_per_s_per_core']:,} orders/s a core; "
        f"one consumer spent {cases[0]['consumer_cpu_seconds'] * 1e6 / cases[0]['orders']:,.0f} µs of its "
        "own CPU an order. Target: ≥ 10,000 orders/s.",
        command=None if args.orders == 100_000 else f"uv run python -m bench.profiles --orders {args.orders}",
        extra={"floor": floor},
        section="## Profiles (`make bench-profiles`)\n\nOrders applied through the profile service's records "
        "consumer in batches as large as a Kafka poll delivers them (5,000 by default), on a fresh "
        "PostgreSQL database (Kafka left out): identity resolution, stored orders, traits, outbox.",
    )
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report goes to stdout


if __name__ == "__main__":
    main()
