"""membership history, background evaluations, segment purpose

`segment` gains `purpose` (a consent purpose, null: none) and `time_relative` (its rule depends on time
alone: re-evaluated on a schedule), backfilled from the stored rules. `segment_membership_event` is the
history of entries and exits; it starts with an `entered` row (reason `backfill`) for every current member
at the time it entered. `segment_evaluation` holds full evaluations and their progress. `segment_member`
(after dropping rows of segments that no longer exist), the history and the evaluations reference
`segment` with ON DELETE CASCADE. `webhook_delivery.segment_id` names the segment of segment events
(backfilled for pending deliveries). Downgrade drops all of it (the history is lost).

On SQLite (development), foreign keys are enforced: a later migration that rebuilds `segment` in batch
mode (drop and copy) would cascade to its members, history and evaluations; rebuild those first.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 11:02:14.508311
"""

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import orjson
import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As `rules.depends_on` decides it when this migration was written: a rule is time-relative when one of
# its conditions uses one of these operators or reads `age`.
_RELATIVE_OPS = {"within_last_days", "more_than_days_ago", "within_next_days", "is_current_month"}
_FK_MEMBER = "fk_segment_member_segment_id_segment"


def _time_relative(rule: Any) -> bool:
    stack = [rule]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if node.get("op") in _RELATIVE_OPS or node.get("field") == "age":
                return True
            stack.extend(node[key] for key in ("all", "any", "not") if key in node)
    return False


def upgrade() -> None:
    with op.batch_alter_table("segment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purpose", sa.String(length=30), nullable=True))
        batch_op.add_column(
            sa.Column("time_relative", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    _backfill_time_relative()

    connection = op.get_bind()
    connection.execute(
        sa.text(
            "DELETE FROM segment_member WHERE NOT EXISTS (SELECT 1 FROM segment s WHERE s.id = segment_id)"
        )
    )
    with op.batch_alter_table("segment_member", schema=None) as batch_op:
        batch_op.create_foreign_key(_FK_MEMBER, "segment", ["segment_id"], ["id"], ondelete="CASCADE")

    op.create_table(
        "segment_membership_event",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("segment_id", sa.Uuid(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("change", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=30), nullable=False),
        sa.Column("profile_version", sa.Integer(), nullable=False),
        sa.Column("at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segment.id"],
            name=op.f("fk_segment_membership_event_segment_id_segment"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_membership_event")),
    )
    with op.batch_alter_table("segment_membership_event", schema=None) as batch_op:
        batch_op.create_index("ix_segment_membership_event_profile_id", ["profile_id"], unique=False)
        batch_op.create_index(
            "ix_segment_membership_event_segment_id_at_id", ["segment_id", "at", "id"], unique=False
        )
    connection.execute(
        sa.text(
            "INSERT INTO segment_membership_event "
            "(tenant_id, segment_id, profile_id, change, reason, profile_version, at) "
            "SELECT m.tenant_id, m.segment_id, m.profile_id, 'entered', 'backfill', "
            "COALESCE(p.profile_version, 0), m.entered_at "
            "FROM segment_member m LEFT JOIN profile_projection p ON p.profile_id = m.profile_id"
        )
    )

    op.create_table(
        "segment_evaluation",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("segment_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("evaluated_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("profiles_total", sa.Integer(), nullable=True),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("entered", sa.Integer(), nullable=False),
        sa.Column("exited", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.Uuid(), nullable=True),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column("lease_owner", sa.Uuid(), nullable=True),
        sa.Column("lease_until", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segment.id"],
            name=op.f("fk_segment_evaluation_segment_id_segment"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_evaluation")),
    )
    with op.batch_alter_table("segment_evaluation", schema=None) as batch_op:
        batch_op.create_index(
            "ix_segment_evaluation_segment_id_created_at", ["segment_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ux_segment_evaluation_pending_segment_id",
            ["segment_id"],
            unique=True,
            sqlite_where=sa.text("status IN ('queued', 'running')"),
            postgresql_where=sa.text("status IN ('queued', 'running')"),
        )

    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("segment_id", sa.Uuid(), nullable=True))
    _backfill_delivery_segments()


def _backfill_time_relative() -> None:
    segment = sa.table(
        "segment", sa.column("id", sa.Uuid()), sa.column("rule", sa.JSON()), sa.column("time_relative")
    )
    connection = op.get_bind()
    for segment_id, rule in connection.execute(sa.select(segment.c.id, segment.c.rule)).all():
        if _time_relative(orjson.loads(rule) if isinstance(rule, str | bytes) else rule):
            connection.execute(segment.update().where(segment.c.id == segment_id).values(time_relative=True))


def _backfill_delivery_segments() -> None:
    """Pending segment deliveries get their segment (read from the payload), so that deleting the segment
    stops them too. Finished ones are history and stay as they are."""
    delivery = sa.table(
        "webhook_delivery",
        sa.column("id", sa.Uuid()),
        sa.column("event_type", sa.String()),
        sa.column("status", sa.String()),
        sa.column("payload", sa.LargeBinary()),
        sa.column("segment_id", sa.Uuid()),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(delivery.c.id, delivery.c.payload).where(
            delivery.c.status == "pending",
            delivery.c.event_type.in_(["segment.entered", "segment.exited"]),
        )
    ).all()
    for delivery_id, payload in rows:
        segment_id = orjson.loads(payload).get("data", {}).get("segment_id")
        if segment_id:
            connection.execute(
                delivery.update().where(delivery.c.id == delivery_id).values(segment_id=UUID(segment_id))
            )


def downgrade() -> None:
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.drop_column("segment_id")

    with op.batch_alter_table("segment_evaluation", schema=None) as batch_op:
        batch_op.drop_index(
            "ux_segment_evaluation_pending_segment_id",
            sqlite_where=sa.text("status IN ('queued', 'running')"),
            postgresql_where=sa.text("status IN ('queued', 'running')"),
        )
        batch_op.drop_index("ix_segment_evaluation_segment_id_created_at")

    op.drop_table("segment_evaluation")
    with op.batch_alter_table("segment_membership_event", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_membership_event_segment_id_at_id")
        batch_op.drop_index("ix_segment_membership_event_profile_id")

    op.drop_table("segment_membership_event")
    with op.batch_alter_table("segment_member", schema=None) as batch_op:
        batch_op.drop_constraint(_FK_MEMBER, type_="foreignkey")

    with op.batch_alter_table("segment", schema=None) as batch_op:
        batch_op.drop_column("time_relative")
        batch_op.drop_column("purpose")
