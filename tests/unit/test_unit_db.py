"""shared.db: UTCDateTime keeps instants in UTC and refuses naive datetimes; make_engine on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import StatementError

from shared.db import UTCDateTime, make_engine, utcnow

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


def test_utcnow_is_aware_utc() -> None:
    now = utcnow()
    assert now.tzinfo is UTC
    assert abs(datetime.now(UTC) - now) < timedelta(seconds=5)
