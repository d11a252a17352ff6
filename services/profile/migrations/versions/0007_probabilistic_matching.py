"""probabilistic matching

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 19:23:30.762657
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "merge_suggestion",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("profile_a", sa.Uuid(), nullable=False),
        sa.Column("profile_b", sa.Uuid(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("contributions", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merge_suggestion")),
        sa.UniqueConstraint("profile_a", "profile_b", name=op.f("uq_merge_suggestion_profile_a_profile_b")),
    )
    with op.batch_alter_table("merge_suggestion", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_merge_suggestion_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "profile_block_key",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("key", "profile_id", name=op.f("pk_profile_block_key")),
    )
    with op.batch_alter_table("profile_block_key", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_profile_block_key_profile_id"), ["profile_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("profile_block_key", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profile_block_key_profile_id"))

    op.drop_table("profile_block_key")
    with op.batch_alter_table("merge_suggestion", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_merge_suggestion_tenant_id"))

    op.drop_table("merge_suggestion")
