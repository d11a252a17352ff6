"""`shared.db` on PostgreSQL: sessions in UTC; `write_columns` as COPY into a temporary table and one UPDATE
from it (the SQLite executemany is tested in tests/unit/test_unit_db.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.segmentation.models import Segment
from shared.db import make_engine, utcnow, write_columns

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(clean_databases: dict[str, str]) -> Iterator[Engine]:
    engine = make_engine(clean_databases["segmentation"])
    yield engine
    engine.dispose()


def saved(session: Session, count: int) -> list[Segment]:
    tenant_id = uuid4()
    segments = [
        Segment(tenant_id=tenant_id, name=f"S{i}", rule={"field": "orders_count", "op": "gte", "value": i})
        for i in range(count)
    ]
    session.add_all(segments)
    session.commit()
    for segment in segments:
        session.refresh(segment)  # loaded, as the consumer's rows are
    return segments


def stored(engine: Engine, ids: list[UUID]) -> list[tuple[str, str | None, int, datetime]]:
    with Session(engine) as session:
        rows = [session.get(Segment, i) for i in ids]
        return [(s.name, s.purpose, s.rule["value"], s.updated_at) for s in rows if s is not None]


def test_write_columns_copies_the_rows_and_updates_them_in_one_statement(engine: Engine) -> None:
    with Session(engine) as session:
        segments = saved(session, 3)
        now = utcnow()
        segments[0].name = "Champions"
        segments[1].purpose = "marketing"
        segments[2].rule = {"field": "orders_count", "op": "eq", "value": 0}
        for segment in segments:
            segment.updated_at = now
        statements: list[str] = []
        sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        write_columns(session, [*segments, segments[0]], ("name", "purpose", "rule", "updated_at"))
        updates = [s for s in statements if "UPDATE" in s]
        assert len(updates) == 1, statements
        assert not any(session.is_modified(s) for s in segments)  # nothing left for the flush
        ids = [s.id for s in segments]
        session.commit()
    assert stored(engine, ids) == [
        ("Champions", None, 0, now),
        ("S1", "marketing", 1, now),
        ("S2", None, 0, now),
    ]


def test_write_columns_twice_in_a_transaction_and_after_a_rollback(engine: Engine) -> None:
    with Session(engine) as session:
        segments = saved(session, 2)
        segments[0].name = "first"
        write_columns(session, [segments[0]], ("name",))
        segments[1].name = "second"  # the temporary table was emptied by the first UPDATE
        write_columns(session, [segments[1]], ("name",))
        session.rollback()  # drops the temporary table created in the transaction
        segments = [s for s in segments if session.get(Segment, s.id) is not None]
        assert [s.name for s in segments] == ["S0", "S1"]
        segments[1].name = "again"
        write_columns(session, [segments[1]], ("name",))
        ids = [s.id for s in segments]
        session.commit()
    assert [row[0] for row in stored(engine, ids)] == ["S0", "again"]


def test_write_columns_refuses_a_naive_datetime(engine: Engine) -> None:
    with Session(engine) as session:
        (segment,) = saved(session, 1)
        segment.updated_at = datetime(2026, 1, 1)  # naive: the mistake under test
        with pytest.raises(ValueError, match="naive datetime"):
            write_columns(session, [segment], ("updated_at",))


def test_sessions_are_in_utc_and_timestamps_read_back_in_utc(engine: Engine) -> None:
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW TimeZone").scalar_one() == "UTC"
    with Session(engine) as session:
        (segment,) = saved(session, 1)
        segment.updated_at = datetime(2026, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=-3)))
        session.commit()
        session.refresh(segment)
        assert segment.updated_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        assert segment.updated_at.tzinfo is UTC
