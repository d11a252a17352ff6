"""The two evaluators of segment rules agree on PostgreSQL too: the SQL one over the migrated test
database (so the migrations' schema is the one compiled against), the Python one over what it stored.
The same generated rules and profiles as the SQLite test in tests/unit/test_unit_rules_agreement.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.segmentation.evaluate import Traits
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

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(databases: dict[str, str]) -> Iterator[Engine]:
    # Module-scoped (hypothesis runs many examples per test); every example uses a tenant of its own and
    # deletes its rows, so the other tests' truncation is not needed.
    engine = make_engine(databases["segmentation"])
    yield engine
    engine.dispose()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(scenario=scenarios())
def test_sql_and_python_agree_on_postgresql(
    engine: Engine, scenario: tuple[datetime, Rule, list[Traits]]
) -> None:
    now, rule, people = scenario
    with Session(engine) as session, stored(session, people) as found_in:
        found = evaluate_both(session, found_in, rule, now)
    assert found.by_sql == found.by_python


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    case=nows.flatmap(lambda now: st.tuples(st.just(now), st.lists(profiles(now), min_size=5, max_size=10)))
)
def test_every_template_agrees_on_postgresql(engine: Engine, case: tuple[datetime, list[Traits]]) -> None:
    now, people = case
    with Session(engine) as session, stored(session, people) as found_in:
        for template in TEMPLATES:
            found = evaluate_both(session, found_in, parse_rule(template.rule), now)
            assert found.by_sql == found.by_python, template.id


@pytest.mark.parametrize("now", EDGE_NOWS, ids=str)
def test_age_and_time_edges_agree_on_postgresql(engine: Engine, now: datetime) -> None:
    with Session(engine) as session:
        check_age_edges(session, now)
        check_time_edges(session, now)
