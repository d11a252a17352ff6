"""The Python evaluator of segment rules: does one profile match? (The incremental path: every profile
change re-evaluates that profile against its tenant's segments.)

It reads a `Traits` snapshot, the same data the SQL evaluator (`compiler.compile_rule`) reads from the
tables: the `profile_projection` columns and the `profile_tag` rows. The two must agree on every rule and
profile; `rules`' module docstring fixes the shared semantics, and the property-based tests check them.
Here each is written the straightforward way (e.g. the age is computed, where SQL compares birth dates
with cut-off dates), so that the agreement test compares two independent readings of the semantics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from services.segmentation.rules import (
    CONSENT_TAGS,
    AllOf,
    AnyOf,
    Condition,
    FieldSpec,
    Kind,
    Rule,
    utc_today,
)
from services.segmentation.rules import FIELDS as CATALOGUE
from shared.records import to_minor


@dataclass(frozen=True)
class Traits:
    """A profile as the evaluators see it: `columns` of `profile_projection` by name (None: unknown) and
    its tags as kind -> value -> time (None where the kind has no time)."""

    columns: Mapping[str, Any]
    tags: Mapping[str, Mapping[str, datetime | None]] = field(default_factory=dict)


def matches(rule: Rule, traits: Traits, now: datetime) -> bool:
    """Does a profile with these traits satisfy the rule at `now` (aware)?"""
    utc_today(now)  # refuses a naive `now`
    if isinstance(rule, Condition):
        return _condition(rule, traits, now)
    if isinstance(rule, AllOf):
        return all(matches(r, traits, now) for r in rule.all)
    if isinstance(rule, AnyOf):
        return any(matches(r, traits, now) for r in rule.any)
    return not matches(rule.not_, traits, now)


def age_at(birth_date: date, today: date) -> int:
    """Whole years: one more on each birthday (for 29 February, from 1 March in common years)."""
    return today.year - birth_date.year - ((today.month, today.day) < (birth_date.month, birth_date.day))


def _condition(condition: Condition, traits: Traits, now: datetime) -> bool:
    spec = CATALOGUE[condition.field]
    if spec.kind is Kind.string_set:
        return _set(condition, traits.tags.get(spec.tag or "", {}))
    if spec.kind is Kind.timed_set:
        return _timed(condition, traits.tags.get(spec.tag or "", {}), now)
    if spec.kind is Kind.consent:
        return _consent(condition, traits)
    assert spec.column is not None
    value = traits.columns.get(spec.column)
    if value is None:
        return False  # a missing trait satisfies no condition
    if spec.derived == "age":
        value = age_at(value, utc_today(now))
    elif spec.derived == "birth_month":
        value = value.month
    return _compare(condition.op, value, _operand(spec, condition.value), now)


def _operand(spec: FieldSpec, value: Any) -> Any:
    """The rule's value in the projection's terms: money in cents."""
    if spec.kind is not Kind.money or value is None:
        return value
    if isinstance(value, tuple):
        return tuple(to_minor(v) for v in value)
    return to_minor(value)


def _compare(op: str, value: Any, operand: Any, now: datetime) -> bool:
    result: bool
    match op:
        case "exists":
            result = True
        case "eq":
            result = value == operand
        case "ne":
            result = value != operand
        case "gt":
            result = value > operand
        case "gte":
            result = value >= operand
        case "lt":
            result = value < operand
        case "lte":
            result = value <= operand
        case "between":
            result = operand[0] <= value <= operand[1]
        case "in":
            result = value in operand
        case "not_in":
            result = value not in operand
        case "starts_with":
            result = value.startswith(operand)
        case "is_current_month":
            result = value == utc_today(now).month
        case _:
            result = _in_window(op, value, operand, now)
    return result


def _in_window(op: str, at: datetime, days: int, now: datetime) -> bool:
    span = timedelta(days=days)
    if op == "within_last_days":
        return now - span <= at <= now
    if op == "within_next_days":
        return now <= at <= now + span
    if op == "more_than_days_ago":
        return at < now - span
    raise ValueError(f"not a time operator: {op}")


def _set(condition: Condition, elements: Mapping[str, datetime | None]) -> bool:
    match condition.op:
        case "contains":
            return bool(condition.value in elements)
        case "in":
            return any(v in elements for v in condition.value)
        case "not_in":
            return not any(v in elements for v in condition.value)
        case "exists":
            return bool(elements)
    raise ValueError(f"not a set operator: {condition.op}")


def _timed(condition: Condition, elements: Mapping[str, datetime | None], now: datetime) -> bool:
    if condition.key is None or condition.key not in elements:
        return False
    at = elements[condition.key]
    if condition.op == "exists":
        return True
    return at is not None and _in_window(condition.op, at, condition.value, now)


def _consent(condition: Condition, traits: Traits) -> bool:
    decision = next(
        (status for status, kind in CONSENT_TAGS.items() if condition.key in traits.tags.get(kind, {})),
        None,
    )
    if decision is None:
        return False  # no decision recorded for the purpose
    match condition.op:
        case "eq":
            return bool(decision == condition.value)
        case "ne":
            return bool(decision != condition.value)
        case "in":
            return bool(decision in condition.value)
        case "not_in":
            return bool(decision not in condition.value)
        case "exists":
            return True
    raise ValueError(f"not a consent operator: {condition.op}")
