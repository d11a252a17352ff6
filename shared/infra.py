"""The infrastructure tables every service database has: outbox, processed events, tenants and API keys.

They are defined once here and created by each service's own migrations in its own database. Tenants and
keys are owned by ingest; the other services hold a replica built from the tenants topic (`TenantCreated`,
`ApiKeyIssued`, `ApiKeyChanged`, `ApiKeyRevoked`).
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from shared.db import UTCDateTime, new_registry, utcnow

infra_registry = new_registry()


class InfraTable(SQLModel, registry=infra_registry):
    pass


class OutboxMessage(InfraTable, table=True):
    """An event waiting to be published; written in the same transaction as the state change."""

    __tablename__ = "outbox_message"
    __table_args__ = (
        sa.Index(
            "ix_outbox_message_unpublished",
            "id",
            sqlite_where=sa.text("published_at IS NULL"),
            postgresql_where=sa.text("published_at IS NULL"),
        ),
    )

    # BIGINT on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY auto-increments.
    id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    # Not indexed: ids are random (uuid4) and made by `outbox_row`; nothing looks a row up by one.
    event_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    topic: str = Field(max_length=200)
    key: str = Field(max_length=200)
    event_type: str = Field(max_length=100)
    body: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    published_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))


class ProcessedEvent(InfraTable, table=True):
    """Ids of consumed events, stored in the same transaction as their effects (idempotent consumer)."""

    __tablename__ = "processed_event"

    consumer: str = Field(sa_column=sa.Column(sa.String(100), primary_key=True))
    event_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    processed_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class Tenant(InfraTable, table=True):
    __tablename__ = "tenant"

    id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    name: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class ApiKey(InfraTable, table=True):
    """An API key, stored only as its SHA-256 hash, with what it may do (`shared.auth.Scope`) and until when.

    A key works while it is neither revoked nor past `expires_at`. Rows are never deleted: a revoked key
    stays listed (and its hash can never be issued again)."""

    __tablename__ = "api_key"

    id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    key_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    prefix: str = Field(max_length=20)
    name: str = Field(max_length=100)
    scopes: list[str] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
