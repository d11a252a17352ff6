"""purchase traits

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 18:19:33.472295
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purchases", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))

    with op.batch_alter_table("profile_order", schema=None) as batch_op:
        batch_op.add_column(sa.Column("items", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
        batch_op.add_column(sa.Column("payments", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))


def downgrade() -> None:
    with op.batch_alter_table("profile_order", schema=None) as batch_op:
        batch_op.drop_column("payments")
        batch_op.drop_column("items")

    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.drop_column("purchases")
