"""profile_projection: the birth date and the CEP sealed, with generalised copies for SQL

`birth_date` and `zip` move, sealed for the tenant (AES-GCM, `shared.crypto`), to `birth_date_sealed`
(ISO date) and `zip_sealed`; what SQL evaluates rules on stays in clear only generalised: `birth_year`,
`birth_month` and `zip_prefix` (the CEP's first five digits). Uses the process's secret
(CLIENTELA_SECRET_KEY): migrate with the secret the service will run with. Rows are converted a thousand
at a time. Downgrade opens them back.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 15:30:00
"""

from collections.abc import Sequence
from datetime import date
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from alembic import op

from shared.crypto import keyring
from shared.migrations import rewrite_rows

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS: dict[str, sa.types.TypeEngine[Any]] = {
    "birth_date": sa.Date(),
    "zip": sa.String(),
    "birth_date_sealed": sa.String(),
    "birth_year": sa.SmallInteger(),
    "birth_month": sa.SmallInteger(),
    "zip_sealed": sa.String(),
    "zip_prefix": sa.String(),
}


def upgrade() -> None:
    with op.batch_alter_table("profile_projection", schema=None) as batch_op:
        batch_op.add_column(sa.Column("birth_date_sealed", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("birth_year", sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column("birth_month", sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column("zip_sealed", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("zip_prefix", sa.String(length=5), nullable=True))
    keys = keyring()

    def seal(tenant: UUID, row: dict[str, Any]) -> dict[str, Any]:
        born: date | None = row["birth_date"]
        if isinstance(born, str):  # SQLite without the column's type
            born = date.fromisoformat(born)
        cep: str | None = row["zip"]
        return {
            "birth_date_sealed": None if born is None else keys.seal(tenant, born.isoformat()),
            "birth_year": None if born is None else born.year,
            "birth_month": None if born is None else born.month,
            "zip_sealed": None if cep is None else keys.seal(tenant, cep),
            "zip_prefix": None if cep is None else cep[:5],
        }

    rewrite_rows("profile_projection", "profile_id", COLUMNS, ["birth_date", "zip"], seal)
    with op.batch_alter_table("profile_projection", schema=None) as batch_op:
        batch_op.drop_column("birth_date")
        batch_op.drop_column("zip")


def downgrade() -> None:
    with op.batch_alter_table("profile_projection", schema=None) as batch_op:
        batch_op.add_column(sa.Column("birth_date", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("zip", sa.String(length=8), nullable=True))
    keys = keyring()

    def open_(tenant: UUID, row: dict[str, Any]) -> dict[str, Any]:
        born, cep = row["birth_date_sealed"], row["zip_sealed"]
        return {
            "birth_date": None if born is None else date.fromisoformat(keys.open(tenant, born)),
            "zip": None if cep is None else keys.open(tenant, cep),
        }

    rewrite_rows("profile_projection", "profile_id", COLUMNS, ["birth_date_sealed", "zip_sealed"], open_)
    with op.batch_alter_table("profile_projection", schema=None) as batch_op:
        for name in ("birth_date_sealed", "birth_year", "birth_month", "zip_sealed", "zip_prefix"):
            batch_op.drop_column(name)
