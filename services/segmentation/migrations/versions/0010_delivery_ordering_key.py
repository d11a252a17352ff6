"""webhook_delivery.ordering_key: deliveries with the same key (the profile they are about) are sent to an
endpoint one after another, in order; others in parallel

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ordering_key", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.drop_column("ordering_key")
