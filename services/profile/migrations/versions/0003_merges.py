"""merges: profile status, merged_into pointer and merge records

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 17:54:55.761782
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "merge_record",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("survivor_id", sa.Uuid(), nullable=False),
        sa.Column("merged_id", sa.Uuid(), nullable=False),
        sa.Column("rule", sa.String(length=40), nullable=False),
        sa.Column("linked_by", sa.JSON(), nullable=False),
        sa.Column("moved_identifiers", sa.JSON(), nullable=False),
        sa.Column("moved_orders", sa.JSON(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merge_record")),
    )
    with op.batch_alter_table("merge_record", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_merge_record_merged_id"), ["merged_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_merge_record_survivor_id"), ["survivor_id"], unique=False)

    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=10), nullable=False, server_default="active")
        )
        batch_op.add_column(sa.Column("merged_into", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("merges", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    # Lossy by necessity: merged profiles hold nothing any more (their identifiers and orders moved).
    op.execute("DELETE FROM profile WHERE status = 'merged'")
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.drop_column("merges")
        batch_op.drop_column("merged_into")
        batch_op.drop_column("status")

    with op.batch_alter_table("merge_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_merge_record_survivor_id"))
        batch_op.drop_index(batch_op.f("ix_merge_record_merged_id"))

    op.drop_table("merge_record")
