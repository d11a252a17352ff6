"""history, merge blocks, predicted traits

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 19:14:04.913559
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "merge_block",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("profile_a", sa.Uuid(), nullable=False),
        sa.Column("profile_b", sa.Uuid(), nullable=False),
        sa.Column("merge_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("profile_a", "profile_b", name=op.f("pk_merge_block")),
    )
    with op.batch_alter_table("merge_block", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_merge_block_profile_b"), ["profile_b"], unique=False)

    op.create_table(
        "profile_record",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("record_version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("type", sa.String(length=30), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("occurred_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("identifiers", sa.JSON(), nullable=False),
        sa.Column("customer", sa.JSON(), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("recorded_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_record")),
    )
    with op.batch_alter_table("profile_record", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_profile_record_profile_id"), ["profile_id"], unique=False)

    with op.batch_alter_table("merge_record", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("moved_records", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.add_column(
            sa.Column("linked_identifiers", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.add_column(
            sa.Column(
                "method",
                sa.String(length=20),
                nullable=False,
                server_default="deterministic",
            )
        )
        batch_op.add_column(sa.Column("score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("undone_at", shared.db.UTCDateTime(timezone=True), nullable=True))

    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.add_column(sa.Column("predicted", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))

    with op.batch_alter_table("profile_order", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("identifiers", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.add_column(sa.Column("customer", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(
            sa.Column(
                "recorded_at",
                shared.db.UTCDateTime(timezone=True),
                nullable=False,
                server_default=sa.func.now(),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("profile_order", schema=None) as batch_op:
        batch_op.drop_column("recorded_at")
        batch_op.drop_column("customer")
        batch_op.drop_column("identifiers")

    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.drop_column("predicted")

    with op.batch_alter_table("merge_record", schema=None) as batch_op:
        batch_op.drop_column("undone_at")
        batch_op.drop_column("score")
        batch_op.drop_column("method")
        batch_op.drop_column("linked_identifiers")
        batch_op.drop_column("moved_records")

    with op.batch_alter_table("profile_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profile_record_profile_id"))

    op.drop_table("profile_record")
    with op.batch_alter_table("merge_block", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_merge_block_profile_b"))

    op.drop_table("merge_block")
