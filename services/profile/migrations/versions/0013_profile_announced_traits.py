"""profile.announced: the segmentable traits as last announced (profile.updated v2 names what changed)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29 10:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.add_column(sa.Column("announced", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.alter_column("announced", existing_type=sa.JSON(), server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.drop_column("announced")
