"""The SQL evaluator of segment rules: a rule compiled to a WHERE clause over `profile_projection`.

`compile_rule(rule, now)` gives a boolean SQLAlchemy Core expression; full evaluation of a segment and
`POST /v1/segments:preview` select the tenant's projection rows that satisfy it. Only portable SQL is used
(PostgreSQL and SQLite): comparisons, IN, EXISTS subqueries on `profile_tag`, SUBSTR and EXTRACT(month);
no JSON functions, no date arithmetic in SQL (every time bound is computed here from `now` and bound as a
parameter).

Missing values: SQL's NULL is three-valued, and `NOT (x > 5)` is NULL, not true, when x is NULL. So every
scalar condition is `x IS NOT NULL AND <test>`, which is never NULL (FALSE AND NULL is FALSE): conditions
are two-valued, and so are the AND / OR / NOT built on them, as in the Python evaluator. EXISTS is
two-valued already.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from services.segmentation.models import ProfileProjection, ProfileTag
from services.segmentation.rules import (
    CONSENT_TAGS,
    FIELDS,
    AllOf,
    AnyOf,
    Condition,
    FieldSpec,
    Kind,
    Rule,
    utc_today,
)
from shared.records import to_minor

projection = cast(sa.Table, sa.inspect(ProfileProjection).local_table)
tag = cast(sa.Table, sa.inspect(ProfileTag).local_table)


def compile_rule(rule: Rule, now: datetime) -> ColumnElement[bool]:
    """The rule as a condition on `profile_projection` rows (correlated to `profile_tag`), at `now`."""
    utc_today(now)  # refuses a naive `now`
    if isinstance(rule, Condition):
        return _condition(rule, now)
    if isinstance(rule, AllOf):
        return sa.and_(*(compile_rule(r, now) for r in rule.all))
    if isinstance(rule, AnyOf):
        return sa.or_(*(compile_rule(r, now) for r in rule.any))
    return sa.not_(compile_rule(rule.not_, now))


def _condition(condition: Condition, now: datetime) -> ColumnElement[bool]:
    spec = FIELDS[condition.field]
    if spec.kind is Kind.string_set:
        return _set(spec, condition)
    if spec.kind is Kind.timed_set:
        return _timed(spec, condition, now)
    if spec.kind is Kind.consent:
        return _consent(condition)
    assert spec.column is not None
    column = projection.c[spec.column]
    if spec.derived == "age":
        test = _age(condition, column, utc_today(now))
    else:
        target = sa.extract("month", column) if spec.derived == "birth_month" else column
        test = _compare(condition.op, target, _operand(spec, condition.value), now)
    return sa.and_(column.is_not(None), test)


def _operand(spec: FieldSpec, value: Any) -> Any:
    if spec.kind is not Kind.money or value is None:
        return value
    if isinstance(value, tuple):
        return tuple(to_minor(v) for v in value)
    return to_minor(value)


def _compare(op: str, target: ColumnElement[Any], operand: Any, now: datetime) -> ColumnElement[bool]:
    """`target <op> operand`, for a target known not to be NULL."""
    result: ColumnElement[bool]
    match op:
        case "exists":
            result = sa.true()
        case "eq":
            result = target == operand
        case "ne":
            result = target != operand
        case "gt":
            result = target > operand
        case "gte":
            result = target >= operand
        case "lt":
            result = target < operand
        case "lte":
            result = target <= operand
        case "between":
            result = sa.and_(target >= operand[0], target <= operand[1])
        case "in":
            result = target.in_(operand)
        case "not_in":
            result = target.not_in(operand)
        case "starts_with":
            result = sa.func.substr(target, 1, len(operand)) == operand
        case "is_current_month":
            result = target == utc_today(now).month
        case _:
            result = _in_window(op, target, operand, now)
    return result


def _in_window(op: str, at: ColumnElement[Any], days: int, now: datetime) -> ColumnElement[bool]:
    span = timedelta(days=days)
    if op == "within_last_days":
        return sa.and_(at >= now - span, at <= now)
    if op == "within_next_days":
        return sa.and_(at >= now, at <= now + span)
    if op == "more_than_days_ago":
        return at < now - span
    raise ValueError(f"not a time operator: {op}")


# -- age: birth-date cut-offs instead of date arithmetic in SQL ---------------------------------------


def born_by(today: date, years: int) -> date:
    """The latest birth date of someone at least `years` old on `today`: the same day `years` years back
    (28 February when that is a 29 February of a common year)."""
    year = today.year - years
    return date(year, today.month, min(today.day, calendar.monthrange(year, today.month)[1]))


def _age(condition: Condition, birth_date: ColumnElement[Any], today: date) -> ColumnElement[bool]:
    """An age condition as ranges of whole years, each `birth_date <= born_by(low)` (at least `low` years
    old) and `birth_date > born_by(high + 1)` (not yet `high + 1`)."""
    op, value = condition.op, condition.value
    ranges: list[tuple[int | None, int | None]]
    match op:
        case "exists":
            return sa.true()
        case "eq" | "ne":
            ranges = [(value, value)]
        case "in" | "not_in":
            ranges = [(v, v) for v in value]
        case "gt":
            ranges = [(value + 1, None)]
        case "gte":
            ranges = [(value, None)]
        case "lt":
            ranges = [(None, value - 1)]
        case "lte":
            ranges = [(None, value)]
        case "between":
            ranges = [value]
        case _:
            raise ValueError(f"not an age operator: {op}")
    within = sa.or_(*(_age_range(birth_date, low, high, today) for low, high in ranges))
    return sa.not_(within) if op in ("ne", "not_in") else within


def _age_range(
    birth_date: ColumnElement[Any], low: int | None, high: int | None, today: date
) -> ColumnElement[bool]:
    bounds: list[ColumnElement[bool]] = []
    if low is not None:
        bounds.append(birth_date <= born_by(today, low))
    if high is not None:
        bounds.append(birth_date > born_by(today, high + 1))
    return sa.and_(*bounds)


# -- sets: EXISTS on profile_tag ----------------------------------------------------------------------


def _has(kinds: list[str], *where: ColumnElement[bool]) -> ColumnElement[bool]:
    """The profile has a tag of one of these kinds matching `where` (correlated to the outer projection)."""
    kind = tag.c.kind == kinds[0] if len(kinds) == 1 else tag.c.kind.in_(kinds)
    return sa.exists().where(tag.c.profile_id == projection.c.profile_id, kind, *where)


def _set(spec: FieldSpec, condition: Condition) -> ColumnElement[bool]:
    kinds = [str(spec.tag)]
    match condition.op:
        case "contains":
            return _has(kinds, tag.c.value == condition.value)
        case "in":
            return _has(kinds, tag.c.value.in_(condition.value))
        case "not_in":
            return sa.not_(_has(kinds, tag.c.value.in_(condition.value)))
        case "exists":
            return _has(kinds)
    raise ValueError(f"not a set operator: {condition.op}")


def _timed(spec: FieldSpec, condition: Condition, now: datetime) -> ColumnElement[bool]:
    where = [tag.c.value == condition.key]
    if condition.op != "exists":
        where += [tag.c.at.is_not(None), _in_window(condition.op, tag.c.at, condition.value, now)]
    return _has([str(spec.tag)], *where)


def _consent(condition: Condition) -> ColumnElement[bool]:
    """A consent is its purpose under the kind of its latest decision: `ne`/`not_in` look for the other
    decisions, so that a purpose without any decision satisfies none of them."""
    op, value = condition.op, condition.value
    match op:
        case "eq":
            decisions = [value]
        case "in":
            decisions = list(value)
        case "ne":
            decisions = [s for s in CONSENT_TAGS if s != value]
        case "not_in":
            decisions = [s for s in CONSENT_TAGS if s not in value]
        case "exists":
            decisions = list(CONSENT_TAGS)
        case _:
            raise ValueError(f"not a consent operator: {op}")
    if not decisions:
        return sa.false()
    return _has([str(CONSENT_TAGS[d]) for d in decisions], tag.c.value == condition.key)
