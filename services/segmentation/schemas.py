"""The segmentation service's API models.

A rule in a request body is published with the rule language's JSON Schema (`rules.Rule`: conditions and
groups, with the field catalogue in the Condition schema's description) but is read as plain JSON here and
parsed by the route with `rules.parse_rule`. That way an invalid rule gets one problem+json whose errors
name the path of each offending part (`rule.all[2].value`), instead of pydantic's errors for every member
of the rule union.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainValidator
from pydantic.json_schema import SkipJsonSchema

from services.segmentation.rules import Rule
from shared.records import ConsentPurpose
from shared.web import RequestInt


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


PURPOSE_DESCRIPTION = (
    "What the members will be contacted for (a consent purpose). Exports then include only members whose "
    "latest decision for it is `granted`, unless asked for everyone. Null: no purpose, exports include "
    "every member."
)


class SegmentCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "Big spenders", "rule": RULE_EXAMPLES[0]},
                {"name": "Repeat buyers in SP or RJ who accept e-mail", "rule": RULE_EXAMPLES[1]},
                {"name": "Looked at phones this week, never bought one", "rule": RULE_EXAMPLES[2]},
                {"name": "Young, or in central São Paulo", "rule": RULE_EXAMPLES[3]},
                {
                    "name": "Abandoned a cart this week (WhatsApp)",
                    "rule": {"field": "cart_abandoned_at", "op": "within_last_days", "value": 7},
                    "purpose": "marketing_whatsapp",
                },
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200)
    rule: RuleInput
    purpose: ConsentPurpose | None = Field(None, description=PURPOSE_DESCRIPTION)


class SegmentUpdate(BaseModel):
    """Only the fields sent change. A new rule is evaluated over every profile again (within the request
    for a small tenant, otherwise in the background: see `evaluation`); `purpose: null` removes it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Big spenders (R$800+)",
                    "rule": {"field": "total_spent", "op": "gte", "value": "800"},
                },
                {"purpose": "marketing_whatsapp"},
                {"purpose": None},
            ]
        },
    )

    # Optional but not nullable (null is refused): only `purpose` can be removed.
    name: Annotated[str, Field(min_length=1, max_length=200)] | SkipJsonSchema[None] = None
    rule: RuleInput = None
    purpose: ConsentPurpose | None = Field(None, description=PURPOSE_DESCRIPTION)


class SegmentPreviewRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"rule": RULE_EXAMPLES[1], "sample_size": 5}]},
    )

    rule: RuleInput
    sample_size: RequestInt = Field(10, ge=0, le=100, description="How many matching profile ids to return.")


class SegmentPreview(BaseModel):
    count: int = Field(description="Profiles that satisfy the rule now.")
    sample: list[UUID] = Field(description="Some of them (the lowest ids).")
    evaluated_at: datetime


EvaluationStatusName = Literal["queued", "running", "done", "failed", "cancelled"]


class EvaluationRead(BaseModel):
    """A full evaluation of a segment over every profile of its tenant."""

    id: UUID
    segment_id: UUID
    reason: str = Field(
        description="`segment_created`, `rule_changed`, `schedule` (a time-relative rule, evaluated again "
        "as time passes) or `requested`."
    )
    status: EvaluationStatusName = Field(
        description="`queued`, `running`, `done`, `failed`, or `cancelled` (a newer rule replaced it)."
    )
    profiles_total: int | None = Field(description="The tenant's profiles when it started.")
    processed: int = Field(description="Profiles evaluated so far.")
    progress: float | None = Field(description="processed / profiles_total, 0 to 1 (1 when done).")
    entered: int = Field(description="Profiles that entered the segment so far.")
    exited: int = Field(description="Profiles that left it so far.")
    evaluated_at: datetime | None = Field(description="The time the rule is evaluated at (`now`).")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None = Field(description="From start to finish, in seconds.")
    error: str | None


class EvaluationList(BaseModel):
    items: list[EvaluationRead]


class SegmentRead(BaseModel):
    id: UUID
    name: str
    rule: dict[str, object] = Field(description="The rule as stored (canonical form).")
    purpose: ConsentPurpose | None = Field(description=PURPOSE_DESCRIPTION)
    time_relative: bool = Field(
        description="The rule depends on time alone (e.g. `within_last_days`, `age`): it is evaluated again "
        "on a schedule (SEGMENTATION_REEVALUATE_HOURS, daily by default)."
    )
    size: int = Field(
        description="Current number of members (while `evaluation` is queued or running, on the way to "
        "the new rule's)."
    )
    evaluation: EvaluationRead | None = Field(description="The latest full evaluation.")
    created_at: datetime
    updated_at: datetime


class SegmentList(BaseModel):
    items: list[SegmentRead]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


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


class StatsWindow(BaseModel):
    days: int = Field(description="The last `days` days, up to now.")
    entered: int
    exited: int


class StatsDay(BaseModel):
    day: date = Field(description="A UTC day.")
    size: int = Field(description="Members at the end of the day (today: now).")
    entered: int
    exited: int


class SegmentStats(BaseModel):
    size: int = Field(description="Current number of members.")
    purpose: ConsentPurpose | None
    reachable: int | None = Field(
        description="Members whose latest decision for the segment's purpose is `granted` (what an export "
        "includes by default); null without a purpose."
    )
    windows: list[StatsWindow] = Field(description="Entries and exits over the last 1, 7 and 30 days.")
    daily: list[StatsDay] = Field(description="Size and changes per day, oldest first, today last.")
    history_since: datetime | None = Field(
        description="The oldest change in the history: sizes before it are not known."
    )
    last_evaluation: EvaluationRead | None = Field(description="The latest full evaluation that finished.")


class HistoryEntry(BaseModel):
    id: int
    profile_id: UUID
    change: Literal["entered", "exited"]
    reason: str = Field(
        description="`profile_updated`, `profile_merged`, `segment_created`, `rule_changed`, `schedule`, "
        "`requested`, or `backfill` (a member already there when the history began)."
    )
    profile_version: int
    at: datetime


class HistoryPage(BaseModel):
    items: list[HistoryEntry]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )
