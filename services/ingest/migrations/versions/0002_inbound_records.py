"""inbound records (orders, customer records, behaviour events), idempotency keys, quality counters

Orders move from `order_record` to `inbound_record` (kind `order`) and back on downgrade.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 17:12:29.187020
"""

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_record",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_record")),
    )
    op.create_table(
        "inbound_record",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body_hash", sa.String(length=64), nullable=False),
        sa.Column("source_updated_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_record")),
        sa.UniqueConstraint(
            "tenant_id",
            "kind",
            "source",
            "external_id",
            name=op.f("uq_inbound_record_tenant_id_kind_source_external_id"),
        ),
    )
    op.create_table(
        "quality_counter",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("metric", sa.String(length=200), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day", "kind", "metric", name=op.f("pk_quality_counter")),
    )
    _copy_orders_up()
    op.drop_table("order_record")


def downgrade() -> None:
    op.create_table(
        "order_record",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body_hash", sa.String(length=64), nullable=False),
        sa.Column("source_updated_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("placed_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_record")),
        sa.UniqueConstraint(
            "tenant_id", "source", "external_id", name=op.f("uq_order_record_tenant_id_source_external_id")
        ),
    )
    _copy_orders_down()
    op.drop_table("quality_counter")
    op.drop_table("inbound_record")
    op.drop_table("idempotency_record")


_COMMON = (
    "id",
    "tenant_id",
    "source",
    "external_id",
    "version",
    "body_hash",
    "source_updated_at",
    "payload",
    "received_at",
    "updated_at",
)


def _table(name: str, *extra: sa.ColumnClause[Any]) -> sa.TableClause:
    return sa.table(
        name,
        sa.column("id", sa.Uuid()),
        sa.column("tenant_id", sa.Uuid()),
        sa.column("source", sa.String()),
        sa.column("external_id", sa.String()),
        sa.column("version", sa.Integer()),
        sa.column("body_hash", sa.String()),
        sa.column("source_updated_at", shared.db.UTCDateTime()),
        sa.column("payload", sa.JSON()),
        sa.column("received_at", shared.db.UTCDateTime()),
        sa.column("updated_at", shared.db.UTCDateTime()),
        *extra,
    )


def _copy_orders_up() -> None:
    bind = op.get_bind()
    old = _table("order_record")
    new = _table("inbound_record", sa.column("kind", sa.String()))
    rows = [
        dict(r._mapping) | {"kind": "order"} for r in bind.execute(sa.select(*[old.c[c] for c in _COMMON]))
    ]
    if rows:
        bind.execute(new.insert(), rows)


def _copy_orders_down() -> None:
    bind = op.get_bind()
    new = _table("inbound_record", sa.column("kind", sa.String()))
    old = _table(
        "order_record",
        sa.column("status", sa.String()),
        sa.column("placed_at", shared.db.UTCDateTime()),
        sa.column("total_minor", sa.BigInteger()),
        sa.column("currency", sa.String()),
    )
    query = sa.select(*[new.c[c] for c in _COMMON]).where(new.c.kind == "order")
    rows = []
    for row in bind.execute(query):
        values = dict(row._mapping)
        payload = values["payload"]
        values |= {
            "status": payload["status"],
            "placed_at": datetime.fromisoformat(payload["placed_at"].replace("Z", "+00:00")),
            "total_minor": int(Decimal(payload["total"]).scaleb(2)),
            "currency": payload.get("currency", "BRL"),
        }
        rows.append(values)
    if rows:
        bind.execute(old.insert(), rows)
