"""The two evaluators of segment rules agree: SQL (`compiler.compile_rule`, on SQLite here; on PostgreSQL
in tests/integration/test_rules_postgres.py) and Python (`evaluate.matches`), on generated rules and
profiles, and on every template."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.segmentation.compiler import compile_rule
from services.segmentation.evaluate import Traits
from services.segmentation.models import segmentation_registry
from services.segmentation.rules import Rule, parse_rule
from services.segmentation.templates import TEMPLATES
from shared.db import make_engine
from tests.rule_strategies import (
    EDGE_NOWS,
    check_age_edges,
    check_time_edges,
    evaluate_both,
    nows,
    profiles,
    scenarios,
    stored,
)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = make_engine("sqlite://")
    segmentation_registry.metadata.create_all(engine)
    yield engine
    engine.dispose()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(scenario=scenarios())
def test_sql_and_python_agree_on_sqlite(
    engine: Engine, scenario: tuple[datetime, Rule, list[Traits]]
) -> None:
    now, rule, people = scenario
    with Session(engine) as session, stored(session, people) as profiles:
        found = evaluate_both(session, profiles, rule, now)
    # How often generated rules split the profiles (see the statistics with --hypothesis-show-statistics).
    event("some match" if found.by_python else "none match")
    assert found.by_sql == found.by_python


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    case=nows.flatmap(lambda now: st.tuples(st.just(now), st.lists(profiles(now), min_size=5, max_size=10)))
)
def test_every_template_agrees(engine: Engine, case: tuple[datetime, list[Traits]]) -> None:
    now, people = case
    with Session(engine) as session, stored(session, people) as profiles:
        for template in TEMPLATES:
            found = evaluate_both(session, profiles, parse_rule(template.rule), now)
            assert found.by_sql == found.by_python, template.id


def test_the_sql_is_portable(engine: Engine) -> None:
    """No JSON or date functions: only comparisons, IN, EXISTS, SUBSTR and EXTRACT (strftime on SQLite)."""
    rule = parse_rule(
        {
            "all": [
                {"field": "viewed_categories", "key": "x", "op": "within_last_days", "value": 7},
                {"field": "zip", "op": "starts_with", "value": "01"},
                {"field": "birth_month", "op": "is_current_month"},
                {"not": {"field": "age", "op": "between", "value": [18, 24]}},
            ]
        }
    )
    compiled = compile_rule(rule, datetime.fromisoformat("2026-11-20T12:00:00+00:00"))
    sql = " ".join(str(c.compile(engine)).lower() for c in (compiled.may, compiled.sure))
    assert "exists (select" in sql
    assert "json" not in sql
    assert "is not null" in sql
    assert "now()" not in sql
    assert "current_" not in sql


@pytest.mark.parametrize("now", EDGE_NOWS, ids=str)
def test_age_edges_agree(engine: Engine, now: datetime) -> None:
    with Session(engine) as session:
        check_age_edges(session, now)


@pytest.mark.parametrize("now", EDGE_NOWS[:4], ids=str)
def test_time_edges_agree(engine: Engine, now: datetime) -> None:
    with Session(engine) as session:
        check_time_edges(session, now)
