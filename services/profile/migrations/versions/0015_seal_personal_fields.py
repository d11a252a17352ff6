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
from collections.abc import Sequence
from datetime import date
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from alembic import op

from shared.crypto import keyring
from shared.migrations import RowChange, rewrite_rows

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

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


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _snapshots(change: RowChange) -> None:
    for table, key in SNAPSHOTS:
        rewrite_rows(
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

    rewrite_rows("profile", "id", PROFILE_COLUMNS, ["name", "birth_date", "zip", "announced"], profile)

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

    rewrite_rows(
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
