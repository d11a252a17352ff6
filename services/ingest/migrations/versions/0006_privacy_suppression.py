"""privacy_suppression: identifiers of people erased at their request (keyed hashes), refused at intake

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
        "privacy_suppression",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "hash", name=op.f("pk_privacy_suppression")),
    )


def downgrade() -> None:
    op.drop_table("privacy_suppression")
