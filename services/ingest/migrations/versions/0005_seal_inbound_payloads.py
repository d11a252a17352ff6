"""inbound records sealed: `inbound_record.payload` (JSON in clear) becomes `payload_sealed`

Each stored record's canonical JSON (sorted keys) is sealed for its tenant with AES-GCM (`shared.crypto`).
Uses the process's secret (CLIENTELA_SECRET_KEY): migrate with the secret the service will run with.
Rows are converted a thousand at a time. Downgrade opens them back into the JSON column.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:00:00
"""

from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import orjson
import sqlalchemy as sa
from alembic import op

from shared.crypto import keyring

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 1000


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _convert(
    source: sa.ColumnClause[Any], target: sa.ColumnClause[Any], change: Callable[[UUID, Any], Any]
) -> None:
    """`target = change(tenant, source)` for every row, in chunks (keyset on the id)."""
    conn = op.get_bind()
    table = sa.table("inbound_record", sa.column("id"), sa.column("tenant_id"), source, target)
    update = (
        sa.update(table)
        .where(table.c.id == sa.bindparam("row_id"))
        .values({target.name: sa.bindparam("new_value", type_=target.type)})
    )
    last: Any = None
    while True:
        query = (
            sa.select(table.c.id, table.c.tenant_id, table.c[source.name]).order_by(table.c.id).limit(CHUNK)
        )
        if last is not None:
            query = query.where(table.c.id > last)
        rows = conn.execute(query).all()
        if not rows:
            return
        conn.execute(update, [{"row_id": row[0], "new_value": change(_uuid(row[1]), row[2])} for row in rows])
        last = rows[-1][0]


def upgrade() -> None:
    with op.batch_alter_table("inbound_record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload_sealed", sa.Text(), nullable=True))
    keys = keyring()
    _convert(
        sa.column("payload", sa.JSON()),
        sa.column("payload_sealed", sa.Text()),
        lambda tenant, payload: keys.seal(
            tenant, orjson.dumps(payload or {}, option=orjson.OPT_SORT_KEYS).decode()
        ),
    )
    with op.batch_alter_table("inbound_record", schema=None) as batch_op:
        batch_op.alter_column("payload_sealed", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("payload")


def downgrade() -> None:
    with op.batch_alter_table("inbound_record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload", sa.JSON(), nullable=True))
    keys = keyring()
    _convert(
        sa.column("payload_sealed", sa.Text()),
        sa.column("payload", sa.JSON()),
        lambda tenant, sealed: orjson.loads(keys.open(tenant, sealed)),
    )
    with op.batch_alter_table("inbound_record", schema=None) as batch_op:
        batch_op.alter_column("payload", existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column("payload_sealed")
