"""identity rules per tenant

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 19:34:49.361343
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "identity_rule_set",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("updated_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_identity_rule_set")),
    )


def downgrade() -> None:
    op.drop_table("identity_rule_set")
