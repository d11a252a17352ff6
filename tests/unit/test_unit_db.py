"""shared.db: UTCDateTime keeps instants in UTC and refuses naive datetimes; make_engine on SQLite;
stage_insert writes staged rows in bulk, in the transaction, after what they refer to; new_row builds the
row the model's constructor builds; write_columns writes objects changed in different ways in one
statement."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import StatementError
from sqlmodel import Session, col, select

from services.ingest.models import ingest_registry
from services.profile.models import profile_registry
from services.segmentation.models import (
    ProfileProjection,
    Segment,
    SegmentMembershipEvent,
    segmentation_registry,
)
from shared.db import (
    UTCDateTime,
    add_new,
    any_of,
    assign,
    binary_types,
    make_engine,
    new_row,
    stage_insert,
    utcnow,
    write_columns,
)
from shared.infra import infra_registry

metadata = sa.MetaData()
stamp = sa.Table(
    "stamp",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=True),
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'unit.db'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_make_engine_creates_the_directory_and_sets_pragmas(engine: Engine, tmp_path: Path) -> None:
    assert (tmp_path / "nested").is_dir()
    with engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1


def test_aware_datetime_roundtrips_as_the_same_instant_in_utc(engine: Engine) -> None:
    local = datetime(2026, 11, 20, 14, 3, 0, 123456, tzinfo=timezone(timedelta(hours=-3)))
    with engine.begin() as conn:
        conn.execute(stamp.insert().values(id=1, at=local))
    with engine.connect() as conn:
        read = conn.execute(sa.select(stamp.c.at).where(stamp.c.id == 1)).scalar_one()
        raw = conn.execute(sa.text("SELECT at FROM stamp WHERE id = 1")).scalar_one()
    assert read == local
    assert read.tzinfo is UTC
    assert read == datetime(2026, 11, 20, 17, 3, 0, 123456, tzinfo=UTC)
    assert str(raw).startswith("2026-11-20 17:03:00")  # stored in UTC, so it sorts by instant


def test_none_is_stored_as_null(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(stamp.insert().values(id=2, at=None))
    with engine.connect() as conn:
        assert conn.execute(sa.select(stamp.c.at).where(stamp.c.id == 2)).scalar_one() is None


def test_naive_datetime_is_refused(engine: Engine) -> None:
    with engine.begin() as conn, pytest.raises(StatementError, match="naive datetime") as caught:
        conn.execute(stamp.insert().values(id=3, at=datetime(2026, 11, 20, 14, 3)))
    assert isinstance(caught.value.orig, ValueError)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(stamp)).scalar_one() == 0


def test_result_processing_without_a_database() -> None:
    column_type = UTCDateTime()
    dialect = sa.create_engine("sqlite://").dialect
    naive_utc = datetime(2026, 1, 1, 12, 0)
    assert column_type.process_result_value(naive_utc, dialect) == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    plus_two = datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    converted = column_type.process_result_value(plus_two, dialect)
    assert converted == plus_two
    assert converted is not None
    assert converted.tzinfo is UTC
    utc = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert column_type.process_result_value(utc, dialect) is utc


def test_utcnow_is_aware_utc() -> None:
    now = utcnow()
    assert now.tzinfo is UTC
    assert abs(datetime.now(UTC) - now) < timedelta(seconds=5)


# -- stage_insert ------------------------------------------------------------------------------------------


@pytest.fixture
def segments_db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'segments.db'}")  # foreign keys on
    segmentation_registry.metadata.create_all(engine)
    yield engine
    engine.dispose()


def entry(segment_id: UUID) -> dict[str, Any]:
    return {
        "tenant_id": uuid4(),
        "segment_id": segment_id,
        "profile_id": uuid4(),
        "change": "entered",
        "reason": "rule",
        "profile_version": 1,
        "at": utcnow(),
    }


def vip() -> Segment:
    return Segment(tenant_id=uuid4(), name="VIP", rule={"field": "orders_count", "op": "gte", "value": 1})


def saved_segment(session: Session) -> Segment:
    segment = vip()
    session.add(segment)
    session.commit()
    return segment


def history(engine: Engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(SegmentMembershipEvent)).all())


def test_staged_rows_are_written_at_commit_after_the_objects_they_refer_to(segments_db: Engine) -> None:
    with Session(segments_db) as session:
        segment = vip()
        session.add(segment)  # not flushed yet: the staged rows refer to it
        for _ in range(3):
            stage_insert(session, SegmentMembershipEvent, entry(segment.id))
        assert history(segments_db) == 0  # nothing written before the commit
        session.commit()
    assert history(segments_db) == 3


def test_staged_rows_go_with_a_rollback(segments_db: Engine) -> None:
    with Session(segments_db) as session:
        segment = saved_segment(session)
        stage_insert(session, SegmentMembershipEvent, entry(segment.id))
        session.rollback()
        session.commit()  # a later transaction of the same session does not bring them back
    assert history(segments_db) == 0


def test_a_statement_in_the_transaction_sees_the_staged_rows(segments_db: Engine) -> None:
    with Session(segments_db) as session:
        segment = saved_segment(session)
        stage_insert(session, SegmentMembershipEvent, entry(segment.id))
        stage_insert(session, SegmentMembershipEvent, entry(segment.id))
        assert len(session.exec(select(SegmentMembershipEvent)).all()) == 2
        session.rollback()  # written, but not committed
    assert history(segments_db) == 0


# -- new_row: a table model's row without SQLModel's per-field __setattr__ ----------------------------------


def test_new_row_builds_what_the_constructor_builds() -> None:
    tenant, segment_id = uuid4(), uuid4()
    values: dict[str, Any] = {
        "tenant_id": tenant,
        "name": "VIP",
        "rule": {"field": "orders_count", "op": "gte", "value": 1},
    }
    built, fast = Segment(**values), new_row(Segment, **values)
    by_factory = {"id", "created_at", "updated_at"}  # a new uuid4 / utcnow each time
    for name in Segment.model_fields:
        if name not in by_factory:
            assert getattr(fast, name) == getattr(built, name), name
    assert isinstance(fast.id, UUID)
    assert fast.id != built.id
    assert fast.created_at.tzinfo is not None
    assert fast.__pydantic_fields_set__ == built.__pydantic_fields_set__ == set(values)
    assert new_row(Segment, id=segment_id, **values).id == segment_id  # a given value wins over the factory


def test_new_row_refuses_unknown_fields_and_missing_required_ones() -> None:
    with pytest.raises(TypeError, match="no field"):
        new_row(Segment, tenant_id=uuid4(), name="VIP", rule={}, colour="red")
    with pytest.raises(TypeError, match="required"):
        new_row(Segment, name="VIP", rule={})  # no tenant_id


def test_a_new_row_is_inserted_changed_and_read_back_like_any_other(segments_db: Engine) -> None:
    with Session(segments_db) as session:
        segment = new_row(
            Segment, tenant_id=uuid4(), name="VIP", rule={"field": "orders_count", "op": "gte", "value": 1}
        )
        session.add(segment)
        session.commit()
        segment.name = "Champions"  # a tracked change on the persistent row: an UPDATE at commit
        session.add(segment)
        session.commit()
        segment_id = segment.id
    with Session(segments_db) as session:
        stored = session.get(Segment, segment_id)
        assert stored is not None
        assert stored.name == "Champions"
        assert stored.rule == {
            "field": "orders_count",
            "op": "gte",
            "value": 1,
        }


def test_add_new_makes_a_new_row_pending_as_session_add_does(segments_db: Engine) -> None:
    rule = {"field": "orders_count", "op": "gte", "value": 1}
    with Session(segments_db) as session:
        kept, dropped = (new_row(Segment, tenant_id=uuid4(), name=n, rule=rule) for n in ("VIP", "Gone"))
        add_new(session, kept)
        assert kept in session.new
        session.commit()
        add_new(session, dropped)
        session.flush()
        assert sa.inspect(dropped).persistent
        session.rollback()  # a row inserted in a transaction that rolls back is transient again
        assert sa.inspect(dropped).transient
        assert sa.inspect(kept).persistent
    with Session(segments_db) as session:
        assert [s.name for s in session.exec(select(Segment))] == ["VIP"]


# -- write_columns: one UPDATE for objects whose changed columns differ --------------------------------------


def test_write_columns_writes_every_object_in_one_statement_and_leaves_them_clean(
    segments_db: Engine,
) -> None:
    with Session(segments_db) as session:
        segments = [saved_segment(session) for _ in range(3)]
        for segment in segments:
            session.refresh(segment)  # loaded, as the consumer's rows are
        segments[0].name = "Champions"  # each changed in its own way: the flush would need three statements
        segments[1].purpose = "marketing"
        segments[2].name, segments[2].rule = "Lapsed", {"field": "orders_count", "op": "eq", "value": 0}
        statements: list[str] = []
        sa.event.listen(segments_db, "before_cursor_execute", lambda *a: statements.append(a[2]))
        write_columns(session, segments, ("name", "purpose", "rule"))
        assert len(statements) == 1
        assert statements[0].startswith("UPDATE segment")
        assert not any(session.is_modified(s) for s in segments)  # nothing left for the flush
        assert not session.dirty  # not even to look at: clean, as after a flush
        session.flush()
        assert len(statements) == 1
        session.commit()
        ids = [s.id for s in segments]
    with Session(segments_db) as session:
        stored = [session.get(Segment, i) for i in ids]
        assert [(s.name, s.purpose) for s in stored if s is not None] == [
            ("Champions", None),
            ("VIP", "marketing"),
            ("Lapsed", None),
        ]
        assert stored[2] is not None
        assert stored[2].rule["op"] == "eq"


def name_and_purpose(engine: Engine, segment_id: UUID) -> tuple[str, str | None]:
    """What the table holds of the segment, read in a session of its own."""
    with Session(engine) as session:
        stored = session.get(Segment, segment_id)
        assert stored is not None
        return stored.name, stored.purpose


def test_assign_records_only_what_changes(segments_db: Engine) -> None:
    with Session(segments_db) as session:
        segment = saved_segment(session)
        session.refresh(segment)  # loaded, as the consumers' rows are
        rule = dict(segment.rule)  # equal, not the same object
        assign(segment, name=segment.name, rule=rule, purpose=None)
        assert not session.is_modified(segment)  # equal values of the same type: nothing to write
        assign(segment, name="Champions", purpose="marketing")
        history = sa.inspect(segment).attrs
        assert history.name.history.added == ["Champions"]
        assert history.purpose.history.added == ["marketing"]
        assert not history.rule.history.has_changes()
        session.expire(segment, ["name"])  # not in the instance's dict: set, whatever it holds
        assign(segment, name="Champions")
        assert sa.inspect(segment).attrs.name.history.added == ["Champions"]
        segment_id = segment.id
        session.commit()
    assert name_and_purpose(segments_db, segment_id) == ("Champions", "marketing")


def test_write_columns_by_a_primary_key_not_named_id(segments_db: Engine) -> None:
    with Session(segments_db) as session:
        ids = [uuid4(), uuid4()]
        tenant_id = uuid4()
        session.add_all(
            ProfileProjection(
                profile_id=p, tenant_id=tenant_id, profile_version=1, orders_count=1, total_spent_minor=0
            )
            for p in ids
        )
        session.commit()
        rows = [session.get(ProfileProjection, p) for p in ids]
        assert rows[0] is not None
        assert rows[1] is not None
        rows[0].orders_count, rows[1].city = 7, "Recife"
        statements: list[str] = []
        sa.event.listen(segments_db, "before_cursor_execute", lambda *a: statements.append(a[2]))
        write_columns(session, [rows[0], rows[1]], ("orders_count", "city"))
        assert len(statements) == 1
        assert "WHERE profile_projection.profile_id = ?" in statements[0]
        session.commit()
    with Session(segments_db) as session:
        stored = [session.get(ProfileProjection, p) for p in ids]
        assert [(r.orders_count, r.city) for r in stored if r is not None] == [(7, None), (1, "Recife")]


def test_write_columns_leaves_other_changes_to_the_flush(segments_db: Engine) -> None:
    with Session(segments_db) as session:
        segment = saved_segment(session)
        session.refresh(segment)
        segment.name, segment.purpose = "Champions", "marketing"
        write_columns(session, [segment], ("name",))
        assert session.is_modified(segment)  # purpose is still to be written
        assert segment in session.dirty
        segment_id = segment.id
        session.commit()
    assert name_and_purpose(segments_db, segment_id) == ("Champions", "marketing")


# -- any_of: IN on SQLite, = ANY(array) on PostgreSQL --------------------------------------------------------


def test_any_of_finds_the_rows_on_sqlite(segments_db: Engine) -> None:
    with Session(segments_db) as session:
        wanted = [saved_segment(session).id for _ in range(3)]
        saved_segment(session)
        found = session.exec(
            select(col(Segment.id)).where(any_of(session, col(Segment.id), wanted[:2]))
        ).all()
        assert sorted(found) == sorted(wanted[:2])


def test_any_of_is_one_array_parameter_on_postgresql() -> None:
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connects
    with Session(engine) as session:
        condition = any_of(session, col(Segment.id), [uuid4() for _ in range(1000)])
        sql = str(sa.select(col(Segment.id)).where(condition).compile(engine))
    assert "= ANY (%(param_1)s::UUID[])" in sql
    assert "param_2" not in sql  # the same text whatever the count


def test_every_table_of_the_services_is_copied_in_binary() -> None:
    """`bulk_insert` and `write_columns` COPY in binary when every column's type has a binary form
    (`binary_types`); a type added to a model without one would quietly fall back to text."""
    for owner in (ingest_registry, profile_registry, segmentation_registry, infra_registry):
        for table in owner.metadata.tables.values():
            assert binary_types(table, tuple(table.c.keys())) is not None, table.name


def test_a_type_without_a_binary_form_is_copied_as_text() -> None:
    table = sa.Table("spans", sa.MetaData(), sa.Column("at", sa.Interval()), sa.Column("id", sa.Uuid()))
    assert binary_types(table, ("id",)) == ("uuid",)
    assert binary_types(table, ("id", "at")) is None
