"""Ingest's own tables (plus the shared infrastructure tables in `shared.infra`)."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID, uuid4

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from shared.db import UTCDateTime, new_registry, utcnow

ingest_registry = new_registry()


class IngestTable(SQLModel, registry=ingest_registry):
    pass


class InboundRecord(IngestTable, table=True):
    """The latest accepted version of each record (order, customer record, behaviour event), as accepted:
    the normalised canonical JSON, sealed for the tenant (it holds the customer's name, e-mail, phone,
    document, birth date and address; `intake.open_payload` reads it). One row per (tenant, kind, source,
    external_id)."""

    __tablename__ = "inbound_record"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "kind", "source", "external_id"),)

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    kind: str = Field(max_length=20, description="order, customer or behaviour")
    source: str = Field(max_length=40)
    external_id: str = Field(max_length=200, description="The record's id on its source (or a content hash).")
    version: int = 1
    body_hash: str = Field(
        max_length=64, description="SHA-256 of the canonical JSON: detects identical resends."
    )
    source_updated_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True)
    )
    payload_sealed: bytes = Field(
        sa_column=sa.Column(sa.LargeBinary(), nullable=False),
        description="The canonical JSON (sorted keys), AES-GCM sealed for the tenant (`Keyring.seal_bytes`; "
        "records stored before migration 0009 hold the bytes of a `Keyring.seal` text token).",
    )
    received_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class IdempotencyRecord(IngestTable, table=True):
    """A POST's `Idempotency-Key` with the first response, kept at least 24 hours (per tenant)."""

    __tablename__ = "idempotency_record"

    scope: str = Field(
        sa_column=sa.Column(sa.String(64), primary_key=True), description="tenant id or 'admin'"
    )
    key: str = Field(sa_column=sa.Column(sa.String(200), primary_key=True))
    request_hash: str = Field(max_length=64)
    status_code: int | None = None
    response_body: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary(), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    completed_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))


class QualityCounter(IngestTable, table=True):
    """Daily data-quality counts per tenant and record kind (received, rejected by reason, completeness)."""

    __tablename__ = "quality_counter"

    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    day: date = Field(sa_column=sa.Column(sa.Date(), primary_key=True))
    kind: str = Field(sa_column=sa.Column(sa.String(20), primary_key=True))
    metric: str = Field(sa_column=sa.Column(sa.String(200), primary_key=True))
    shard: int = Field(
        default=0,
        sa_column=sa.Column(sa.SmallInteger(), primary_key=True, server_default="0"),
        description="Which of the metric's rows (see `quality.SHARDS`): the count is their sum.",
    )
    count: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))


class ImportJob(IngestTable, table=True):
    """A bulk import: uploaded files processed in the background, with progress."""

    __tablename__ = "import_job"

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    kind: str = Field(max_length=20, description="order, customer or behaviour")
    format: str = Field(max_length=10, description="csv, jsonl or olist")
    status: str = Field(default="pending", max_length=10, description="pending, running, done, failed")
    files: dict[str, str] = Field(
        sa_column=sa.Column(sa.JSON(), nullable=False), description="role -> stored name"
    )
    rows_total: int | None = None
    rows_read: int = 0
    accepted: int = 0
    updated: int = 0
    duplicates: int = 0
    stale: int = 0
    rejected: int = 0
    error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    finished_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    heartbeat_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))


class PrivacySuppression(IngestTable, table=True):
    """An identifier of a person erased at their request (`Keyring.suppression` hash, sent by the profile
    service): records carrying it are refused (`suppressed`) instead of bringing the person back."""

    __tablename__ = "privacy_suppression"

    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    hash: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    request_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
