"""services.segmentation.rules: parsing, dumping and evaluating segment rules."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.segmentation.rules import (
    AllOf,
    AnyOf,
    Condition,
    NotRule,
    Rule,
    dump_rule,
    matches,
    parse_rule,
)

Traits = dict[str, Decimal | int | None]

TRAITS: Traits = {
    "orders_count": 3,
    "total_spent": Decimal("150.00"),
    "average_order_value": Decimal("50.00"),
}


def cond(field: str, op: str, value: Any) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


# -- parsing ---------------------------------------------------------------------------------------


def test_parse_condition() -> None:
    rule = parse_rule(cond("total_spent", "gte", "100.50"))
    assert rule == Condition(field="total_spent", op="gte", value=Decimal("100.50"))


@pytest.mark.parametrize("value", ["100", 100, 100.0, Decimal("100")])
def test_condition_values_are_decimals(value: object) -> None:
    rule = parse_rule(cond("orders_count", "eq", value))
    assert isinstance(rule, Condition)
    assert isinstance(rule.value, Decimal)
    assert rule.value == 100


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
    assert first == Condition(field="orders_count", op="gte", value=Decimal(2))
    assert isinstance(second, AnyOf)
    assert isinstance(second.any[1], NotRule)
    assert second.any[1].not_ == Condition(field="average_order_value", op="lt", value=Decimal(20))


@pytest.mark.parametrize(
    "raw",
    [
        cond("email", "eq", "1"),
        cond("total_spent", "contains", "1"),
        cond("total_spent", ">=", "1"),
        cond("total_spent", "gte", "abc"),
        cond("total_spent", "gte", "NaN"),
        cond("total_spent", "gte", "Infinity"),
        cond("total_spent", "gte", None),
        cond("total_spent", "gte", True),
        {**cond("total_spent", "gte", "1"), "unit": "BRL"},
        {"field": "total_spent", "op": "gte"},
        {"all": []},
        {"any": []},
        {"all": [cond("orders_count", "gte", 1)] * 101},
        {"all": [cond("orders_count", "gte", 1)], "any": [cond("orders_count", "gte", 1)]},
        {"not": [cond("orders_count", "gte", 1)]},
        {"none": [cond("orders_count", "gte", 1)]},
        {},
        [],
        "total_spent >= 100",
        None,
    ],
    ids=repr,
)
def test_parse_rejects(raw: Any) -> None:
    with pytest.raises(ValidationError):
        parse_rule(raw)


def test_parse_bounds_nesting_depth() -> None:
    raw: dict[str, Any] = cond("orders_count", "gte", 1)
    for _ in range(1000):
        raw = {"not": raw}
    with pytest.raises(ValidationError):
        parse_rule(raw)


# -- dumping ---------------------------------------------------------------------------------------


def test_dump_uses_the_wire_names() -> None:
    rule = parse_rule({"not": {"any": [cond("total_spent", "gte", 100), cond("orders_count", "eq", "2")]}})
    assert dump_rule(rule) == {
        "not": {
            "any": [
                {"field": "total_spent", "op": "gte", "value": "100"},
                {"field": "orders_count", "op": "eq", "value": "2"},
            ]
        }
    }


# -- evaluating ------------------------------------------------------------------------------------


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
        (cond("orders_count", "eq", 3), True),
        (cond("orders_count", "gt", "2.5"), True),
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
    assert matches(parse_rule(raw), TRAITS) is expected


@pytest.mark.parametrize("op", ["eq", "ne", "gt", "gte", "lt", "lte"])
@pytest.mark.parametrize("traits", [{"average_order_value": None}, {}], ids=["none", "absent"])
def test_missing_trait_satisfies_no_condition(op: str, traits: Traits) -> None:
    condition = parse_rule(cond("average_order_value", op, "0"))
    assert matches(condition, traits) is False
    assert matches(NotRule(not_=condition), traits) is True


def test_zero_is_a_value_not_a_missing_trait() -> None:
    traits: Traits = {"orders_count": 0, "total_spent": Decimal("0")}
    assert matches(parse_rule(cond("orders_count", "eq", 0)), traits) is True
    assert matches(parse_rule(cond("total_spent", "lte", "0")), traits) is True


# -- properties ------------------------------------------------------------------------------------

FIELDS = ("orders_count", "total_spent", "average_order_value")
amounts = st.decimals(min_value=-1000, max_value=100_000, places=2, allow_nan=False, allow_infinity=False)
conditions = st.builds(
    Condition,
    field=st.sampled_from(FIELDS),
    op=st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]),
    value=st.one_of(amounts, st.integers(0, 50).map(Decimal)),
)


def _groups(children: st.SearchStrategy[Rule]) -> st.SearchStrategy[Rule]:
    many = st.lists(children, min_size=1, max_size=4)
    return st.one_of(
        st.builds(AllOf, all=many),
        st.builds(AnyOf, any=many),
        children.map(lambda r: NotRule(not_=r)),
    )


rules: st.SearchStrategy[Rule] = st.recursive(conditions, _groups, max_leaves=12)
trait_values = st.one_of(st.none(), st.integers(0, 50), amounts)
traits_strategy = st.dictionaries(st.sampled_from(FIELDS), trait_values)


@given(a=rules, b=rules, traits=traits_strategy)
def test_all_is_and(a: Rule, b: Rule, traits: Traits) -> None:
    assert matches(AllOf(all=[a, b]), traits) == (matches(a, traits) and matches(b, traits))


@given(a=rules, b=rules, traits=traits_strategy)
def test_any_is_or(a: Rule, b: Rule, traits: Traits) -> None:
    assert matches(AnyOf(any=[a, b]), traits) == (matches(a, traits) or matches(b, traits))


@given(a=rules, traits=traits_strategy)
def test_not_is_negation(a: Rule, traits: Traits) -> None:
    assert matches(NotRule(not_=a), traits) is (not matches(a, traits))
    assert matches(AllOf(all=[a]), traits) is matches(a, traits)
    assert matches(AnyOf(any=[a]), traits) is matches(a, traits)


@given(rule=rules)
def test_dump_then_parse_is_identity(rule: Rule) -> None:
    dumped = dump_rule(rule)
    assert parse_rule(dumped) == rule
    assert dump_rule(parse_rule(dumped)) == dumped


@given(rule=rules, traits=traits_strategy)
def test_matching_survives_the_roundtrip(rule: Rule, traits: Traits) -> None:
    assert matches(parse_rule(dump_rule(rule)), traits) is matches(rule, traits)
