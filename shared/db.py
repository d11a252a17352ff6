"""Engine creation, the session dependency and column types every service uses."""

from __future__ import annotations

import functools
import hashlib
import time
import zlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeGuard, TypeVar, cast
from uuid import UUID

import orjson
import psycopg
import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from psycopg.types.json import Json
from pydantic._internal import _fields as _pydantic_fields
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import ORMExecuteState, registry
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import instrumentation as sa_instrumentation
from sqlalchemy.orm.attributes import set_attribute
from sqlalchemy.orm.state import InstanceState
from sqlmodel import Session, SQLModel


def _memoise_default_factory_check() -> None:
    """SQLModel builds every table row through `FieldInfo.get_default`, and pydantic answers "does this
    default_factory take the validated data?" with a fresh `inspect.signature` each time: a tenth of the
    profile consumer's time went there (pydantic#13376 fixed the same for private attributes only). The
    answer depends on the factory alone, so it is computed once per factory."""
    check = _pydantic_fields.takes_validated_data_argument
    if getattr(check, "__wrapped__", None) is not None:
        return
    cached = functools.lru_cache(maxsize=1024)(check)

    def takes_validated_data_argument(default_factory: Any) -> Any:
        try:
            return cached(default_factory)
        except TypeError:  # an unhashable factory
            return check(default_factory)

    takes_validated_data_argument.__wrapped__ = check  # type: ignore[attr-defined]
    _pydantic_fields.takes_validated_data_argument = takes_validated_data_argument  # type: ignore[assignment]


_memoise_default_factory_check()


def utcnow() -> datetime:
    return datetime.now(UTC)


Row = TypeVar("Row", bound=SQLModel)
_REQUIRED = object()


@functools.cache
def _row_fields(model: type[Any]) -> tuple[tuple[str, Any, Callable[[], Any] | None], ...]:
    """A table model's fields: (name, default or `_REQUIRED`, default factory or None)."""
    fields: list[tuple[str, Any, Callable[[], Any] | None]] = []
    for name, info in model.model_fields.items():
        if info.default_factory is not None:
            fields.append((name, None, cast(Callable[[], Any], info.default_factory)))
        else:
            fields.append((name, _REQUIRED if info.is_required() else info.default, None))
    return tuple(fields)


@functools.cache
def _field_names(model: type[Any]) -> frozenset[str]:
    return frozenset(model.model_fields)


def new_row(model: type[Row], /, **values: Any) -> Row:
    """`model(**values)` for a table model (a new, transient row: the given values, the other fields'
    defaults and default factories), built the way SQLAlchemy builds loaded rows. SQLModel's constructor
    sets each field through SQLAlchemy's instrumentation *and* pydantic's `__setattr__`, some 100 µs for a
    row of twenty fields: the profile and segmentation consumers create thousands a second. Columns only:
    no relationships, no validation (SQLModel does not validate table models either)."""
    unknown = values.keys() - _field_names(model)
    if unknown:
        raise TypeError(f"{model.__name__} has no field(s) {sorted(unknown)}")
    row: Row = sa_instrumentation.manager_of_class(model).new_instance()
    # Straight into the instance's dict, where SQLAlchemy keeps attribute values (and loading puts them):
    # a new row has no history to record, its INSERT reads this dict. `set_attribute` cost 0.45 µs a field.
    state = row.__dict__
    for name, default, factory in _row_fields(model):
        if name in values:
            state[name] = values[name]
        elif factory is not None:
            state[name] = factory()
        elif default is _REQUIRED:
            raise TypeError(f"{model.__name__}.{name} is required")
        else:
            state[name] = default
    row.__pydantic_fields_set__.update(values)
    return row


@functools.cache
def _cascades(model: type[Any]) -> bool:
    return bool(sa.inspect(model).relationships)


def add_new(session: OrmSession, row: SQLModel) -> None:
    """`session.add(row)` for a new row (`new_row`'s) of a model without relationships: pending in the
    session the same way, without `Session.add`'s save-update cascade, which walks each of the mapper's
    columns looking for relationships to follow (4 of its 7 µs; the profile consumer adds some 75,000 new
    rows per 30,000 orders). `Session._save_or_update_impl` is SQLAlchemy's own (the lock pins it)."""
    if _cascades(type(row)) or session._warn_on_events:
        session.add(row)
        return
    state: InstanceState[Any] = sa.inspect(row)
    state._orphaned_outside_of_session = False
    session._save_or_update_impl(state)


def assign(row: Any, /, **values: Any) -> None:
    """Set these columns of a table model's row as SQLAlchemy tracks changes (written by the next flush,
    or `write_columns`), without SQLModel's `__setattr__`: it sets each value through SQLAlchemy *and*
    again through pydantic (the same dict), 1.2 µs a field against 0.45 µs. A column that already holds
    an equal value of the same type is left alone (no change to record: the consumers set every trait of
    a profile on each event, and most are what they were). Columns only (not properties such as
    `Profile.name`)."""
    current = row.__dict__
    for name, value in values.items():
        old = current.get(name, _UNLOADED)
        if old is value or (type(old) is type(value) and old == value):
            continue
        set_attribute(row, name, value)


_UNLOADED = object()  # an attribute not in the instance's dict (never loaded, or expired)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back timezone-aware (SQLite forgets the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; Clientela stores UTC-aware timestamps only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is UTC:  # PostgreSQL's, in the sessions' time zone (`make_engine`)
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def is_deadlock(exc: BaseException | None) -> TypeGuard[sa_exc.OperationalError]:
    """PostgreSQL rolled the transaction back to break a deadlock (SQLAlchemy's wrapping of psycopg's): the
    other transaction goes on, and this one's work can be done again."""
    return isinstance(exc, sa_exc.OperationalError) and isinstance(exc.orig, psycopg.errors.DeadlockDetected)


def is_lock_unavailable(exc: BaseException | None) -> TypeGuard[sa_exc.OperationalError]:
    """A `NOWAIT` lock met a row another transaction holds (SQLAlchemy's wrapping of psycopg's): the
    statement failed at once instead of waiting."""
    return isinstance(exc, sa_exc.OperationalError) and isinstance(exc.orig, psycopg.errors.LockNotAvailable)


def lock_key(*parts: object) -> int:
    """A PostgreSQL transaction (advisory) lock for what these parts name: a 64-bit hash of them (a
    collision only makes two transactions wait for each other)."""
    digest = hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, signed=True)


_TRY_XACT_LOCKS = sa.text(
    "SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k WHERE NOT pg_try_advisory_xact_lock(k)"
)
_XACT_LOCKS = sa.text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k ORDER BY k")


def try_xact_locks(session: OrmSession, keys: Collection[int]) -> set[int]:
    """Take these transaction locks (`lock_key`) where they are free, without waiting; return those another
    transaction holds. A savepoint rolled back lets go of those it took."""
    if not keys:
        return set()
    return set(session.execute(_TRY_XACT_LOCKS, {"keys": sorted(set(keys))}).scalars())


def xact_locks(session: OrmSession, keys: Collection[int]) -> None:
    """Take these transaction locks, waiting for each, in one sorted order (two transactions taking some of
    the same never deadlock on them)."""
    if keys:
        session.execute(_XACT_LOCKS, {"keys": sorted(set(keys))})


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for PostgreSQL (psycopg 3) or the embedded SQLite default; JSON columns use orjson."""
    kwargs.setdefault("json_serializer", _json)
    kwargs.setdefault("json_deserializer", orjson.loads)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # Sessions in UTC: timestamps arrive in UTC already (no conversion per value read), and SQL's dates
    # and times mean the same on every server.
    kwargs["connect_args"] = {"options": "-c TimeZone=UTC", **kwargs.get("connect_args", {})}
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
    engine = sa.create_engine(url, **kwargs)
    ping_when_idle(engine)
    return engine


PING_AFTER_IDLE_S = 1.0


def ping_when_idle(
    engine: Engine, after_s: float = PING_AFTER_IDLE_S, clock: Callable[[], float] = time.monotonic
) -> None:
    """After a PostgreSQL restart, stale pooled connections are replaced instead of failing: a connection
    idle in the pool for more than `after_s` is pinged when checked out, and a dead one is swapped for a
    fresh one. SQLAlchemy's `pool_pre_ping` pings at every checkout: a round trip per request of the API,
    for connections that were busy milliseconds ago. A connection that dies while in use still fails its
    statement, and that error makes the pool drop every connection opened before it."""

    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = clock()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or clock() - since <= after_s:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            if getattr(dbapi_conn, "closed", False) or engine.dialect.is_disconnect(exc, dbapi_conn, None):
                raise sa_exc.DisconnectionError() from exc  # the pool retries with a new connection
            raise


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's session. Made in the event loop (no I/O until used) and closed there when it holds no
    connection; else closed in the thread pool (closing ends the transaction: a round trip). Routes that end
    their transaction themselves, in their own thread, leave nothing to do here."""
    session = Session(request.app.state.engine)
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


SessionDep = Annotated[Session, Depends(get_session)]


async def get_read_session(request: Request) -> Session:
    """A session for routes that only read, with one statement each: in autocommit, so that it costs no
    BEGIN and ROLLBACK round trips; each statement sees what was committed before it ran. The route closes
    it, in the thread that used it (a plain dependency, not a `yield` one: FastAPI's exit stack for the
    latter showed as about 5 % of a read's CPU); one never used holds no connection and needs no closing."""
    state = request.app.state
    engine = getattr(state, "read_engine", None)
    if engine is None:
        engine = state.read_engine = state.engine.execution_options(isolation_level="AUTOCOMMIT")
    return Session(engine)


ReadSessionDep = Annotated[Session, Depends(get_read_session)]


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_registry() -> registry:
    """A mapper registry (and MetaData) per owner: no service's metadata holds another's tables."""
    return registry(metadata=sa.MetaData(naming_convention=NAMING_CONVENTION))


def table_of(model: type[Any]) -> sa.Table:
    """A mapped model's table, for Core statements (no ORM object per row, nothing tracked)."""
    return cast(sa.Table, sa.inspect(model).local_table)


def any_of(session: OrmSession, column: Any, values: Collection[Any]) -> sa.ColumnElement[bool]:
    """`column IN (values)` for a batch's lookups. On PostgreSQL `column = ANY(:array)`: one parameter, so
    one statement text whatever the count (an IN list of a thousand placeholders is rendered by SQLAlchemy
    and parsed again by psycopg on each execution)."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(
            sa.ColumnElement[bool], column == sa.any_(sa.literal(list(values), postgresql.ARRAY(column.type)))
        )
    return cast(sa.ColumnElement[bool], column.in_(values))


def write_columns(session: OrmSession, objects: list[Any], columns: tuple[str, ...]) -> None:
    """Write these `columns` of these loaded ORM objects (one model, a single-column primary key) now,
    whatever each changed, and mark them unchanged. The ORM's flush groups UPDATEs by the set of
    columns that changed, so objects changed in different ways cost a statement each; the other columns'
    changes are left to the flush.

    On PostgreSQL the rows are copied (`COPY`) into a temporary table of the connection and written by one
    `UPDATE … FROM` it: an executemany `UPDATE … WHERE id = …` cost the profile consumer about 6 % of its
    time, most of it SQLAlchemy processing each row's parameters. Elsewhere, that executemany."""
    if not objects:
        return
    table = table_of(type(objects[0]))
    (key,) = (column.key for column in table.primary_key.columns)
    unique = list({getattr(row, key): row for row in objects}.values())
    with session.no_autoflush:
        if session.get_bind().dialect.name == "postgresql":
            _update_from_copy(session, table, key, unique, columns)
        else:
            statement = (
                table.update()
                .where(table.c[key] == sa.bindparam("_key"))
                .values({name: sa.bindparam(name) for name in columns})
            )
            rows = [
                {"_key": getattr(row, key), **{name: getattr(row, name) for name in columns}}
                for row in unique
            ]
            session.execute(statement, rows)
    # What `set_committed_value(row, name, <its value>)` does for each column, once per row: the values
    # stay, their change history goes (0.6 µs a column and a row less; the consumers write some twenty
    # columns of thousands of rows a poll). `InstanceState._commit` is SQLAlchemy's own (the lock pins it).
    # A row with nothing else changed is clean again, as after a flush (`_commit_all_states`, SQLAlchemy's
    # own): the next flush would otherwise examine each such row (some 20 µs a row) to write nothing.
    clean = []
    for row in unique:
        state = sa.inspect(row)
        state._commit(state.dict, columns)
        if not state.committed_state:
            clean.append((state, state.dict))
    InstanceState._commit_all_states(clean, session.identity_map)


def _update_from_copy(
    session: OrmSession, table: sa.Table, key: str, objects: list[Any], columns: tuple[str, ...]
) -> None:
    """`write_columns` on PostgreSQL: COPY into a temporary table of the connection (emptied by the
    statement that reads it), then one UPDATE."""
    write_staged(session)  # as any statement of the session would (`stage_insert`); no flush: the objects'
    # changes to these columns are what this writes, and the flush would write them apart
    connection = session.connection()
    scratch = f"_write_{table.name}_{zlib.crc32(','.join(columns).encode()):08x}"
    names = ", ".join(f'"{c}"' for c in (key, *columns))
    # Created by the first call of the connection (kept until it closes); a rollback drops it again.
    connection.exec_driver_sql(
        f'CREATE TEMPORARY TABLE IF NOT EXISTS "{scratch}" ON COMMIT DELETE ROWS AS '  # noqa: S608 - names of the model
        f'SELECT {names} FROM "{table.name}" WITH NO DATA'
    )
    rows = ([getattr(row, key), *(getattr(row, c) for c in columns)] for row in objects)
    _copy(connection, scratch, table, [key, *columns], rows)
    assignments = ", ".join(f'"{c}" = w."{c}"' for c in columns)
    connection.exec_driver_sql(
        f'WITH w AS (DELETE FROM "{scratch}" RETURNING {names}) '  # noqa: S608 - names of the model
        f'UPDATE "{table.name}" AS t SET {assignments} FROM w WHERE t."{key}" = w."{key}"'
    )


def bulk_insert(session: OrmSession, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Insert many rows in the caller's transaction: PostgreSQL `COPY` (one stream, no per-row statement),
    an executemany elsewhere. All rows must have the same keys."""
    if not rows:
        return
    table = table_of(model)
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        connection.execute(sa.insert(table), rows)
        return
    columns = list(rows[0])
    _copy(connection, table.name, table, columns, ([row[c] for c in columns] for row in rows))


# PostgreSQL's name of each column type the models use, for COPY's binary format (`_copy`): each value is
# sent in its binary form, with nothing to print as text and parse again (a bytea printed as hex is twice
# its size). Measured on 100,000 outbox rows: 0.14 against 0.60 CPU s to send, 0.77 against 1.19 for
# PostgreSQL to read. A table with a type not listed here is copied as text.
_BINARY_TYPES = {
    "UUID": "uuid",
    "VARCHAR": "varchar",
    "TEXT": "text",
    "BIGINT": "int8",
    "INTEGER": "int4",
    "SMALLINT": "int2",
    "BOOLEAN": "bool",
    "BYTEA": "bytea",
    "DATE": "date",
    "FLOAT": "float8",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "JSON": "json",
    "JSONB": "jsonb",
}
_PG_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


@functools.lru_cache(maxsize=1024)
def binary_types(table: sa.Table, columns: tuple[str, ...]) -> tuple[str, ...] | None:
    """The PostgreSQL types of these columns for a binary COPY, or None if one has no binary form here."""
    found = []
    for name in columns:
        compiled = table.c[name].type.compile(dialect=_PG_DIALECT)
        pg_type = _BINARY_TYPES.get(compiled.split("(", 1)[0])
        if pg_type is None:
            return None
        found.append(pg_type)
    return tuple(found)


def _copy(
    connection: sa.Connection, into: str, table: sa.Table, columns: list[str], rows: Iterable[list[Any]]
) -> None:
    """COPY these rows (values of `columns`, typed as `table`'s columns of those names) into table `into`,
    in COPY's binary format when every column has one (`binary_types`), as text otherwise."""
    types = binary_types(table, tuple(columns))
    json_columns = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, sa.JSON)]
    times = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, UTCDateTime)]
    # In binary form a value must be of its column's Python type: ids given as text become UUIDs, and
    # values given for a text column (an enum, a number) their text, as the text format would send them.
    ids = [i for i, t in enumerate(types or ()) if t == "uuid"]
    texts = [i for i, t in enumerate(types or ()) if t in ("varchar", "text")]
    names = ", ".join(f'"{c}"' for c in columns)
    copy_sql = f'COPY "{into}" ({names}) FROM STDIN' + (" (FORMAT BINARY)" if types else "")
    driver = connection.connection.driver_connection
    assert driver is not None
    try:
        with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:
            if types:
                copy.set_types(list(types))
            for row in rows:
                for i in json_columns:
                    row[i] = Json(row[i], dumps=_json) if types else _json(row[i])
                for i in times:
                    if row[i] is not None and row[i].tzinfo is None:
                        raise ValueError("naive datetime given; Clientela stores UTC-aware timestamps only")
                for i in ids:
                    if row[i] is not None and not isinstance(row[i], UUID):
                        row[i] = UUID(str(row[i]))
                for i in texts:
                    if row[i] is not None and not isinstance(row[i], str):
                        row[i] = str(row[i])
                copy.write_row(row)
    except psycopg.Error as exc:
        # Raised as SQLAlchemy's own exceptions (IntegrityError, OperationalError, ...), like any statement.
        raise sa_exc.DBAPIError.instance(copy_sql, None, exc, psycopg.Error) from exc


_COPIED = "clientela.copied_models"


def copy_new_rows(session: OrmSession, *models: type[Any]) -> None:
    """From now on, each flush of the session first inserts the session's new objects of these models with
    `bulk_insert` (`COPY` on PostgreSQL), model after model in this order, and keeps them in the session as
    if they had been loaded: later changes are UPDATEs, as after the ORM's own INSERT. The ORM's INSERTs
    cost some 40 µs an object (a profile consumer batch of 5,000 orders creates about 9,000: orders,
    identifiers, profiles). For models whose rows are plain columns (no relationships, no defaults the
    database computes); the other new objects are left to the ORM, after these."""
    if session.info.get(_COPIED) is None:
        sa.event.listen(session, "before_flush", _copy_new_rows)
    session.info[_COPIED] = models


def _copy_new_rows(session: OrmSession, _context: Any, _instances: Any) -> None:
    models: tuple[type[Any], ...] = session.info.get(_COPIED) or ()
    pending: dict[type[Any], list[Any]] = {}
    for obj in session.new:
        if type(obj) in models:
            pending.setdefault(type(obj), []).append(obj)
    for model in models:
        objects = pending.get(model)
        if not objects:
            continue
        names = [column.key for column in table_of(model).columns]
        # From each object's dict (where `new_row` put every field): no attribute access per column.
        bulk_insert(session, model, [{name: obj.__dict__.get(name) for name in names} for obj in objects])
        # Pending -> persistent as the flush itself registers the rows it inserted (`Session.
        # _register_persistent`, SQLAlchemy's own; the lock pins it): identity key and map, values
        # committed, and inserted in this transaction (a rollback expunges them again). It was expunge,
        # `make_transient_to_detached` and `add`: three cascades and ~9.5 µs an object.
        session._register_persistent({sa.inspect(obj) for obj in objects})


_STAGED = "clientela.staged_rows"


def stage_insert(session: OrmSession, model: type[Any], row: dict[str, Any]) -> None:
    """Insert `row` into `model`'s table later in the caller's transaction, in one bulk insert with the
    other rows staged for that table (`bulk_insert`): before the session's next statement, or at commit
    after the ORM's own changes are flushed, whichever comes first (so reads in the transaction see them);
    dropped if the transaction rolls back. For rows written often and not changed afterwards (events,
    history, queues): cheaper than ORM objects. The rows of a table need the same keys, every column
    without a server default included."""
    staged: dict[type[Any], list[dict[str, Any]]] | None = session.info.get(_STAGED)
    if staged is None:
        staged = session.info[_STAGED] = {}
        sa.event.listen(session, "do_orm_execute", _write_staged_before_statement)
        sa.event.listen(session, "before_commit", _write_staged_at_commit)
        sa.event.listen(session, "after_soft_rollback", _drop_staged)
    staged.setdefault(model, []).append(row)


def write_staged(session: OrmSession) -> None:
    """Insert the rows `stage_insert` staged in the session, now."""
    staged: dict[type[Any], list[dict[str, Any]]] | None = session.info.get(_STAGED)
    if not staged:
        return
    batches = list(staged.items())
    staged.clear()
    for model, rows in batches:
        bulk_insert(session, model, rows)


def _write_staged_before_statement(state: ORMExecuteState) -> None:
    write_staged(state.session)


def _write_staged_at_commit(session: OrmSession) -> None:
    if session.info.get(_STAGED):
        session.flush()  # rows may refer to objects added in the same transaction
        write_staged(session)


def _drop_staged(session: OrmSession, _previous_transaction: Any) -> None:
    session.info[_STAGED].clear()


def after_row(
    at: Any, id_: Any, last_at: datetime, last_id: Any, *, newest_first: bool = False
) -> sa.ColumnElement[bool]:
    """Keyset pagination on (time, id): the rows that come after (`last_at`, `last_id`) in that order
    (ascending, or descending with `newest_first`). Order the query by the same two columns."""
    if newest_first:
        return sa.or_(at < last_at, sa.and_(at == last_at, id_ < last_id))
    return sa.or_(at > last_at, sa.and_(at == last_at, id_ > last_id))
