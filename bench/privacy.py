"""`make bench-privacy`: how long data-subject requests take, end to end, over Kafka.

The three services run as processes (PostgreSQL databases of their own, topics with a fresh prefix). A
tenant gets a background population (`--population` customers with an order each) and `--people`
people with three orders each; once every profile exists, each person gets an access request (timed until
the complete report, assembled from the three services, can be downloaded) and then a deletion (timed
until ingest and segmentation confirmed the erasure). LGPD allows 15 days; the target is seconds.
Writes bench/results/privacy.json and the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench import report
from bench.freshness import eventually, percentile
from bench.ingest import ADMIN, CACHE, KAFKA, PG, Service, reset_database, start_service
from shared.topics import ensure_topics

SECRET = "bench-only-secret-key-0123456789abcdefghijklmnop"  # noqa: S105 - a throwaway bench database


def start(name: str, prefix: str, log: Path) -> Service:
    database = f"{PG}/clientela_{name}_freshness"
    reset_database(database)
    return start_service(name, database, prefix, log, CLIENTELA_SECRET_KEY=SECRET)


def order(run: str, person: str, n: int) -> dict[str, Any]:
    return {
        "external_id": f"{person}-{n}", "source": "site", "status": "paid",
        "placed_at": f"2026-11-{10 + n:02d}T10:00:00-03:00", "currency": "BRL", "total": "50.00",
        "customer": {"email": f"{person}@{run}.example.com", "name": "Pessoa Teste"},
        "items": [{"sku": "SKU-1", "name": "Item", "category": "livros", "quantity": 1,
                   "unit_price": "50.00"}],
    }  # fmt: skip


def timed(client: httpx.Client, body: dict[str, Any], *, report_too: bool) -> float:
    """Seconds from the request to its completion (and, for access, the report downloaded)."""
    started = time.perf_counter()
    created = client.post("/v1/privacy/requests", json=body)
    created.raise_for_status()
    request_id = created.json()["id"]
    while True:
        found = client.get(f"/v1/privacy/requests/{request_id}").json()
        if found["status"] == "completed":
            break
        if time.perf_counter() - started > 120:
            raise TimeoutError(f"request {request_id} still {found['status']}")
        time.sleep(0.02)
    if report_too:
        client.get(found["report_url"]).raise_for_status()
    return time.perf_counter() - started


def run(people: int, population: int) -> dict[str, Any]:
    prefix = f"privacy-{uuid.uuid4().hex[:8]}."
    ensure_topics(KAFKA, prefix)
    services: dict[str, Service] = {}
    try:
        for name in ("ingest", "profile", "segmentation"):
            services[name] = start(name, prefix, CACHE / f"privacy-{name}.log")
        ingest, profile, segmentation = (services[n].url for n in ("ingest", "profile", "segmentation"))
        created = httpx.post(
            f"{ingest}/v1/tenants", json={"name": "bench"}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        created.raise_for_status()
        headers = {"Authorization": f"Bearer {created.json()['api_key']}"}

        def key_works() -> None:
            for url, path in ((profile, "/v1/profiles"), (segmentation, "/v1/segments")):
                assert httpx.get(f"{url}{path}", headers=headers).status_code == 200

        eventually(key_works)
        httpx.post(
            f"{segmentation}/v1/segments",
            json={"name": "buyers", "rule": {"field": "orders_count", "op": "gte", "value": 1}},
            headers=headers,
        ).raise_for_status()
        run_id = uuid.uuid4().hex[:8]
        bodies = [order(run_id, f"bg{i}", 1) for i in range(population)]
        bodies += [order(run_id, f"p{i}", n) for i in range(people) for n in (1, 2, 3)]
        with httpx.Client(base_url=ingest, headers=headers, timeout=60) as client:
            for start_at in range(0, len(bodies), 1000):
                batch = client.post("/v1/orders:batch", json={"items": bodies[start_at : start_at + 1000]})
                batch.raise_for_status()
        with httpx.Client(base_url=profile, headers=headers, timeout=60) as client:

            def everyone() -> None:
                last = client.get("/v1/profiles", params={"email": f"p{people - 1}@{run_id}.example.com"})
                items = last.json()["items"]
                assert items
                assert items[0]["orders_count"] == 3

            eventually(everyone, timeout=600)
            time.sleep(2)  # let segmentation catch up with the last profile events
            subjects = [{"email": f"p{i}@{run_id}.example.com"} for i in range(people)]
            access = [timed(client, {"type": "access", "subject": s}, report_too=True) for s in subjects]
            deletion = [timed(client, {"type": "deletion", "subject": s}, report_too=False) for s in subjects]
            with ThreadPoolExecutor(8) as pool:
                started = time.perf_counter()
                burst = list(
                    pool.map(
                        lambda s: timed(client, {"type": "confirmation", "subject": s}, report_too=False),
                        [{"email": f"bg{i}@{run_id}.example.com"} for i in range(min(population, 200))],
                    )
                )
                burst_s = time.perf_counter() - started
    finally:
        for service in services.values():
            service.stop()

    def stats(name: str, values: list[float]) -> dict[str, Any]:
        return {
            "case": name,
            "requests": len(values),
            "p50_s": round(percentile(values, 50), 3),
            "p95_s": round(percentile(values, 95), 3),
            "max_s": round(max(values), 3),
        }

    cases = [
        stats("access (complete report downloaded)", access),
        stats("deletion (all confirmed)", deletion),
    ]
    cases.append({**stats("confirmation (8 in parallel)", burst), "per_second": round(len(burst) / burst_s)})
    for case in cases:
        case["population"] = population
    return {"cases": cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=30)
    parser.add_argument("--population", type=int, default=5000)
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    cases = run(args.people, args.population)["cases"]
    command = f"uv run python -m bench.privacy --people {args.people} --population {args.population}"
    results = report.publish(
        "privacy",
        cases,
        columns=[
            ("request", lambda c: c["case"]),
            ("requests", lambda c: c["requests"]),
            ("profiles in the tenant", lambda c: c["population"]),
            ("p50 (s)", lambda c: c["p50_s"]),
            ("p95 (s)", lambda c: c["p95_s"]),
            ("max (s)", lambda c: c["max_s"]),
        ],
        note="LGPD allows 15 days for the complete report; the target is seconds. The three services, Kafka "
        "and PostgreSQL share the 2 cores.",
        command=None if (args.people, args.population) == (30, 5000) else command,
        section="## Privacy requests (`make bench-privacy`)\n\nData-subject requests against the three "
        "services running as processes: an access request is timed until its complete report (assembled "
        "over Kafka from ingest, profile and segmentation) is downloaded; a deletion until ingest and "
        "segmentation confirmed the erasure; confirmations are answered at once.",
    )
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report goes to stdout


if __name__ == "__main__":
    main()
