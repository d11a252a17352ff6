"""The segmentation service's API models.

A rule in a request body is published with the rule language's JSON Schema (`rules.Rule`: conditions and
groups, with the field catalogue in the Condition schema's description) but is read as plain JSON here and
parsed by the route with `rules.parse_rule`. That way an invalid rule gets one problem+json whose errors
name the path of each offending part (`rule.all[2].value`), instead of pydantic's errors for every member
of the rule union.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainValidator

from services.segmentation.rules import Rule


def _as_given(value: Any) -> Any:
    return value


RuleInput = Annotated[
    Any,
    PlainValidator(_as_given, json_schema_input_type=Rule),
    Field(description="The rule (see the Condition, AllOf, AnyOf and NotRule schemas)."),
]

RULE_EXAMPLES: list[dict[str, Any]] = [
    {"field": "total_spent", "op": "gte", "value": "500.00"},
    {
        "all": [
            {"field": "orders_count", "op": "gte", "value": 2},
            {"field": "state", "op": "in", "value": ["SP", "RJ"]},
            {"field": "consent", "key": "marketing_email", "op": "eq", "value": "granted"},
        ]
    },
    {
        "all": [
            {"field": "viewed_categories", "key": "celulares", "op": "within_last_days", "value": 7},
            {"not": {"field": "bought_categories", "op": "contains", "value": "celulares"}},
        ]
    },
    {
        "any": [
            {"field": "age", "op": "between", "value": [18, 24]},
            {"field": "zip", "op": "starts_with", "value": "01"},
        ]
    },
]


class SegmentCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "Big spenders", "rule": RULE_EXAMPLES[0]},
                {"name": "Repeat buyers in SP or RJ who accept e-mail", "rule": RULE_EXAMPLES[1]},
                {"name": "Looked at phones this week, never bought one", "rule": RULE_EXAMPLES[2]},
                {"name": "Young, or in central São Paulo", "rule": RULE_EXAMPLES[3]},
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200)
    rule: RuleInput


class SegmentPreviewRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"rule": RULE_EXAMPLES[1], "sample_size": 5}]},
    )

    rule: RuleInput
    sample_size: int = Field(10, ge=0, le=100, description="How many matching profile ids to return.")


class SegmentPreview(BaseModel):
    count: int = Field(description="Profiles that satisfy the rule now.")
    sample: list[UUID] = Field(description="Some of them (the lowest ids).")
    evaluated_at: datetime


class SegmentRead(BaseModel):
    id: UUID
    name: str
    rule: dict[str, object] = Field(description="The rule as stored (canonical form).")
    size: int = Field(description="Current number of members.")
    created_at: datetime
    updated_at: datetime


class SegmentList(BaseModel):
    items: list[SegmentRead]


class SegmentTemplate(BaseModel):
    id: str
    name: str
    description: str
    rule: dict[str, Any] = Field(description="A valid rule: send it as the `rule` of POST /v1/segments.")


class SegmentTemplateList(BaseModel):
    items: list[SegmentTemplate]


class Member(BaseModel):
    profile_id: UUID
    entered_at: datetime


class MemberPage(BaseModel):
    items: list[Member]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )
