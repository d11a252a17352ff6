"""`make bench-api`: profile reads by id and by e-mail at fixed request rates, with vegeta.

A tenant is loaded through the pipeline first (bench.pipeline: the three services as processes, on
databases `clientela_<service>_apilatency`): every order line of `clientela generate --orders 30000
--seed 1` (about 10,000 people), until final. The profile service runs as `make run` starts it (one
process), with its per-key rate limit off (`PROFILE_RATE_LIMIT_PER_SECOND=0`: the setting is per service,
`CLIENTELA_RATE_LIMIT_PER_SECOND` does not exist). Then vegeta (an open-model load tool: requests leave at
the asked rate whatever the answers do, as many in flight as needed) sends, for `--seconds` at each rate,
`GET /v1/profiles/{id}` over every active profile's id and `GET /v1/profiles?email=` over the buyers'
own e-mails (relay addresses left out), in a shuffled order, with a 10 s timeout per request. Each rate
is measured on a freshly started profile process (same database; an overloaded one stays stuck in the
requests it queued for minutes), warmed up for 5 s at 100/s and quiet again (below 30 % CPU for 4 s, at
most 90 s). Reported per (lookup, rate): requests sent per second, OK answers per second, errors
(timeouts included), p50/p95/p99/max computed from every request's latency (timed-out ones at 10 s;
vegeta's own report is kept in the JSON), the profile process's CPU during the attack and idle just
before it, and (in the JSON) the warm-up, the events its consumers took, and the idle CPU of the process
that applied the orders. vegeta is installed into the project's tools folder with `go install`
when missing. Writes bench/results/api.json and the table in bench/README.md.
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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from bench import report
from bench.freshness import percentile
from bench.ingest import CACHE, cpu_seconds, orders_file, proc_tree
from bench.pipeline import Pipeline, exclusive, metric_samples
from shared.normalize import is_relay_email, normalize_email

log = logging.getLogger("bench.api")

VEGETA_MODULE = "github.com/tsenart/vegeta/v12"
VEGETA_VERSION = "v12.13.0"  # the latest on proxy.golang.org when this benchmark was written
TOOLS = Path(os.environ.get("CLIENTELA_TOOLS_BIN", CACHE.parent / "tools" / "bin"))
LOOKUPS = ("id", "email")
OUTCOMES = ("applied", "duplicate")


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


def idle_cpu_percent(pipeline: Pipeline, seconds: float = 5) -> int:
    """The profile process's CPU while nobody asks it anything (its consumers and relay still run)."""
    pids = proc_tree(pipeline.services["profile"].process.pid)
    before = cpu_seconds(pids)
    time.sleep(seconds)
    return round(100 * (cpu_seconds(pids) - before) / seconds)


def quiet(pipeline: Pipeline, *, below: int = 30, within_s: float = 90) -> tuple[int, float]:
    """Wait until the profile process idles below `below` % CPU (two 2 s windows in a row), at most
    `within_s`; its last idle CPU and how long it took."""
    started, calm, idle = time.monotonic(), 0, 100
    while calm < 2 and time.monotonic() - started < within_s:
        idle = idle_cpu_percent(pipeline, 2)
        calm = calm + 1 if idle < below else 0
    return idle, round(time.monotonic() - started, 1)


def consumed(pipeline: Pipeline) -> dict[str, float]:
    """Events the profile process's consumers took since it started, by outcome (applied, duplicate)."""
    text = pipeline.metrics("profile")
    return {o: sum(metric_samples(text, "clientela_events_consumed_total", outcome=o)) for o in OUTCOMES}


def measure(pipeline: Pipeline, lines: list[bytes], rates: list[int], seconds: int) -> list[dict[str, Any]]:
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
        for lookup in LOOKUPS:
            for rate in rates:
                # Each rate on its own: an overloaded process stays stuck in what it queued for minutes.
                pipeline.restart("profile")
                targets.write_bytes(vegeta_targets(pipeline.url("profile"), api_key, paths[lookup]))
                warm = attack(binary, targets, 100, 5, work)  # warm-up, not in the table
                idle, quiet_s = quiet(pipeline)
                pids = proc_tree(pipeline.services["profile"].process.pid)
                cpu = cpu_seconds(pids)
                log.info("GET by %s at %d/s for %d s", lookup, rate, seconds)
                result = attack(binary, targets, rate, seconds, work)
                cpu = cpu_seconds(pids) - cpu
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
                        "profile_idle_cpu_percent": idle,
                        "quiet_after_s": quiet_s,
                        "warm_up": summarise(warm["results"], 5, 5),
                        "profile_events_consumed": consumed(pipeline),
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("kafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    CACHE.mkdir(parents=True, exist_ok=True)
    with exclusive():
        lines = orders_file(args.orders, 1).read_bytes().splitlines()
        with Pipeline("apilatency", env={"PROFILE_RATE_LIMIT_PER_SECOND": "0"}) as pipeline:
            log.info("loading %d orders through the pipeline", len(lines))
            loaded = pipeline.load(lines)
            if not loaded["final"]:
                raise RuntimeError(f"the tenant did not load: {loaded['stages_seconds']}")
            cases = measure(pipeline, lines, args.rates, args.seconds)
    for case in cases:
        case["profiles"] = loaded["profiles"]
        case["load_wall_seconds"] = loaded["wall_seconds"]
    default = (args.orders, args.rates, args.seconds) == (30_000, [100, 500, 1000], 30)
    rates = " ".join(map(str, args.rates))
    command = (
        f"uv run python -m bench.api_latency --orders {args.orders} --rates {rates} --seconds {args.seconds}"
    )
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
            ("p50 (ms)", lambda c: c["p50_ms"]),
            ("p95 (ms)", lambda c: c["p95_ms"]),
            ("p99 (ms)", lambda c: c["p99_ms"]),
            ("max (ms)", lambda c: c["max_ms"]),
            ("profile CPU %", lambda c: c["profile_cpu_percent"]),
            ("idle CPU %", lambda c: c["profile_idle_cpu_percent"]),
        ],
        note=f"vegeta {VEGETA_VERSION} at a constant rate, {args.seconds} s per rate, against the profile "
        f"service (one process) holding {loaded['profiles']:,} profiles; the three services, Kafka, "
        "PostgreSQL and vegeta share the 2 cores. Target: p99 ≤ 20 ms at 500 req/s.",
        command=None if default else command,
        section="## Profile API latency (`make bench-api`)\n\n"
        "A tenant loaded through the pipeline first (every order line of `clientela generate --orders "
        "30000 --seed 1`), then `GET /v1/profiles/{id}` over every profile and `GET /v1/profiles?email=` "
        "over the buyers' own e-mails, sent by vegeta at a constant rate (open model) with a 10 s "
        "timeout; percentiles over every request, timed-out ones at 10 s. Each rate on a freshly started "
        "profile process (same database), warmed up for 5 s at 100 req/s and left until it idles below 30 % "
        "CPU (at most 90 s); *idle CPU %*: that process just before the attack, with no request.",
    )
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report goes to stdout


if __name__ == "__main__":
    main()
