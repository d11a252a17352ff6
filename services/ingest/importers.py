"""Readers for bulk imports: JSONL and CSV of canonical records, and the Olist dataset as published.

Each reader yields `(row_number, record_or_error)` one at a time, so an import runs in constant memory
whatever the file size. Gzipped files (`.gz`) are read transparently. A row that cannot even be parsed
yields a `RowError` (reasons only, never the row's content: it may be personal data).
"""

from __future__ import annotations

import csv
import gzip
import io
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import orjson


@dataclass(frozen=True)
class RowError:
    reason: str


Row = tuple[int, Any]  # (1-based row number, raw record or RowError)


def open_text(path: Path) -> IO[str]:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    if gzipped:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return path.open("r", encoding="utf-8-sig", newline="")


def count_rows(path: Path, *, header: bool) -> int:
    with open_text(path) as handle:
        if header:
            return sum(1 for _ in csv.reader(handle)) - 1
        return sum(1 for line in handle if line.strip())


def read_jsonl(path: Path) -> Iterator[Row]:
    with open_text(path) as handle:
        number = 0
        for line in handle:
            if not line.strip():
                continue
            number += 1
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError:
                yield number, RowError("not valid JSON")


# CSV columns are dotted paths into the canonical record (`customer.email`, `customer.address.city`);
# these columns hold JSON (arrays or objects).
JSON_COLUMNS = {"items", "payments", "consents", "properties", "customer.consents"}


def unflatten(row: dict[str, str]) -> dict[str, Any]:
    """`{"customer.email": "a@b.c", "items": "[...]"}` → `{"customer": {"email": ...}, "items": [...]}`.
    Empty cells are left out (missing optional data, not empty strings)."""
    record: dict[str, Any] = {}
    for column, cell in row.items():
        if column is None or cell is None or cell == "":
            continue
        value: Any = orjson.loads(cell) if column in JSON_COLUMNS else cell
        target = record
        *parents, leaf = column.strip().split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return record


def read_csv(path: Path) -> Iterator[Row]:
    with open_text(path) as handle:
        for number, row in enumerate(csv.DictReader(handle), start=1):
            try:
                yield number, unflatten(row)
            except orjson.JSONDecodeError:
                yield (
                    number,
                    RowError("a JSON column (items, payments, consents, properties) is not valid JSON"),
                )


# --- Olist -----------------------------------------------------------------------------------------------

OLIST_FILES = {
    "orders": "olist_orders_dataset",
    "customers": "olist_customers_dataset",
    "items": "olist_order_items_dataset",
    "payments": "olist_order_payments_dataset",
    "products": "olist_products_dataset",
    "categories": "product_category_name_translation",
}
OLIST_REQUIRED = ("orders", "customers", "items", "payments")

OLIST_STATUS = {
    "created": "created",
    "approved": "paid",
    "invoiced": "paid",
    "processing": "paid",
    "shipped": "shipped",
    "delivered": "delivered",
    "canceled": "cancelled",
    "unavailable": "cancelled",
}
OLIST_PAYMENT = {
    "credit_card": "credit_card",
    "debit_card": "debit_card",
    "boleto": "boleto",
    "voucher": "voucher",
    "not_defined": "other",
}
_TIMESTAMPS = (
    "order_approved_at",
    "order_delivered_carrier_date",
    "order_delivered_customer_date",
)


def olist_role(filename: str) -> str | None:
    """Which Olist table a file holds, from its published name (`olist_orders_dataset.csv[.gz]`)."""
    stem = filename.rsplit("/", 1)[-1].removesuffix(".gz").removesuffix(".csv")
    return next((role for role, name in OLIST_FILES.items() if stem == name), None)


def _load(db: sqlite3.Connection, table: str, path: Path, columns: tuple[str, ...]) -> None:
    db.execute(f"CREATE TABLE {table} ({', '.join(columns)})")
    with open_text(path) as handle:
        rows = ([row.get(c, "") for c in columns] for row in csv.DictReader(handle))
        db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(columns))})", rows)  # noqa: S608


def read_olist(files: dict[str, Path], workdir: Path) -> Iterator[Row]:
    """Canonical orders from the Olist tables, joined through an on-disk SQLite index (constant memory).

    `customer_unique_id` (the person) becomes the customer's `external_id`; `customer_id` is one per order
    in Olist and identifies nobody. Items with the same product are one line with a quantity. The total is
    what the items and freight cost (the payments may differ by vouchers); timestamps are Brazil's time.
    """
    db = sqlite3.connect(workdir / "olist-join.sqlite3")
    try:
        _load(
            db,
            "customers",
            files["customers"],
            (
                "customer_id",
                "customer_unique_id",
                "customer_zip_code_prefix",
                "customer_city",
                "customer_state",
            ),
        )
        _load(
            db, "items", files["items"], ("order_id", "order_item_id", "product_id", "price", "freight_value")
        )
        _load(
            db,
            "payments",
            files["payments"],
            ("order_id", "payment_sequential", "payment_type", "payment_installments", "payment_value"),
        )
        db.execute("CREATE TABLE products (product_id, product_category_name)")
        if "products" in files:
            _load(db, "products_raw", files["products"], ("product_id", "product_category_name"))
            db.execute("INSERT INTO products SELECT * FROM products_raw")
        db.execute("CREATE TABLE categories (product_category_name, product_category_name_english)")
        if "categories" in files:
            _load(
                db,
                "categories_raw",
                files["categories"],
                ("product_category_name", "product_category_name_english"),
            )
            db.execute("INSERT INTO categories SELECT * FROM categories_raw")
        for statement in (
            "CREATE INDEX ix_customers ON customers (customer_id)",
            "CREATE INDEX ix_items ON items (order_id)",
            "CREATE INDEX ix_payments ON payments (order_id)",
            "CREATE INDEX ix_products ON products (product_id)",
            "CREATE INDEX ix_categories ON categories (product_category_name)",
        ):
            db.execute(statement)
        db.commit()
        with open_text(files["orders"]) as handle:
            for number, order in enumerate(csv.DictReader(handle), start=1):
                try:
                    yield number, _olist_order(db, order)
                except (KeyError, ArithmeticError, ValueError):
                    yield number, RowError("an Olist row is missing a column or holds an unreadable value")
    finally:
        db.close()


def _olist_order(db: sqlite3.Connection, order: dict[str, str]) -> dict[str, Any]:
    order_id = order["order_id"]
    customer = db.execute(
        "SELECT customer_unique_id, customer_zip_code_prefix, customer_city, customer_state FROM customers "
        "WHERE customer_id = ?",
        (order["customer_id"],),
    ).fetchone()
    lines: dict[str, dict[str, Any]] = {}
    freight = Decimal("0")
    for product_id, price, freight_value, category, english in db.execute(
        "SELECT i.product_id, i.price, i.freight_value, p.product_category_name, "
        "c.product_category_name_english FROM items i LEFT JOIN products p ON p.product_id = i.product_id "
        "LEFT JOIN categories c ON c.product_category_name = p.product_category_name "
        "WHERE i.order_id = ? ORDER BY CAST(i.order_item_id AS INTEGER)",
        (order_id,),
    ):
        freight += Decimal(freight_value or "0")
        line = lines.get(product_id)
        if line is None:
            lines[product_id] = {
                "sku": product_id,
                "category": english or category or None,
                "quantity": 1,
                "unit_price": Decimal(price),
            }
        else:
            line["quantity"] += 1
    payments = [
        {
            "method": OLIST_PAYMENT.get(kind, "other"),
            "installments": max(1, int(installments or "1")),
            "amount": str(Decimal(value)),
        }
        for kind, installments, value in db.execute(
            "SELECT payment_type, payment_installments, payment_value FROM payments WHERE order_id = ? "
            "ORDER BY CAST(payment_sequential AS INTEGER)",
            (order_id,),
        )
    ]
    items_total = sum((line["unit_price"] * line["quantity"] for line in lines.values()), Decimal("0"))
    paid = sum((Decimal(str(p["amount"])) for p in payments), Decimal("0"))
    total = items_total + freight if lines else paid
    changed = [order[c] for c in _TIMESTAMPS if order.get(c)]
    record: dict[str, Any] = {
        "external_id": order_id,
        "source": "olist",
        "status": OLIST_STATUS.get(order["order_status"], order["order_status"]),
        "placed_at": order["order_purchase_timestamp"],
        "updated_at": max(changed) if changed else None,
        "currency": "BRL",
        "total": str(total),
        "shipping": str(freight),
        "items": [{**line, "unit_price": str(line["unit_price"])} for line in lines.values()],
        "payments": payments,
        "customer": {},
    }
    if customer is not None:
        unique_id, zip_prefix, city, state = customer
        record["customer"] = {
            "external_id": unique_id,
            "address": {
                "zip": zip_prefix or None,
                "city": city or None,
                "state": state or None,
                "country": "BR",
            },
        }
    return record
