"""bench.freshness: vegeta's targets (one distinct order per request), mapping vegeta's results and the
receiver's deliveries back to orders, the stages of each order's trip, and the percentiles."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest

from bench.freshness import (
    STAGES,
    Sent,
    arrivals_by_order,
    epoch_of,
    latencies,
    order_body,
    order_of_external_id,
    order_of_total,
    order_of_url,
    order_targets,
    order_total,
    percentile,
    quantiles,
    read_results,
    stage_times,
)


def test_each_target_posts_its_own_order_with_the_key_and_its_number_in_the_url() -> None:
    lines = order_targets("http://127.0.0.1:8001", "key-1", "run1", 3).splitlines()
    assert len(lines) == 3
    targets = [orjson.loads(line) for line in lines]
    for n, target in enumerate(targets):
        assert target["method"] == "POST"
        assert target["url"] == f"http://127.0.0.1:8001/v1/orders?n={n}"
        assert target["header"] == {"Authorization": ["Bearer key-1"], "Content-Type": ["application/json"]}
        body = orjson.loads(base64.b64decode(target["body"]))
        assert body == order_body("run1", n)
        assert body["total"] == order_total(n) == body["items"][0]["unit_price"]
        assert order_of_url(target["url"]) == n
    bodies = [orjson.loads(base64.b64decode(t["body"])) for t in targets]
    assert len({b["external_id"] for b in bodies}) == 3
    assert len({b["customer"]["email"] for b in bodies}) == 3  # new customers: each enters the segment


def test_an_orders_total_names_it() -> None:
    assert order_total(0) == "10.00"
    assert order_total(1234) == "22.34"
    for n in (0, 1, 99, 5999, 123_456):
        assert order_of_total(order_total(n)) == n
    assert order_of_total("22.34") == order_of_total(22.34) == 1234  # total_spent as a string or a number
    assert order_of_total("22.3") == 1230


def test_order_of_url() -> None:
    assert order_of_url("http://h/v1/orders?n=42") == 42
    assert order_of_url("http://h/v1/orders") is None
    assert order_of_url("http://h/v1/orders?n=x") is None
    assert order_of_url("") is None


def test_epoch_of_reads_go_times_with_nanoseconds_and_any_offset() -> None:
    expected = datetime(2026, 11, 29, 18, 33, 11, tzinfo=UTC).timestamp()
    assert epoch_of("2026-11-29T18:33:11Z") == expected
    assert epoch_of("2026-11-29T18:33:11.749340745Z") == pytest.approx(expected + 0.749340745, abs=1e-6)
    assert epoch_of("2026-11-29T15:33:11.5-03:00") == pytest.approx(expected + 0.5, abs=1e-6)
    with pytest.raises(ValueError, match="RFC 3339"):
        epoch_of("yesterday")


def _result(n: int | None, stamp: str, latency_ns: int, code: int = 201, error: str = "") -> bytes:
    url = "http://127.0.0.1:1/v1/orders" + (f"?n={n}" if n is not None else "")
    return orjson.dumps(
        {"attack": "", "seq": 0, "code": code, "timestamp": stamp, "latency": latency_ns, "bytes_out": 10,
         "bytes_in": 0, "error": error, "body": None, "method": "POST", "url": url, "headers": None}
    )  # fmt: skip


def test_results_are_mapped_by_the_url_not_by_seq() -> None:
    lines = [
        _result(1, "2026-11-29T18:33:11.000000000Z", 20_000_000),  # seq 0 took target 1 (another worker)
        _result(0, "2026-11-29T18:33:11.005000000Z", 3_000_000),
        _result(2, "2026-11-29T18:33:11.010000000Z", 30_000_000_000, code=0, error="timeout"),
        _result(None, "2026-11-29T18:33:11.015000000Z", 1_000_000),  # not one of ours
        b"",
    ]
    sent = read_results(lines)
    assert set(sent) == {0, 1, 2}
    base = epoch_of("2026-11-29T18:33:11Z")
    assert sent[1].at == pytest.approx(base, abs=1e-6)
    assert sent[0].at == pytest.approx(base + 0.005, abs=1e-6)
    assert sent[1].latency_s == pytest.approx(0.02)
    assert sent[0].ok
    assert sent[1].ok
    assert not sent[2].ok
    assert sent[2].error == "timeout"


def _delivery(total: str) -> dict[str, object]:
    return {"type": "segment.entered", "data": {"traits": {"total_spent": total, "orders_count": 1}}}


def test_deliveries_are_mapped_to_orders_by_total_timed_out_posts_included() -> None:
    arrived = arrivals_by_order(
        {
            "msg_a": (100.5, _delivery(order_total(0))),
            "msg_b": (101.0, _delivery(order_total(1))),
            "msg_c": (100.9, _delivery(order_total(1))),  # announced twice: the first arrival counts
            "msg_d": (102.0, _delivery(order_total(2))),
        }
    )
    assert arrived == {0: (100.5, "msg_a"), 1: (100.9, "msg_c"), 2: (102.0, "msg_d")}
    sent = {
        0: Sent(100.0, 0.01, 201, ""),
        1: Sent(100.1, 0.02, 200, ""),
        2: Sent(100.2, 30.0, 0, "timeout"),  # the client gave up; the service stored it all the same
        3: Sent(100.3, 0.01, 201, ""),  # accepted, never announced
    }
    found = latencies(sent, arrived)
    assert set(found) == {0, 1, 2}
    assert found[0] == pytest.approx(0.5)
    assert found[1] == pytest.approx(0.8)
    assert found[2] == pytest.approx(1.8)
    assert latencies(sent, {}) == {}


def test_order_of_external_id() -> None:
    assert order_of_external_id(order_body("ab12cd34", 57)["external_id"]) == 57
    assert order_of_external_id("F-ab12cd34-0") == 0
    assert order_of_external_id("OTHER-1") is None
    assert order_of_external_id("F-ab12cd34-x") is None


def test_stage_times_add_up_to_the_latency_timed_out_posts_included() -> None:
    sent = {0: Sent(100.0, 0.05, 202, ""), 1: Sent(100.5, 120.0, 0, "timeout")}
    arrived = {0: (101.0, "msg_a"), 1: (102.0, "msg_b"), 2: (103.0, "msg_c")}
    stored = {0: 100.05, 1: 100.6, 2: 102.0}
    recorded = {0: 100.3, 1: 101.0, 2: 102.2}  # order 2 was never sent: left out
    created = {"msg_a": 100.7, "msg_b": 101.5, "msg_c": 102.5}
    stages = stage_times(sent, arrived, stored, recorded, created)
    assert list(stages) == list(STAGES)
    assert stages["to ingest"] == pytest.approx([0.05, 0.1])
    assert stages["to profile"] == pytest.approx([0.25, 0.4])
    assert stages["to segmentation"] == pytest.approx([0.4, 0.5])
    assert stages["to receiver"] == pytest.approx([0.3, 0.5])
    total = latencies(sent, arrived)
    for i, n in enumerate((0, 1)):
        assert sum(stages[s][i] for s in STAGES) == pytest.approx(total[n])
    assert stage_times(sent, arrived, {}, recorded, created) == {stage: [] for stage in STAGES}


def test_percentile_and_quantiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 51.0  # nearest rank on 0..n-1: round(49.5) is 50 (banker's rounding)
    assert percentile(values, 95) == 95.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert quantiles(list(reversed(values))) == {"p50": 51.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert quantiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}
