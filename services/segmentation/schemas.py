"""The segmentation service's API models."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from services.segmentation.rules import Rule


class SegmentCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "Big spenders", "rule": {"field": "total_spent", "op": "gte", "value": "500"}},
                {
                    "name": "Repeat buyers over R$100",
                    "rule": {
                        "all": [
                            {"field": "orders_count", "op": "gte", "value": 2},
                            {"field": "total_spent", "op": "gt", "value": "100"},
                        ]
                    },
                },
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200)
    rule: Rule


class SegmentRead(BaseModel):
    id: UUID
    name: str
    rule: dict[str, object]
    size: int = Field(description="Current number of members.")
    created_at: datetime
    updated_at: datetime


class SegmentList(BaseModel):
    items: list[SegmentRead]


class Member(BaseModel):
    profile_id: UUID
    entered_at: datetime


class MemberPage(BaseModel):
    items: list[Member]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )
