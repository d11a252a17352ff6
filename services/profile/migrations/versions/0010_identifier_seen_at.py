"""identifier seen at

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 19:47:05.856102
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("profile_identifier", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seen_at", shared.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("profile_identifier", schema=None) as batch_op:
        batch_op.drop_column("seen_at")
