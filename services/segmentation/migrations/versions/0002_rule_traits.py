"""rule traits: every segmentable trait of ProfileUpdated v2 on the projection, set-valued ones as tags

`profile_projection` gains nullable columns: existing rows get their average order value (until now computed
at evaluation) and keep nulls for the others until their profile's next event;
`profile_tag` holds sources, categories and products bought, categories and products viewed (with when)
and consents, one row per element. Downgrade drops them (the data comes back with the next events).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 09:32:46.311640
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db
from shared.records import average_order_value, from_minor, to_minor

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "profile_tag",
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("profile_id", "kind", "value", name=op.f("pk_profile_tag")),
    )
    with op.batch_alter_table("profile_tag", schema=None) as batch_op:
        batch_op.create_index(
            "ix_profile_tag_tenant_id_kind_value", ["tenant_id", "kind", "value"], unique=False
        )

    with op.batch_alter_table("profile_projection", schema=None) as batch_op:
        batch_op.add_column(sa.Column("average_order_value_minor", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("preferred_payment_method", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("birth_date", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("gender", sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column("city", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("state", sa.String(length=2), nullable=True))
        batch_op.add_column(sa.Column("zip", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("rfm_group", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("rfm_r", sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column("rfm_f", sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column("rfm_m", sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column("clv_12m_minor", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("churn_probability", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("next_order_at", shared.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_seen_at", shared.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("cart_abandoned_at", shared.db.UTCDateTime(timezone=True), nullable=True)
        )

    _backfill_average_order_value()


def _backfill_average_order_value() -> None:
    """Rounded exactly as before (Decimal cents, half-even), which SQL's ROUND does not do everywhere."""
    projection = sa.table(
        "profile_projection",
        sa.column("profile_id", sa.Uuid()),
        sa.column("orders_count", sa.Integer()),
        sa.column("total_spent_minor", sa.BigInteger()),
        sa.column("average_order_value_minor", sa.BigInteger()),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(projection.c.profile_id, projection.c.orders_count, projection.c.total_spent_minor).where(
            projection.c.orders_count > 0
        )
    ).all()
    for profile_id, orders, total_minor in rows:
        aov = average_order_value(from_minor(total_minor), orders)
        connection.execute(
            projection.update()
            .where(projection.c.profile_id == profile_id)
            .values(average_order_value_minor=to_minor(aov) if aov is not None else None)
        )


def downgrade() -> None:
    with op.batch_alter_table("profile_projection", schema=None) as batch_op:
        batch_op.drop_column("cart_abandoned_at")
        batch_op.drop_column("last_seen_at")
        batch_op.drop_column("next_order_at")
        batch_op.drop_column("churn_probability")
        batch_op.drop_column("clv_12m_minor")
        batch_op.drop_column("rfm_m")
        batch_op.drop_column("rfm_f")
        batch_op.drop_column("rfm_r")
        batch_op.drop_column("rfm_group")
        batch_op.drop_column("zip")
        batch_op.drop_column("state")
        batch_op.drop_column("city")
        batch_op.drop_column("gender")
        batch_op.drop_column("birth_date")
        batch_op.drop_column("preferred_payment_method")
        batch_op.drop_column("average_order_value_minor")

    with op.batch_alter_table("profile_tag", schema=None) as batch_op:
        batch_op.drop_index("ix_profile_tag_tenant_id_kind_value")

    op.drop_table("profile_tag")
