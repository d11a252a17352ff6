"""erased_profile: profiles erased at the person's request, so that events in flight do not restore them

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 12:40:00
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
        "erased_profile",
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("erased_at", shared.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("profile_id", name=op.f("pk_erased_profile")),
    )


def downgrade() -> None:
    op.drop_table("erased_profile")
