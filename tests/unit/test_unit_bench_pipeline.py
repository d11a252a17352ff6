"""bench.pipeline and bench.api_latency: what the accepted orders add up to, what the services' metrics and
the broker say, the floor's SQL and COPY body, the benchmark lock, and vegeta's targets and results."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from bench.api_latency import email_paths, read_results, summarise, vegeta_targets
from bench.ingest import TICKS, machine_busy_seconds
from bench.pipeline import (
    NOT_COUNTED,
    copy_text,
    exclusive,
    expected_totals,
    floor_sql,
    lag_of,
    metric_samples,
    order_facts,
    other_cpu_seconds,
    process_times,
)
from shared.records import OrderStatus


def test_expected_totals_follow_the_latest_stored_version_of_each_order() -> None:
    facts = [
        ("paid", 1000),  # a v1
        ("paid", 1000),  # a v1 again: duplicate
        ("cancelled", 1000),  # a v2: cancelled, so a no longer counts
        ("paid", 500),  # b
        ("delivered", 700),  # c v2, arrived first (another client's batch)
        ("paid", 300),  # c v1, arrived later: stale
        ("paid", 999),  # rejected
    ]
    results: list[tuple[str | None, str, int | None]] = [
        ("a", "accepted", 1),
        ("a", "duplicate", 1),
        ("a", "updated", 2),
        ("b", "accepted", 1),
        ("c", "accepted", 2),
        ("c", "stale", 2),
        (None, "rejected", None),
    ]
    expected = expected_totals(facts, results)
    assert expected.orders == 3
    assert (expected.counted, expected.spent_minor) == (2, 1200)
    assert expected.outcomes == {"accepted": 3, "duplicate": 1, "updated": 1, "stale": 1, "rejected": 1}


def test_order_facts_in_cents() -> None:
    assert order_facts(b'{"status": "paid", "total": "259.90"}') == ("paid", 25990)


def test_metric_samples_read_the_exposition_format() -> None:
    registry = CollectorRegistry()
    consumed = Counter("clientela_events_consumed", "x", ["service", "outcome"], registry=registry)
    consumed.labels("profile", "applied").inc(10)
    consumed.labels("profile", "duplicate").inc(2)
    Gauge("clientela_outbox_backlog", "x", ["service"], registry=registry).labels("profile").set(3)
    text = generate_latest(registry).decode()
    assert metric_samples(text, "clientela_events_consumed_total") == [10, 2]
    assert metric_samples(text, "clientela_events_consumed_total", outcome="applied") == [10]
    assert metric_samples(text, "clientela_outbox_backlog", service="profile") == [3]
    assert metric_samples(text, "clientela_consumer_lag") == []


def test_lag_counts_uncommitted_partitions_from_zero() -> None:
    ends = {"p0": 10, "p1": 5, "p2": 0, "p3": 4}
    assert lag_of(ends, {"p0": 7, "p1": -1, "p3": 4}) == 3 + 5
    assert lag_of(ends, dict(ends)) == 0


def test_machine_busy_seconds_leave_idle_and_iowait_out() -> None:
    stat = "cpu  100 10 50 1000 20 5 5 2 0 0\ncpu0 50 5 25 500 10 2 2 1 0 0\n"
    assert machine_busy_seconds(stat) == pytest.approx((100 + 10 + 50 + 5 + 5 + 2) / TICKS)


def test_process_times_read_own_and_reaped_children_time(tmp_path: Path) -> None:
    (tmp_path / "12").mkdir()
    fields = ["S", *["0"] * 10, "100", "50", "30", "20", *["0"] * 10]  # utime stime cutime cstime
    (tmp_path / "12" / "stat").write_text(f"12 (python (bench)) {' '.join(fields)}\n")
    (tmp_path / "self").mkdir()
    found = process_times(tmp_path)
    assert list(found) == [12]
    assert found[12][0] == "python (bench)"  # a name may hold parentheses
    assert found[12][1] == pytest.approx(200 / TICKS)


def test_other_cpu_leaves_out_ours_postgres_kafka_and_time_before() -> None:
    before = {1: ("python", 10.0), 2: ("postgres", 5.0), 3: ("pytest", 100.0), 9: ("old", 1.0)}
    after = {
        1: ("python", 30.0),  # ours
        2: ("postgres", 50.0),
        3: ("pytest", 104.5),  # someone else's: 4.5 s during the run
        4: ("java", 9.0),
        5: ("go", 2.0),  # started during the run
        9: ("reused", 3.0),  # a new process with a reused pid
    }
    assert other_cpu_seconds(before, after, mine={1}) == pytest.approx(4.5 + 2.0 + 3.0)


def test_copy_text_escapes_backslashes_only() -> None:
    lines = [orjson.dumps({"name": 'a "quoted" \\ name\twith tab'}), b'{"a": 1}']
    body = copy_text(lines)
    assert body.count(b"\n") == 2
    assert b"\t" not in body  # JSON escapes it
    first = body.split(b"\n")[0]
    assert first == lines[0].replace(b"\\", b"\\\\")
    assert orjson.loads(first.replace(b"\\\\", b"\\")) == orjson.loads(lines[0])


def test_floor_sql_is_one_statement_leaving_out_what_does_not_count() -> None:
    sql = floor_sql()
    assert set(NOT_COUNTED) == {s.value for s in OrderStatus if not s.counts_as_spend}
    assert "WHERE status NOT IN ('cancelled', 'returned')" in sql
    assert ";" not in sql
    assert sql.strip().startswith("CREATE TABLE floor_customer AS")
    assert "DISTINCT ON (doc->>'source', doc->>'external_id')" in sql
    assert sql.count("{") == sql.count("}")  # the JSON paths survived the f-string: {customer,email}
    assert "doc#>>'{customer,document}'" in sql


def test_exclusive_waits_for_the_other_benchmark_then_holds_the_file(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    with exclusive(busy, poll_s=0.01):
        assert busy.exists()
    assert not busy.exists()

    busy.touch()  # another benchmark measures
    threading.Timer(0.2, busy.unlink).start()
    started = time.monotonic()
    with exclusive(busy, poll_s=0.01):
        assert time.monotonic() - started >= 0.2
        assert busy.read_text().endswith("bench\n")  # ours now
    assert not busy.exists()


def test_vegeta_targets_are_json_lines_with_the_key() -> None:
    body = vegeta_targets("http://127.0.0.1:1", "clt_x", ["/v1/profiles/1", "/v1/profiles?email=a%40b.com"])
    targets = [orjson.loads(line) for line in body.splitlines()]
    assert targets[1] == {
        "method": "GET",
        "url": "http://127.0.0.1:1/v1/profiles?email=a%40b.com",
        "header": {"Authorization": ["Bearer clt_x"]},
    }
    assert len(targets) == 2


def test_email_paths_normalise_dedupe_and_skip_relay_addresses() -> None:
    lines = [
        orjson.dumps({"customer": {"email": " Maria@Example.com "}}),
        orjson.dumps({"customer": {"email": "maria@example.com"}}),
        orjson.dumps({"customer": {"email": "x1y2@mail.mercadolivre.com"}}),
        orjson.dumps({"customer": {"email": "not an e-mail"}}),
        orjson.dumps({"customer": {"phone": "+5511912345678"}}),
        orjson.dumps({"customer": {"email": "joao+loja@example.com.br"}}),
    ]
    assert email_paths(lines) == [
        "/v1/profiles?email=maria%40example.com",
        "/v1/profiles?email=joao%2Bloja%40example.com.br",
    ]


def test_read_results_and_exact_percentiles() -> None:
    rows = [
        f"{1_700_000_000_000_000_000 + i},200,{(i + 1) * 1_000_000},0,512,,,,{i},GET,http://x/,\n"
        for i in range(99)
    ]
    rows.append(
        '1700000000000000099,0,10000000000,0,0,"Get ""http://x/"": context deadline exceeded",,,99,GET,http://x/,\n'
    )
    results = read_results("".join(rows))
    assert results[0] == (200, 0.001, "")
    assert results[-1][0] == 0
    assert "deadline" in results[-1][2]
    summary = summarise(results, sent_s=10, total_s=20)
    assert summary["requests"] == 100
    assert (summary["sent_per_s"], summary["ok_per_s"]) == (10, 5)
    assert (summary["ok"], summary["errors"]) == (99, 1)
    assert summary["status_codes"] == {"200": 99, "0": 1}
    assert summary["p50_ms"] == 51.0  # bench.freshness.percentile: sorted[round(0.50 * 99)]
    assert summary["p99_ms"] == 99.0
    assert summary["max_ms"] == 10_000.0
