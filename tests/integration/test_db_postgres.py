"""`shared.db` on PostgreSQL: sessions in UTC; `write_columns` as COPY into a temporary table and one UPDATE
from it (the SQLite executemany is tested in tests/unit/test_unit_db.py); `copy_new_rows` inserting a
flush's new rows with COPY."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.segmentation.models import Segment
from shared.db import bulk_insert, make_engine, utcnow, write_columns
from shared.infra import OutboxMessage
from shared.records import ConsentPurpose

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


def test_copy_new_rows_inserts_with_copy_and_keeps_the_objects_current(
    clean_databases: dict[str, str],
) -> None:
    from services.profile.models import MergeRecord, Profile, ProfileOrder
    from shared.db import copy_new_rows, new_row, table_of

    sa.orm.configure_mappers()  # `new_row` builds rows through the mappers' instrumentation
    engine = make_engine(clean_databases["profile"])
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    tenant_id = uuid4()
    placed = datetime(2026, 11, 20, 14, 3, tzinfo=timezone(timedelta(hours=-3)))
    try:
        with Session(engine) as session:
            copy_new_rows(session, Profile, ProfileOrder)
            profile = new_row(Profile, tenant_id=tenant_id)
            order = new_row(
                ProfileOrder,
                order_id=uuid4(),
                tenant_id=tenant_id,
                profile_id=profile.id,
                order_version=1,
                source="site",
                status="paid",
                total_minor=25990,
                placed_at=placed,
                items=[{"sku": "CAFE-500G", "category": "alimentos", "quantity": 2}],
            )
            merge = new_row(
                MergeRecord,
                tenant_id=tenant_id,
                survivor_id=profile.id,
                merged_id=uuid4(),
                rule="email",
                linked_by=["email"],
                moved_identifiers=[],
                moved_orders=[],
            )
            session.add_all([profile, order, merge])
            session.flush()
            # COPY goes through psycopg's own cursor (no SQLAlchemy statement to see): the rows are there.
            for model in (Profile, ProfileOrder, MergeRecord):
                table = table_of(model)
                count = session.execute(sa.select(sa.func.count()).where(table.c.tenant_id == tenant_id))
                assert count.scalar_one() == 1, table.name
            assert not any(
                s.startswith(("INSERT INTO profile ", "INSERT INTO profile_order")) for s in statements
            )
            assert any(s.startswith("INSERT INTO merge_record") for s in statements)  # left to the ORM
            assert not session.new
            assert order in session
            assert not session.is_modified(order)
            order.status = "cancelled"  # a later change of the batch: an UPDATE of the copied row
            order_id, profile_id = order.order_id, profile.id
            session.commit()
        with Session(engine) as session:
            again = session.get(ProfileOrder, order_id)
            assert again is not None
            assert (again.status, again.total_minor, again.placed_at, again.items) == (
                "cancelled",
                25990,
                placed.astimezone(UTC),
                [{"sku": "CAFE-500G", "category": "alimentos", "quantity": 2}],
            )
            assert session.get(Profile, profile_id) is not None
    finally:
        engine.dispose()


def test_copied_rows_leave_the_session_when_their_transaction_rolls_back(
    clean_databases: dict[str, str],
) -> None:
    """As rows the ORM inserted itself: a rollback leaves no object standing for a row that is not there."""
    from services.profile.models import Profile
    from shared.db import copy_new_rows, new_row

    sa.orm.configure_mappers()
    engine = make_engine(clean_databases["profile"])
    try:
        with Session(engine) as session:
            copy_new_rows(session, Profile)
            profile = new_row(Profile, tenant_id=uuid4())
            session.add(profile)
            session.flush()
            assert sa.inspect(profile).persistent
            assert session.get(Profile, profile.id) is profile  # in the identity map
            session.rollback()
            assert profile not in session
            assert sa.inspect(profile).transient
            assert session.get(Profile, profile.id) is None
    finally:
        engine.dispose()


def test_bulk_insert_copies_in_binary_and_reads_back_every_type(engine: Engine) -> None:
    """COPY's binary format (`shared.db.binary_types`): bytes, JSON (None included: JSON's null, as the text
    format stored it), booleans, timestamps; an id given as text and an enum given for a text column are
    sent as the text format would have sent them."""
    tenant_id = uuid4()
    at = datetime(2026, 12, 1, 5, 0, tzinfo=timezone(timedelta(hours=-3)))
    with Session(engine) as session:
        bulk_insert(
            session,
            Segment,
            [
                {
                    "id": str(segment_id),
                    "tenant_id": tenant_id,
                    "name": name,
                    "rule": rule,
                    "purpose": purpose,
                    "time_relative": relative,
                    "created_at": at,
                    "updated_at": at,
                }
                for segment_id, name, rule, purpose, relative in [
                    (
                        UUID(int=1),
                        "VIP",
                        {"field": "total_spent", "op": "gte", "value": "1000.00"},
                        None,
                        False,
                    ),
                    (UUID(int=2), ConsentPurpose.marketing_email, {"all": []}, "marketing_email", True),
                ]
            ],
        )
        bulk_insert(
            session,
            OutboxMessage,
            [
                {
                    "event_id": UUID(int=3),
                    "topic": "t",
                    "key": "k",
                    "event_type": "e",
                    "body": bytes(range(256)),
                    "created_at": at,
                }
            ],
        )
        session.commit()
    with engine.connect() as connection:
        segments = connection.execute(
            sa.text("SELECT id, name, rule, purpose, time_relative, created_at FROM segment ORDER BY id")
        ).all()
        body = connection.execute(sa.text("SELECT body FROM outbox_message")).scalar_one()
    assert [tuple(row) for row in segments] == [
        (UUID(int=1), "VIP", {"field": "total_spent", "op": "gte", "value": "1000.00"}, None, False, at),
        (UUID(int=2), "marketing_email", {"all": []}, "marketing_email", True, at),
    ]
    assert body == bytes(range(256))
