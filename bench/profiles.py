"""`make bench-profiles`: how fast the profile service's consumer turns orders into profiles.

Builds `order.ingested` events from generated orders (and from the Olist extract) and applies them through
the profile service's own records consumer (`ConsumerWorker.apply`, batches as large as a Kafka poll
delivers them: `CLIENTELA_CONSUMER_MAX_POLL_RECORDS`, 5,000 by default) on a fresh
PostgreSQL database. Kafka itself is left out, to measure the profile side: identity resolution, stored
orders, traits and the outbox. Writes bench/results/profiles.json and the
table in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from bench import report
from bench.ingest import CACHE, OLIST_SUBSET, PG, migrated_database, orders_file
from services.ingest import importers
from services.profile.consumer import workers
from services.profile.settings import ProfileSettings
from shared.events import OrderIngested
from shared.records import Order


def events(rows: list[dict[str, Any]], tenant_id: uuid.UUID) -> list[bytes]:
    ids: dict[tuple[str, str], uuid.UUID] = {}
    versions: dict[uuid.UUID, int] = {}
    out = []
    for row in rows:
        order = Order.model_validate(row)
        order_id = ids.setdefault((order.source, order.external_id), uuid.uuid4())
        versions[order_id] = versions.get(order_id, 0) + 1
        event = OrderIngested(order_id=order_id, order_version=versions[order_id], order=order)
        out.append(event.envelope(tenant_id).to_bytes())
    return out


def generated_rows(orders: int, seed: int) -> list[dict[str, Any]]:
    """The first `orders` lines of `clientela generate --orders <orders> --seed <seed>`, parsed."""
    return [orjson.loads(line) for line in orders_file(orders, seed).read_bytes().splitlines()[:orders]]


DATABASE = f"{PG}/clientela_profile_bench"  # left as the last case made it (`bench.segmentation` reads it)


def run_case(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    engine = migrated_database(DATABASE, "profile")
    try:
        settings = ProfileSettings(database_url=DATABASE, topic_prefix="bench.")
        raws = events(rows, uuid.uuid4())
        seconds, cpu = report.apply_in_polls(workers(engine, settings), "profile-records", settings, raws)
        with engine.connect() as conn:
            profiles = conn.execute(
                sa.text("SELECT count(*) FROM profile WHERE status = 'active'")
            ).scalar_one()
            merged = conn.execute(sa.text("SELECT count(*) FROM merge_record")).scalar_one()
    finally:
        engine.dispose()
    return {
        "case": name,
        "orders": len(raws),
        "seconds": round(seconds, 2),
        "orders_per_s": round(len(raws) / seconds),
        "consumer_cpu_seconds": round(cpu, 1),
        "profiles": profiles,
        "merges": merged,
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
    cases = [run_case("generated", generated), run_case("olist-extract", olist)]
    results = report.publish(
        "profiles",
        cases,
        columns=[
            ("case", lambda c: c["case"]),
            ("orders", lambda c: c["orders"]),
            ("orders/s", lambda c: c["orders_per_s"]),
            ("consumer CPU s", lambda c: c["consumer_cpu_seconds"]),
            ("profiles", lambda c: c["profiles"]),
            ("merges", lambda c: c["merges"]),
        ],
        note="Target: ≥ 10,000 orders/s.",
        command=None if args.orders == 100_000 else f"uv run python -m bench.profiles --orders {args.orders}",
        section="## Profiles (`make bench-profiles`)\n\nOrders applied through the profile service's records "
        "consumer in batches as large as a Kafka poll delivers them (5,000 by default), on a fresh "
        "PostgreSQL database (Kafka left out): identity resolution, stored orders, traits, outbox.",
    )
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report goes to stdout


if __name__ == "__main__":
    main()
