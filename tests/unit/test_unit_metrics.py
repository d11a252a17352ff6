"""shared.metrics: the outbox backlog read at scrape time, and the text every /metrics serves."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session

from shared.db import make_engine, utcnow
from shared.infra import OutboxMessage, infra_registry
from shared.metrics import HTTP_LATENCY, metrics_body, serve_worker_metrics


def parsed(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_the_outbox_backlog_and_its_oldest_row_are_read_from_the_database() -> None:
    engine = make_engine("sqlite://")
    infra_registry.metadata.create_all(engine)
    now = utcnow()
    with Session(engine) as session:
        for age, published in ((120, False), (30, False), (600, True)):
            session.add(
                OutboxMessage(
                    event_id=uuid4(),
                    topic="t",
                    key="k",
                    event_type="x",
                    body=b"{}",
                    created_at=now - timedelta(seconds=age),
                    published_at=now if published else None,
                )
            )
        session.commit()
    found = parsed(metrics_body(engine, "unit"))
    assert found[("clientela_outbox_backlog", (("service", "unit"),))] == 2
    oldest = found[("clientela_outbox_oldest_age_seconds", (("service", "unit"),))]
    assert 119 <= oldest < 180  # the oldest unpublished row, not the published one


def test_an_empty_outbox_and_the_process_metrics() -> None:
    engine = make_engine("sqlite://")
    infra_registry.metadata.create_all(engine)
    HTTP_LATENCY.labels("unit", "GET", "/v1/things/{id}", "200").observe(0.004)
    found = parsed(metrics_body(engine, "unit"))
    assert found[("clientela_outbox_backlog", (("service", "unit"),))] == 0
    assert found[("clientela_outbox_oldest_age_seconds", (("service", "unit"),))] == 0
    count = (
        "clientela_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/v1/things/{id}"), ("service", "unit"), ("status", "200")),
    )
    assert found[count] >= 1


def test_a_database_that_is_away_gives_no_backlog_rather_than_a_wrong_one() -> None:
    engine = make_engine("sqlite:////nonexistent-dir/clientela.db")
    HTTP_LATENCY.labels("unit", "GET", "/v1/away", "503").observe(0.001)
    names = {name for name, _ in parsed(metrics_body(engine, "unit"))}
    assert "clientela_outbox_backlog" not in names
    assert "clientela_http_request_duration_seconds_count" in names  # the process's own metrics still


def test_a_consumer_process_run_alone_serves_them_on_its_port(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'alone.db'}")  # a file: the server thread opens it too
    infra_registry.metadata.create_all(engine)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    HTTP_LATENCY.labels("alone", "GET", "/v1/alone", "200").observe(0.001)  # not left to another test
    assert serve_worker_metrics(engine, "alone", port)
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert answer.status_code == 200
    found = parsed(answer.content)
    assert found[("clientela_outbox_backlog", (("service", "alone"),))] == 0
    assert any(name.startswith("clientela_http_request_duration_seconds") for name, _ in found)
    assert not serve_worker_metrics(engine, "alone", port)  # taken: logged, not fatal
