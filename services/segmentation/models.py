"""The segmentation service's own tables (plus the shared infrastructure tables in `shared.infra`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from shared.db import UTCDateTime, new_registry, utcnow

segmentation_registry = new_registry()


class SegmentationTable(SQLModel, registry=segmentation_registry):
    pass


class ProfileProjection(SegmentationTable, table=True):
    """This service's copy of each profile's segmentable traits, built from ProfileUpdated events."""

    __tablename__ = "profile_projection"

    profile_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    profile_version: int
    orders_count: int
    total_spent_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    first_order_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    last_order_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class Segment(SegmentationTable, table=True):
    __tablename__ = "segment"

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    name: str = Field(max_length=200)
    rule: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class SegmentMember(SegmentationTable, table=True):
    __tablename__ = "segment_member"

    segment_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    profile_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    entered_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
