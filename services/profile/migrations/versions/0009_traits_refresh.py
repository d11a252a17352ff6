"""traits refresh

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 19:39:33.805135
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "traits_refresh",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("profiles_total", sa.Integer(), nullable=True),
        sa.Column("profiles_done", sa.Integer(), nullable=False),
        sa.Column("model", sa.JSON(), nullable=False),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traits_refresh")),
    )
    with op.batch_alter_table("traits_refresh", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_traits_refresh_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("traits_refresh", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_traits_refresh_tenant_id"))

    op.drop_table("traits_refresh")
