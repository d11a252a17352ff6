"""api_key: name, scopes and expiry

`api_key` gains `name`, `scopes` (a JSON list) and `expires_at` (null: never). Keys that exist before this
migration get the name `default` and every scope, as they could do everything until now.

Downgrade drops the columns; the keys the old schema cannot express (fewer scopes, or an expiry) are
revoked first, so that no key gains access by it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00
"""

from collections.abc import Sequence

import orjson
import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every scope when this migration was written (`shared.auth.Scope`).
ALL_SCOPES = [
    "ingest:write",
    "ingest:read",
    "profiles:read",
    "profiles:write",
    "segments:read",
    "segments:write",
    "webhooks:manage",
    "privacy:manage",
    "keys:manage",
]


def upgrade() -> None:
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("name", sa.String(length=100), nullable=False, server_default="default")
        )
        batch_op.add_column(
            sa.Column("scopes", sa.JSON(), nullable=False, server_default=orjson.dumps(ALL_SCOPES).decode())
        )
        batch_op.add_column(sa.Column("expires_at", shared.db.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.alter_column("name", existing_type=sa.String(length=100), server_default=None)
        batch_op.alter_column("scopes", existing_type=sa.JSON(), server_default=None)


def downgrade() -> None:
    api_key = sa.table(
        "api_key",
        sa.column("id", sa.Uuid()),
        sa.column("scopes", sa.JSON()),
        sa.column("expires_at", shared.db.UTCDateTime()),
        sa.column("revoked_at", shared.db.UTCDateTime()),
    )
    connection = op.get_bind()
    now = shared.db.utcnow()
    rows = connection.execute(
        sa.select(api_key.c.id, api_key.c.scopes, api_key.c.expires_at).where(api_key.c.revoked_at.is_(None))
    ).all()
    for key_id, scopes, expires_at in rows:
        if expires_at is not None or not set(ALL_SCOPES) <= set(scopes or []):
            connection.execute(api_key.update().where(api_key.c.id == key_id).values(revoked_at=now))

    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
        batch_op.drop_column("scopes")
        batch_op.drop_column("name")
