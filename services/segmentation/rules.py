"""The segment rule language (first subset) and its Python evaluator.

A rule is a condition ``{"field": "total_spent", "op": "gte", "value": "100"}`` or a group
``{"all": [...]}``, ``{"any": [...]}``, ``{"not": rule}``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

NumericField = Literal["orders_count", "total_spent", "average_order_value"]
Op = Literal["eq", "ne", "gt", "gte", "lt", "lte"]

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: NumericField
    op: Op
    value: Decimal = Field(description='A number (strings such as "100.50" are accepted for exact money).')


class AllOf(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    all: list[Rule] = Field(min_length=1, max_length=100)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    any: list[Rule] = Field(min_length=1, max_length=100)


class NotRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    not_: Rule = Field(alias="not")


Rule = Annotated[Union[Condition, AllOf, AnyOf, NotRule], Field(description="A condition or a group.")]  # noqa: UP007
for _model in (AllOf, AnyOf, NotRule):
    _model.model_rebuild()

rule_adapter: TypeAdapter[Rule] = TypeAdapter(Rule)


def parse_rule(raw: Any) -> Rule:
    return rule_adapter.validate_python(raw)


def dump_rule(rule: Rule) -> dict[str, Any]:
    dumped: dict[str, Any] = rule_adapter.dump_python(rule, mode="json", by_alias=True)
    return dumped


def matches(rule: Rule, traits: Mapping[str, Decimal | int | None]) -> bool:
    """Does a profile with these traits satisfy the rule? A missing trait satisfies no condition."""
    if isinstance(rule, Condition):
        value = traits.get(rule.field)
        return value is not None and OPERATORS[rule.op](Decimal(value), rule.value)
    if isinstance(rule, AllOf):
        return all(matches(r, traits) for r in rule.all)
    if isinstance(rule, AnyOf):
        return any(matches(r, traits) for r in rule.any)
    return not matches(rule.not_, traits)
