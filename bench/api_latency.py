"""`make bench-api`: profile reads by id and by e-mail at fixed request rates, with vegeta.

A tenant is loaded through the pipeline first (bench.pipeline: the three services as processes, on databases
`clientela_<service>_apilatency`): every order line of `clientela generate --orders 30000 --seed 1` (about
10,000 people), until final. Then the profile service runs as deploy/README.md deploys it at scale: its API
alone (`CLIENTELA_RUN_WORKERS=false`) in `--web-workers` uvicorn processes (2, as two replicas would be), its
consumers and relay in a process of their own (`python -m services.profile.consumer`); `--consumers-inside`:
as `make run` starts it instead (the consumers inside each API process, none apart). The API runs with its
per-key rate limit off (`PROFILE_RATE_LIMIT_PER_SECOND=0`: the setting is per service,
`CLIENTELA_RATE_LIMIT_PER_SECOND` does not exist) and its other settings as shipped: at most
`PROFILE_MAX_IN_FLIGHT` (32) requests handled at once, past which a request gets a 503 at once (counted as an
error, and apart as *shed*), reads audited in batches every 0.2 s, verified keys kept 5 s. Then vegeta (an
open-model load tool: requests leave at the asked rate whatever the answers do, as many in flight as needed)
sends, for `--seconds` at each rate, `GET /v1/profiles/{id}` over every active profile's id and `GET
/v1/profiles?email=` over the buyers' own e-mails (relay addresses left out), in a shuffled order, with a 10 s
timeout per request; the lowest rate first, both lookups at each rate, after a warm-up (5 s at 100/s). Before
each attack the profile service (its API's and its consumers' processes) must be at rest (below 30 % CPU for 4
s with no request, about 10 % normally, and answering 5 reads in a row within 200 ms each); one that does not
get there within 2 minutes (an overloaded process keeps working through, or stays stuck in, what it queued; a
consumers' process sometimes keeps a core busy with nothing to consume) has its processes replaced by new
ones, warmed up, and new ones that keep a core busy with no request are replaced again (up to 4). Reported per
(lookup, rate): requests sent per second, OK answers per second, errors (timeouts included), p50/p95/p99/max
computed from every request's latency (timed-out ones at 10 s; vegeta's own report is kept in the JSON), the
profile API's CPU during the attack (and per request sent), its consumers' process's, the service's at rest
before it, new processes started, the machine's busy CPU, and the CPU of other people's processes (neither the
benchmark's, PostgreSQL nor Kafka). vegeta is installed into the project's tools folder with `go install` when
missing. Writes bench/results/api.json and the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from kafka.admin import KafkaAdminClient

from bench import report
from bench.freshness import percentile
from bench.ingest import CACHE, KAFKA, cpu_seconds, machine_busy_seconds, orders_file, proc_tree
from bench.pipeline import (
    Pipeline,
    exclusive,
    metric_samples,
    other_cpu_seconds,
    process_times,
)
from shared.normalize import is_relay_email, normalize_email

log = logging.getLogger("bench.api")

VEGETA_MODULE = "github.com/tsenart/vegeta/v12"
VEGETA_VERSION = "v12.13.0"  # the latest on proxy.golang.org when this benchmark was written
TOOLS = Path(os.environ.get("CLIENTELA_TOOLS_BIN", CACHE.parent / "tools" / "bin"))
LOOKUPS = ("id", "email")
OUTCOMES = ("applied", "duplicate")
CORES = os.cpu_count() or 1
QUIET_BELOW = 30  # % CPU of the idle profile process (about 10 % normally: consumers and relay polling)


# -- pure helpers ------------------------------------------------------------------------------------------


def vegeta_targets(base_url: str, api_key: str, paths: Iterable[str]) -> bytes:
    """vegeta's JSON target format: one GET per line with the tenant's key."""
    header = {"Authorization": [f"Bearer {api_key}"]}
    return b"".join(
        orjson.dumps({"method": "GET", "url": f"{base_url}{path}", "header": header}) + b"\n"
        for path in paths
    )


def email_paths(lines: Iterable[bytes]) -> list[str]:
    """`/v1/profiles?email=…` for each distinct own e-mail of the orders' buyers (normalised as the
    service does; marketplace relay addresses and unreadable ones left out), in first-seen order."""
    seen: dict[str, None] = {}
    for line in lines:
        raw = (orjson.loads(line).get("customer") or {}).get("email")
        try:
            email = normalize_email(raw) if raw else None
        except ValueError:
            continue
        if email and not is_relay_email(email):
            seen.setdefault(email, None)
    return [str(httpx.URL("/v1/profiles", params={"email": email})) for email in seen]


def read_results(text: str) -> list[tuple[int, float, str]]:
    """(status code, latency in seconds, error) of every request, from `vegeta encode --to csv`
    (timestamp, code, latency in ns, bytes out, bytes in, error, body, attack, seq, method, url, headers)."""
    return [(int(row[1]), int(row[2]) / 1e9, row[5]) for row in csv.reader(io.StringIO(text)) if row]


def summarise(results: Sequence[tuple[int, float, str]], sent_s: float, total_s: float) -> dict[str, Any]:
    """Counts and exact latency percentiles (ms) of one attack. `sent_s`: how long requests were sent;
    `total_s`: until the last answer (or timeout). Timed-out requests count at their timeout."""
    latencies = [latency for _, latency, _ in results]
    ok = sum(1 for code, _, error in results if 200 <= code < 300 and not error)
    codes: dict[str, int] = {}
    for code, _, _ in results:
        codes[str(code)] = codes.get(str(code), 0) + 1

    def ms(p: float) -> float | None:
        return round(percentile(latencies, p) * 1000, 2) if latencies else None

    return {
        "requests": len(results),
        "sent_per_s": round(len(results) / sent_s) if sent_s else None,
        "ok_per_s": round(ok / total_s) if total_s else None,
        "ok": ok,
        "errors": len(results) - ok,
        "status_codes": codes,
        "p50_ms": ms(50),
        "p95_ms": ms(95),
        "p99_ms": ms(99),
        "max_ms": round(max(latencies) * 1000, 2) if latencies else None,
    }


# -- vegeta ------------------------------------------------------------------------------------------------


def vegeta() -> Path:
    """The vegeta binary: from PATH or the tools folder, else `go install`ed there (pinned version)."""
    found = shutil.which("vegeta") or (str(TOOLS / "vegeta") if (TOOLS / "vegeta").exists() else None)
    if found:
        return Path(found)
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("vegeta is missing and Go is not installed to build it")
    TOOLS.mkdir(parents=True, exist_ok=True)
    log.info("installing vegeta %s into %s", VEGETA_VERSION, TOOLS)
    subprocess.run(  # noqa: S603 - the Go toolchain, a pinned module
        [go, "install", f"{VEGETA_MODULE}@{VEGETA_VERSION}"],
        check=True,
        env={**os.environ, "GOBIN": str(TOOLS)},
    )
    return TOOLS / "vegeta"


def attack(binary: Path, targets: Path, rate: int, seconds: int, work: Path) -> dict[str, Any]:
    """`vegeta attack` at `rate` requests a second for `seconds`; every request's result and vegeta's own
    report."""
    out = work / f"results-{rate}.bin"
    command = [
        str(binary), "attack", "-format=json", f"-targets={targets}", f"-rate={rate}/1s",
        f"-duration={seconds}s", "-timeout=10s", "-max-body=0", f"-output={out}",
    ]  # fmt: skip
    subprocess.run(command, check=True)  # noqa: S603 - our own arguments
    encoded = subprocess.run(  # noqa: S603
        [str(binary), "encode", "--to=csv", str(out)], check=True, capture_output=True, text=True
    ).stdout
    own = subprocess.run(  # noqa: S603
        [str(binary), "report", "-type=json", str(out)], check=True, capture_output=True, text=True
    ).stdout
    out.unlink()
    return {"results": read_results(encoded), "vegeta": json.loads(own)}


# -- the benchmark -----------------------------------------------------------------------------------------


def api_pids(pipeline: Pipeline) -> list[int]:
    """The profile API's processes (uvicorn's workers included)."""
    return proc_tree(pipeline.services["profile"].process.pid)


def consumers_pids(pipeline: Pipeline) -> list[int]:
    """The profile consumers' process, once `split` (none while they run inside the API)."""
    workers = pipeline.workers.get("profile")
    return proc_tree(workers.process.pid) if workers is not None else []


def profile_pids(pipeline: Pipeline) -> list[int]:
    """The profile service's processes: its API's and its consumers' one."""
    return api_pids(pipeline) + consumers_pids(pipeline)


def idle_cpu_percent(pipeline: Pipeline, seconds: float = 5) -> int:
    """The profile service's CPU while nobody asks it anything (its consumers and relay still run)."""
    pids = profile_pids(pipeline)
    before = cpu_seconds(pids)
    time.sleep(seconds)
    return round(100 * (cpu_seconds(pids) - before) / seconds)


def quiet(pipeline: Pipeline, *, below: int = 30, within_s: float = 30) -> tuple[int, float]:
    """Wait until the profile process idles below `below` % CPU (two 2 s windows in a row), at most
    `within_s`; its last idle CPU and how long it took."""
    started, calm, idle = time.monotonic(), 0, 100
    while calm < 2 and time.monotonic() - started < within_s:
        idle = idle_cpu_percent(pipeline, 2)
        calm = calm + 1 if idle < below else 0
    return idle, round(time.monotonic() - started, 1)


def answers(pipeline: Pipeline, path: str, *, probes: int = 5, within_s: float = 0.2) -> bool:
    """Whether the profile process answers `probes` reads in a row, each within `within_s`."""
    try:
        for _ in range(probes):
            found = httpx.get(f"{pipeline.url('profile')}{path}", headers=pipeline.headers, timeout=2)
            if found.status_code != 200 or found.elapsed.total_seconds() > within_s:
                return False
    except httpx.HTTPError:
        return False
    return True


def at_rest(pipeline: Pipeline, probe: str, within_s: float) -> tuple[int, bool, float]:
    """Wait until the profile process is at rest: below `QUIET_BELOW` % CPU with no request, and
    answering `probe` promptly (a stalled process is quiet too). Its idle CPU %, whether it answers, and
    how long that took (at most about `within_s`)."""
    started = time.monotonic()
    while True:
        idle, _ = quiet(pipeline, below=QUIET_BELOW, within_s=max(within_s - (time.monotonic() - started), 4))
        answering = answers(pipeline, probe)
        if (idle < QUIET_BELOW and answering) or time.monotonic() - started >= within_s:
            return idle, answering, round(time.monotonic() - started, 1)
        time.sleep(2)


def ready(
    pipeline: Pipeline,
    probe: str,
    warm_up: Callable[[], dict[str, Any]],
    *,
    wait_s: float = 120,
    starts: int = 4,
) -> tuple[int, float, list[dict[str, Any]]]:
    """Bring the profile process to rest (`at_rest`) before an attack: the current one when it gets there
    within `wait_s` (an overloaded one keeps working through, or stays stuck in, the requests it queued),
    else a new one, warmed up with `warm_up` (up to `starts` new ones: a new process sometimes keeps a core
    busy with no request at all, some of its consumers never joining their groups). Returns its idle CPU %,
    how long that took, and each process given up (idle CPU, whether it answered, and the state of the
    profile consumer groups then)."""
    given_up: list[dict[str, Any]] = []
    idle, answering, rest_s = at_rest(pipeline, probe, wait_s)
    while not (idle < QUIET_BELOW and answering) and len(given_up) < starts:
        groups = profile_groups(pipeline)
        log.warning(
            "profile process not at rest (%d %% CPU, answering: %s, groups %s)", idle, answering, groups
        )
        given_up.append({"idle_cpu_percent": idle, "answering": answering, "groups": groups})
        pipeline.restart("profile")
        warm_up()
        idle, answering, rest_s = at_rest(pipeline, probe, 30)
    return idle, rest_s, given_up


def profile_groups(pipeline: Pipeline) -> dict[str, str]:
    """The profile service's consumer groups and their state on the broker (`Stable`, `Empty`, …)."""
    admin = KafkaAdminClient(bootstrap_servers=KAFKA, client_id="bench-api")
    try:
        mine = f"{pipeline.prefix}.profile."
        return {
            g["group_id"].removeprefix(mine): g["group_state"]
            for g in admin.list_groups()
            if g["group_id"].startswith(mine)
        }
    finally:
        admin.close()


def consumed(pipeline: Pipeline) -> dict[str, float] | None:
    """Events the profile process's consumers took since it started, by outcome (applied, duplicate)."""
    try:
        text = pipeline.metrics("profile")
    except httpx.HTTPError:
        return None
    return {o: sum(metric_samples(text, "clientela_events_consumed_total", outcome=o)) for o in OUTCOMES}


def measure(
    pipeline: Pipeline, lines: list[bytes], rates: list[int], seconds: int, web_workers: int = 1
) -> list[dict[str, Any]]:
    binary = vegeta()
    loaded_idle = idle_cpu_percent(pipeline, 10)
    with pipeline.profile_db.connect() as conn:
        ids = [
            str(row[0])
            for row in conn.execute(
                sa.text("SELECT id FROM profile WHERE status = 'active' ORDER BY id")
            ).all()
        ]
    rng = random.Random(1)  # noqa: S311 - a shuffle, not a secret
    paths = {"id": [f"/v1/profiles/{i}" for i in ids], "email": email_paths(lines)}
    for found in paths.values():
        rng.shuffle(found)
    api_key = pipeline.headers["Authorization"].removeprefix("Bearer ")
    sample = paths["email"][:50]
    hits = sum(
        1
        for p in sample
        if httpx.get(f"{pipeline.url('profile')}{p}", headers=pipeline.headers).json()["items"]
    )
    log.info("%d profiles, %d e-mails (%d of a sample of %d found)", len(ids), len(paths["email"]), hits, 50)
    log.info("the profile process that applied the orders: %d %% CPU idle", loaded_idle)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        targets = work / "targets.jsonl"
        lookup = LOOKUPS[0]

        def warm_up() -> dict[str, Any]:
            """5 s at 100/s, not in the table (the process's URL changes when it is started again)."""
            targets.write_bytes(vegeta_targets(pipeline.url("profile"), api_key, paths[lookup]))
            return summarise(attack(binary, targets, 100, 5, work)["results"], 5, 5)

        warmed = warm_up()
        for rate in rates:  # the lowest rates first: an overload leaves the process stuck for minutes
            for lookup in LOOKUPS:
                idle, quiet_s, given_up = ready(pipeline, paths[lookup][0], warm_up)
                targets.write_bytes(vegeta_targets(pipeline.url("profile"), api_key, paths[lookup]))
                events = consumed(pipeline)  # before: an overloaded process no longer answers /metrics
                pids, consumers = api_pids(pipeline), consumers_pids(pipeline)
                cpu, machine = cpu_seconds(pids), machine_busy_seconds(Path("/proc/stat").read_text())
                consumers_cpu = cpu_seconds(consumers)
                others = process_times()
                log.info("GET by %s at %d/s for %d s", lookup, rate, seconds)
                result = attack(binary, targets, rate, seconds, work)
                cpu = cpu_seconds(pids) - cpu
                consumers_cpu = cpu_seconds(consumers) - consumers_cpu
                machine = machine_busy_seconds(Path("/proc/stat").read_text()) - machine
                mine = {
                    os.getpid(),
                    *(p for s in pipeline.services.values() for p in proc_tree(s.process.pid)),
                    *(p for s in pipeline.workers.values() for p in proc_tree(s.process.pid)),
                }
                others_s = other_cpu_seconds(others, process_times(), mine)
                own = result["vegeta"]
                sent_s = own["duration"] / 1e9
                total_s = sent_s + own["wait"] / 1e9
                cases.append(
                    {
                        "lookup": lookup,
                        "rate": rate,
                        "seconds": seconds,
                        "targets": len(paths[lookup]),
                        **summarise(result["results"], sent_s, total_s),
                        "profile_cpu_percent": round(100 * cpu / total_s),
                        "profile_cpu_ms_per_request": round(1000 * cpu / max(len(result["results"]), 1), 2),
                        "profile_consumers_cpu_percent": round(100 * consumers_cpu / total_s)
                        if consumers
                        else None,
                        "web_workers": web_workers,
                        "profile_idle_cpu_percent": idle,
                        "quiet_after_s": quiet_s,
                        "new_profile_processes": len(given_up),
                        "processes_given_up": given_up,
                        "first_warm_up": warmed,
                        "profile_events_consumed": events,
                        "machine_busy_percent": round(100 * machine / total_s / CORES),
                        "other_processes_cpu_seconds": round(others_s, 1),
                        "loaded_process_idle_cpu_percent": loaded_idle,
                        "vegeta_report": {k: v for k, v in own.items() if k != "errors"}
                        | {"errors": (own.get("errors") or [])[:10]},
                        "email_sample_found": f"{hits}/{len(sample)}" if lookup == "email" else None,
                    }
                )
                log.info("%s", json.dumps({k: v for k, v in cases[-1].items() if k != "vegeta_report"}))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=30_000, help="clientela generate --orders (all lines)")
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument(
        "--web-workers", type=int, default=2, help="PROFILE_WEB_WORKERS: the API's uvicorn processes"
    )
    parser.add_argument(
        "--consumers-inside",
        action="store_true",
        help="as `make run` starts it: the consumers inside the API process (each of them), no process apart",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("kafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    CACHE.mkdir(parents=True, exist_ok=True)
    with exclusive():
        lines = orders_file(args.orders, 1).read_bytes().splitlines()
        env = {"PROFILE_RATE_LIMIT_PER_SECOND": "0"}
        if args.consumers_inside:
            env["PROFILE_WEB_WORKERS"] = str(args.web_workers)
        with Pipeline("apilatency", env=env) as pipeline:
            log.info("loading %d orders through the pipeline", len(lines))
            loaded = pipeline.load(lines)
            if not loaded["final"]:
                raise RuntimeError(f"the tenant did not load: {loaded['stages_seconds']}")
            if not args.consumers_inside:
                log.info("the profile API alone in %d processes, its consumers apart", args.web_workers)
                pipeline.split("profile", args.web_workers)
            cases = measure(pipeline, lines, args.rates, args.seconds, args.web_workers)
    for case in cases:
        case["profiles"] = loaded["profiles"]
        case["load_wall_seconds"] = loaded["wall_seconds"]
    default = (args.orders, args.rates, args.seconds, args.web_workers, args.consumers_inside) == (
        30_000,
        [100, 500, 1000],
        30,
        2,
        False,
    )
    rates = " ".join(map(str, args.rates))
    command = (
        f"uv run python -m bench.api_latency --orders {args.orders} --rates {rates} --seconds {args.seconds}"
        f" --web-workers {args.web_workers}{' --consumers-inside' if args.consumers_inside else ''}"
    )
    processes = "one process" if args.web_workers == 1 else f"{args.web_workers} uvicorn worker processes"
    processes += ", consumers inside" if args.consumers_inside else ", its consumers in a process apart"
    results = report.publish(
        "api",
        cases,
        columns=[
            (
                "lookup",
                lambda c: "`GET /v1/profiles/{id}`" if c["lookup"] == "id" else "`GET /v1/profiles?email=`",
            ),
            ("asked req/s", lambda c: c["rate"]),
            ("sent req/s", lambda c: c["sent_per_s"]),
            ("answered OK /s", lambda c: c["ok_per_s"]),
            ("requests", lambda c: c["requests"]),
            ("errors", lambda c: c["errors"]),
            ("shed (503)", lambda c: c["status_codes"].get("503", 0)),
            ("p50 (ms)", lambda c: c["p50_ms"]),
            ("p95 (ms)", lambda c: c["p95_ms"]),
            ("p99 (ms)", lambda c: c["p99_ms"]),
            ("max (ms)", lambda c: c["max_ms"]),
            ("profile CPU %", lambda c: c["profile_cpu_percent"]),
            ("CPU ms/req", lambda c: c["profile_cpu_ms_per_request"]),
            ("consumers CPU %", lambda c: c.get("profile_consumers_cpu_percent")),
            ("idle CPU %", lambda c: c["profile_idle_cpu_percent"]),
            ("machine CPU %", lambda c: c["machine_busy_percent"]),
            ("others' CPU s", lambda c: c["other_processes_cpu_seconds"]),
            ("new processes", lambda c: c["new_profile_processes"]),
        ],
        note=f"vegeta {VEGETA_VERSION} at a constant rate, {args.seconds} s per rate, against the profile "
        f"service's API ({processes}, `PROFILE_MAX_IN_FLIGHT` 32 each) holding "
        f"{loaded['profiles']:,} profiles; the three services, Kafka, PostgreSQL and vegeta share the 2 "
        "cores. Target: p99 ≤ 20 ms at 500 req/s.",
        command=None if default else command,
        section="## Profile API latency (`make bench-api`)\n\n"
        "A tenant loaded through the pipeline first (every order line of `clientela generate --orders "
        "30000 --seed 1`), then `GET /v1/profiles/{id}` over every profile and `GET /v1/profiles?email=` "
        "over the buyers' own e-mails, sent by vegeta at a constant rate (open model) with a 10 s "
        "timeout; percentiles over every request, timed-out ones at 10 s. The lowest rate first; before "
        "each attack the profile service (API and consumers) must be at rest (*idle CPU %*: below 30 % "
        "with no request, and answering 5 reads in a row within 200 ms each): one not at rest after 2 "
        "minutes (an overload leaves it working through, or stuck in, what it queued) has its processes "
        "replaced (*new processes*). *profile CPU %*: the API's processes; *consumers CPU %*: the "
        "consumers' process, apart.",
    )
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report goes to stdout


if __name__ == "__main__":
    main()
