"""name, birth date and CEP sealed: on profiles and in the order and record snapshots

`profile.name`, `profile.birth_date` and `profile.zip` move, sealed for the tenant (AES-GCM,
`shared.crypto`), to `name_sealed`, `birth_date_sealed` (ISO date) and `zip_sealed`; in the snapshots
kept with orders and records (`profile_order.customer`, `profile_record.customer`) the name, birth date
and CEP move together into one sealed `"sealed"` entry; in `profile.announced` (what the last
`profile.updated` carried, only compared) the birth date and CEP become keyed hashes. City, state,
country and gender stay in clear (list filters and segment rules select on them). Uses the process's
secret (CLIENTELA_SECRET_KEY): migrate with the secret the service will run with. Rows are converted a
thousand at a time.

Downgrade opens everything back; `profile.announced` gets the profile's own birth date and CEP (what the
last `profile.updated` carried, unless the profile changed since without being announced).

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 10:00:00
"""

import json
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from alembic import op

from shared.crypto import keyring

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 1000
SEALED = ("name", "birth_date", "zip")  # in the snapshots
HASHED = ("birth_date", "zip")  # in profile.announced
SNAPSHOTS = (("profile_order", "order_id"), ("profile_record", "id"))
PROFILE_COLUMNS: dict[str, sa.types.TypeEngine[Any]] = {
    "name": sa.String(),
    "birth_date": sa.Date(),
    "zip": sa.String(),
    "name_sealed": sa.Text(),
    "birth_date_sealed": sa.String(),
    "zip_sealed": sa.String(),
    "announced": sa.JSON(),
}

# (tenant, {column: value} of the row) -> {column: new value}
Change = Callable[[UUID, dict[str, Any]], dict[str, Any]]


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _rewrite(
    table_name: str,
    key: str,
    columns: dict[str, sa.types.TypeEngine[Any]],
    read: Sequence[str],
    change: Change,
) -> None:
    """Update every row with `change(tenant, its `read` columns)`, a chunk at a time (keyset on `key`,
    one executemany per chunk)."""
    conn = op.get_bind()
    table = sa.table(
        table_name, sa.column(key), sa.column("tenant_id"), *(sa.column(n, t) for n, t in columns.items())
    )
    last: Any = None
    while True:
        query = sa.select(table.c[key], table.c.tenant_id, *(table.c[n] for n in read))
        if last is not None:
            query = query.where(table.c[key] > last)
        rows = conn.execute(query.order_by(table.c[key]).limit(CHUNK)).all()
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


def _snapshots(change: Callable[[UUID, dict[str, Any]], dict[str, Any]]) -> None:
    for table, key in SNAPSHOTS:
        _rewrite(
            table,
            key,
            {"customer": sa.JSON()},
            ["customer"],
            lambda tenant, row: {"customer": change(tenant, dict(_json(row["customer"]) or {}))},
        )


def upgrade() -> None:
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name_sealed", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("birth_date_sealed", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("zip_sealed", sa.String(length=100), nullable=True))
    keys = keyring()

    def seal(tenant: UUID, value: Any) -> str | None:
        if value is None:
            return None
        return keys.seal(tenant, value.isoformat() if isinstance(value, date) else str(value))

    def profile(tenant: UUID, row: dict[str, Any]) -> dict[str, Any]:
        announced = dict(_json(row["announced"]) or {})
        for k in HASHED:
            if announced.get(k) is not None:
                announced[k] = keys.index(tenant, f"announced:{k}", announced[k])
        return {
            "name_sealed": seal(tenant, row["name"]),
            "birth_date_sealed": seal(tenant, row["birth_date"]),
            "zip_sealed": seal(tenant, row["zip"]),
            "announced": announced,
        }

    _rewrite("profile", "id", PROFILE_COLUMNS, ["name", "birth_date", "zip", "announced"], profile)

    def snapshot(tenant: UUID, stored: dict[str, Any]) -> dict[str, Any]:
        personal = {k: stored.pop(k) for k in SEALED if stored.get(k) is not None}
        if personal:
            stored["sealed"] = keys.seal(tenant, json.dumps(personal))
        return stored

    _snapshots(snapshot)
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.drop_column("name")
        batch_op.drop_column("birth_date")
        batch_op.drop_column("zip")


def downgrade() -> None:
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("birth_date", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("zip", sa.String(length=8), nullable=True))
    keys = keyring()

    def open_(tenant: UUID, token: str | None) -> str | None:
        return None if token is None else keys.open(tenant, token)

    def profile(tenant: UUID, row: dict[str, Any]) -> dict[str, Any]:
        birth_date = open_(tenant, row["birth_date_sealed"])
        zip_ = open_(tenant, row["zip_sealed"])
        announced = dict(_json(row["announced"]) or {})
        for k, value in (("birth_date", birth_date), ("zip", zip_)):
            if announced.get(k) is not None:
                announced[k] = value
        return {
            "name": open_(tenant, row["name_sealed"]),
            "birth_date": None if birth_date is None else date.fromisoformat(birth_date),
            "zip": zip_,
            "announced": announced,
        }

    _rewrite(
        "profile",
        "id",
        PROFILE_COLUMNS,
        ["name_sealed", "birth_date_sealed", "zip_sealed", "announced"],
        profile,
    )

    def snapshot(tenant: UUID, stored: dict[str, Any]) -> dict[str, Any]:
        sealed = stored.pop("sealed", None)
        if sealed is not None:
            stored.update(json.loads(keys.open(tenant, sealed)))
        return stored

    _snapshots(snapshot)
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.drop_column("name_sealed")
        batch_op.drop_column("birth_date_sealed")
        batch_op.drop_column("zip_sealed")
