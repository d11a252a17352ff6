"""`make bench-stack`: what the product card's stack costs per order before Clientela does anything.

Part of every order's cost is fixed by the card, whatever Clientela's own code does: ingest validates each
order with pydantic (the shared normalisers included), and the services talk only over Kafka through
kafka-python, so every order crosses at least two topics: `order.ingested` (ingest → profile) and
`profile.updated` (profile → segmentation, at least once per person). Each crossing costs a producer's
`send`, the broker, a consumer's fetches, and the consumer's decoding of the event (`Envelope.from_bytes`
and `shared.events.decode`, as every consumer does).

This benchmark measures those parts alone, on the same 100,000 generated orders as the other benchmarks,
in one process (the garbage collector tuned as the services tune it), against the real broker, with the
services' own producer and consumer settings (`shared.kafka`):
- validate: each order's JSON text to an `Order` (the normalisers' caches emptied first, as in a fresh
  process);
- for each of the two topics: produce, broker (its CPU while the events are produced and consumed),
  consume, then parse (`orjson.loads` of each event: the least a consumer can do to read it) and decode
  (as the services do: validated into its model). One `order.ingested` per order; one `profile.updated`
  per person (the generator's ground truth), built from the person's first order.

With parsing, the sum is the least CPU any pipeline on this stack needs for these orders, before it
stores anything or resolves anyone; half of it the least wall time on two cores (both busy all the time).
It is compared with the pipeline's targets: 10 s, and 3 times the floor, measured here as
`make bench-pipeline` measures it (the same orders loaded with COPY and totalled per customer in one SQL
statement). The same sum with decoding is what the services' way of reading events costs. Writes
bench/results/stack.json and its table in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from kafka.admin import KafkaAdminClient, NewTopic

from bench import report
from bench.ingest import CACHE, KAFKA, cpu_seconds, orders_file
from bench.pipeline import floor
from services.ingest import intake
from shared import normalize
from shared.events import Envelope, OrderIngested, ProfileUpdatedV2, decode
from shared.kafka import make_consumer, make_producer
from shared.records import Order
from shared.settings import ServiceSettings
from shared.web import tune_gc

CORES = 2  # the machine class the targets are set for
PIPELINE_TARGET_S = 10.0
RATIO_TARGET = 3.0
PARTITIONS = 6  # as the services' topics (`shared.topics`)


def broker_pid(proc: Path = Path("/proc")) -> int:
    """The Kafka broker's process on this machine (started by `make kafka-up`)."""
    for cmdline in proc.glob("[0-9]*/cmdline"):
        try:
            if b"kafka.Kafka" in cmdline.read_bytes().split(b"\0"):
                return int(cmdline.parent.name)
        except OSError:
            continue
    raise SystemExit("no Kafka broker runs here: `make kafka-up` first")


@contextmanager
def cpu_of(spent: dict[str, float], name: str, pid: int | None = None) -> Iterator[None]:
    """This process's CPU seconds over the block into `spent[name]`; the process `pid`'s into
    `spent[name + "_broker"]` when given."""
    started, other = time.process_time(), cpu_seconds([pid]) if pid else 0.0
    yield
    spent[name] = time.process_time() - started
    if pid:
        spent[name + "_broker"] = cpu_seconds([pid]) - other


def order_events(orders: list[Order], tenant_id: uuid.UUID) -> list[tuple[bytes, bytes]]:
    """(key, value) of each order's `order.ingested`, as ingest builds them (`services.ingest.intake`)."""
    out = []
    for order in orders:
        body = orjson.dumps(order.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        payload = intake.ORDERS.payload(uuid.uuid4(), 1, orjson.Fragment(body))
        key = intake.ORDERS.kafka_key(tenant_id, order)
        out.append((key.encode(), OrderIngested.envelope_bytes(payload, tenant_id)[2]))
    return out


def profile_event(order: Order) -> ProfileUpdatedV2:
    """A person's first `profile.updated`, from their first order: the traits it would carry."""
    counted = order.status.counts_as_spend
    address = order.customer.address
    return ProfileUpdatedV2(
        profile_id=uuid.uuid4(),
        profile_version=1,
        changed=sorted(ProfileUpdatedV2.model_fields.keys() - {"profile_id", "profile_version", "changed"}),
        orders_count=int(counted),
        total_spent=order.total if counted else Decimal("0.00"),
        average_order_value=order.total if counted else None,
        first_order_at=order.placed_at if counted else None,
        last_order_at=order.placed_at if counted else None,
        sources=[order.source] if counted else [],
        categories=sorted({i.category for i in order.items if i.category})[:5],
        products=sorted({i.sku for i in order.items})[:5],
        preferred_payment_method=order.payments[0].method.value if order.payments else None,
        birth_date=order.customer.birth_date,
        gender=order.customer.gender,
        city=address.city if address else None,
        state=address.state if address else None,
        zip=address.zip if address else None,
        consents={c.purpose.value: c.status for c in order.consents},
        rfm_group=None,
        rfm_r=None,
        rfm_f=None,
        rfm_m=None,
        clv_12m=None,
        churn_probability=None,
        next_order_at=None,
        last_seen_at=None,
        viewed_categories={},
        viewed_products={},
        cart_abandoned_at=None,
    )


def persons(count: int, seed: int) -> dict[str, str]:
    """Order record (`order:<source>:<external_id>`) -> person, from the generator's ground truth."""
    truth = orders_file(count, seed).parent / "truth.jsonl"
    found = {}
    for line in truth.read_bytes().splitlines():
        row = orjson.loads(line)
        if row["record"].startswith("order:"):
            found[row["record"]] = row["person"]
    return found


def crossing(
    settings: ServiceSettings, events: list[tuple[bytes, bytes]], broker: int, name: str
) -> dict[str, Any]:
    """The events through a fresh topic of the real broker: produced, consumed, decoded. CPU seconds."""
    admin = KafkaAdminClient(bootstrap_servers=KAFKA)
    topic = f"bench.stack.{name}.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    spent: dict[str, float] = {}
    try:
        producer = make_producer(settings)
        with cpu_of(spent, "produce", broker):
            for key, value in events:
                producer.send(topic, key=key, value=value)
            producer.flush(timeout=60)
        producer.close()
        consumer = make_consumer(settings, f"{topic}.group", [topic])
        consumer.subscribe([topic])
        values: list[bytes] = []
        with cpu_of(spent, "consume", broker):
            deadline = time.monotonic() + 120
            while len(values) < len(events) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    values.extend(r.value for r in records)
        consumer.close()
        if len(values) != len(events):
            raise SystemExit(f"{name}: consumed {len(values)} of {len(events)} events")
        with cpu_of(spent, "parse"):
            parsed = [orjson.loads(v) for v in values]
        with cpu_of(spent, "decode"):
            decoded = [decode(Envelope.from_bytes(v)) for v in values]
        if len(parsed) != len(decoded):  # pragma: no cover - the same values
            raise SystemExit(f"{name}: parsed {len(parsed)}, decoded {len(decoded)}")
        if any(event is None for event in decoded):
            raise SystemExit(f"{name}: an event was not decoded")
    finally:
        admin.delete_topics([topic])
        admin.close()
    return {
        "events": len(events),
        "bytes_per_event": round(sum(len(v) for _, v in events) / len(events)),
        "produce_cpu_s": round(spent["produce"], 2),
        "broker_cpu_s": round(spent["produce_broker"] + spent["consume_broker"], 2),
        "consume_cpu_s": round(spent["consume"], 2),
        "parse_cpu_s": round(spent["parse"], 2),
        "decode_cpu_s": round(spent["decode"], 2),
    }


def least(validate_s: float, crossings: list[dict[str, Any]], floor_s: float) -> dict[str, Any]:
    """The least CPU and wall time of a pipeline on this stack, against the pipeline's targets: with its
    consumers only parsing each event's JSON (the least a consumer can do to read one), and with them
    decoding it as the services do (validated into its model)."""
    carried = sum(c[p] for c in crossings for p in ("produce_cpu_s", "broker_cpu_s", "consume_cpu_s"))
    cpu = validate_s + carried + sum(c["parse_cpu_s"] for c in crossings)
    decoded = validate_s + carried + sum(c["decode_cpu_s"] for c in crossings)
    return {
        "least_cpu_s": round(cpu, 1),
        "least_wall_s": round(cpu / CORES, 1),
        "decoded_cpu_s": round(decoded, 1),
        "decoded_wall_s": round(decoded / CORES, 1),
        "pipeline_target_s": PIPELINE_TARGET_S,
        "floor_s": floor_s,
        "ratio_target_wall_s": round(RATIO_TARGET * floor_s, 1),
        "least_ratio": round(cpu / CORES / floor_s, 1),
    }


def run(count: int, seed: int) -> dict[str, Any]:
    settings = ServiceSettings(service_name="bench-stack")
    lines = orders_file(count, seed).read_bytes().splitlines()[:count]
    tune_gc(settings)
    broker = broker_pid()
    for name in dir(normalize):
        cache_clear: Callable[[], None] | None = getattr(getattr(normalize, name), "cache_clear", None)
        if cache_clear is not None:
            cache_clear()
    spent: dict[str, float] = {}
    with cpu_of(spent, "validate"):
        orders = [intake.ORDERS.adapter.validate_python(orjson.loads(line)) for line in lines]
    tenant_id = uuid.uuid4()
    first: dict[str, Order] = {}
    owner = persons(count, seed)
    for order in orders:
        first.setdefault(owner[f"order:{order.source}:{order.external_id}"], order)
    profile_events = [
        (str(uuid.uuid4()).encode(), profile_event(order).envelope(tenant_id).to_bytes())
        for order in first.values()
    ]
    crossings = [
        {"topic": "order.ingested", **crossing(settings, order_events(orders, tenant_id), broker, "orders")},
        {"topic": "profile.updated", **crossing(settings, profile_events, broker, "profiles")},
    ]
    measured = floor(lines)
    return {
        "case": "generated",
        "orders": len(orders),
        "persons": len(first),
        "validate_cpu_s": round(spent["validate"], 2),
        "crossings": crossings,
        "floor": measured,
        **least(spent["validate"], crossings, measured["seconds"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    case = run(args.orders, args.seed)

    def per_order(value: float) -> str:
        return f"{1e6 * value / case['orders']:,.0f}"

    parts = [f"validate {case['validate_cpu_s']} ({per_order(case['validate_cpu_s'])})"]
    for c in case["crossings"]:
        steps = ("produce", "broker", "consume", "parse", "decode")
        parts.append(
            f"{c['topic']} ({c['events']:,} events): "
            + ", ".join(f"{step} {c[step + '_cpu_s']} ({per_order(c[step + '_cpu_s'])})" for step in steps)
        )
    results = report.publish(
        "stack",
        [case],
        columns=[
            ("orders", lambda c: c["orders"]),
            ("persons", lambda c: c["persons"]),
            ("least CPU s", lambda c: c["least_cpu_s"]),
            ("least wall s (2 cores)", lambda c: c["least_wall_s"]),
            (
                "decoded as the services do: CPU s / wall s",
                lambda c: f"{c['decoded_cpu_s']} / {c['decoded_wall_s']}",
            ),
            ("pipeline target s", lambda c: c["pipeline_target_s"]),
            ("3 x floor s", lambda c: c["ratio_target_wall_s"]),
            ("least pipeline / floor", lambda c: c["least_ratio"]),
        ],
        note="The parts, CPU s (µs an order): "
        + "; ".join(parts)
        + ". The floor: the same orders loaded with COPY and totalled per customer in one statement, as "
        "`make bench-pipeline` measures it.",
        command=None if args.orders == 100_000 else f"uv run python -m bench.stack --orders {args.orders}",
        section="## The card's stack alone (`make bench-stack`)\n\nWhat validating each order with pydantic "
        "and carrying it across the two topics every order crosses (kafka-python's producer and consumer, "
        "the broker, parsing the event) costs, with nothing stored and no one resolved: the least CPU any "
        "pipeline on this stack needs, and on two cores the least wall time; then the same with the events "
        "decoded as the services decode them (validated into their models).",
    )
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report goes to stdout


if __name__ == "__main__":
    main()
