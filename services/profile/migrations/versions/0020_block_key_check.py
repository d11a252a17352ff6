"""block_key_check: the blocking keys a consumer batch inserted, read again after it commits

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01 22:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "block_key_check",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_block_key_check_created_at"), "block_key_check", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_block_key_check_created_at"), table_name="block_key_check")
    op.drop_table("block_key_check")
