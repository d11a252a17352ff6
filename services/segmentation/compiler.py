"""The SQL evaluator of segment rules: a rule compiled to a WHERE clause over `profile_projection`.

`compile_rule(rule, now)` gives `Compiled`: two boolean SQLAlchemy Core expressions, `may` (every profile
that satisfies the rule satisfies it) and `must` (every profile that satisfies it satisfies the rule).
They are one and the same unless the rule reads the birth date (`age`, `birth_date`, `birth_month`) or the
CEP (`zip`): those are stored sealed, and SQL sees only their generalised copies (year and month of birth,
the CEP's first five digits), which decide most profiles but not all (someone born in the month that
turns 18 today; a CEP with the wanted first five digits). Full evaluation and preview
(`segments.matching`) select `may` and open, for the Python evaluator, only the profiles `must` leaves
undecided. Only portable SQL is used (PostgreSQL and SQLite): comparisons, arithmetic, IN, EXISTS
subqueries on `profile_tag` and SUBSTR; no JSON functions, no date arithmetic in SQL (every time bound is
computed here from `now` and bound as a parameter).

Missing values: SQL's NULL is three-valued, and `NOT (x > 5)` is NULL, not true, when x is NULL. So every
scalar condition is `x IS NOT NULL AND <test>`, which is never NULL (FALSE AND NULL is FALSE): conditions
are two-valued, and so are the AND / OR / NOT built on them, as in the Python evaluator. EXISTS is
two-valued already.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

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
from shared.db import table_of
from shared.records import to_minor

projection = table_of(ProfileProjection)
tag = table_of(ProfileTag)

# The month of birth as a single number (year * 12 + month - 1), so that dates compare month by month.
_birth_months = projection.c.birth_year * 12 + projection.c.birth_month - 1


@dataclass(frozen=True)
class Compiled:
    """A rule as SQL: `must` implies the rule, the rule implies `may`; `must` is None when they are the
    same condition (`exact`)."""

    may: ColumnElement[bool]
    must: ColumnElement[bool] | None = None

    @property
    def exact(self) -> bool:
        return self.must is None

    @property
    def sure(self) -> ColumnElement[bool]:
        return self.may if self.must is None else self.must


def compile_rule(rule: Rule, now: datetime) -> Compiled:
    """The rule as conditions on `profile_projection` rows (correlated to `profile_tag`), at `now`."""
    utc_today(now)  # refuses a naive `now`
    if isinstance(rule, Condition):
        return _condition(rule, now)
    if isinstance(rule, AllOf | AnyOf):
        parts = [compile_rule(r, now) for r in (rule.all if isinstance(rule, AllOf) else rule.any)]
        join = sa.and_ if isinstance(rule, AllOf) else sa.or_
        may = join(*(p.may for p in parts))
        return Compiled(may, None if all(p.exact for p in parts) else join(*(p.sure for p in parts)))
    inner = compile_rule(rule.not_, now)
    return Compiled(sa.not_(inner.sure), None if inner.exact else sa.not_(inner.may))


def _condition(condition: Condition, now: datetime) -> Compiled:
    spec = FIELDS[condition.field]
    if spec.kind is Kind.string_set:
        return Compiled(_set(spec, condition))
    if spec.kind is Kind.timed_set:
        return Compiled(_timed(spec, condition, now))
    if spec.kind is Kind.consent:
        return Compiled(_consent(condition))
    if spec.column == "birth_date":
        return _birth(spec, condition, now)
    if spec.column == "zip":
        return _zip(condition)
    assert spec.column is not None
    column = projection.c[spec.column]
    test = _compare(condition.op, column, _operand(spec, condition.value), now)
    return Compiled(sa.and_(column.is_not(None), test))


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


# -- the birth date and the CEP: bounds from their generalised copies ---------------------------------


def born_by(today: date, years: int) -> date:
    """The latest birth date of someone at least `years` old on `today`: the same day `years` years back
    (28 February when that is a 29 February of a common year)."""
    year = today.year - years
    return date(year, today.month, min(today.day, calendar.monthrange(year, today.month)[1]))


def _month_of(day: date) -> int:
    return day.year * 12 + day.month - 1


def _dated(op: str, operand: Any) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """(must, may) for `birth_date <op> operand` from the month of birth alone (known not to be NULL):
    the profiles born in a month the comparison holds for on every day, and on some day."""
    months = _birth_months
    match op:
        case "exists":
            return sa.true(), sa.true()
        case "eq":
            return sa.false(), months == _month_of(operand)
        case "ne":
            return months != _month_of(operand), sa.true()
        case "gt" | "gte":
            return months > _month_of(operand), months >= _month_of(operand)
        case "lt" | "lte":
            return months < _month_of(operand), months <= _month_of(operand)
        case "between":
            low, high = _month_of(operand[0]), _month_of(operand[1])
            return sa.and_(months > low, months < high), sa.and_(months >= low, months <= high)
    raise ValueError(f"not a date operator: {op}")


def _birth(spec: FieldSpec, condition: Condition, now: datetime) -> Compiled:
    known = projection.c.birth_year.is_not(None)
    if spec.derived == "birth_month":  # exact: the month is stored as such
        return Compiled(
            sa.and_(known, _compare(condition.op, projection.c.birth_month, condition.value, now))
        )
    if spec.derived == "age":
        must, may = _age(condition, utc_today(now))
    else:
        must, may = _dated(condition.op, condition.value)
    return Compiled(sa.and_(known, may), sa.and_(known, must))


def _age(condition: Condition, today: date) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """(must, may) for an age condition: ranges of whole years, each `birth_date <= born_by(low)` (at least
    `low` years old) and `birth_date > born_by(high + 1)` (not yet `high + 1`), bounded by month."""
    op, value = condition.op, condition.value
    ranges: list[tuple[int | None, int | None]]
    match op:
        case "exists":
            return sa.true(), sa.true()
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
    bounds = [_age_range(low, high, today) for low, high in ranges]
    must, may = sa.or_(*(b[0] for b in bounds)), sa.or_(*(b[1] for b in bounds))
    return (sa.not_(may), sa.not_(must)) if op in ("ne", "not_in") else (must, may)


def _age_range(
    low: int | None, high: int | None, today: date
) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    cuts: list[tuple[str, date]] = []
    if low is not None:
        cuts.append(("lte", born_by(today, low)))
    if high is not None:
        cuts.append(("gt", born_by(today, high + 1)))
    bounds = [_dated(op, cut) for op, cut in cuts]
    return sa.and_(*(b[0] for b in bounds)), sa.and_(*(b[1] for b in bounds))


def _zip(condition: Condition) -> Compiled:
    """A CEP condition from its first five digits: exact for a prefix of at most five digits, otherwise
    the profiles whose first five digits could match."""
    prefix, op, value = projection.c.zip_prefix, condition.op, condition.value
    known = prefix.is_not(None)
    must: ColumnElement[bool]
    match op:
        case "exists":
            return Compiled(known)
        case "starts_with" if len(value) <= 5:
            return Compiled(sa.and_(known, sa.func.substr(prefix, 1, len(value)) == value))
        case "starts_with" | "eq":
            must, may = sa.false(), prefix == value[:5]
        case "ne":
            must, may = prefix != value[:5], sa.true()
        case "in":
            must, may = sa.false(), prefix.in_(sorted({v[:5] for v in value}))
        case "not_in":
            must, may = prefix.not_in(sorted({v[:5] for v in value})), sa.true()
        case _:
            raise ValueError(f"not a CEP operator: {op}")
    return Compiled(sa.and_(known, may), sa.and_(known, must))


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
