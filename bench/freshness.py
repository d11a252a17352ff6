"""`make bench-freshness`: order posted → profile updated → segment entered → webhook received.

The three services run as processes (PostgreSQL databases of their own, topics with a fresh prefix); a
webhook receiver on 127.0.0.1 verifies each delivery with the `standardwebhooks` package and notes when
it arrived. A segment every buyer enters (`orders_count >= 1`) and an endpoint for `segment.entered` are
created, then orders of new customers are posted one by one at a steady rate. Each order's total is
unique, and the delivery's `traits.total_spent` tells which order it announces: latency = arrival at
the receiver - the moment the order was posted. Reported: p50, p95, p99 and max, and how many arrived.
Writes bench/results/freshness.json and the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks import Webhook

from bench import report
from bench.ingest import ADMIN, CACHE, KAFKA, PG, Service, reset_database, start_service
from shared.topics import ensure_topics

SECRET = "bench-only-secret-key-0123456789abcdefghijklmnop"  # noqa: S105 - a throwaway bench database


def start(name: str, prefix: str, log: Path) -> Service:
    database = f"{PG}/clientela_{name}_freshness"
    reset_database(database)
    return start_service(
        name,
        database,
        prefix,
        log,
        CLIENTELA_SECRET_KEY=SECRET,
        SEGMENTATION_WEBHOOK_ALLOW_PRIVATE="true",  # the receiver is on 127.0.0.1
    )


class Receiver:
    """A webhook receiver that verifies every delivery and keeps (arrival time, payload) by webhook id."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.arrived: dict[str, tuple[float, dict[str, Any]]] = {}
        self.invalid = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.perf_counter()
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    assert receiver.secret is not None
                    payload = Webhook(receiver.secret).verify(body, dict(self.headers.items()))
                except Exception:
                    with receiver.lock:
                        receiver.invalid += 1
                    self.send_response(400)
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

    def close(self) -> None:
        self.server.shutdown()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def eventually(check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, httpx.HTTPError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def run_case(rate: int, seconds: int, prefix: str) -> dict[str, Any]:
    services: dict[str, Service] = {}
    receiver = Receiver()
    try:
        for name in ("ingest", "profile", "segmentation"):
            services[name] = start(name, prefix, CACHE / f"freshness-{name}.log")
        ingest, profile, segmentation = (services[n].url for n in ("ingest", "profile", "segmentation"))
        created = httpx.post(
            f"{ingest}/v1/tenants", json={"name": "bench"}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        created.raise_for_status()
        headers = {"Authorization": f"Bearer {created.json()['api_key']}"}

        def key_works() -> None:
            for url in (profile, segmentation):
                assert httpx.get(f"{url}/v1/segments" if url == segmentation else f"{url}/v1/profiles",
                                 headers=headers).status_code == 200  # fmt: skip

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

        count = rate * seconds
        sent: dict[str, float] = {}
        lock = threading.Lock()
        client = httpx.Client(base_url=ingest, headers=headers, timeout=30)
        run = uuid.uuid4().hex[:8]

        def post(i: int) -> None:
            total = f"{Decimal(1000 + i) / 100:.2f}"  # unique: names the order in the webhook's traits
            body = {
                "external_id": f"F-{run}-{i}", "source": "site", "status": "paid",
                "placed_at": "2026-11-20T10:00:00-03:00", "currency": "BRL", "total": total,
                "customer": {"email": f"fresh-{run}-{i}@example.com"},
                "items": [{"sku": "SKU-1", "name": "Item", "quantity": 1, "unit_price": total}],
            }  # fmt: skip
            at = time.perf_counter()
            response = client.post("/v1/orders", json=body)
            response.raise_for_status()
            with lock:
                sent[total] = at

        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            for i in range(count):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(post, i)
        posting_s = time.perf_counter() - started
        deadline = time.monotonic() + 300
        while len(receiver.arrived) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        client.close()
        latencies = []
        for at, payload in list(receiver.arrived.values()):
            total = f"{Decimal(payload['data']['traits']['total_spent']):.2f}"
            if total in sent:
                latencies.append(at - sent[total])
    finally:
        receiver.close()
        for service in services.values():
            service.stop()
    return {
        "rate": rate,
        "orders": count,
        "posting_seconds": round(posting_s, 1),
        "achieved_rate": round(count / posting_s),
        "delivered": len(latencies),
        "invalid_signatures": receiver.invalid,
        "p50_s": round(percentile(latencies, 50), 3) if latencies else None,
        "p95_s": round(percentile(latencies, 95), 3) if latencies else None,
        "p99_s": round(percentile(latencies, 99), 3) if latencies else None,
        "max_s": round(max(latencies), 3) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    prefix = f"fresh-{uuid.uuid4().hex[:8]}."
    ensure_topics(KAFKA, prefix)
    cases = [run_case(rate, args.seconds, prefix) for rate in args.rates]
    rates = " ".join(map(str, args.rates))
    command = f"uv run python -m bench.freshness --rates {rates} --seconds {args.seconds}"
    results = report.publish(
        "freshness",
        cases,
        columns=[
            ("orders/s asked", lambda c: c["rate"]),
            ("achieved", lambda c: c["achieved_rate"]),
            ("orders", lambda c: c["orders"]),
            ("webhooks received", lambda c: c["delivered"]),
            ("p50 (s)", lambda c: c["p50_s"]),
            ("p95 (s)", lambda c: c["p95_s"]),
            ("p99 (s)", lambda c: c["p99_s"]),
            ("max (s)", lambda c: c["max_s"]),
        ],
        note="Target: p95 ≤ 1 s at 200 orders/s. The three services, Kafka, PostgreSQL, the load generator "
        "and the receiver share the 2 cores.",
        command=None if (args.rates, args.seconds) == ([50, 200], 30) else command,
        section="## Freshness (`make bench-freshness`)\n\nOrders of new customers posted one by one at a "
        "steady rate to the three services running as processes; each order makes its customer enter a "
        "segment, and the `segment.entered` webhook (verified with `standardwebhooks`) is timed from the "
        "moment the order was posted to its arrival at a receiver on 127.0.0.1.",
    )
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report goes to stdout


if __name__ == "__main__":
    main()
