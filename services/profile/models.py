"""The profile service's own tables (plus the shared infrastructure tables in `shared.infra`)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid4

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from shared.db import UTCDateTime, new_registry, utcnow

profile_registry = new_registry()


class ProfileTable(SQLModel, registry=profile_registry):
    pass


class Profile(ProfileTable, table=True):
    """One unified customer profile per person within a tenant."""

    __tablename__ = "profile"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "email"),)

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    email: str = Field(max_length=254)
    orders_count: int = 0
    total_spent_minor: int = Field(default=0, sa_column=sa.Column(sa.BigInteger(), nullable=False))
    first_order_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    last_order_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    version: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class ProfileOrder(ProfileTable, table=True):
    """The latest version of each order seen, per profile: traits are recomputed from these rows."""

    __tablename__ = "profile_order"

    order_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    profile_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    order_version: int
    source: str = Field(max_length=40)
    status: str = Field(max_length=20)
    total_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    placed_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
