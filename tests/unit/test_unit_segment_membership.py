"""Segment membership, the pure parts and SQLite: sizes per day walked back from the history, export cells
and lines (CSV injection, header, JSON Lines), evaluation progress, the migration's reading of which rules
depend on time (property-checked against `rules.depends_on`), MemberTraits as webhooks build them, and
the whole lifecycle on SQLite (the development database): create, background steps, schedule, stats,
export and delete."""

from __future__ import annotations

import csv
import importlib.util
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.segmentation import evaluations, export, history, segments, webhooks
from services.segmentation.evaluations import SegmentEvaluator
from services.segmentation.models import (
    ProfileProjection,
    ProfileTag,
    Segment,
    SegmentEvaluation,
    SegmentMember,
    SegmentMembershipEvent,
    TagKind,
    segmentation_registry,
)
from services.segmentation.rules import NOW, depends_on, dump_rule, parse_rule
from services.segmentation.templates import TEMPLATES
from shared.audit import AuditEvent, audit_registry
from shared.db import make_engine
from shared.events import Envelope, MemberTraits, SegmentMembershipChangedV2, decode
from shared.infra import OutboxMessage, infra_registry
from shared.outbox import open_body
from tests.rule_strategies import raw_rules

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


# -- sizes per day -----------------------------------------------------------------------------------------


def test_sizes_walk_back_from_today_with_each_days_changes() -> None:
    today = date(2026, 11, 20)
    changes = {today: (2, 1), date(2026, 11, 18): (0, 3), date(2026, 11, 17): (5, 0)}
    days = history.sizes_by_day(10, today, 5, changes)
    assert [(d.day.day, d.size, d.entered, d.exited) for d in days] == [
        (16, 7, 0, 0),
        (17, 12, 5, 0),
        (18, 9, 0, 3),
        (19, 9, 0, 0),
        (20, 10, 2, 1),
    ]


def test_sizes_never_go_below_zero_when_the_history_is_shorter_than_the_members() -> None:
    today = date(2026, 11, 20)
    days = history.sizes_by_day(1, today, 3, {today: (4, 0)})
    assert [d.size for d in days] == [0, 0, 1]


# -- export cells and lines ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (None, ""),
        ("São Paulo", "São Paulo"),
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+5511", "'+5511"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        (["site", "=cmd"], "site|=cmd"),  # joined first: only the first character can start a formula
        (datetime(2026, 11, 20, 17, 3, tzinfo=UTC), "2026-11-20T17:03:00Z"),
        (date(1990, 5, 1), "1990-05-01"),
        (3, "3"),
    ],
)
def test_csv_cells(value: Any, cell: str) -> None:
    assert export._cell(value) == cell


def _member(n: int) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(export.CSV_COLUMNS)
    row.update(profile_id=UUID(int=n), entered_at=T0, sources=["site"], consents={"profiling": "denied"})
    row.update(bought_categories=[], bought_products=[])
    return row


def test_csv_has_a_header_and_a_line_per_member_in_batches() -> None:
    chunks = list(export.csv_lines(iter([_member(n) for n in range(5)]), batch=2))
    assert len(chunks) == 3  # 2 + 2 + the last one
    table = list(csv.reader(io.StringIO(b"".join(chunks).decode())))
    assert table[0] == list(export.CSV_COLUMNS)
    assert [row[0] for row in table[1:]] == [str(UUID(int=n)) for n in range(5)]
    first = dict(zip(table[0], table[1], strict=True))
    assert (first["sources"], first["consent_profiling"], first["consent_marketing_email"]) == (
        "site",
        "denied",
        "",
    )
    assert list(export.csv_lines(iter([]))) == [(",".join(export.CSV_COLUMNS) + "\r\n").encode()]


def test_jsonl_is_one_object_per_line() -> None:
    body = b"".join(export.jsonl(iter([_member(1), _member(2)]), batch=1))
    lines = body.splitlines()
    assert [orjson.loads(line)["profile_id"] for line in lines] == [str(UUID(int=1)), str(UUID(int=2))]
    assert orjson.loads(lines[0])["entered_at"] == "2026-11-20T15:00:00Z"
    assert b"".join(export.jsonl(iter([]))) == b""


# -- evaluations -----------------------------------------------------------------------------------------


def test_progress_and_duration() -> None:
    job = SegmentEvaluation(tenant_id=uuid4(), segment_id=uuid4(), reason="requested")
    assert evaluations.progress(job) is None
    job.profiles_total, job.processed = 0, 0
    assert evaluations.progress(job) == 0.0
    job.profiles_total, job.processed = 8, 2
    assert evaluations.progress(job) == 0.25
    job.processed = 9  # profiles added while it ran
    assert evaluations.progress(job) == 1.0
    job.status = "done"
    assert evaluations.progress(job) == 1.0
    assert evaluations.duration_s(job) is None
    job.started_at, job.finished_at = T0, T0 + timedelta(seconds=1.5)
    assert evaluations.duration_s(job) == 1.5


# -- the migration's backfill of `time_relative` -------------------------------------------------------------


def _migration() -> ModuleType:
    path = ROOT / "services/segmentation/migrations/versions/0004_membership_history_and_evaluations.py"
    spec = importlib.util.spec_from_file_location("segmentation_0004", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MIGRATION = _migration()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_migration_finds_time_relative_rules_as_the_rule_language_does(data: st.DataObject) -> None:
    raw = data.draw(raw_rules(T0))
    rule = parse_rule(raw)
    stored = orjson.loads(orjson.dumps(dump_rule(rule)))
    assert MIGRATION._time_relative(stored) == (NOW in depends_on(rule))


def test_templates_that_depend_on_time() -> None:
    relative = {t.id for t in TEMPLATES if MIGRATION._time_relative(t.rule)}
    assert relative == {t.id for t in TEMPLATES if NOW in depends_on(parse_rule(t.rule))}
    assert {"abandoned_cart_7d", "birthday_this_month", "replenishment_due", "inactive_180d"} <= relative
    assert "one_time_buyers" not in relative


# -- events ------------------------------------------------------------------------------------------------


def test_member_traits_are_the_webhook_traits() -> None:
    projection = ProfileProjection(
        profile_id=uuid4(),
        tenant_id=uuid4(),
        profile_version=3,
        orders_count=2,
        total_spent_minor=38980,
        average_order_value_minor=19490,
        last_order_at=T0,
        rfm_group="loyal",
        clv_12m_minor=12345,
        churn_probability=0.3,
        state="RJ",
        city="Niterói",
    )
    traits = segments.member_traits(projection)
    assert traits is not None
    expected = orjson.loads(orjson.dumps(webhooks.traits(projection), option=orjson.OPT_UTC_Z))
    assert traits.model_dump(mode="json") == expected
    assert "city" not in expected  # the location is the state only
    assert segments.member_traits(None) is None
    assert MemberTraits.model_validate(expected) == traits


# -- the lifecycle on SQLite -----------------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'segmentation.db'}")
    infra_registry.metadata.create_all(engine)
    audit_registry.metadata.create_all(engine)
    segmentation_registry.metadata.create_all(engine)
    yield engine
    engine.dispose()


def _profile(session: Session, tenant_id: UUID, total_minor: int, *, granted: bool = False) -> UUID:
    profile_id = uuid4()
    session.add(
        ProfileProjection(
            profile_id=profile_id,
            tenant_id=tenant_id,
            profile_version=1,
            orders_count=1,
            total_spent_minor=total_minor,
            cart_abandoned_at=T0 - timedelta(days=1),
        )
    )
    if granted:
        session.add(
            ProfileTag(
                profile_id=profile_id,
                tenant_id=tenant_id,
                kind=TagKind.consent_granted,
                value="marketing_email",
            )
        )
    return profile_id


def test_the_lifecycle_on_sqlite(engine: Engine) -> None:
    tenant_id = uuid4()
    with Session(engine) as session:
        ids = [_profile(session, tenant_id, minor, granted=minor > 20000) for minor in (5000, 15000, 25000)]
        session.commit()
        rule = parse_rule({"field": "total_spent", "op": "gte", "value": "100"})
        inline = segments.create_segment(
            "VIP",
            rule,
            purpose="marketing_email",
            tenant_id=tenant_id,
            session=session,
            inline_max=10,
            now=T0,
        )
        assert segments.segment_size(inline.id, session=session) == 2
        background = segments.create_segment(
            "Cart",
            parse_rule({"field": "cart_abandoned_at", "op": "within_last_days", "value": 7}),
            tenant_id=tenant_id,
            session=session,
            inline_max=0,
            now=T0,
        )
        assert background.time_relative
        assert segments.segment_size(background.id, session=session) == 0
        inline_id, background_id = inline.id, background.id

    clock = [T0]
    evaluator = SegmentEvaluator(engine, chunk=2, clock=lambda: clock[0])
    assert evaluator.run_pending() == 1
    with Session(engine) as session:
        assert segments.segment_size(background_id, session=session) == 3
        done = evaluations.latest(session, background_id)
        assert done is not None
        assert (done.status, done.processed, done.entered) == ("done", 3, 3)

    clock[0] = T0 + timedelta(days=8)
    assert evaluator.schedule_due() == 1
    assert evaluator.run_pending() == 1
    with Session(engine) as session:
        assert segments.segment_size(background_id, session=session) == 0
        found = history.stats(background_id, tenant_id=tenant_id, session=session, days=10, now=clock[0])
        assert [(d.size, d.entered, d.exited) for d in found.daily if d.entered or d.exited] == [
            (3, 3, 0),
            (0, 0, 3),
        ]
        assert found.daily[-1].day == clock[0].date()
        vip = history.stats(inline_id, tenant_id=tenant_id, session=session, days=1, now=T0)
        assert (vip.size, vip.reachable) == (2, 1)
        assert [(w.days, w.entered) for w in vip.windows] == [(1, 2), (7, 2), (30, 2)]

    with Session(engine) as session:
        exported = session.get(Segment, inline_id)
        assert exported is not None
    reading = {"api_key_id": None, "route": "/v1/segments/{segment_id}/export", "request_id": "r-1"}
    granted = list(export.rows(engine, exported, purpose="marketing_email", reader=reading, chunk=1))
    assert [r["profile_id"] for r in granted] == [ids[2]]
    everyone = export.rows(engine, exported, purpose=None, reader=reading)
    assert sorted(r["profile_id"] for r in everyone) == sorted(ids[1:])
    with Session(engine) as session:  # each chunk read is in the audit trail
        reads = session.exec(select(AuditEvent).where(AuditEvent.action == "segment.export")).all()
    assert sorted(sorted(e.profile_ids) for e in reads) == sorted(
        [[str(ids[2])], sorted(str(i) for i in ids[1:])]
    )

    with Session(engine) as session:
        assert segments.delete_segment(inline_id, tenant_id=tenant_id, session=session) == 2
        assert session.get(Segment, inline_id) is None
        assert session.exec(select(SegmentMember).where(SegmentMember.segment_id == inline_id)).all() == []
        assert (
            session.exec(
                select(SegmentMembershipEvent).where(SegmentMembershipEvent.segment_id == inline_id)
            ).all()
            == []
        )
        bodies = session.exec(select(OutboxMessage.body).order_by(col(OutboxMessage.id))).all()
    events = [decode(Envelope.from_bytes(open_body(b))) for b in bodies]
    assert all(isinstance(e, SegmentMembershipChangedV2) for e in events)
    reasons = [(e.reason, e.change) for e in events if isinstance(e, SegmentMembershipChangedV2)]
    assert reasons.count(("segment_deleted", "exited")) == 2
    assert reasons.count(("schedule", "exited")) == 3
