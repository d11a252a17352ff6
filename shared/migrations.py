"""Alembic helpers: each service keeps its own environment under `services/<name>/migrations/`.

`run_env` is what each service's `env.py` calls; `upgrade` is used at start-up and by `make migrate`
(``uv run alembic -c services/<name>/alembic.ini upgrade head`` works as well).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config

from shared.db import make_engine


def alembic_config(service_dir: Path, url: str | None = None) -> Config:
    cfg = Config(str(service_dir / "alembic.ini"))
    cfg.set_main_option("script_location", str(service_dir / "migrations"))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(service_dir: Path, url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service_dir, url), revision)


def downgrade(service_dir: Path, url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(service_dir, url), revision)


def run_env(metadata: Sequence[sa.MetaData], default_url: Callable[[], str]) -> None:
    """Body of a service's env.py: migrate the URL given in the config, else the service's settings."""
    url = context.config.get_main_option("sqlalchemy.url") or default_url()
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=list(metadata), literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = (
        make_engine(url, poolclass=sa.pool.NullPool) if not url.startswith("sqlite") else make_engine(url)
    )
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Several processes of a service may start at once: one migrates, the others wait and find
            # nothing left to do.
            connection.execute(sa.text("SELECT pg_advisory_lock(7345012)"))
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=list(metadata),
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


# A data migration's change to one row: (tenant, {column: value} of the row) -> {column: new value}.
RowChange = Callable[[UUID, dict[str, Any]], dict[str, Any]]


def rewrite_rows(
    table_name: str,
    key: str,
    columns: dict[str, sa.types.TypeEngine[Any]],
    read: Sequence[str],
    change: RowChange,
    chunk: int = 1000,
) -> None:
    """In a migration: update every row of a table that has a `tenant_id` with `change(tenant, its `read`
    columns)`, `chunk` rows at a time (keyset on `key`, one executemany per chunk). `columns` types every
    column read or written."""
    conn = op.get_bind()
    table = sa.table(
        table_name, sa.column(key), sa.column("tenant_id"), *(sa.column(n, t) for n, t in columns.items())
    )
    last: Any = None
    while True:
        query = sa.select(table.c[key], table.c.tenant_id, *(table.c[n] for n in read))
        if last is not None:
            query = query.where(table.c[key] > last)
        rows = conn.execute(query.order_by(table.c[key]).limit(chunk)).all()
        if not rows:
            return
        changes = [(row[0], change(_uuid(row[1]), dict(zip(read, row[2:], strict=True)))) for row in rows]
        written = sorted(changes[0][1])
        update = (
            sa.update(table)
            .where(table.c[key] == sa.bindparam("row_key"))
            .values({n: sa.bindparam(f"new_{n}", type_=columns[n]) for n in written})
        )
        conn.execute(
            update, [{"row_key": k, **{f"new_{n}": v for n, v in new.items()}} for k, new in changes]
        )
        last = rows[-1][0]


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def drop_outbox_event_id_unique() -> None:
    """In a migration: the service's `outbox_message.event_id` without its unique index. Event ids are
    random (uuid4), made by `shared.outbox`, and no query looks a row up by one; the index cost two random
    index inserts per event (the row, and the row version its publication writes)."""
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_constraint("uq_outbox_message_event_id", type_="unique")


def add_outbox_event_id_unique() -> None:
    """What `drop_outbox_event_id_unique` undoes."""
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_outbox_message_event_id", ["event_id"])
