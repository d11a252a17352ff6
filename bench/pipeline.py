"""`make bench-pipeline`: orders posted over HTTP until every profile and segment membership is final,
and the floor: the same orders loaded with COPY and summed per customer in one SQL statement.

The three services run as processes (`python -m services.<name>`, one each, as `make run` starts them)
on PostgreSQL databases of their own (`clientela_<service>_pipeline`), with topics and consumer groups
under a fresh prefix. A tenant is created and two segments are defined before the run (`buyers`:
orders_count >= 1; `vip`: total_spent >= 1000.00). The orders (generated ones, `clientela generate
--orders N --seed 1`, the first N lines as bench.ingest takes them, so later versions of some orders are
included; and the real Olist extract, joined by the Olist importer) are posted to `POST /v1/orders:batch`
in batches of 1,000 from 4 concurrent clients. With `--scaled`, the largest generated case runs a second
time with the profile service scaled as deploy/README.md scales it: a second process of its consumers
(`python -m services.profile.consumer`), a member of the same consumer groups.

*Final* is the first moment all of these hold, checked in this order every 0.2 s:
1. every batch is answered, and ingest's outbox backlog is 0 (`clientela_outbox_backlog`): every order
   event is in Kafka;
2. the profile records consumer's group has committed, on every partition of its topics, the partition's
   end offset (its lag, exactly: offsets are committed after the database commit, while the
   `clientela_consumer_lag` gauge is refreshed only every 5 s), and profile's outbox backlog is 0;
3. the active profiles' summed orders_count and total_spent equal what the accepted orders add up to
   (each order's latest stored version, cancelled and returned orders left out, as the profile counts);
4. the segmentation profiles consumer's group has committed every end offset, segmentation's outbox
   backlog is 0, and each segment's size (its API) equals the number of active profiles its rule selects
   in the profile database.
Afterwards (not timed) the `clientela_consumer_lag` gauges of both services must read 0.

Reported per case: wall time and orders/s end to end, the time each stage became final, CPU seconds and
peak RSS of each service (summed over its processes), the machine's busy CPU seconds, and the floor
(COPY + one aggregation, in `clientela_floor_pipeline`) with the ratio pipeline / floor. Writes
bench/results/pipeline.json and the table in bench/README.md. While it measures it holds
/tmp/clientela-bench-busy (waiting first until no other benchmark holds it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import orjson
import psycopg
import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from bench import report
from bench.freshness import SECRET, eventually
from bench.ingest import (
    ADMIN,
    CACHE,
    KAFKA,
    PG,
    TICKS,
    Service,
    batches_of,
    cpu_seconds,
    drop_topics,
    machine_busy_seconds,
    olist_lines,
    orders_file,
    peak_rss_mb,
    proc_tree,
    reset_database,
    start_service,
)
from shared.records import OrderStatus
from shared.topics import BEHAVIOUR, CUSTOMERS, ORDERS, PRIVACY_REQUESTS, PROFILES, ensure_topics

log = logging.getLogger("bench.pipeline")

BUSY = Path(os.environ.get("CLIENTELA_BENCH_BUSY", "/tmp/clientela-bench-busy"))  # noqa: S108 - agreed name
SERVICES = ("ingest", "profile", "segmentation")
# The consumers whose lag says the pipeline is done: (service, consumer name, its topics).
PROFILE_RECORDS = ("profile", "records", (ORDERS, CUSTOMERS, BEHAVIOUR))
SEGMENTATION_PROFILES = ("segmentation", "profiles", (PROFILES, PRIVACY_REQUESTS))
# name -> (rule sent to segmentation, the same condition over the profile database's columns)
SEGMENTS: dict[str, tuple[dict[str, Any], str]] = {
    "buyers": ({"field": "orders_count", "op": "gte", "value": 1}, "orders_count >= 1"),
    "vip": ({"field": "total_spent", "op": "gte", "value": "1000.00"}, "total_spent_minor >= 100000"),
}
NOT_COUNTED = tuple(s.value for s in OrderStatus if not s.counts_as_spend)
STORED = ("accepted", "updated")  # outcomes that store a new version of the order
POLL_S = 0.2
COPY_CHUNK = 1 << 20
K = TypeVar("K")


# -- pure helpers ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What the accepted orders add up to, as the profile service counts them."""

    outcomes: dict[str, int]
    orders: int  # distinct orders stored
    counted: int  # of which the latest version counts (not cancelled or returned)
    spent_minor: int


def order_facts(line: bytes) -> tuple[str, int]:
    """(status, total in cents) of a canonical order line."""
    order = orjson.loads(line)
    return str(order["status"]), int(Decimal(order["total"]) * 100)


def expected_totals(
    facts: Sequence[tuple[str, int]], results: Sequence[tuple[str | None, str, int | None]]
) -> Expected:
    """From each line's (status, total) and the batch API's answer for it (record id, outcome, version):
    the orders stored, and the count and spend of those whose latest stored version counts."""
    latest: dict[str, tuple[int, int]] = {}  # order id -> (version, line)
    for line, (record_id, outcome, version) in enumerate(results):
        if outcome not in STORED or record_id is None or version is None:
            continue
        if record_id not in latest or version > latest[record_id][0]:
            latest[record_id] = (version, line)
    counted = [facts[line] for _, line in latest.values() if facts[line][0] not in NOT_COUNTED]
    return Expected(
        outcomes=dict(Counter(outcome for _, outcome, _ in results)),
        orders=len(latest),
        counted=len(counted),
        spent_minor=sum(total for _, total in counted),
    )


def metric_samples(text: str, name: str, **labels: str) -> list[float]:
    """The values of the samples called `name` (a counter's `_total` included) whose labels match."""
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def lag_of(ends: Mapping[K, int], committed: Mapping[K, int]) -> int:
    """Messages not yet committed, summed over the partitions (none committed: from offset 0)."""
    return sum(max(end - max(committed.get(tp, 0), 0), 0) for tp, end in ends.items())


def process_times(proc: Path = Path("/proc")) -> dict[int, tuple[str, float]]:
    """Every process's name and CPU seconds (its own, and its reaped children's), from /proc."""
    found = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            head, rest = stat.read_text().rsplit(")", 1)
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = rest.split()
        name = head.split("(", 1)[1]
        found[int(stat.parent.name)] = (name, sum(int(v) for v in fields[11:15]) / TICKS)
    return found


def other_cpu_seconds(
    before: Mapping[int, tuple[str, float]], after: Mapping[int, tuple[str, float]], mine: set[int]
) -> float:
    """CPU seconds spent between the two snapshots by processes that are not `mine`, PostgreSQL or the
    Kafka broker (`java`): other people's work on the machine (processes that started and ended in
    between count only when their parent is still there)."""
    return sum(
        max(seconds - (before[pid][1] if pid in before and before[pid][0] == name else 0.0), 0.0)
        for pid, (name, seconds) in after.items()
        if pid not in mine and name not in ("postgres", "java")
    )


def copy_text(lines: Sequence[bytes]) -> bytes:
    """JSON lines as the body of `COPY … FROM STDIN` (text format): one row a line, backslashes escaped
    (JSON escapes tabs and newlines inside strings, so the backslash is the only special character)."""
    return b"".join(line.replace(b"\\", b"\\\\") + b"\n" for line in lines)


FLOOR_TABLE = "CREATE TABLE floor_order (id bigserial PRIMARY KEY, doc jsonb NOT NULL)"
FLOOR_COPY = "COPY floor_order (doc) FROM STDIN"


def floor_sql() -> str:
    """One statement: each order's latest version (the later `updated_at`, else the later line, as ingest
    versions them), cancelled and returned left out, summed per customer key: the strongest identifier
    the order carries (document digits, the source's customer id, the e-mail, the phone digits), without
    identity resolution."""
    excluded = ", ".join(f"'{status}'" for status in NOT_COUNTED)
    return f"""
CREATE TABLE floor_customer AS
SELECT customer_key, count(*) AS orders_count, sum(total_minor) AS total_spent_minor
FROM (
    SELECT DISTINCT ON (doc->>'source', doc->>'external_id')
        doc->>'status' AS status,
        round((doc->>'total')::numeric * 100)::bigint AS total_minor,
        coalesce(
            nullif(regexp_replace(doc#>>'{{customer,document}}', '\\D', '', 'g'), ''),
            (doc->>'source') || ':' || (doc#>>'{{customer,external_id}}'),
            lower(btrim(doc#>>'{{customer,email}}')),
            nullif(regexp_replace(doc#>>'{{customer,phone}}', '\\D', '', 'g'), '')
        ) AS customer_key
    FROM floor_order
    ORDER BY doc->>'source', doc->>'external_id', (doc->>'updated_at')::timestamptz DESC NULLS LAST, id DESC
) AS latest
WHERE status NOT IN ({excluded})
GROUP BY customer_key
"""  # noqa: S608 - built from constants only


@contextmanager
def exclusive(path: Path = BUSY, *, poll_s: float = 2.0) -> Iterator[None]:
    """Wait while another benchmark measures (`path` exists), then hold `path` until done."""
    waited = False
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            if not waited:
                log.info("waiting: %s exists (another benchmark is measuring)", path)
                waited = True
            time.sleep(poll_s)
    os.write(fd, f"{os.getpid()} bench\n".encode())
    os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


# -- the pipeline as processes -----------------------------------------------------------------------------


class Offsets:
    """Exact consumer-group lag from the broker: end offsets minus committed offsets."""

    def __init__(self) -> None:
        self.admin = KafkaAdminClient(bootstrap_servers=KAFKA, client_id="bench-pipeline")
        self.consumer = KafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)

    def lag(self, group: str, topics: Sequence[str]) -> int:
        partitions = [
            TopicPartition(t, p) for t in topics for p in self.consumer.partitions_for_topic(t) or ()
        ]
        found = self.admin.list_group_offsets({group: partitions}).get(group, {})
        committed = {tp: meta.offset for tp, meta in found.items()}  # -1: nothing committed yet
        return lag_of(self.consumer.end_offsets(partitions), committed)

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


@dataclass
class Pipeline:
    """The three services as processes, their own databases (`clientela_<service>_<tag>`), topics and
    consumer groups under a fresh prefix, one tenant, and `SEGMENTS` defined. Use as a context manager."""

    tag: str
    env: dict[str, str] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: f"pipe-{uuid.uuid4().hex[:8]}")
    tenant_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    segment_ids: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)  # a service's env on top of `env`
    workers: dict[str, Service] = field(default_factory=dict)  # consumers run apart from their API (`split`)
    extra: dict[str, list[Service]] = field(default_factory=dict)  # more consumer processes (`add_consumers`)

    def database(self, service: str) -> str:
        return f"{PG}/clientela_{service}_{self.tag}"

    def __enter__(self) -> Pipeline:
        ensure_topics(KAFKA, f"{self.prefix}.")
        try:
            for name in SERVICES:
                reset_database(self.database(name))
                self.services[name] = self._start(name, CACHE / f"{self.tag}-{name}.log")
            self._tenant()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.profile_db = sa.create_engine(self.database("profile"))
        return self

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "profile_db"):
            self.profile_db.dispose()
        extra = [service for started in self.extra.values() for service in started]
        for service in [*self.services.values(), *self.workers.values(), *extra]:
            service.stop()
        drop_topics(f"{self.prefix}.")

    def _start(self, name: str, log_file: Path, *, workers_only: bool = False) -> Service:
        return start_service(
            name,
            self.database(name),
            f"{self.prefix}.",
            log_file,
            workers_only=workers_only,
            CLIENTELA_SECRET_KEY=SECRET,
            CLIENTELA_CONSUMER_GROUP_PREFIX=self.prefix,
            # only strings: `ready_s` and `workers_only` are not among them
            **cast(dict[str, Any], self.env | self.overrides.get(name, {})),
        )

    def split(self, name: str, web_workers: int) -> None:
        """Run the service as deployed at scale (deploy/README.md): its API alone in `web_workers` uvicorn
        processes (`CLIENTELA_RUN_WORKERS=false`, as that many replicas would be) and its consumers and
        relay in a process of their own (`python -m services.<name>.consumer`), on the same database."""
        self.services.pop(name).stop()
        self.workers[name] = self._start(name, CACHE / f"{self.tag}-{name}-workers.log", workers_only=True)
        self.overrides[name] = {
            "CLIENTELA_RUN_WORKERS": "false",
            f"{name.upper()}_WEB_WORKERS": str(web_workers),
        }
        self.services[name] = self._start(name, CACHE / f"{self.tag}-{name}-api.log")

    def add_consumers(self, name: str, count: int) -> None:
        """`count` more processes of the service's consumers and relay (`python -m services.<name>.consumer`):
        members of the same consumer groups, as scaled replicas are (deploy/README.md). The partitions are
        shared among them; the relays take turns (one per database publishes at a time)."""
        for number in range(count):
            log_file = CACHE / f"{self.tag}-{name}-consumers-{number + 2}.log"
            self.extra.setdefault(name, []).append(self._start(name, log_file, workers_only=True))

    def processes(self, name: str) -> list[int]:
        """The pids of the service's processes: its API's (uvicorn's workers included), its consumers'."""
        started = [self.services[name], *([self.workers[name]] if name in self.workers else [])]
        return [
            pid for service in [*started, *self.extra.get(name, [])] for pid in proc_tree(service.process.pid)
        ]

    def restart(self, name: str) -> None:
        """Stop the service's process (and its consumers' one, once `split`) and start a new one on the same
        database (another port; its log in a new file)."""
        stamp = time.strftime("%H%M%S")
        self.services.pop(name).stop()
        if name in self.workers:  # split: its consumers' process too
            self.workers.pop(name).stop()
            self.workers[name] = self._start(
                name, CACHE / f"{self.tag}-{name}-workers-{stamp}.log", workers_only=True
            )
        self.services[name] = self._start(name, CACHE / f"{self.tag}-{name}-{stamp}.log")

    def url(self, service: str) -> str:
        return self.services[service].url

    def _tenant(self) -> None:
        created = httpx.post(
            f"{self.url('ingest')}/v1/tenants",
            json={"name": "bench"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        created.raise_for_status()
        self.tenant_id = created.json()["id"]
        self.headers = {"Authorization": f"Bearer {created.json()['api_key']}"}

        def key_works() -> None:
            for service, path in (("profile", "/v1/profiles"), ("segmentation", "/v1/segments")):
                assert httpx.get(f"{self.url(service)}{path}", headers=self.headers).status_code == 200

        eventually(key_works)
        for name, (rule, _) in SEGMENTS.items():
            segment = httpx.post(
                f"{self.url('segmentation')}/v1/segments",
                json={"name": name, "rule": rule},
                headers=self.headers,
            )
            segment.raise_for_status()
            self.segment_ids[name] = segment.json()["id"]

        def evaluated() -> None:
            for segment_id in self.segment_ids.values():
                found = httpx.get(
                    f"{self.url('segmentation')}/v1/segments/{segment_id}", headers=self.headers
                )
                assert (found.json().get("evaluation") or {}).get("status") == "done"

        eventually(evaluated)
        time.sleep(2)  # the empty tenant's first traits refresh, scheduled when its replica arrived

    # -- what the services say -------------------------------------------------------------------------
    def metrics(self, service: str) -> str:
        """The service's metrics: its consumers' process's once `split`, else its API's."""
        where = self.workers[service].url if service in self.workers else self.url(service)
        return httpx.get(f"{where}/metrics", timeout=30).text

    def backlog(self, service: str) -> float:
        return sum(metric_samples(self.metrics(service), "clientela_outbox_backlog"))

    def lag_gauges(self, service: str) -> float:
        return sum(metric_samples(self.metrics(service), "clientela_consumer_lag"))

    def profile_sums(self) -> tuple[int, int, int]:
        """(active profiles, summed orders_count, summed total_spent in cents)."""
        with self.profile_db.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT count(*), coalesce(sum(orders_count), 0), coalesce(sum(total_spent_minor), 0) "
                    "FROM profile WHERE tenant_id = :t AND status = 'active'"
                ),
                {"t": uuid.UUID(self.tenant_id)},
            ).one()
        return int(row[0]), int(row[1]), int(row[2])

    def segment_sizes(self) -> dict[str, tuple[int, int]]:
        """Each segment's (size says segmentation, active profiles its rule selects in the profile db)."""
        sizes = {}
        with self.profile_db.connect() as conn:
            for name, (_, condition) in SEGMENTS.items():
                expected = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM profile WHERE tenant_id = :t AND status = 'active' "  # noqa: S608
                        f"AND {condition}"  # our own constant conditions
                    ),
                    {"t": uuid.UUID(self.tenant_id)},
                ).scalar_one()
                found = httpx.get(
                    f"{self.url('segmentation')}/v1/segments/{self.segment_ids[name]}", headers=self.headers
                )
                found.raise_for_status()
                sizes[name] = (int(found.json()["size"]), int(expected))
        return sizes

    def group(self, consumer: tuple[str, str, Any]) -> tuple[str, list[str]]:
        service, name, topics = consumer
        return f"{self.prefix}.{service}.{name}", [t.full(f"{self.prefix}.") for t in topics]

    # -- the measured run ------------------------------------------------------------------------------
    def load(self, lines: list[bytes], *, batch: int = 1000, clients: int = 4) -> dict[str, Any]:
        """Post `lines` and wait until final (see the module's docstring); the measurements."""
        facts = [order_facts(line) for line in lines]
        bodies = batches_of(lines, batch)
        pids = {name: self.processes(name) for name in self.services}
        cpu_before = {name: cpu_seconds(p) for name, p in pids.items()}
        machine_before = machine_busy_seconds(Path("/proc/stat").read_text())
        others_before = process_times()
        bench_before = time.process_time()
        offsets = Offsets()
        done = threading.Event()
        answers: list[list[tuple[str | None, str, int | None]]] = []
        stages: dict[str, float] = {}
        started = time.perf_counter()

        def post_all() -> None:
            try:
                answers.append(self._post(bodies, clients))
            finally:
                done.set()  # with no answers when posting failed

        poster = threading.Thread(target=post_all, daemon=True)
        poster.start()
        try:
            stages = self._wait_final(offsets, done, answers, facts, started, timeout_s=600 + len(lines) / 50)
        finally:
            offsets.close()
        wall = stages.get("segmentation", time.perf_counter() - started)
        cpu = {name: round(cpu_seconds(p) - cpu_before[name], 1) for name, p in pids.items()}
        rss = {name: peak_rss_mb(p) for name, p in pids.items()}  # summed over its processes
        machine = machine_busy_seconds(Path("/proc/stat").read_text()) - machine_before
        mine = {os.getpid(), *(pid for p in pids.values() for pid in p)}
        others = other_cpu_seconds(others_before, process_times(), mine)
        bench_cpu = time.process_time() - bench_before
        poster.join()
        expected = expected_totals(facts, answers[0]) if answers else None
        lag_zero = self._gauges_zero()
        profiles, orders_count, spent = self.profile_sums()
        result: dict[str, Any] = {
            "orders": len(lines),
            "batch_size": batch,
            "clients": clients,
            "final": "segmentation" in stages,
            "outcomes": expected.outcomes if expected else None,
            "orders_stored": expected.orders if expected else None,
            "orders_counted": expected.counted if expected else None,
            "profiles": profiles,
            "profiles_orders_count": orders_count,
            "profiles_total_spent": f"{Decimal(spent) / 100:.2f}",
            "segment_sizes": {name: size for name, (size, _) in self.segment_sizes().items()},
            "stages_seconds": {k: round(v, 2) for k, v in stages.items()},
            "wall_seconds": round(wall, 2),
            "orders_per_s": round(len(lines) / wall),
            "cpu_seconds": cpu,
            "peak_rss_mb": rss,
            "machine_busy_cpu_seconds": round(machine, 1),
            "bench_client_cpu_seconds": round(bench_cpu, 1),
            "other_processes_cpu_seconds": round(others, 1),
            "lag_gauges_zero_after_final": lag_zero,
            "events": self._event_counts(),
        }
        return result

    def _post(self, bodies: list[bytes], clients: int) -> list[tuple[str | None, str, int | None]]:
        local = threading.local()
        opened: list[httpx.Client] = []
        headers = {**self.headers, "Content-Type": "application/json"}

        def post(body: bytes) -> list[tuple[str | None, str, int | None]]:
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = httpx.Client(base_url=self.url("ingest"), timeout=600)
                opened.append(client)
            response = client.post("/v1/orders:batch", content=body, headers=headers)
            response.raise_for_status()
            items = sorted(orjson.loads(response.content)["results"], key=lambda r: r["index"])
            return [(r["id"], r["status"], r["version"]) for r in items]

        try:
            with ThreadPoolExecutor(clients) as pool:
                return [answer for batch in pool.map(post, bodies) for answer in batch]
        finally:
            for client in opened:
                client.close()

    def _wait_final(
        self,
        offsets: Offsets,
        posted: threading.Event,
        answers: list[list[tuple[str | None, str, int | None]]],
        facts: list[tuple[str, int]],
        started: float,
        *,
        timeout_s: float,
    ) -> dict[str, float]:
        """Seconds from the first post to each stage's completion: `posted`, `ingest`, `profile`,
        `segmentation` (missing when not reached within `timeout_s`)."""
        stages: dict[str, float] = {}
        expected: Expected | None = None
        profile_group, segmentation_group = self.group(PROFILE_RECORDS), self.group(SEGMENTATION_PROFILES)
        progress_at = started
        while time.perf_counter() - started < timeout_s:
            now = time.perf_counter() - started
            if "posted" not in stages:
                if posted.is_set():
                    if not answers:
                        raise RuntimeError("posting failed; see the ingest log")
                    stages["posted"] = now
                    expected = expected_totals(facts, answers[0])
            elif "ingest" not in stages:
                if self.backlog("ingest") == 0:
                    stages["ingest"] = now
            elif "profile" not in stages:
                if offsets.lag(*profile_group) == 0 and self.backlog("profile") == 0:
                    _, orders_count, spent = self.profile_sums()
                    assert expected is not None
                    if (orders_count, spent) == (expected.counted, expected.spent_minor):
                        stages["profile"] = now
            elif (
                offsets.lag(*segmentation_group) == 0
                and self.backlog("segmentation") == 0
                and all(size == wanted for size, wanted in self.segment_sizes().values())
            ):
                stages["segmentation"] = now
                return stages
            if time.perf_counter() - progress_at > 30:
                progress_at = time.perf_counter()
                log.info(
                    "%.0f s: %s; profile lag %d, segmentation lag %d",
                    now,
                    ", ".join(stages) or "posting",
                    offsets.lag(*profile_group),
                    offsets.lag(*segmentation_group),
                )
            time.sleep(POLL_S)
        log.warning("not final after %.0f s: reached %s", timeout_s, list(stages))
        return stages

    def _gauges_zero(self, timeout_s: float = 15) -> bool:
        """Whether the services' own `clientela_consumer_lag` gauges (refreshed every 5 s) come to 0."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.lag_gauges(s) == 0 for s in ("profile", "segmentation")):
                return True
            time.sleep(0.5)
        return False

    def _event_counts(self) -> dict[str, dict[str, float]]:
        """Events each service published, and consumed (applied, duplicate), by topic suffix."""
        counts: dict[str, dict[str, float]] = {}
        for service in SERVICES:
            text, found = self.metrics(service), {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    topic = sample.labels.get("topic", "").removeprefix(f"{self.prefix}.")
                    if sample.name == "clientela_events_published_total":
                        found[f"published {topic}"] = sample.value
                    elif sample.name == "clientela_events_consumed_total":
                        key = f"consumed {topic} {sample.labels['outcome']}"
                        found[key] = found.get(key, 0) + sample.value
                    elif sample.name == "clientela_dead_letters_total":
                        found[f"dead-lettered {topic}"] = sample.value
            counts[service] = found
        return counts


# -- the floor ---------------------------------------------------------------------------------------------


def floor(lines: list[bytes]) -> dict[str, Any]:
    """COPY the orders into a table and compute the per-customer totals in one statement, timed."""
    url = f"{PG}/clientela_floor_pipeline"
    reset_database(url)
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TimeZone = 'America/Sao_Paulo'")  # zone-less timestamps are Brazil's time
        started = time.perf_counter()
        conn.execute(FLOOR_TABLE)
        with conn.cursor().copy(FLOOR_COPY) as copy:
            body = copy_text(lines)
            for at in range(0, len(body), COPY_CHUNK):
                copy.write(body[at : at + COPY_CHUNK])
        copied = time.perf_counter() - started
        conn.execute(floor_sql())  # built from constants only
        conn.commit()
        seconds = time.perf_counter() - started
        customers, orders, spent = conn.execute(
            "SELECT count(*), coalesce(sum(orders_count), 0), coalesce(sum(total_spent_minor), 0) "
            "FROM floor_customer"
        ).fetchone() or (0, 0, 0)
    return {
        "seconds": round(seconds, 2),
        "copy_seconds": round(copied, 2),
        "aggregate_seconds": round(seconds - copied, 2),
        "customers": int(customers),
        "orders_count": int(orders),
        "total_spent": f"{Decimal(spent) / 100:.2f}",
    }


def run_case(
    name: str, lines: list[bytes], args: argparse.Namespace, *, profile_processes: int = 1
) -> dict[str, Any]:
    log.info("%s: %d orders through the pipeline", name, len(lines))
    with Pipeline("pipeline") as pipeline:
        pipeline.add_consumers("profile", profile_processes - 1)
        case = {
            "case": name,
            "profile_processes": profile_processes,
            **pipeline.load(lines, batch=args.batch, clients=args.clients),
        }
    stored = {o for o in ("rejected", "suppressed") if (case["outcomes"] or {}).get(o)}
    if stored:
        log.warning("%s: some orders were not stored (%s); the floor loads every line", name, stored)
    log.info("%s: the floor (COPY + one aggregation)", name)
    case["floor"] = floor(lines)
    case["floor_matches"] = (case["floor"]["orders_count"], case["floor"]["total_spent"]) == (
        case["orders_counted"],
        case["profiles_total_spent"],
    )
    case["ratio"] = round(case["wall_seconds"] / case["floor"]["seconds"], 1)
    log.info("%s: %s", name, json.dumps({k: case[k] for k in ("wall_seconds", "orders_per_s", "ratio")}))
    return case


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, nargs="+", default=[10_000, 100_000], help="generated cases")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--olist", action=argparse.BooleanOptionalAction, default=True, help="the extract")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--scaled",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the largest generated case again with a second profile consumer process",
    )
    parser.add_argument(
        "--results",
        default="pipeline",
        help="bench/results/<name>.json and its own table in bench/README.md (e.g. for a 1,000,000 run)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("kafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    CACHE.mkdir(parents=True, exist_ok=True)
    cases = []
    with exclusive():
        for count in args.orders:
            lines = orders_file(count, args.seed).read_bytes().splitlines()[:count]
            cases.append(run_case(f"generated {count:,}", lines, args))
        if args.scaled and args.orders:
            count = max(args.orders)
            lines = orders_file(count, args.seed).read_bytes().splitlines()[:count]
            name = f"generated {count:,}, 2 profile processes"
            cases.append(run_case(name, lines, args, profile_processes=2))
        if args.olist:
            cases.append(run_case("olist-extract", olist_lines(), args))
    default = (args.orders, args.seed, args.olist, args.batch, args.clients, args.scaled) == (
        [10_000, 100_000],
        1,
        True,
        1000,
        4,
        False,
    )
    olist = ("" if args.olist else " --no-olist") + (" --scaled" if args.scaled else "")
    olist += "" if args.results == "pipeline" else f" --results {args.results}"
    command = f"uv run python -m bench.pipeline --orders {' '.join(map(str, args.orders))}{olist}"
    section = (
        "## Pipeline end to end (`make bench-pipeline`)\n\n" + _SECTION
        if args.results == "pipeline"
        else f"## Pipeline at scale (`{command}`)\n\nThe benchmark of *Pipeline end to end* on more orders: "
        "how time and memory grow with the tenant."
    )
    results = report.publish(
        args.results,
        cases,
        columns=[
            ("case", lambda c: c["case"]),
            ("orders", lambda c: c["orders"]),
            ("profiles", lambda c: c["profiles"]),
            ("wall (s)", lambda c: c["wall_seconds"] if c["final"] else f"not final ({c['wall_seconds']})"),
            ("orders/s", lambda c: c["orders_per_s"]),
            (
                "ingest / profile / segmentation CPU s",
                lambda c: " / ".join(str(v) for v in c["cpu_seconds"].values()),
            ),
            ("peak RSS MB", lambda c: " / ".join(str(v) for v in c["peak_rss_mb"].values())),
            ("machine CPU s", lambda c: c["machine_busy_cpu_seconds"]),
            ("others' CPU s", lambda c: c["other_processes_cpu_seconds"]),
            ("floor (s)", lambda c: c["floor"]["seconds"]),
            ("pipeline / floor", lambda c: c["ratio"]),
        ],
        note=f"Batches of {args.batch}, {args.clients} clients, one process per service (in the case that "
        "says so, the profile service with a second process of its consumers). Targets: 100,000 "
        "orders end to end in ≤ 10 s, pipeline / floor ≤ 3. Stage times, outcomes, events and segment sizes "
        f"are in bench/results/{args.results}.json.",
        command=None if default and args.results == "pipeline" else command,
        section=section,
    )
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report goes to stdout


_SECTION = (
    "The three services as processes (one each, as `make run` starts them) on fresh PostgreSQL "
    "databases and topics, two segments defined first; the orders posted to `POST /v1/orders:batch` "
    "in batches of 1,000 from 4 clients and timed until *final*: ingest's outbox empty, the profile "
    "and segmentation consumer groups' committed offsets at the end of their topics, both outboxes "
    "empty, the profiles' summed orders_count and total_spent equal to what the accepted orders add "
    "up to, and each segment's size equal to the profiles its rule selects. CPU s and peak RSS per "
    "service process (ingest / profile / segmentation); machine CPU s: the whole machine's busy time "
    "during the run (PostgreSQL, Kafka and the client included); others' CPU s: processes neither "
    "the benchmark's, PostgreSQL nor Kafka (someone else's work, 0 when alone). The floor: the same "
    "order lines "
    "COPYed into a jsonb table and one SQL statement computing orders count and total spent per "
    "customer key (each order's latest version, cancelled and returned left out, no identity "
    "resolution)."
)


if __name__ == "__main__":
    main()
