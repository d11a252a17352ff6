"""`make bench-freshness`: order posted → profile updated → segment entered → webhook received.

The three services run as processes (one each, as `make run` starts them; PostgreSQL databases of their
own, `clientela_<service>_freshness`, topics and consumer groups under a prefix of their own for each rate,
the topics dropped afterwards); a webhook receiver on 127.0.0.1 verifies
each delivery with the `standardwebhooks` package and notes when it arrived (wall clock). A segment every
buyer enters (`orders_count >= 1`) and an endpoint for `segment.entered` are created, then vegeta (an
open-model load tool: requests leave at the asked rate whatever the answers do, as many in flight as
needed; bench.api_latency finds or `go install`s it) posts `--seconds` of orders of new customers to
`POST /v1/orders` at each rate, one order per request, from a targets file with a distinct body per
request. Order n has the total (1000 + n) / 100 BRL and its URL carries `?n=` (an order number, nothing
personal, ignored by the service): vegeta's results give each request's URL and the moment it left, and
the delivery's `traits.total_spent` tells which order it announces, so latency = arrival at the receiver
- the moment vegeta sent that order's request (a POST that times out, after 120 s, still counts when its
webhook arrives: the service goes on with it). Reported per rate: requests sent per second, POSTs answered
2xx and their p95, webhooks received, p50/p95/p99/max, the CPU of each service process, of the PostgreSQL
backends serving the benchmark's databases (those alive at the end), of Kafka and of vegeta, the
machine's busy CPU and other people's CPU, from the first request to the last webhook; and the time each
stage took per order, from the services' own timestamps (ingest stored the order, the profile consumer
recorded it, segmentation created the delivery, the receiver got it), with each outbox relay's wait
(created → published). While it measures it holds
/tmp/clientela-bench-busy (waiting first until no other benchmark holds it). Writes
bench/results/freshness.json and the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import resource
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import sqlalchemy as sa
from standardwebhooks import Webhook

from bench import report
from bench.ingest import (
    ADMIN,
    CACHE,
    KAFKA,
    PG,
    Service,
    cpu_seconds,
    drop_topics,
    infra_cpu_seconds,
    machine_busy_seconds,
    proc_tree,
    reset_database,
    start_service,
)
from shared.topics import ensure_topics

# bench.pipeline and bench.api_latency import this module (SECRET, eventually, percentile), so their
# helpers (the benchmark lock, machine CPU, vegeta) are imported where they are used.

SECRET = "bench-only-secret-key-0123456789abcdefghijklmnop"  # noqa: S105 - a throwaway bench database
SERVICES = ("ingest", "profile", "segmentation")
FRESHNESS_DATABASES = "_freshness"  # what the names of this benchmark's databases end with (`database`)
FIRST_TOTAL_MINOR = 1000  # order n costs (1000 + n) cents: unique, so the webhook's total_spent names it
STAGES = ("to ingest", "to profile", "to segmentation", "to receiver")
TIMEOUT_S = 120  # vegeta's per-request timeout: long enough to see how long an overloaded ingest takes
CORES = os.cpu_count() or 1

log = logging.getLogger("bench.freshness")


# -- pure helpers ------------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def order_total(n: int) -> str:
    """Order n's total, e.g. `10.00` for n = 0."""
    return f"{Decimal(FIRST_TOTAL_MINOR + n) / 100:.2f}"


def order_of_total(total: str | float | int) -> int:
    """The order whose total (a new customer's `total_spent`) this is."""
    return int(Decimal(str(total)) * 100) - FIRST_TOTAL_MINOR


def order_body(run: str, n: int) -> dict[str, Any]:
    """Order n of a run: a new customer (a run-unique e-mail) buying one item, paid."""
    total = order_total(n)
    return {
        "external_id": f"F-{run}-{n}", "source": "site", "status": "paid",
        "placed_at": "2026-11-20T10:00:00-03:00", "currency": "BRL", "total": total,
        "customer": {"email": f"fresh-{run}-{n}@example.com"},
        "items": [{"sku": "SKU-1", "name": "Item", "quantity": 1, "unit_price": total}],
    }  # fmt: skip


def order_targets(base_url: str, api_key: str, run: str, count: int) -> bytes:
    """vegeta's JSON target format: `POST /v1/orders?n=<n>` with order n's body (base64), for n < count."""
    header = {"Authorization": [f"Bearer {api_key}"], "Content-Type": ["application/json"]}
    return b"".join(
        orjson.dumps(
            {
                "method": "POST",
                "url": f"{base_url}/v1/orders?n={n}",
                "body": base64.b64encode(orjson.dumps(order_body(run, n))).decode(),
                "header": header,
            }
        )
        + b"\n"
        for n in range(count)
    )


def order_of_url(url: str) -> int | None:
    """The order number a target's URL carries (`?n=`), if any."""
    found = parse_qs(urlsplit(url).query).get("n")
    return int(found[0]) if found and found[0].isdigit() else None


_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def epoch_of(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 time with up to nanoseconds (Go's `time.RFC3339Nano`)."""
    found = _STAMP.fullmatch(stamp)
    if found is None:
        raise ValueError(f"not an RFC 3339 time: {stamp!r}")
    whole, fraction, zone = found.groups()
    base = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
    return base + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


@dataclass(frozen=True)
class Sent:
    """One request as vegeta reports it: when it left (epoch seconds), how long the answer took, the
    status code (0: none) and the error."""

    at: float
    latency_s: float
    code: int
    error: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300 and not self.error


def read_results(lines: Iterable[bytes]) -> dict[int, Sent]:
    """Each order's request, from `vegeta encode --to json` (one result a line), by the order number in
    its URL. Not by `seq`: vegeta numbers a hit before its worker takes the next target, so with several
    workers a result's `seq` need not be its target's line."""
    sent = {}
    for line in lines:
        if not line.strip():
            continue
        result = orjson.loads(line)
        n = order_of_url(result.get("url") or "")
        if n is not None:
            sent[n] = Sent(
                epoch_of(result["timestamp"]),
                result["latency"] / 1e9,
                int(result["code"]),
                result.get("error") or "",
            )
    return sent


def arrivals_by_order(arrived: Mapping[str, tuple[float, Mapping[str, Any]]]) -> dict[int, tuple[float, str]]:
    """(arrival, webhook id) of each order's `segment.entered`, from the receiver's deliveries by webhook id
    (the first one when an order were announced twice)."""
    found: dict[int, tuple[float, str]] = {}
    for message_id, (at, payload) in arrived.items():
        n = order_of_total(payload["data"]["traits"]["total_spent"])
        if n not in found or at < found[n][0]:
            found[n] = (at, message_id)
    return found


def latencies(sent: Mapping[int, Sent], arrived: Mapping[int, tuple[float, str]]) -> dict[int, float]:
    """Order posted → webhook received, in seconds, for every order sent whose webhook arrived: also those
    whose POST timed out at the client (the service went on with the request and stored the order)."""
    return {n: arrived[n][0] - s.at for n, s in sent.items() if n in arrived}


def order_of_external_id(external_id: str) -> int | None:
    """The order number of a run's `F-<run>-<n>`."""
    last = external_id.rsplit("-", 1)[-1]
    return int(last) if external_id.startswith("F-") and last.isdigit() else None


def stage_times(
    sent: Mapping[int, Sent],
    arrived: Mapping[int, tuple[float, str]],
    stored: Mapping[int, float],
    recorded: Mapping[int, float],
    created: Mapping[str, float],
) -> dict[str, list[float]]:
    """Per order that went all the way, the seconds each stage took, from the services' own timestamps
    (epoch seconds; a POST that timed out at the client still has them): ingest stored the order
    (`stored`, by order: the wait for and the work of the POST); the profile consumer recorded it
    (`recorded`, by order: the ingest relay, Kafka and the profile consumer); segmentation created the
    delivery (`created`, by webhook id: the profile relay, Kafka and the segmentation consumer); the
    receiver got it (the dispatcher and the HTTP request)."""
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for n, (at, message_id) in arrived.items():
        if n not in sent or n not in stored or n not in recorded or message_id not in created:
            continue
        stages["to ingest"].append(stored[n] - sent[n].at)
        stages["to profile"].append(recorded[n] - stored[n])
        stages["to segmentation"].append(created[message_id] - recorded[n])
        stages["to receiver"].append(at - created[message_id])
    return stages


def quantiles(values: list[float], digits: int = 3) -> dict[str, float | None]:
    """p50, p95, p99 and max, rounded."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    return {
        **{f"p{p}": round(percentile(values, p), digits) for p in (50, 95, 99)},
        "max": round(max(values), digits),
    }


# -- the services and the receiver -------------------------------------------------------------------------


def database(name: str) -> str:
    return f"{PG}/clientela_{name}{FRESHNESS_DATABASES}"


def start(name: str, prefix: str, log_file: Path) -> Service:
    reset_database(database(name))
    return start_service(
        name,
        database(name),
        f"{prefix}.",
        log_file,
        # Groups of their own: with the default prefix they would be shared with any other process using
        # it (tests, `make run`), whose joins and leaves rebalance them and fail their commits.
        CLIENTELA_CONSUMER_GROUP_PREFIX=prefix,
        CLIENTELA_SECRET_KEY=SECRET,
        SEGMENTATION_WEBHOOK_ALLOW_PRIVATE="true",  # the receiver is on 127.0.0.1
        # The per-key limit (200/s, burst 400, by default) would answer part of a 200/s run with 429s
        # whenever queued requests are handled in a burst: the pipeline is measured, not the limiter.
        INGEST_RATE_LIMIT_PER_SECOND="0",
    )


class Receiver:
    """A webhook receiver that verifies every delivery and keeps (arrival, payload) by webhook id; arrival
    on the wall clock (`time.time()`), as vegeta stamps its requests."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.arrived: dict[str, tuple[float, dict[str, Any]]] = {}
        self.invalid = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as receivers behind any web server answer

            def do_POST(self) -> None:
                at = time.time()
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    assert receiver.secret is not None
                    payload = Webhook(receiver.secret).verify(body, dict(self.headers.items()))
                except Exception:
                    with receiver.lock:
                        receiver.invalid += 1
                    self.send_response(400)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.arrived.setdefault(self.headers["webhook-id"], (at, payload))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return len(self.arrived)

    def close(self) -> None:
        self.server.shutdown()


def eventually(check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, httpx.HTTPError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def prepare(services: Mapping[str, Service], receiver: Receiver) -> str:
    """A tenant with the `buyers` segment and an endpoint for `segment.entered` at the receiver; its key."""
    ingest, profile, segmentation = (services[n].url for n in SERVICES)
    created = httpx.post(
        f"{ingest}/v1/tenants", json={"name": "bench"}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    created.raise_for_status()
    api_key = str(created.json()["api_key"])
    headers = {"Authorization": f"Bearer {api_key}"}

    def key_works() -> None:
        for url in (f"{profile}/v1/profiles", f"{segmentation}/v1/segments"):
            assert httpx.get(url, headers=headers).status_code == 200

    eventually(key_works)
    segment = httpx.post(
        f"{segmentation}/v1/segments",
        json={"name": "buyers", "rule": {"field": "orders_count", "op": "gte", "value": 1}},
        headers=headers,
    )
    segment.raise_for_status()
    endpoint = httpx.post(
        f"{segmentation}/v1/webhook-endpoints",
        json={"url": receiver.url, "event_types": ["segment.entered"]},
        headers=headers,
    )
    endpoint.raise_for_status()
    receiver.secret = endpoint.json()["secret"]
    return api_key


def epochs(sql: str, name: str) -> list[tuple[Any, float]]:
    """(key, epoch seconds) rows of `sql` (two columns: a key and a timestamp) on a service's database."""
    engine = sa.create_engine(database(name))
    try:
        with engine.connect() as conn:
            return [(key, at.timestamp()) for key, at in conn.execute(sa.text(sql)).all() if at is not None]
    finally:
        engine.dispose()


def relay_waits(name: str) -> dict[str, float | None]:
    """How long the service's outbox rows waited for its relay (created → published), in seconds."""
    engine = sa.create_engine(database(name))
    try:
        with engine.connect() as conn:
            waits = [
                float(row[0])
                for row in conn.execute(
                    sa.text(
                        "SELECT EXTRACT(EPOCH FROM published_at - created_at) FROM outbox_message "
                        "WHERE published_at IS NOT NULL"
                    )
                ).all()
            ]
    finally:
        engine.dispose()
    return {"rows": len(waits), **quantiles(waits)}


def wait_for_webhooks(
    receiver: Receiver, expected: int, *, quiet_s: float = 20, within_s: float = 300
) -> None:
    """Until `expected` webhooks arrived, none arrived for `quiet_s`, or `within_s` passed."""
    deadline, last, seen = time.monotonic() + within_s, time.monotonic(), receiver.count()
    while seen < expected and time.monotonic() - last < quiet_s and time.monotonic() < deadline:
        time.sleep(0.2)
        if receiver.count() > seen:
            seen, last = receiver.count(), time.monotonic()


def attack(
    targets: Path, rate: int, seconds: int, work: Path
) -> tuple[dict[int, Sent], dict[str, Any], float]:
    """`vegeta attack` at `rate` requests a second for `seconds` over `targets`; each order's request,
    vegeta's own report and vegeta's CPU seconds."""
    from bench.api_latency import vegeta  # see the note on the imports

    binary = str(vegeta())
    out = work / f"results-{rate}.bin"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # the services are not reaped: only vegeta counts
    command = [
        binary, "attack", "-format=json", f"-targets={targets}", f"-rate={rate}/1s", f"-duration={seconds}s",
        f"-timeout={TIMEOUT_S}s", "-max-body=0", f"-output={out}",
    ]  # fmt: skip
    subprocess.run(command, check=True)  # noqa: S603 - our own arguments
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    encoded = subprocess.run(  # noqa: S603
        [binary, "encode", "--to=json", str(out)], check=True, capture_output=True
    ).stdout
    own = subprocess.run(  # noqa: S603
        [binary, "report", "-type=json", str(out)], check=True, capture_output=True, text=True
    ).stdout
    out.unlink()
    return read_results(encoded.splitlines()), json.loads(own), cpu


def run_case(rate: int, seconds: int) -> dict[str, Any]:
    from bench.pipeline import (  # see the note on the imports
        other_cpu_seconds,
        process_times,
    )

    services: dict[str, Service] = {}
    prefix = f"fresh-{uuid.uuid4().hex[:8]}"
    ensure_topics(KAFKA, f"{prefix}.")
    receiver = Receiver()
    try:
        for name in SERVICES:
            services[name] = start(name, prefix, CACHE / f"freshness-{rate}-{name}.log")
        api_key = prepare(services, receiver)
        count = rate * seconds
        run = uuid.uuid4().hex[:8]
        with tempfile.TemporaryDirectory() as tmp:
            targets = Path(tmp) / "targets.jsonl"
            targets.write_bytes(order_targets(services["ingest"].url, api_key, run, count))
            pids = {name: proc_tree(s.process.pid) for name, s in services.items()}
            cpu = {name: cpu_seconds(p) for name, p in pids.items()} | infra_cpu_seconds(FRESHNESS_DATABASES)
            machine = machine_busy_seconds(Path("/proc/stat").read_text())
            own_cpu, started, others = time.process_time(), time.time(), process_times()
            log.info("%d orders/s for %d s", rate, seconds)
            sent, vegeta_report, vegeta_cpu = attack(targets, rate, seconds, Path(tmp))
        wait_for_webhooks(receiver, len(sent))
        with receiver.lock:
            arrived = arrivals_by_order(receiver.arrived)
        ended = max([at for at, _ in arrived.values()], default=time.time())
        window_s = max(ended - started, 1e-9)
        machine = machine_busy_seconds(Path("/proc/stat").read_text()) - machine
        cpu = {name: cpu_seconds(p) - cpu[name] for name, p in pids.items()} | {
            name: used - cpu[name] for name, used in infra_cpu_seconds(FRESHNESS_DATABASES).items()
        }
        own_cpu = time.process_time() - own_cpu
        mine = {os.getpid(), *(p for tree in pids.values() for p in tree)}
        others_s = other_cpu_seconds(others, process_times(), mine)
        stored = {
            n: at
            for n, at in (
                (order_of_external_id(external_id), at)
                for external_id, at in epochs(
                    "SELECT external_id, received_at FROM inbound_record WHERE kind = 'order'", "ingest"
                )
            )
            if n is not None
        }
        recorded = {
            int(total) - FIRST_TOTAL_MINOR: at
            for total, at in epochs("SELECT total_minor, recorded_at FROM profile_order", "profile")
        }
        created = dict(
            epochs(
                "SELECT message_id, created_at FROM webhook_delivery WHERE event_type = 'segment.entered'",
                "segmentation",
            )
        )
        relays = {name: relay_waits(name) for name in ("ingest", "profile")}
    finally:
        receiver.close()
        for service in services.values():
            service.stop()
        drop_topics(f"{prefix}.")
    times = latencies(sent, arrived)
    accepted = sum(1 for s in sent.values() if s.ok)
    posts = [s.latency_s for s in sent.values()]
    codes: dict[str, int] = {}
    for s in sent.values():
        codes[str(s.code)] = codes.get(str(s.code), 0) + 1
    stages = stage_times(sent, arrived, stored, recorded, created)
    first = min((s.at for s in sent.values()), default=started)
    last = max((s.at for s in sent.values()), default=started)
    return {
        "rate": rate,
        "seconds": seconds,
        "orders": count,
        "sent": len(sent),
        "sent_per_s": round((len(sent) - 1) / (last - first)) if last > first else None,
        "accepted": accepted,
        "status_codes": codes,
        **{f"post_{k}_s": v for k, v in quantiles(posts).items()},
        "delivered": len(times),
        "invalid_signatures": receiver.invalid,
        **{f"{k}_s": v for k, v in quantiles(list(times.values())).items()},
        "stages_s": {stage: quantiles(values) for stage, values in stages.items()},
        "relay_wait_s": relays,
        "window_s": round(window_s, 1),
        "cpu_percent": {
            **{name: round(100 * used / window_s) for name, used in cpu.items()},
            "vegeta": round(100 * vegeta_cpu / window_s),
            "receiver": round(100 * own_cpu / window_s),
        },
        "machine_busy_percent": round(100 * machine / window_s / CORES),
        "other_processes_cpu_seconds": round(others_s, 1),
        "vegeta_report": {k: v for k, v in vegeta_report.items() if k != "errors"}
        | {"errors": (vegeta_report.get("errors") or [])[:10]},
    }


def main() -> None:
    from bench.api_latency import VEGETA_VERSION, vegeta  # see the note on the imports
    from bench.pipeline import exclusive

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("kafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    CACHE.mkdir(parents=True, exist_ok=True)
    vegeta()  # installed before anything is measured
    with exclusive():
        cases = []
        for rate in args.rates:
            cases.append(run_case(rate, args.seconds))
            log.info("%s", json.dumps({k: v for k, v in cases[-1].items() if k != "vegeta_report"}))
    rates = " ".join(map(str, args.rates))
    command = f"uv run python -m bench.freshness --rates {rates} --seconds {args.seconds}"
    results = report.publish(
        "freshness",
        cases,
        columns=[
            ("orders/s asked", lambda c: c["rate"]),
            ("sent /s", lambda c: c["sent_per_s"]),
            ("POST answered 2xx", lambda c: c["accepted"]),
            ("POST p95 (s)", lambda c: c["post_p95_s"]),
            ("webhooks received", lambda c: c["delivered"]),
            ("p50 (s)", lambda c: c["p50_s"]),
            ("p95 (s)", lambda c: c["p95_s"]),
            ("p99 (s)", lambda c: c["p99_s"]),
            ("max (s)", lambda c: c["max_s"]),
            ("ingest CPU %", lambda c: c["cpu_percent"]["ingest"]),
            ("profile CPU %", lambda c: c["cpu_percent"]["profile"]),
            ("segmentation CPU %", lambda c: c["cpu_percent"]["segmentation"]),
            ("PostgreSQL CPU %", lambda c: c["cpu_percent"]["postgres"]),
            ("Kafka CPU %", lambda c: c["cpu_percent"]["kafka"]),
            ("vegeta CPU %", lambda c: c["cpu_percent"]["vegeta"]),
            ("machine CPU %", lambda c: c["machine_busy_percent"]),
            ("others' CPU s", lambda c: c["other_processes_cpu_seconds"]),
        ],
        note=f"vegeta {VEGETA_VERSION} at a constant rate for {args.seconds} s per rate. Target: p95 ≤ 1 s "
        "at 200 orders/s. CPU from the first request to the last webhook: a service's % of one core, the "
        "machine's of all; *others' CPU s*: processes neither the benchmark's, PostgreSQL nor Kafka. The "
        "three services, Kafka, PostgreSQL, vegeta and the receiver share the 2 "
        "cores.",
        command=None if (args.rates, args.seconds) == ([50, 200], 30) else command,
        section="## Freshness (`make bench-freshness`)\n\nOrders of new customers sent by vegeta at a "
        "constant rate (open model), one `POST /v1/orders` each, to the three services running as "
        "processes; each order makes its customer enter a segment, and the `segment.entered` webhook "
        "(verified with `standardwebhooks`) is timed from the moment vegeta sent the order to its arrival "
        "at a receiver on 127.0.0.1.",
    )
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report goes to stdout


if __name__ == "__main__":
    main()
