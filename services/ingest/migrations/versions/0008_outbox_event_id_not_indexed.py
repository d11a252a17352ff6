"""outbox_message.event_id without its unique index (`shared.migrations.drop_outbox_event_id_unique`)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 10:40:00
"""

from collections.abc import Sequence

from shared.migrations import add_outbox_event_id_unique, drop_outbox_event_id_unique

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    drop_outbox_event_id_unique()


def downgrade() -> None:
    add_outbox_event_id_unique()
