"""`make bench-ingest`: generated orders (and the real Olist extract) through the batch API into Kafka.

Starts the ingest service as its own process on PostgreSQL (`clientela_ingest_bench`) with fresh Kafka
topics, posts the orders in batches of 1,000 from 8 concurrent clients (`--clients`), and measures:
- accepted: orders per second over HTTP until the last batch is answered (durable in PostgreSQL),
- published: orders per second until the relay has published every outbox row to Kafka,
- the ingest process's CPU time and peak RSS.
The generated case runs three times (`--runs`), each on a fresh database: the table shows the run with the
median orders/s accepted, the JSON every run's figures (runs of the same code have differed by a fifth in
one hour). Writes bench/results/ingest.json and refreshes the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from kafka.admin import KafkaAdminClient

from bench import report
from bench.report import ROOT
from cli.generate import generate
from shared.db import make_engine
from shared.migrations import upgrade
from shared.topics import ALL_TOPICS, ensure_topics

PG = os.environ.get("CLIENTELA_BENCH_PG", "postgresql+psycopg://clientela:clientela@127.0.0.1:5432")
log = logging.getLogger("bench")
KAFKA = os.environ.get("CLIENTELA_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
CACHE = Path(os.environ.get("CLIENTELA_CACHE", Path.home() / ".cache" / "clientela")) / "bench"
OLIST_SUBSET = ROOT.parent / "shared" / "data" / "olist" / "subset_8135_orders"
ADMIN = "bench-admin-token"
TICKS = os.sysconf("SC_CLK_TCK")
DATABASE = "clientela_ingest_bench"  # the benchmark's own, dropped and created again for every run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (uvicorn's worker processes), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def machine_busy_seconds(proc_stat: str) -> float:
    """Non-idle CPU seconds of the whole machine since boot, from /proc/stat's `cpu` line."""
    fields = [int(v) for v in proc_stat.splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / TICKS


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (FileNotFoundError, IndexError):
            continue
    return total / TICKS


def infra_cpu_seconds(databases: str) -> dict[str, float]:
    """CPU seconds so far of the PostgreSQL backends serving `databases` (their process title names the
    database) and of the Kafka broker (`java`)."""
    found = {"postgres": 0.0, "kafka": 0.0}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, rest = stat.read_text().rsplit(")", 1)
            title = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue
        name, fields = head.split("(", 1)[1], rest.split()
        used = (int(fields[11]) + int(fields[12])) / TICKS
        if name == "postgres" and databases in title:
            found["postgres"] += used
        elif name == "java" and "kafka.Kafka" in title:
            found["kafka"] += used
    return found


def peak_rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return round(total / 1024, 1)


def reset_database(url: str) -> None:
    admin = sa.create_engine(PG + "/postgres", isolation_level="AUTOCOMMIT")
    name = url.rsplit("/", 1)[1]
    # An autovacuum worker may still be on the old database (FORCE may not end it: seen for over 10 s after
    # a 100,000-order run), so the drop is tried again for a minute.
    for attempt in range(120):
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            break
        except sa.exc.DBAPIError:
            if attempt == 119:
                raise
            time.sleep(0.5)
    admin.dispose()


def migrated_database(url: str, service: str) -> sa.Engine:
    """A fresh database at `url` with `service`'s migrations applied, and an engine on it (the caller
    disposes of it): what a benchmark that runs a service's code in its own process starts from."""
    reset_database(url)
    upgrade(ROOT / "services" / service, url)
    return make_engine(url)


@dataclass
class Service:
    """A service started as a process by a benchmark."""

    name: str
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_service(
    name: str,
    database_url: str,
    prefix: str,
    log: Path,
    *,
    ready_s: float = 90,
    workers_only: bool = False,
    **env: str,
) -> Service:
    """`python -m services.<name>` on a free port with its own database and the benchmark's topic prefix
    (plus `env`), once it answers /readyz. `workers_only`: its Kafka consumers and relay without the API
    (`python -m services.<name>.consumer`), once its metrics answer on the port (`url` is theirs)."""
    port = free_port()
    upper = name.upper()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith((f"{upper}_", "CLIENTELA_"))},
        f"{upper}_DATABASE_URL": database_url,
        f"{upper}_PORT": str(port),
        **({"CLIENTELA_METRICS_PORT": str(port)} if workers_only else {}),
        "CLIENTELA_TOPIC_PREFIX": prefix,
        "CLIENTELA_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "CLIENTELA_ADMIN_TOKEN": ADMIN,
        "CLIENTELA_LOG_LEVEL": "WARNING",
        **env,
    }
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", f"services.{name}.consumer" if workers_only else f"services.{name}"],
        cwd=ROOT,
        env=environment,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/{'metrics' if workers_only else 'readyz'}", timeout=1).status_code == 200:
                return Service(name, process, url)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{name} did not become ready; see {log}")


def start_ingest(database_url: str, prefix: str, web_workers: int, log: Path) -> Service:
    return start_service(
        "ingest",
        database_url,
        prefix,
        log,
        ready_s=60,
        INGEST_WEB_WORKERS=str(web_workers),
        INGEST_IMPORT_DIR=str(CACHE / "imports"),
    )


def orders_file(count: int, seed: int) -> Path:
    folder = CACHE / f"generated-{count}-{seed}"
    if not (folder / "orders.jsonl").exists():
        shutil.rmtree(folder, ignore_errors=True)
        generate(count, seed, folder)
    return folder / "orders.jsonl"


def batches_of(lines: list[bytes], size: int) -> list[bytes]:
    return [b'{"items":[' + b",".join(lines[i : i + size]) + b"]}" for i in range(0, len(lines), size)]


def unpublished(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM outbox_message WHERE published_at IS NULL")
            ).scalar_one()
        )


def run_case(name: str, lines: list[bytes], args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    database_url = f"{PG}/{DATABASE}"
    reset_database(database_url)
    log = CACHE / f"ingest-{name}.log"
    ingest = start_ingest(database_url, prefix, args.web_workers, log)
    engine = sa.create_engine(database_url)
    try:
        key = httpx.post(
            f"{ingest.url}/v1/tenants", json={"name": "bench"}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        key.raise_for_status()
        headers = {"Authorization": f"Bearer {key.json()['api_key']}", "Content-Type": "application/json"}
        bodies = batches_of(lines, args.batch)
        pids = proc_tree(ingest.process.pid)
        cpu_before = cpu_seconds(pids)
        infra_before = infra_cpu_seconds(DATABASE)
        machine_before = machine_busy_seconds(Path("/proc/stat").read_text())
        client_before = time.process_time()
        outcomes: dict[str, int] = {}
        lock = threading.Lock()

        def post(body: bytes, client: httpx.Client) -> None:
            response = client.post("/v1/orders:batch", content=body, headers=headers)
            response.raise_for_status()
            result = response.json()
            with lock:
                for field in ("accepted", "updated", "duplicates", "stale", "rejected"):
                    outcomes[field] = outcomes.get(field, 0) + result[field]

        clients = [httpx.Client(base_url=ingest.url, timeout=120) for _ in range(args.clients)]
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda ib: post(ib[1], clients[ib[0] % len(clients)]), enumerate(bodies)))
        accepted_s = time.perf_counter() - started
        machine_accepted = machine_busy_seconds(Path("/proc/stat").read_text()) - machine_before
        infra = {name: used - infra_before[name] for name, used in infra_cpu_seconds(DATABASE).items()}
        client_cpu = time.process_time() - client_before
        while unpublished(engine):
            time.sleep(0.05)
        published_s = time.perf_counter() - started
        for client in clients:
            client.close()
        pids = proc_tree(ingest.process.pid)
        cpu = cpu_seconds(pids) - cpu_before
        rss = peak_rss_mb(pids)
    finally:
        engine.dispose()
        ingest.stop()
    return {
        "case": name,
        "orders": len(lines),
        "batch_size": args.batch,
        "clients": args.clients,
        "web_workers": args.web_workers,
        "outcomes": outcomes,
        "accepted_seconds": round(accepted_s, 2),
        "accepted_per_s": round(len(lines) / accepted_s),
        "published_seconds": round(published_s, 2),
        "published_per_s": round(len(lines) / published_s),
        "ingest_cpu_seconds": round(cpu, 1),
        "ingest_peak_rss_mb": rss,
        # Until the last batch was answered: the whole machine (ingest, PostgreSQL, the broker, the
        # benchmark's clients) and the clients alone.
        "machine_cpu_seconds_accepted": round(machine_accepted, 1),
        "client_cpu_seconds": round(client_cpu, 1),
        # Until the last batch was answered: the PostgreSQL backends of the benchmark's database and the
        # broker (which also serves the relay's sends).
        "postgres_cpu_seconds_accepted": round(infra["postgres"], 1),
        "kafka_cpu_seconds_accepted": round(infra["kafka"], 1),
    }


RUN_FIGURES = (
    "accepted_per_s",
    "published_per_s",
    "ingest_cpu_seconds",
    "machine_cpu_seconds_accepted",
    "postgres_cpu_seconds_accepted",
)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median orders/s accepted (the lower of the two middle ones of an even number),
    with every run's figures in `runs`: runs of the same code have differed by a fifth in one hour."""
    ordered = sorted(runs, key=lambda run: run["accepted_per_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["runs"] = [{figure: run[figure] for figure in RUN_FIGURES} for run in runs]
    return chosen


def olist_lines() -> list[bytes]:
    """The Olist extract as canonical orders, through the importer's own join."""
    import tempfile

    from services.ingest import importers

    names = {role: OLIST_SUBSET / f"{stem}.csv.gz" for role, stem in importers.OLIST_FILES.items()}
    with tempfile.TemporaryDirectory() as tmp:
        return [orjson.dumps(row) for _, row in importers.read_olist(names, Path(tmp))]


def drop_topics(prefix: str) -> None:
    """Delete a benchmark's topics (`prefix` + every topic name) once it is done with them: left behind,
    they kept every run's orders on the broker (880 topics, about 10 GB after eighty ingest runs)."""
    admin = KafkaAdminClient(bootstrap_servers=KAFKA, client_id="bench")
    try:
        existing = set(admin.list_topics())
        mine = [t.full(prefix) for t in ALL_TOPICS if t.full(prefix) in existing]
        if mine:
            admin.delete_topics(mine)
    except Exception:  # never fail a measured run for its leftovers
        log.warning("could not delete the topics under %s", prefix)
    finally:
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1000)
    # Enough requests in flight to keep both cores busy: with 4, each web worker has two, and whenever both
    # wait (PostgreSQL, a concurrent batch holding another version of one of their orders) its core idles.
    # 4 clients measured 9,317 to 10,408 orders/s and 8 measured 10,295 to 10,955, alternated in one hour.
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="runs of the generated case (the median is kept)")
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    ensure_topics(KAFKA, prefix)
    generated = orders_file(args.orders, args.seed).read_bytes().splitlines()[: args.orders]
    try:
        cases = [
            median_run([run_case("generated", generated, args, prefix) for _ in range(args.runs)]),
            run_case("olist-extract", olist_lines(), args, prefix),
        ]
    finally:
        drop_topics(prefix)
    results = report.publish(
        "ingest",
        cases,
        columns=[
            ("case", lambda c: c["case"]),
            ("orders", lambda c: c["orders"]),
            ("accepted/s", lambda c: c["accepted_per_s"]),
            ("published/s", lambda c: c["published_per_s"]),
            ("ingest CPU s", lambda c: c["ingest_cpu_seconds"]),
            ("peak RSS MB", lambda c: c["ingest_peak_rss_mb"]),
        ],
        note=f"Batches of {args.batch}, {args.clients} clients, {args.web_workers} web worker(s). The "
        f"generated case is the median of {args.runs} runs (accepted/s: "
        + ", ".join(f"{run['accepted_per_s']:,}" for run in cases[0]["runs"])
        + "). Target: ≥ 10,000 orders/s accepted.",
        section="## Ingest (`make bench-ingest`)",
        command=None
        if (args.orders, args.runs) == (100_000, 3)
        else f"uv run python -m bench.ingest --orders {args.orders} --runs {args.runs}",
    )
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report goes to stdout


if __name__ == "__main__":
    main()
