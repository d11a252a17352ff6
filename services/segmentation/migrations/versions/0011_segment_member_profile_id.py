"""segment_member(profile_id): a consumer batch looks up the memberships of the profiles it changes, and the
primary key leads with the segment (without this index every batch scanned the whole table)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 06:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_segment_member_profile_id", "segment_member", ["profile_id"])


def downgrade() -> None:
    op.drop_index("ix_segment_member_profile_id", table_name="segment_member")
