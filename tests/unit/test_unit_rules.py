"""services.segmentation.rules and .evaluate: parsing, validation errors with their paths, dumping, and the
Python evaluator's semantics (missing values, sets, consents, time windows, ages). The SQL evaluator is
checked against this one in test_unit_rules_agreement.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.segmentation.evaluate import Traits, age_at, matches
from services.segmentation.rules import (
    FIELDS,
    MAX_CONDITIONS,
    NOW,
    OPERATORS,
    AllOf,
    AnyOf,
    Condition,
    InvalidRule,
    NotRule,
    Rule,
    depends_on,
    dump_rule,
    parse_rule,
)
from services.segmentation.templates import TEMPLATES
from tests.rule_strategies import nows, profiles, raw_rules

NOW_ = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def cond(field: str, op: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    raw = {"field": field, "op": op, **extra}
    if value is not None:
        raw["value"] = value
    return raw


def traits(tags: dict[str, dict[str, datetime | None]] | None = None, **columns: Any) -> Traits:
    base: dict[str, Any] = {"orders_count": 3, "total_spent_minor": 15000, "average_order_value_minor": 5000}
    return Traits(columns={**base, **columns}, tags=tags or {})


def check(raw: dict[str, Any], profile: Traits, now: datetime = NOW_) -> bool:
    return matches(parse_rule(raw), profile, now)


def errors_of(raw: Any) -> list[dict[str, Any]]:
    with pytest.raises(InvalidRule) as caught:
        parse_rule(raw)
    errors: list[dict[str, Any]] = caught.value.extra["errors"]
    assert caught.value.status == 422
    assert errors
    assert caught.value.detail.startswith(f"The rule is not valid at `{errors[0]['path']}`")
    return errors


# -- parsing: canonical values ------------------------------------------------------------------------


def test_parse_condition() -> None:
    rule = parse_rule(cond("total_spent", "gte", "100.5"))
    assert rule == Condition(field="total_spent", op="gte", value=Decimal("100.50"))


@pytest.mark.parametrize("value", ["100", 100, 100.0, Decimal("100"), " 100.00 "])
def test_money_values_are_decimal_cents(value: object) -> None:
    rule = parse_rule(cond("total_spent", "eq", value))
    assert isinstance(rule, Condition)
    assert isinstance(rule.value, Decimal)
    assert str(rule.value) == "100.00"


@pytest.mark.parametrize("value", ["2", 2, 2.0, Decimal("2.00")])
def test_counts_are_integers(value: object) -> None:
    rule = parse_rule(cond("orders_count", "eq", value))
    assert isinstance(rule, Condition)
    assert rule.value == 2
    assert type(rule.value) is int


def test_canonical_forms() -> None:
    def value(raw: dict[str, Any]) -> Any:
        rule = parse_rule(raw)
        assert isinstance(rule, Condition)
        return rule.value

    assert value(cond("age", "between", [18, "24"])) == (18, 24)
    assert value(cond("state", "in", ["São Paulo", "rj"])) == ("SP", "RJ")
    assert value(cond("city", "eq", "  SÃO PAULO ")) == "São Paulo"
    assert value(cond("birth_date", "lt", "1990-01-31")) == date(1990, 1, 31)
    assert value(cond("last_order_at", "gte", "2026-11-20T10:00:00-03:00")) == datetime(
        2026, 11, 20, 13, tzinfo=UTC
    )
    assert value(cond("churn_probability", "gte", "0.5")) == 0.5
    assert value(cond("city", "exists", True)) is None
    assert value(cond("viewed_categories", "within_last_days", "7", key=" celulares ")) == 7
    keyed = parse_rule(cond("viewed_categories", "exists", key=" celulares "))
    assert isinstance(keyed, Condition)
    assert keyed.key == "celulares"


def test_parse_groups() -> None:
    raw = {
        "all": [
            cond("orders_count", "gte", 2),
            {"any": [cond("total_spent", "gt", "100"), {"not": cond("average_order_value", "lt", "20")}]},
        ]
    }
    rule = parse_rule(raw)
    assert isinstance(rule, AllOf)
    first, second = rule.all
    assert first == Condition(field="orders_count", op="gte", value=2)
    assert isinstance(second, AnyOf)
    assert isinstance(second.any[1], NotRule)
    assert second.any[1].not_ == Condition(field="average_order_value", op="lt", value=Decimal(20))


# -- parsing: errors name the path of the offending part ----------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path", "error_type"),
    [
        (cond("email", "eq", "1"), "rule.field", "rule_field"),
        (cond("total_spent", "contains", "1"), "rule.op", "rule_op"),
        (cond("total_spent", ">=", "1"), "rule.op", "rule_op"),
        (cond("total_spent", "gte", "abc"), "rule.value", "rule_value"),
        (cond("total_spent", "gte", "NaN"), "rule.value", "rule_value"),
        (cond("total_spent", "gte", "Infinity"), "rule.value", "rule_value"),
        (cond("total_spent", "gte", "100.005"), "rule.value", "rule_value"),
        (cond("total_spent", "gte", True), "rule.value", "rule_value"),
        (cond("total_spent", "gte"), "rule.value", "rule_value"),
        (cond("orders_count", "gt", "2.5"), "rule.value", "rule_value"),
        (cond("age", "gte", 151), "rule.value", "rule_value"),
        (cond("rfm_r", "eq", 6), "rule.value", "rule_value"),
        (cond("birth_month", "in", [1, 13]), "rule.value", "rule_value"),
        (cond("churn_probability", "gt", 1.5), "rule.value", "rule_value"),
        (cond("age", "between", 30), "rule.value", "rule_value"),
        (cond("age", "between", [40, 30]), "rule.value", "rule_value"),
        (cond("age", "between", [30, 35, 40]), "rule.value", "rule_value"),
        (cond("state", "in", []), "rule.value", "rule_value"),
        (cond("state", "in", ["SP"] * 101), "rule.value", "rule_value"),
        (cond("state", "in", "SP"), "rule.value", "rule_value"),
        (cond("state", "eq", "Atlantis"), "rule.value", "rule_value"),
        (cond("gender", "eq", "robot"), "rule.value", "rule_value"),
        (cond("zip", "eq", "013101"), "rule.value", "rule_value"),
        (cond("zip", "starts_with", "01-3"), "rule.value", "rule_value"),
        (cond("city", "exists", False), "rule.value", "rule_value"),
        (cond("birth_month", "is_current_month", 11), "rule.value", "rule_value"),
        (cond("last_order_at", "within_last_days", 0), "rule.value", "rule_value"),
        (cond("last_order_at", "within_last_days", 36_501), "rule.value", "rule_value"),
        (cond("last_order_at", "gte", "2026-11-20T10:00:00"), "rule.value", "rule_value"),
        (cond("birth_date", "gte", "20/11/1990"), "rule.value", "rule_value"),
        (cond("viewed_categories", "within_last_days", 7), "rule.key", "rule_key"),
        (cond("total_spent", "gte", "1", key="x"), "rule.key", "rule_key"),
        (cond("consent", "eq", "granted", key="telepathy"), "rule.key", "rule_key"),
        (cond("consent", "eq", "maybe", key="marketing_email"), "rule.value", "rule_value"),
        ({**cond("total_spent", "gte", "1"), "unit": "BRL"}, "rule.(unknown field)", "extra_forbidden"),
        ({"field": "total_spent", "value": "1"}, "rule.op", "missing"),
        ({"all": []}, "rule.all", "too_short"),
        ({"any": [cond("orders_count", "gte", 1)] * 101}, "rule.any", "too_long"),
        ({"all": [cond("orders_count", "gte", 1)], "any": []}, "rule.(unknown field)", "extra_forbidden"),
        ({"not": [cond("orders_count", "gte", 1)]}, "rule.not", "rule_kind"),
        ({}, "rule.field", "missing"),
        ([], "rule", "rule_kind"),
        ("total_spent >= 100", "rule", "rule_kind"),
        (None, "rule", "rule_kind"),
    ],
    ids=repr,
)
def test_parse_rejects_with_the_path(raw: Any, path: str, error_type: str) -> None:
    first = errors_of(raw)[0]
    assert (first["path"], first["type"]) == (path, error_type)
    assert first["loc"] == path.replace("[", ".").replace("]", "").split(".")


def test_nested_errors_are_all_reported_with_their_paths() -> None:
    raw = {
        "all": [
            cond("orders_count", "gte", 1),
            {"any": [cond("state", "eq", "SP"), {"not": cond("age", "contains", 3)}]},
            cond("total_spent", "between", "100"),
            5,
        ]
    }
    found = {(e["path"], e["type"]) for e in errors_of(raw)}
    assert found == {
        ("rule.all[1].any[1].not.op", "rule_op"),
        ("rule.all[2].value", "rule_value"),
        ("rule.all[3]", "rule_kind"),
    }


def test_errors_never_repeat_the_submitted_values() -> None:
    secret = "maria.silva@example.com"
    raws = [
        cond("gender", "eq", secret),
        cond("zip", "in", ["01310100", secret]),
        cond("total_spent", "gte", secret),
        cond("last_seen_at", "gte", secret),
        cond("consent", "eq", secret, key=secret),
        {"all": [{**cond("orders_count", "gte", 1), secret: 1}]},
        {secret: 1},
    ]
    for raw in raws:
        with pytest.raises(InvalidRule) as caught:
            parse_rule(raw)
        assert "maria" not in str(caught.value.detail) + str(caught.value.extra), raw


def test_size_limits() -> None:
    deep: dict[str, Any] = cond("orders_count", "gte", 1)
    for _ in range(1000):
        deep = {"not": deep}
    assert errors_of(deep)[0]["type"] == "rule_size"
    wide = {"any": [{"all": [cond("orders_count", "gte", 1)] * 50} for _ in range(5)]}
    assert errors_of(wide)[0]["type"] == "rule_size"
    assert MAX_CONDITIONS == 200
    parse_rule({"any": [{"all": [cond("orders_count", "gte", 1)] * 50} for _ in range(4)]})


def test_every_field_has_a_valid_operator_set() -> None:
    for spec in FIELDS.values():
        assert set(spec.ops) <= set(OPERATORS), spec.name
        assert "exists" in spec.ops
        # Where its data lives: a column, a tag kind, or (consents) the consent_* tag kinds.
        assert [spec.column is not None, spec.tag is not None, spec.kind == "consent"].count(True) == 1


# -- dumping ------------------------------------------------------------------------------------------


def test_dump_uses_the_wire_names_and_canonical_values() -> None:
    rule = parse_rule(
        {
            "not": {
                "any": [
                    cond("total_spent", "gte", 100),
                    cond("state", "in", ["sp"]),
                    cond("viewed_products", "exists", key="SKU-1"),
                    cond("last_seen_at", "lt", "2026-11-20T10:00:00-03:00"),
                ]
            }
        }
    )
    assert dump_rule(rule) == {
        "not": {
            "any": [
                {"field": "total_spent", "op": "gte", "value": "100.00"},
                {"field": "state", "op": "in", "value": ["SP"]},
                {"field": "viewed_products", "op": "exists", "key": "SKU-1"},
                {"field": "last_seen_at", "op": "lt", "value": "2026-11-20T13:00:00Z"},
            ]
        }
    }


# -- evaluating: scalars and missing values -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (cond("total_spent", "gte", "100"), True),
        (cond("total_spent", "gte", "150"), True),
        (cond("total_spent", "gt", "150"), False),
        (cond("total_spent", "eq", "150"), True),
        (cond("total_spent", "ne", "150.00"), False),
        (cond("total_spent", "lt", "150.01"), True),
        (cond("total_spent", "lte", "149.99"), False),
        (cond("total_spent", "between", ["150", "150"]), True),
        (cond("total_spent", "in", ["1", "150"]), True),
        (cond("total_spent", "not_in", ["1", "150"]), False),
        (cond("orders_count", "eq", 3), True),
        (cond("average_order_value", "lte", "50"), True),
        ({"all": [cond("orders_count", "gte", 2), cond("total_spent", "gt", "100")]}, True),
        ({"all": [cond("orders_count", "gte", 2), cond("total_spent", "gt", "200")]}, False),
        ({"any": [cond("orders_count", "gte", 5), cond("total_spent", "gt", "100")]}, True),
        ({"any": [cond("orders_count", "gte", 5), cond("total_spent", "gt", "200")]}, False),
        ({"not": cond("orders_count", "gte", 5)}, True),
        ({"not": {"not": cond("orders_count", "gte", 5)}}, False),
    ],
)
def test_matches(raw: dict[str, Any], expected: bool) -> None:
    assert check(raw, traits()) is expected


def test_money_is_exact() -> None:
    # 0.1 + 0.2 != 0.3 in binary floating point; in cents it is 30 == 30.
    assert check(cond("total_spent", "eq", "0.30"), traits(total_spent_minor=10 + 20))
    assert check(cond("clv_12m", "gt", "999999999.99"), traits(clv_12m_minor=100_000_000_000))


SAMPLES: dict[str, Any] = {
    "eq": "x",
    "ne": "x",
    "in": ["x"],
    "not_in": ["x"],
    "gt": "x",
    "gte": "x",
    "lt": "x",
    "lte": "x",
    "between": ["x", "x"],
    "starts_with": "0",
    "within_last_days": 30,
    "more_than_days_ago": 30,
    "within_next_days": 30,
}
VALUES = {
    "integer": 1,
    "money": "1.00",
    "ratio": 0.5,
    "date": "2000-01-01",
    "datetime": "2026-01-01T00:00:00Z",
    "string": None,
}
STRINGS = {"gender": "female", "state": "SP", "city": "Recife", "zip": "01310100", "rfm_group": "lost"}
STRINGS["preferred_payment_method"] = "pix"


def scalar_conditions() -> list[dict[str, Any]]:
    """Every operator of every scalar field with some valid value."""
    found = []
    for spec in FIELDS.values():
        if spec.column is None:
            continue
        for op in spec.ops:
            sample = VALUES[spec.kind] if spec.kind != "string" else STRINGS[spec.name]
            if spec.bounds:
                sample = spec.bounds[0]
            template = SAMPLES.get(op)
            if isinstance(template, list):
                value: Any = [sample] * len(template)
            elif op in ("starts_with", "within_last_days", "more_than_days_ago", "within_next_days"):
                value = template
            else:
                value = None if op in ("exists", "is_current_month") else sample
            found.append(cond(spec.name, op, value))
    return found


@pytest.mark.parametrize("raw", scalar_conditions(), ids=lambda r: f"{r['field']}-{r['op']}")
def test_a_missing_trait_satisfies_no_condition(raw: dict[str, Any]) -> None:
    column = FIELDS[raw["field"]].column
    assert column is not None
    for profile in (traits(**{column: None}), Traits(columns={}, tags={})):
        assert check(raw, profile) is False
        assert check({"not": raw}, profile) is True


def test_zero_is_a_value_not_a_missing_trait() -> None:
    profile = traits(orders_count=0, total_spent_minor=0)
    assert check(cond("orders_count", "eq", 0), profile)
    assert check(cond("total_spent", "lte", "0"), profile)
    assert check(cond("orders_count", "exists"), profile)


def test_strings() -> None:
    profile = traits(state="SP", city="São Paulo", zip="01310100", gender="female")
    assert check(cond("state", "eq", "são paulo"), profile)
    assert check(cond("state", "not_in", ["RJ", "MG"]), profile)
    assert check(cond("city", "eq", "SÃO PAULO"), profile)
    assert check(cond("zip", "starts_with", "0131"), profile)
    assert not check(cond("zip", "starts_with", "0132"), profile)
    assert check(cond("zip", "starts_with", "01310100"), profile)
    assert check(cond("gender", "ne", "male"), profile)
    assert check(cond("zip", "starts_with", "01310"), traits(zip="01310"))


# -- evaluating: sets, timed sets and consents --------------------------------------------------------


def test_sets_are_never_missing_only_empty() -> None:
    some = traits({"bought_category": {"alimentos": None, "bebidas": None}})
    empty = traits()
    assert check(cond("bought_categories", "contains", "alimentos"), some)
    assert not check(cond("bought_categories", "contains", "livros"), some)
    assert check(cond("bought_categories", "in", ["livros", "bebidas"]), some)
    assert not check(cond("bought_categories", "not_in", ["livros", "bebidas"]), some)
    assert check(cond("bought_categories", "not_in", ["livros"]), some)
    assert check(cond("bought_categories", "exists"), some)
    assert not check(cond("bought_categories", "exists"), empty)
    assert not check(cond("bought_categories", "contains", "alimentos"), empty)
    assert check(cond("bought_categories", "not_in", ["alimentos"]), empty)
    assert not check(cond("sources", "contains", "site"), some)  # another kind of tag


def test_timed_sets() -> None:
    viewed = traits({"viewed_category": {"celulares": NOW_ - timedelta(days=3)}})
    assert check(cond("viewed_categories", "exists", key="celulares"), viewed)
    assert check(cond("viewed_categories", "within_last_days", 3, key="celulares"), viewed)
    assert not check(cond("viewed_categories", "within_last_days", 2, key="celulares"), viewed)
    assert check(cond("viewed_categories", "more_than_days_ago", 2, key="celulares"), viewed)
    assert not check(cond("viewed_categories", "more_than_days_ago", 3, key="celulares"), viewed)
    for op, value in (("exists", None), ("within_last_days", 30), ("more_than_days_ago", 1)):
        assert not check(cond("viewed_categories", op, value, key="livros"), viewed)
        assert not check(cond("viewed_products", op, value, key="celulares"), viewed)


CONSENTS = traits({"consent_granted": {"marketing_email": None}, "consent_revoked": {"marketing_sms": None}})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (cond("consent", "eq", "granted", key="marketing_email"), True),
        (cond("consent", "ne", "granted", key="marketing_email"), False),
        (cond("consent", "eq", "revoked", key="marketing_sms"), True),
        (cond("consent", "ne", "granted", key="marketing_sms"), True),
        (cond("consent", "in", ["denied", "revoked"], key="marketing_sms"), True),
        (cond("consent", "not_in", ["denied", "revoked"], key="marketing_sms"), False),
        (cond("consent", "exists", key="marketing_sms"), True),
        # No decision for WhatsApp: nothing holds, not even `ne` or `not_in`.
        (cond("consent", "eq", "granted", key="marketing_whatsapp"), False),
        (cond("consent", "ne", "granted", key="marketing_whatsapp"), False),
        (cond("consent", "not_in", ["granted"], key="marketing_whatsapp"), False),
        (cond("consent", "exists", key="marketing_whatsapp"), False),
    ],
)
def test_consents(raw: dict[str, Any], expected: bool) -> None:
    assert check(raw, CONSENTS) is expected


# -- evaluating: time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "last_days", "ago", "next_days"),
    [
        (timedelta(0), True, False, True),
        (-timedelta(days=7), True, False, False),
        (-timedelta(days=7, microseconds=1), False, True, False),
        (-timedelta(days=6, hours=23), True, False, False),
        (timedelta(microseconds=1), False, False, True),
        (timedelta(days=7), False, False, True),
        (timedelta(days=7, microseconds=1), False, False, False),
    ],
)
def test_time_windows_and_their_edges(offset: timedelta, last_days: bool, ago: bool, next_days: bool) -> None:
    profile = traits(last_order_at=NOW_ + offset)
    assert check(cond("last_order_at", "within_last_days", 7), profile) is last_days
    assert check(cond("last_order_at", "more_than_days_ago", 7), profile) is ago
    assert check(cond("last_order_at", "within_next_days", 7), profile) is next_days


def test_absolute_times_compare_in_utc() -> None:
    profile = traits(last_order_at=datetime(2026, 11, 20, 13, tzinfo=UTC))
    assert check(cond("last_order_at", "gte", "2026-11-20T10:00:00-03:00"), profile)
    assert not check(cond("last_order_at", "gt", "2026-11-20T10:00:00-03:00"), profile)
    assert check(cond("last_order_at", "between", ["2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z"]), profile)


def test_the_answer_depends_on_now() -> None:
    rule = parse_rule(cond("last_order_at", "within_last_days", 30))
    profile = traits(last_order_at=datetime(2026, 11, 1, tzinfo=UTC))
    assert matches(rule, profile, datetime(2026, 11, 20, tzinfo=UTC))
    assert not matches(rule, profile, datetime(2026, 12, 20, tzinfo=UTC))
    with pytest.raises(ValueError, match="aware"):
        matches(parse_rule(cond("age", "gte", 18)), traits(birth_date=date(2000, 1, 1)), datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("born", "today", "age"),
    [
        (date(2000, 11, 20), date(2026, 11, 20), 26),
        (date(2000, 11, 21), date(2026, 11, 20), 25),
        (date(2000, 2, 29), date(2025, 2, 28), 24),
        (date(2000, 2, 29), date(2025, 3, 1), 25),
        (date(2000, 2, 29), date(2024, 2, 29), 24),
        (date(2000, 12, 31), date(2001, 1, 1), 0),
        (date(2027, 1, 1), date(2026, 11, 20), -1),
    ],
)
def test_age(born: date, today: date, age: int) -> None:
    assert age_at(born, today) == age
    now = datetime(today.year, today.month, today.day, 23, 59, tzinfo=UTC)
    assert check(cond("age", "eq", max(age, 0)), traits(birth_date=born), now) is (age >= 0)


def test_age_uses_the_utc_date_of_now() -> None:
    profile = traits(birth_date=date(2000, 11, 21))
    evening_in_brazil = datetime(2026, 11, 21, 1, 0, tzinfo=UTC)  # still 20 November in São Paulo
    assert check(cond("age", "gte", 26), profile, evening_in_brazil)
    assert not check(cond("age", "gte", 26), profile, datetime(2026, 11, 20, 23, 59, tzinfo=UTC))


def test_birthdays_this_month() -> None:
    rule = cond("birth_month", "is_current_month")
    november = traits(birth_date=date(1990, 11, 30))
    assert check(rule, november, datetime(2026, 11, 1, tzinfo=UTC))
    assert not check(rule, november, datetime(2026, 12, 1, tzinfo=UTC))
    assert check(cond("birth_month", "in", [11, 12]), november)
    assert not check(rule, traits())


# -- what a rule reads --------------------------------------------------------------------------------


def test_depends_on() -> None:
    rule = parse_rule(
        {
            "all": [
                cond("total_spent", "gte", "1"),
                cond("bought_categories", "contains", "x"),
                cond("consent", "exists", key="marketing_email"),
            ]
        }
    )
    consents = {"consent_granted", "consent_denied", "consent_revoked"}
    assert depends_on(rule) == {"total_spent_minor", "bought_category", *consents}
    assert depends_on(parse_rule(cond("age", "gte", 18))) == {"birth_date", NOW}
    assert depends_on(parse_rule(cond("birth_month", "in", [1]))) == {"birth_date"}
    assert depends_on(parse_rule(cond("last_seen_at", "within_last_days", 7))) == {"last_seen_at", NOW}
    assert depends_on(parse_rule(cond("last_seen_at", "gte", "2026-01-01T00:00:00Z"))) == {"last_seen_at"}


# -- templates ----------------------------------------------------------------------------------------


def test_templates_are_valid_rules_with_unique_ids() -> None:
    assert len({t.id for t in TEMPLATES}) == len(TEMPLATES) == 17
    for template in TEMPLATES:
        rule = parse_rule(template.rule)
        assert dump_rule(rule) == template.rule, template.id
        matches(rule, traits(), NOW_)


# -- properties ---------------------------------------------------------------------------------------

rule_and_profile = nows.flatmap(
    lambda now: st.tuples(
        st.just(now), raw_rules(now).map(parse_rule), raw_rules(now).map(parse_rule), profiles(now)
    )
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(case=rule_and_profile)
def test_groups_are_and_or_not(case: tuple[datetime, Rule, Rule, Traits]) -> None:
    now, a, b, profile = case
    assert matches(AllOf(all=[a, b]), profile, now) == (matches(a, profile, now) and matches(b, profile, now))
    assert matches(AnyOf(any=[a, b]), profile, now) == (matches(a, profile, now) or matches(b, profile, now))
    assert matches(NotRule(not_=a), profile, now) is (not matches(a, profile, now))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(case=rule_and_profile)
def test_dump_then_parse_is_identity(case: tuple[datetime, Rule, Rule, Traits]) -> None:
    now, rule, _, profile = case
    dumped = dump_rule(rule)
    assert parse_rule(dumped) == rule
    assert dump_rule(parse_rule(dumped)) == dumped
    assert matches(parse_rule(dumped), profile, now) is matches(rule, profile, now)
