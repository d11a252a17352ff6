"""Prometheus metrics (prometheus-client): what each service process measures, and how it is served.

The API serves them at `GET /metrics` (`metrics_body`); a consumer process run alone
(``python -m services.<name>.consumer``) serves them on `CLIENTELA_METRICS_PORT` (`serve_worker_metrics`).
Labels never carry personal data: routes are templates, topics and consumers are names.

- `clientela_http_request_duration_seconds{service,method,route,status}`: every request (the route template).
- `clientela_http_requests_shed_total{service}`: requests refused with a 503 because the process was
  handling its `max_in_flight` requests already (load shedding, `shared.web.RequestContext`).
- `clientela_events_consumed_total{service,consumer,topic,outcome}`: events a consumer applied, or skipped
  as already processed (`duplicate`: a redelivery).
- `clientela_dead_letters_total{service,consumer,topic}`: records sent to the dead-letter topic.
- `clientela_consumer_lag{service,consumer,topic,partition}`: the partition's high-water mark minus the
  consumer's position, refreshed every few seconds by the consumer itself.
- `clientela_events_published_total{service,topic}`: events the outbox relay published.
- `clientela_outbox_backlog{service}` and `clientela_outbox_oldest_age_seconds{service}`: unpublished outbox
  rows and the age of the oldest, read from the database when scraped.
- `clientela_webhook_deliveries_total{outcome}` and `clientela_webhook_delivery_duration_seconds{outcome}`:
  webhook attempts (`delivered`: a 2xx; `failed`: anything else, retried) and deliveries given up
  (`exhausted`).

With several uvicorn workers (`web_workers` > 1) each process counts apart; `serve` then sets
`PROMETHEUS_MULTIPROC_DIR` so that any worker's `/metrics` answers for all of them.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime

import sqlalchemy as sa
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from shared.db import table_of
from shared.infra import OutboxMessage

log = logging.getLogger("clientela.metrics")
CONTENT_TYPE = CONTENT_TYPE_LATEST
_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"

HTTP_LATENCY = Histogram(
    "clientela_http_request_duration_seconds",
    "HTTP request duration, by route template.",
    ["service", "method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_SHED = Counter(
    "clientela_http_requests_shed_total",
    "Requests refused at once (503) because the process was over its in-flight bound.",
    ["service"],
)
EVENTS_CONSUMED = Counter(
    "clientela_events_consumed_total",
    "Events consumed: applied, or skipped as already processed (duplicate).",
    ["service", "consumer", "topic", "outcome"],
)
DEAD_LETTERS = Counter(
    "clientela_dead_letters_total",
    "Records sent to the dead-letter topic after bounded retries.",
    ["service", "consumer", "topic"],
)
CONSUMER_LAG = Gauge(
    "clientela_consumer_lag",
    "Messages behind the partition's high-water mark.",
    ["service", "consumer", "topic", "partition"],
    multiprocess_mode="livemax",
)
EVENTS_PUBLISHED = Counter(
    "clientela_events_published_total", "Events published by the outbox relay.", ["service", "topic"]
)
INGEST_GROUP_SIZE = Histogram(
    "clientela_ingest_group_commit_records",
    "Single records stored together in one transaction (services/ingest/group_commit.py).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
WEBHOOK_DELIVERIES = Counter(
    "clientela_webhook_deliveries_total",
    "Webhook attempts (delivered, failed) and deliveries given up (exhausted).",
    ["outcome"],
)
WEBHOOK_LATENCY = Histogram(
    "clientela_webhook_delivery_duration_seconds",
    "Webhook attempt duration, until the receiver's answer (or the failure).",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


class OutboxCollector(Collector):
    """The outbox backlog, read from the service's database when scraped (the partial index on unpublished
    rows makes it cheap)."""

    def __init__(self, engine: Engine, service: str) -> None:
        self.engine, self.service = engine, service

    def collect(self) -> Iterator[Metric]:
        table = table_of(OutboxMessage)
        query = sa.select(sa.func.count(), sa.func.min(table.c.created_at)).where(
            table.c.published_at.is_(None)
        )
        try:
            with self.engine.connect() as conn:
                backlog, oldest = conn.execute(query).one()
        except SQLAlchemyError:
            return  # the database is away: /readyz says so; no numbers rather than wrong ones
        if isinstance(oldest, str):  # SQLite
            oldest = datetime.fromisoformat(oldest)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        age = 0.0 if oldest is None else max((datetime.now(UTC) - oldest).total_seconds(), 0.0)
        rows = GaugeMetricFamily("clientela_outbox_backlog", "Unpublished outbox rows.", labels=["service"])
        rows.add_metric([self.service], float(backlog))
        yield rows
        aged = GaugeMetricFamily(
            "clientela_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row (0: none).",
            labels=["service"],
        )
        aged.add_metric([self.service], age)
        yield aged


def _process_registry() -> CollectorRegistry:
    """This process's metrics, or every worker process's when several share the multiprocess folder."""
    if os.environ.get(_MULTIPROC):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def metrics_body(engine: Engine, service: str) -> bytes:
    """The text exposition of `GET /metrics`: the process's metrics, then the outbox backlog."""
    outbox = CollectorRegistry(auto_describe=False)
    outbox.register(OutboxCollector(engine, service))
    return generate_latest(_process_registry()) + generate_latest(outbox)


def serve_worker_metrics(engine: Engine, service: str, port: int) -> bool:
    """For a consumer process run alone: serve the metrics on `port` (0: not at all) in a thread. A port
    already taken is logged, not fatal: the consumers matter more than their metrics."""
    if port <= 0:
        return False
    registry = CollectorRegistry()
    registry.register(_Process())
    registry.register(OutboxCollector(engine, service))
    try:
        start_http_server(port, addr="0.0.0.0", registry=registry)  # noqa: S104 (scraped from outside)
    except OSError as exc:
        log.warning("metrics port unavailable", extra={"port": port, "error_type": type(exc).__name__})
        return False
    return True


class _Process(Collector):
    """The process's own metrics, as one collector (to serve them beside the outbox's)."""

    def collect(self) -> Iterator[Metric]:
        yield from _process_registry().collect()


def prepare_multiprocess(web_workers: int) -> None:
    """Before uvicorn forks `web_workers` processes: a fresh folder where they share their counts."""
    if web_workers > 1 and not os.environ.get(_MULTIPROC):
        os.environ[_MULTIPROC] = tempfile.mkdtemp(prefix="clientela-metrics-")
