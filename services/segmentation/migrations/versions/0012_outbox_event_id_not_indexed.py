"""outbox_message.event_id without its unique index: event ids are random (uuid4) and made here, nothing
looks a row up by one, and the index cost two random index inserts per event (the row, and the new row
version its publication writes)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 10:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_constraint("uq_outbox_message_event_id", type_="unique")


def downgrade() -> None:
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_outbox_message_event_id", ["event_id"])
