"""Ingest's own tables (plus the shared infrastructure tables in `shared.infra`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from shared.db import UTCDateTime, new_registry, utcnow

ingest_registry = new_registry()


class IngestTable(SQLModel, registry=ingest_registry):
    pass


class OrderRecord(IngestTable, table=True):
    """The latest accepted version of an order, as accepted (normalised canonical JSON)."""

    __tablename__ = "order_record"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "source", "external_id"),)

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    source: str = Field(max_length=40)
    external_id: str = Field(max_length=200)
    status: str = Field(max_length=20)
    version: int = 1
    body_hash: str = Field(
        max_length=64, description="SHA-256 of the canonical JSON: detects identical resends."
    )
    source_updated_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True)
    )
    placed_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    total_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    currency: str = Field(max_length=3)
    payload: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    received_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
