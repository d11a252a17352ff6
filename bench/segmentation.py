"""`make bench-segmentation`: how fast the segmentation service's consumer turns profile events into
segment memberships.

The events are real: 100,000 generated orders (`clientela generate --orders 100000 --seed 1`, the first
100,000 lines) go through the profile consumer as `make bench-profiles` runs it, and what its outbox then
holds (`profile.updated`, `profiles.merged`, in order) is applied through the segmentation service's own
profiles consumer (`ConsumerWorker.apply`, polls as large as a Kafka poll delivers them:
`CLIENTELA_CONSUMER_MAX_POLL_RECORDS`) on a fresh PostgreSQL database with the pipeline benchmark's two
segments defined first. Kafka is left out, to measure the consumer: projections, tags, evaluation,
memberships, their events and history. Each segment's size must equal the active profiles its rule selects
in the profile database, or the benchmark fails. Writes bench/results/segmentation.json and the table in
bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from bench import report
from bench.ingest import CACHE, PG, migrated_database
from bench.pipeline import SEGMENTS
from bench.profiles import DATABASE as PROFILES_DB
from bench.profiles import generated_rows
from bench.profiles import run_case as run_profiles
from services.segmentation import segments
from services.segmentation.consumer import workers
from services.segmentation.models import Segment, SegmentMember
from services.segmentation.rules import parse_rule
from services.segmentation.settings import SegmentationSettings
from shared.db import make_engine
from shared.events import Envelope
from shared.outbox import open_body


def from_profiles() -> tuple[list[bytes], dict[str, int]]:
    """What `bench.profiles` left in its database: the profile events of its outbox, as the relay would
    publish them, and each segment's size as that database says (the active profiles its rule's condition
    selects)."""
    engine = make_engine(PROFILES_DB)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT body FROM outbox_message ORDER BY id"))
            raws = [open_body(bytes(body)) for (body,) in rows]
            sizes = {
                name: connection.execute(
                    sa.text(f"SELECT count(*) FROM profile WHERE status = 'active' AND {condition}")  # noqa: S608
                ).scalar_one()
                for name, (_, condition) in SEGMENTS.items()
            }
    finally:
        engine.dispose()
    return raws, sizes


def run_case(name: str, raws: list[bytes], expected: dict[str, int]) -> dict[str, Any]:
    url = f"{PG}/clientela_segmentation_bench"
    engine = migrated_database(url, "segmentation")
    try:
        settings = SegmentationSettings(database_url=url, topic_prefix="bench.")
        tenant_id = Envelope.from_bytes(raws[0]).tenant_id
        with Session(engine) as session:
            ids = {
                segments.create_segment(
                    segment, parse_rule(rule), tenant_id=tenant_id, session=session, inline_max=1_000_000
                ).id: segment
                for segment, (rule, _) in SEGMENTS.items()
            }
            session.commit()
        seconds, cpu = report.apply_in_polls(
            workers(engine, settings), "segmentation-profiles", settings, raws
        )
        with engine.connect() as connection:
            member = SegmentMember.__table__  # type: ignore[attr-defined]
            sizes = dict.fromkeys(ids.values(), 0)
            for segment_id, count in connection.execute(
                sa.select(member.c.segment_id, sa.func.count()).group_by(member.c.segment_id)
            ):
                sizes[ids[segment_id]] = count
            segments_left = connection.execute(sa.select(sa.func.count()).select_from(Segment)).scalar_one()
            assert segments_left == len(SEGMENTS)
    finally:
        engine.dispose()
    if sizes != expected:
        raise SystemExit(f"segment sizes {sizes} differ from the profile database's {expected}")
    return {
        "case": name,
        "events": len(raws),
        "seconds": round(seconds, 2),
        "events_per_s": round(len(raws) / seconds),
        "consumer_cpu_seconds": round(cpu, 1),
        "cpu_ms_per_event": round(1000 * cpu / len(raws), 3),
        "segment_sizes": sizes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    generated = generated_rows(args.orders, args.seed)
    # The profile stage in a process of its own: this one measures the segmentation consumer alone, on a
    # heap without the profile run's objects (as the service's own process).
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        profiles = pool.apply(run_profiles, ("generated", generated))
    case = run_case(f"profile events of {args.orders:,} generated orders", *from_profiles())
    case["orders"], case["profiles"] = args.orders, profiles["profiles"]
    results = report.publish(
        "segmentation",
        [case],
        columns=[
            ("case", lambda c: c["case"]),
            ("events", lambda c: c["events"]),
            ("events/s", lambda c: c["events_per_s"]),
            ("consumer CPU s", lambda c: c["consumer_cpu_seconds"]),
            ("CPU ms / event", lambda c: c["cpu_ms_per_event"]),
            ("buyers / vip", lambda c: f"{c['segment_sizes']['buyers']:,} / {c['segment_sizes']['vip']:,}"),
        ],
        note="The events are the profile consumer's for these orders (`make bench-profiles`, run first); "
        "segment sizes checked against the profile database.",
        section="## Segmentation consumer (`make bench-segmentation`)",
        command=None
        if args.orders == 100_000
        else f"uv run python -m bench.segmentation --orders {args.orders}",
    )
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report goes to stdout


if __name__ == "__main__":
    main()
