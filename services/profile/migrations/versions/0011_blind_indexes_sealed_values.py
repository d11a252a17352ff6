"""identifiers as blind indexes, readable values sealed

Identifier values become their blind index (HMAC for the tenant) and the readable value moves, encrypted,
to `profile_identifier.sealed`; the identifier pairs kept with orders, records and merge records become
indexes too; the profile's contact e-mail is sealed and a sealed contact phone added (its first phone);
blocking keys are keyed (recomputed here from the
profiles). Uses the process's secret (`shared.crypto`, CLIENTELA_SECRET_KEY): migrate with the secret
the service will run with.

Downgrade restores readable values where the identifier table still knows them (a pair whose identifier
was never attached, e.g. a second document, keeps its index) and drops the blocking keys (profiles are
indexed again as they change).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 09:40:00
"""

from collections.abc import Callable, Sequence
from datetime import date
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from alembic import op

from services.profile import matching
from shared.crypto import keyring

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAIR_COLUMNS = (
    ("profile_order", "order_id", "identifiers"),
    ("profile_record", "id", "identifiers"),
    ("merge_record", "id", "linked_identifiers"),
    ("merge_record", "id", "moved_identifiers"),
)


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _json(value: Any) -> Any:
    import json

    return json.loads(value) if isinstance(value, str) else value


def _rewrite_pairs(conn: sa.Connection, convert: Callable[[UUID, str, str], str]) -> None:
    for table, key, column in PAIR_COLUMNS:
        t = sa.table(table, sa.column(key), sa.column("tenant_id"), sa.column(column, sa.JSON()))
        for row in conn.execute(sa.select(t.c[key], t.c.tenant_id, t.c[column])).all():
            tenant = _uuid(row[1])
            pairs = [[kind, convert(tenant, kind, value)] for kind, value in _json(row[2]) or []]
            conn.execute(sa.update(t).where(t.c[key] == row[0]).values({column: pairs}))


def upgrade() -> None:
    with op.batch_alter_table("profile_identifier", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed", sa.String(length=600), nullable=True))
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.alter_column("email", existing_type=sa.String(length=254), type_=sa.String(length=400))
        batch_op.add_column(sa.Column("phone", sa.String(length=400), nullable=True))

    conn, keys = op.get_bind(), keyring()
    ident = sa.table(
        "profile_identifier",
        sa.column("tenant_id"),
        sa.column("kind"),
        sa.column("value"),
        sa.column("sealed"),
        sa.column("profile_id"),
    )
    readable: dict[UUID, list[tuple[str, str]]] = {}
    for tenant_id, kind, value, profile_id in conn.execute(
        sa.select(ident.c.tenant_id, ident.c.kind, ident.c.value, ident.c.profile_id)
    ).all():
        tenant = _uuid(tenant_id)
        readable.setdefault(_uuid(profile_id), []).append((kind, value))
        conn.execute(
            sa.update(ident)
            .where(ident.c.tenant_id == tenant_id, ident.c.kind == kind, ident.c.value == value)
            .values(value=keys.index(tenant, kind, value), sealed=keys.seal(tenant, value))
        )
    with op.batch_alter_table("profile_identifier", schema=None) as batch_op:
        batch_op.alter_column("sealed", existing_type=sa.String(length=600), nullable=False)

    _rewrite_pairs(conn, keys.index)

    profile = sa.table(
        "profile",
        sa.column("id"),
        sa.column("tenant_id"),
        sa.column("email"),
        sa.column("phone"),
        sa.column("status"),
        sa.column("name"),
        sa.column("birth_date", sa.Date()),
        sa.column("zip"),
        sa.column("city"),
        sa.column("state"),
    )
    blocks = sa.table("profile_block_key", sa.column("tenant_id"), sa.column("key"), sa.column("profile_id"))
    conn.execute(sa.delete(blocks))
    for row in conn.execute(sa.select(profile)).all():
        tenant, pid = _uuid(row.tenant_id), _uuid(row.id)
        found = readable.get(pid, [])
        phones = sorted(v for k, v in found if k == "phone")
        conn.execute(
            sa.update(profile)
            .where(profile.c.id == row.id)
            .values(
                email=None if row.email is None else keys.seal(tenant, row.email),
                phone=keys.seal(tenant, phones[0]) if phones else None,
            )
        )
        if row.status != "active":
            continue
        documents = [v for k, v in found if k == "document"]
        fields = matching.MatchFields(
            name=row.name,
            birth_date=row.birth_date if isinstance(row.birth_date, date) else None,
            zip=row.zip,
            city=row.city,
            state=row.state,
            phones=tuple(sorted(v for k, v in found if k == "phone")),
            emails=tuple(sorted(v for k, v in found if k == "email")),
            document=documents[0] if documents else None,
        )
        for key in sorted({keys.index(tenant, "block", k)[:32] for k in matching.blocking_keys(fields)}):
            conn.execute(sa.insert(blocks).values(tenant_id=row.tenant_id, key=key, profile_id=row.id))


def downgrade() -> None:
    conn, keys = op.get_bind(), keyring()
    ident = sa.table(
        "profile_identifier",
        sa.column("tenant_id"),
        sa.column("kind"),
        sa.column("value"),
        sa.column("sealed"),
    )
    plain: dict[tuple[UUID, str, str], str] = {}
    for tenant_id, kind, value, sealed in conn.execute(
        sa.select(ident.c.tenant_id, ident.c.kind, ident.c.value, ident.c.sealed)
    ).all():
        tenant = _uuid(tenant_id)
        plain[(tenant, kind, value)] = readable = keys.open(tenant, sealed)
        conn.execute(
            sa.update(ident)
            .where(ident.c.tenant_id == tenant_id, ident.c.kind == kind, ident.c.value == value)
            .values(value=readable)
        )
    _rewrite_pairs(conn, lambda tenant, kind, value: plain.get((tenant, kind, value), value))
    profile = sa.table("profile", sa.column("id"), sa.column("tenant_id"), sa.column("email"))
    for row in conn.execute(sa.select(profile).where(profile.c.email.is_not(None))).all():
        conn.execute(
            sa.update(profile)
            .where(profile.c.id == row.id)
            .values(email=keys.open(_uuid(row.tenant_id), row.email))
        )
    conn.execute(sa.delete(sa.table("profile_block_key")))
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.drop_column("phone")
        batch_op.alter_column("email", existing_type=sa.String(length=400), type_=sa.String(length=254))
    with op.batch_alter_table("profile_identifier", schema=None) as batch_op:
        batch_op.drop_column("sealed")
