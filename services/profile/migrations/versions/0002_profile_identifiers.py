"""profile identifiers: the identity graph's edges; a profile no longer needs an e-mail

Upgrade backfills one `email` identifier per existing profile. Downgrade is lossy by necessity:
profiles without an e-mail (and their orders) cannot exist in the old schema and are deleted.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 17:08:48.538702
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "profile_identifier",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("value", sa.String(length=300), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "kind", "value", name=op.f("pk_profile_identifier")),
    )
    with op.batch_alter_table("profile_identifier", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_profile_identifier_profile_id"), ["profile_id"], unique=False)

    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.alter_column("email", existing_type=sa.VARCHAR(length=254), nullable=True)
        batch_op.drop_constraint(batch_op.f("uq_profile_tenant_id_email"), type_="unique")
        batch_op.create_index(batch_op.f("ix_profile_tenant_id"), ["tenant_id"], unique=False)

    op.execute(
        "INSERT INTO profile_identifier (tenant_id, kind, value, profile_id, created_at) "
        "SELECT tenant_id, 'email', email, id, created_at FROM profile WHERE email IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DELETE FROM profile_order WHERE profile_id IN (SELECT id FROM profile WHERE email IS NULL)")
    op.execute("DELETE FROM profile WHERE email IS NULL")
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profile_tenant_id"))
        batch_op.create_unique_constraint(batch_op.f("uq_profile_tenant_id_email"), ["tenant_id", "email"])
        batch_op.alter_column("email", existing_type=sa.VARCHAR(length=254), nullable=False)

    with op.batch_alter_table("profile_identifier", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profile_identifier_profile_id"))

    op.drop_table("profile_identifier")
