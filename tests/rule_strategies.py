"""Hypothesis strategies for segment rules and profiles, shared by the rule tests (unit and integration).

Rules and profiles draw their values from the same small pools, and times and birth dates cluster around
the edges of the windows (exactly N days ago, a microsecond either side, birthdays today, 29 February), so
that generated rules select some profiles and not others instead of almost always none.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import sqlalchemy as sa
from hypothesis import strategies as st
from sqlmodel import Session

from services.segmentation import projection as projections
from services.segmentation import segments
from services.segmentation.compiler import compile_rule
from services.segmentation.compiler import projection as projection_table
from services.segmentation.evaluate import Traits, matches
from services.segmentation.models import ProfileProjection
from services.segmentation.rules import (
    CONSENT_TAGS,
    FIELDS,
    OPERATORS,
    RFM_GROUPS,
    FieldSpec,
    Kind,
    Rule,
    parse_rule,
)
from shared.records import ConsentPurpose, ConsentStatus, Gender, PaymentMethod

JSON = Any
DAYS = (1, 7, 30, 180)
CENTS = (0, 1, 999, 1000, 1001, 5000, 25990)
SOURCES = ("site", "mercadolivre", "shopee")
NAMES = ("a", "b", "c")
STATES = ("SP", "RJ", "MG")
CITIES = ("São Paulo", "Rio de Janeiro", "Belo Horizonte")
ZIPS = ("01310100", "01311000", "20040002", "30130")
RATIOS = (0.0, 0.25, 0.5, 0.7, 1.0)
Elements = dict[str, datetime | None]  # a tag kind's values and their times
AGES = (0, 1, 17, 18, 30, 65)  # rules' ages; birth dates are drawn this many years back, or one more

# Dates where age and month arithmetic has edges: leap days, month and year ends.
EDGE_DAYS = (date(2024, 2, 29), date(2025, 2, 28), date(2025, 3, 1), date(2026, 12, 31), date(2027, 1, 1))
nows = st.one_of(
    st.builds(
        lambda d, seconds: datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(seconds=seconds),
        st.sampled_from(EDGE_DAYS),
        st.integers(0, 86_399),
    ),
    st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
)


def times_around(now: datetime) -> st.SearchStrategy[datetime]:
    """Times near now: the window edges (N days either way, and a microsecond off them) or anywhere."""
    edge = st.builds(
        lambda days, sign, tick: now + sign * timedelta(days=days) + timedelta(microseconds=tick),
        st.sampled_from(DAYS),
        st.sampled_from((-1, 1)),
        st.sampled_from((-1, 0, 1)),
    )
    anywhere = st.builds(
        lambda seconds: now + timedelta(seconds=seconds), st.integers(-400 * 86_400, 400 * 86_400)
    )
    return st.one_of(st.just(now), edge, anywhere)


def birth_dates_around(now: datetime) -> st.SearchStrategy[date]:
    """Birth dates on and next to `now`'s day some years back, leap days, or any date."""
    today = now.date()

    def years_back(years: int, shift: int) -> date:
        year = today.year - years
        day = min(today.day, 28) if today.month == 2 else today.day
        return date(year, today.month, day) + timedelta(days=shift)

    return st.one_of(
        st.builds(
            years_back, st.sampled_from(AGES + tuple(a + 1 for a in AGES)), st.sampled_from((-1, 0, 1))
        ),
        st.sampled_from((date(2000, 2, 29), date(1996, 2, 29), date(1990, 3, 1), date(1990, 2, 28))),
        st.dates(min_value=date(1920, 1, 1), max_value=today),
    )


# -- rule values --------------------------------------------------------------------------------------


def _scalars(spec: FieldSpec, now: datetime) -> st.SearchStrategy[JSON]:
    """Valid JSON values of one element for a field (as a client would send them)."""
    strings: dict[str, Iterable[str]] = {
        "gender": tuple(Gender),
        "state": STATES,
        "city": CITIES,
        "zip": ZIPS,
        "preferred_payment_method": tuple(PaymentMethod)[:3],
        "rfm_group": RFM_GROUPS[:4],
    }
    match spec.kind:
        case Kind.integer:
            low, high = spec.bounds or (0, 100)
            if spec.name == "age":
                return st.sampled_from(AGES)
            return st.integers(*(0, 5) if spec.name == "orders_count" else (low, high))
        case Kind.money:
            return st.sampled_from(CENTS).map(lambda c: str(Decimal(c).scaleb(-2)))
        case Kind.ratio:
            return st.sampled_from(RATIOS)
        case Kind.date:
            return birth_dates_around(now).map(date.isoformat)
        case Kind.datetime:
            return times_around(now).map(datetime.isoformat)
        case Kind.string:
            return st.sampled_from(tuple(strings[spec.name]))
        case Kind.consent:
            return st.sampled_from(tuple(ConsentStatus)).map(str)
    return st.sampled_from(SOURCES if spec.name == "sources" else NAMES)


def _values(spec: FieldSpec, op: str, now: datetime) -> st.SearchStrategy[JSON]:
    form = OPERATORS[op].form
    one = _scalars(spec, now)
    if op == "starts_with":
        return st.sampled_from(("0", "01", "013", "0131", "2", "30130", "01310100"))
    match form:
        case "none":
            return st.none()
        case "days":
            return st.sampled_from(DAYS)
        case "list":
            return st.lists(one, min_size=1, max_size=3)
        case "pair":
            return st.tuples(one, one).map(lambda pair: sorted(pair, key=lambda v: parse_sort_key(spec, v)))
    return one


def parse_sort_key(spec: FieldSpec, value: JSON) -> Any:
    """How to order two JSON values of a field for `between` (low first)."""
    if spec.kind is Kind.money:
        return Decimal(value)
    if spec.kind is Kind.datetime:
        return datetime.fromisoformat(value)
    return value


@st.composite
def conditions(draw: st.DrawFn, now: datetime) -> JSON:
    spec = draw(st.sampled_from(list(FIELDS.values())))
    op = draw(st.sampled_from(spec.ops))
    condition: dict[str, JSON] = {"field": spec.name, "op": op}
    if spec.kind is Kind.consent:
        condition["key"] = draw(st.sampled_from(tuple(ConsentPurpose)[:2]).map(str))
    elif spec.kind is Kind.timed_set:
        condition["key"] = draw(st.sampled_from(NAMES))
    value = draw(_values(spec, op, now))
    if value is not None:
        condition["value"] = value
    return condition


def raw_rules(now: datetime) -> st.SearchStrategy[JSON]:
    def groups(children: st.SearchStrategy[JSON]) -> st.SearchStrategy[JSON]:
        many = st.lists(children, min_size=1, max_size=3)
        return st.one_of(
            many.map(lambda rs: {"all": rs}),
            many.map(lambda rs: {"any": rs}),
            children.map(lambda r: {"not": r}),
        )

    return st.recursive(conditions(now), groups, max_leaves=8)


# -- profiles -----------------------------------------------------------------------------------------


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


@st.composite
def profiles(draw: st.DrawFn, now: datetime) -> Traits:
    """A projection row's columns and its tags (None: unknown), near the rules' values."""
    times = times_around(now)
    columns = {
        "orders_count": draw(st.integers(0, 5)),
        "total_spent_minor": draw(st.sampled_from(CENTS)),
        "average_order_value_minor": draw(_maybe(st.sampled_from(CENTS))),
        "first_order_at": draw(_maybe(times)),
        "last_order_at": draw(_maybe(times)),
        "preferred_payment_method": draw(_maybe(st.sampled_from(tuple(PaymentMethod)[:3]).map(str))),
        "birth_date": draw(_maybe(birth_dates_around(now))),
        "gender": draw(_maybe(st.sampled_from(tuple(Gender)).map(str))),
        "city": draw(_maybe(st.sampled_from(CITIES))),
        "state": draw(_maybe(st.sampled_from(STATES))),
        "zip": draw(_maybe(st.sampled_from(ZIPS))),
        "rfm_group": draw(_maybe(st.sampled_from(RFM_GROUPS[:4]))),
        "rfm_r": draw(_maybe(st.integers(1, 5))),
        "rfm_f": draw(_maybe(st.integers(1, 5))),
        "rfm_m": draw(_maybe(st.integers(1, 5))),
        "clv_12m_minor": draw(_maybe(st.sampled_from(CENTS))),
        "churn_probability": draw(_maybe(st.one_of(st.sampled_from(RATIOS), st.floats(0, 1)))),
        "next_order_at": draw(_maybe(times)),
        "last_seen_at": draw(_maybe(times)),
        "cart_abandoned_at": draw(_maybe(times)),
    }
    untimed: st.SearchStrategy[Elements] = st.dictionaries(st.sampled_from(NAMES), st.none(), max_size=3)
    timed: st.SearchStrategy[Elements] = st.dictionaries(st.sampled_from(NAMES), _maybe(times), max_size=3)
    sources: st.SearchStrategy[Elements] = st.dictionaries(st.sampled_from(SOURCES), st.none(), max_size=3)
    consents = draw(
        st.dictionaries(
            st.sampled_from(tuple(ConsentPurpose)[:2]).map(str), st.sampled_from(tuple(CONSENT_TAGS))
        )
    )
    tags: dict[str, dict[str, datetime | None]] = {
        "source": draw(sources),
        "bought_category": draw(untimed),
        "bought_product": draw(untimed),
        "viewed_category": draw(timed),
        "viewed_product": draw(timed),
    }
    for status, kind in CONSENT_TAGS.items():
        tags[kind] = {purpose: None for purpose, decision in consents.items() if decision == status}
    return Traits(columns=columns, tags=tags)


@st.composite
def scenarios(draw: st.DrawFn, max_profiles: int = 5) -> tuple[datetime, Rule, list[Traits]]:
    now = draw(nows)
    rule = parse_rule(draw(raw_rules(now)))
    return now, rule, draw(st.lists(profiles(now), min_size=1, max_size=max_profiles))


# -- both evaluators over a database ------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """What the service's full evaluation selects (SQL, with the Python evaluator deciding the profiles
    that SQL's generalised birth dates and CEPs leave undecided), and what the Python evaluator alone
    accepts. `evaluate_both` has already checked SQL's own bounds: must <= by_python <= may."""

    by_sql: set[UUID]
    by_python: set[UUID]


@dataclass(frozen=True)
class Stored:
    """Generated profiles stored under a tenant of their own, with the traits read back from the tables."""

    tenant_id: UUID
    traits: dict[UUID, Traits]


@contextmanager
def stored(session: Session, people: list[Traits]) -> Iterator[Stored]:
    """Store the profiles (then delete them: the PostgreSQL test database is shared by many examples)."""
    tenant_id = uuid4()
    rows = [_store(session, tenant_id, person) for person in people]
    session.commit()  # expires the rows: what follows reads what the database kept
    try:
        yield Stored(tenant_id, {row.profile_id: projections.traits(session, row) for row in rows})
    finally:
        for row in rows:
            projections.delete(session, row)
        session.commit()


def _store(session: Session, tenant_id: UUID, profile: Traits) -> ProfileProjection:
    sealed = {"birth_date", "zip"}  # set through their properties, which seal them
    plain = {name: value for name, value in profile.columns.items() if name not in sealed}
    row = ProfileProjection(profile_id=uuid4(), tenant_id=tenant_id, profile_version=1, **plain)
    row.birth_date = profile.columns.get("birth_date")
    row.zip = profile.columns.get("zip")
    session.add(row)
    session.flush()
    projections.replace_tags(session, row, profile.tags)
    return row


def evaluate_both(session: Session, profiles: Stored, rule: Rule, now: datetime) -> Agreement:
    """The stored profiles the SQL evaluator selects, and those the Python one accepts; first checks that
    SQL's bounds hold (every profile it is sure of matches, every match is among those it may select)."""
    compiled = compile_rule(rule, now)

    def selected(condition: Any) -> set[UUID]:
        query = sa.select(projection_table.c.profile_id).where(
            projection_table.c.tenant_id == profiles.tenant_id, condition
        )
        return set(session.execute(query).scalars())

    by_python = {profile_id for profile_id, traits in profiles.traits.items() if matches(rule, traits, now)}
    must, may = selected(compiled.sure), selected(compiled.may)
    assert must <= by_python, f"SQL is sure of profiles that do not match: {must - by_python}"
    assert by_python <= may, f"SQL leaves out profiles that match: {by_python - may}"
    by_sql = set(segments.matching(session, rule, tenant_id=profiles.tenant_id, now=now))
    return Agreement(by_sql, by_python)


# Exhaustive edges, which random generation reaches too rarely: birthdays today, yesterday and tomorrow
# some years back, leap days; and times exactly on, just inside and just outside each window.
EDGE_NOWS = [
    datetime.fromisoformat(f"{day}T{hour}:00:00+00:00") for day in EDGE_DAYS for hour in ("00", "23")
]


def _age_rules() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [{"field": "age", "op": "exists"}]
    for age in (0, 1, 17, 18):
        for op in ("eq", "ne", "gt", "gte", "lt", "lte"):
            found.append({"field": "age", "op": op, "value": age})
        found.append({"field": "age", "op": "between", "value": [age, age + 1]})
        found.append({"field": "age", "op": "in", "value": [age, 30]})
        found.append({"field": "age", "op": "not_in", "value": [age]})
    return found


def check_age_edges(session: Session, now: datetime) -> None:
    today = now.date()
    births = [date(2000, 2, 29), date(2004, 2, 29), date(2003, 3, 1), date(2003, 2, 28)]
    for years in (0, 1, 2, 17, 18, 19):
        day = min(today.day, 28) if today.month == 2 else today.day
        exact = date(today.year - years, today.month, day)
        births += [exact - timedelta(days=1), exact, exact + timedelta(days=1)]
    people = [Traits(columns={"orders_count": 0, "total_spent_minor": 0, "birth_date": b}) for b in births]
    with stored(session, people) as profiles:
        for raw in _age_rules():
            found = evaluate_both(session, profiles, parse_rule(raw), now)
            assert found.by_sql == found.by_python, raw
        found = evaluate_both(
            session, profiles, parse_rule({"field": "birth_month", "op": "is_current_month"}), now
        )
        assert found.by_sql == found.by_python
        assert found.by_python  # some births are in the current month


def check_time_edges(session: Session, now: datetime) -> None:
    ticks = (timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1))
    times = [now + sign * timedelta(days=7) + tick for sign in (-1, 0, 1) for tick in ticks]
    people = [
        Traits(
            columns={"orders_count": 1, "total_spent_minor": 100, "last_order_at": at},
            tags={"viewed_category": {"x": at}},
        )
        for at in times
    ]
    with stored(session, people) as profiles:
        for op in ("within_last_days", "more_than_days_ago", "within_next_days"):
            for field, key in (("last_order_at", None), ("viewed_categories", "x")):
                if op not in FIELDS[field].ops:
                    continue
                raw = {"field": field, "op": op, "value": 7, **({"key": key} if key else {})}
                found = evaluate_both(session, profiles, parse_rule(raw), now)
                assert found.by_sql == found.by_python, raw
                assert 0 < len(found.by_python) < len(times), raw
