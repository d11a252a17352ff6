"""quality_counter.shard: each day's counters spread over a few rows per metric (summed when read), so
concurrent requests of one tenant no longer queue on the same row locks

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 19:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = ["tenant_id", "day", "kind", "metric"]


def upgrade() -> None:
    with op.batch_alter_table("quality_counter", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shard", sa.SmallInteger(), server_default="0", nullable=False))
        batch_op.drop_constraint("pk_quality_counter", type_="primary")
        batch_op.create_primary_key("pk_quality_counter", [*_KEY, "shard"])


def downgrade() -> None:
    # Fold the shards back into one row per metric first.
    op.execute(
        "CREATE TABLE quality_counter_folded AS SELECT tenant_id, day, kind, metric, "
        "SUM(count) AS count FROM quality_counter GROUP BY tenant_id, day, kind, metric"
    )
    op.execute("DELETE FROM quality_counter")
    with op.batch_alter_table("quality_counter", schema=None) as batch_op:
        batch_op.drop_constraint("pk_quality_counter", type_="primary")
        batch_op.drop_column("shard")
        batch_op.create_primary_key("pk_quality_counter", _KEY)
    op.execute(
        "INSERT INTO quality_counter (tenant_id, day, kind, metric, count) "
        "SELECT tenant_id, day, kind, metric, count FROM quality_counter_folded"
    )
    op.drop_table("quality_counter_folded")
