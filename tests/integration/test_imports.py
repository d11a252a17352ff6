"""Bulk imports on the real stack: the real Olist extract end to end, and CSV/JSONL with bad rows."""

from __future__ import annotations

import csv
import gzip
import io
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support import Stack, auth, eventually

pytestmark = pytest.mark.integration

OLIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "olist"
SUBSET = OLIST / "subset_8135_orders"
OLIST_TABLES = ("orders", "customers", "order_items", "order_payments", "products")


def olist_files() -> list[tuple[str, tuple[str, bytes, str]]]:
    names = [f"olist_{t}_dataset.csv.gz" for t in OLIST_TABLES] + ["product_category_name_translation.csv.gz"]
    return [("files", (name, (SUBSET / name).read_bytes(), "application/gzip")) for name in names]


def read(name: str) -> list[dict[str, str]]:
    with gzip.open(SUBSET / name, "rt", encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def wait_done(stack: Stack, key: str, import_id: str, timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any]:
        job: dict[str, Any] = stack.ingest.get(f"/v1/imports/{import_id}", headers=auth(key)).json()
        assert job["status"] in ("done", "failed"), job
        return job

    return eventually(done, timeout=timeout, interval=0.5)


def expected_from_csv() -> dict[str, tuple[int, Decimal]]:
    """Per customer_unique_id: orders that count (not canceled/unavailable) and their items + freight."""
    person = {row["customer_id"]: row["customer_unique_id"] for row in read("olist_customers_dataset.csv.gz")}
    value: dict[str, Decimal] = defaultdict(Decimal)
    for item in read("olist_order_items_dataset.csv.gz"):
        value[item["order_id"]] += Decimal(item["price"]) + Decimal(item["freight_value"])
    paid: dict[str, Decimal] = defaultdict(Decimal)
    for payment in read("olist_order_payments_dataset.csv.gz"):
        paid[payment["order_id"]] += Decimal(payment["payment_value"])
    totals: dict[str, tuple[int, Decimal]] = {}
    for order in read("olist_orders_dataset.csv.gz"):
        who = person[order["customer_id"]]
        count, spent = totals.get(who, (0, Decimal("0")))
        if order["order_status"] not in ("canceled", "unavailable"):
            amount = value[order["order_id"]] if order["order_id"] in value else paid[order["order_id"]]
            count, spent = count + 1, spent + amount
        totals[who] = (count, spent)
    return totals


def test_the_olist_extract_imports_into_one_profile_per_person(stack: Stack) -> None:
    key = stack.create_tenant("Olist")
    response = stack.ingest.post(
        "/v1/imports", data={"format": "olist"}, files=olist_files(), headers=auth(key)
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/imports/{response.json()['id']}"
    job = wait_done(stack, key, response.json()["id"])
    assert job["status"] == "done", job
    assert (job["rows_total"], job["rows_read"], job["accepted"], job["rejected"]) == (8135, 8135, 8135, 0)
    assert job["rate_per_s"] > 0

    expected = expected_from_csv()
    assert len(expected) == 8016  # distinct customer_unique_id, as the dataset's README says

    def all_profiles() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = stack.profile.get("/v1/profiles", params=params, headers=auth(key)).json()
            found += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(found) == len(expected)
        return found

    profiles = eventually(all_profiles, timeout=240, interval=2)
    assert sum(p["orders_count"] for p in profiles) == sum(c for c, _ in expected.values())
    assert sum(Decimal(p["total_spent"]) for p in profiles) == sum(s for _, s in expected.values())

    # Each person's count and spend equal the direct computation (checked by customer id for a sample,
    # and for every person with more than one order).
    repeat = [who for who, (count, _) in expected.items() if count > 1]
    sample = sorted(expected)[:: max(1, len(expected) // 150)]
    for who in repeat + sample:
        found = stack.profile.get(
            "/v1/profiles", params={"source": "olist", "external_id": who}, headers=auth(key)
        ).json()["items"]
        assert len(found) == 1, who
        assert (found[0]["orders_count"], Decimal(found[0]["total_spent"])) == expected[who], who
    assert Counter(c for c, _ in expected.values() if c > 1) == Counter(
        p["orders_count"] for p in profiles if p["orders_count"] > 1
    )


def test_csv_and_jsonl_imports_report_rejected_rows_without_their_content(stack: Stack) -> None:
    key = stack.create_tenant()
    header = "external_id,source,status,placed_at,total,customer.email,customer.phone,items\n"
    item = '"[{""sku"": ""A"", ""unit_price"": ""10.00""}]"'
    rows = [
        f"C-1,site,paid,2026-11-20T10:00:00-03:00,10.00,ana@example.com,,{item}",
        "C-2,site,paid,2026-11-20T10:00:00-03:00,-5.00,bia@example.com,,",
        'C-3,site,paid,2026-11-20T10:00:00-03:00,7.00,cris@example.com,123,"[not json"',
        "C-4,site,paid,2026-11-20T10:00:00-03:00,7.00,,(11) 91234-5678,",
    ]
    content = (header + "\n".join(rows) + "\n").encode()
    response = stack.ingest.post(
        "/v1/imports",
        data={"format": "csv"},
        files={"files": ("orders.csv", content, "text/csv")},
        headers=auth(key),
    )
    assert response.status_code == 202, response.text
    job = wait_done(stack, key, response.json()["id"])
    assert (job["status"], job["rows_total"], job["accepted"], job["rejected"]) == ("done", 4, 2, 2)
    report = stack.ingest.get(f"/v1/imports/{job['id']}/rejected", headers=auth(key))
    assert report.status_code == 200
    lines = [orjson.loads(line) for line in report.content.splitlines()]
    assert [line["row"] for line in lines] == [2, 3]
    assert lines[0]["errors"][0]["loc"] == ["total"]
    assert "bia@example.com" not in report.text
    assert "cris@example.com" not in report.text

    events = b'{"type": "search", "anonymous_id": "d1", "occurred_at": "2026-11-20T10:00:00Z"}\n{broken\n\n'
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as gz:
        gz.write(events)
    response = stack.ingest.post(
        "/v1/imports",
        data={"format": "jsonl", "kind": "events"},
        files={"files": ("events.jsonl.gz", buffer.getvalue(), "application/gzip")},
        headers=auth(key),
    )
    job = wait_done(stack, key, response.json()["id"])
    assert (job["kind"], job["accepted"], job["rejected"]) == ("behaviour", 1, 1)
    listed = stack.ingest.get("/v1/imports", headers=auth(key)).json()["items"]
    assert [j["id"] for j in listed][:1] == [job["id"]]


def test_bad_import_requests_are_refused(stack: Stack) -> None:
    key = stack.create_tenant()
    one = {"files": ("x.csv", b"a\n1\n", "text/csv")}
    assert (
        stack.ingest.post("/v1/imports", data={"format": "xml"}, files=one, headers=auth(key)).status_code
        == 422
    )
    assert (
        stack.ingest.post("/v1/imports", data={"format": "olist"}, files=one, headers=auth(key)).status_code
        == 422
    )
    missing = [f for f in olist_files() if "payments" not in f[1][0]]
    refused = stack.ingest.post("/v1/imports", data={"format": "olist"}, files=missing, headers=auth(key))
    assert refused.status_code == 422
    assert "payments" in refused.json()["detail"]
