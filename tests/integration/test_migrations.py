"""Each service's migrations: upgrade, downgrade and upgrade again, on PostgreSQL and SQLite,
and the models match what the migrations build (no pending autogenerate diff)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import Session, select

from services.ingest.models import ingest_registry
from services.profile.matching import MatchFields, blocking_keys
from services.profile.models import (
    Profile,
    ProfileBlockKey,
    ProfileIdentifier,
    ProfileOrder,
    profile_registry,
)
from services.segmentation.models import segmentation_registry
from shared.audit import audit_registry
from shared.crypto import keyring
from shared.db import make_engine
from shared.infra import infra_registry
from shared.migrations import downgrade, upgrade

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
METADATA = {
    "ingest": [ingest_registry.metadata],
    "profile": [audit_registry.metadata, profile_registry.metadata],
    "segmentation": [audit_registry.metadata, segmentation_registry.metadata],
}
SERVICES = sorted(METADATA)


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def expected_tables(service: str) -> set[str]:
    return {name for metadata in (infra_registry.metadata, *METADATA[service]) for name in metadata.tables}


def pending_diff(url: str, service: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            merged = sa.MetaData()
            for metadata in (infra_registry.metadata, *METADATA[service]):
                for table in metadata.tables.values():
                    table.to_metadata(merged)
            return list(
                compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), merged)
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_up_down_up_on_postgresql(service: str, databases: dict[str, str]) -> None:
    url = databases[service]
    service_dir = ROOT / "services" / service
    assert tables(url) == expected_tables(service)
    downgrade(service_dir, url)
    assert tables(url) == set()
    upgrade(service_dir, url)
    assert tables(url) == expected_tables(service)
    assert pending_diff(url, service) == []


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_up_down_up_on_sqlite(service: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / service}.db"
    service_dir = ROOT / "services" / service
    upgrade(service_dir, url)
    assert tables(url) == expected_tables(service)
    assert pending_diff(url, service) == []
    downgrade(service_dir, url)
    assert tables(url) == set()
    upgrade(service_dir, url)
    assert tables(url) == expected_tables(service)


def _filled(table: sa.Table, values: dict[str, object]) -> dict[str, object]:
    """`values` plus a plain value for every other NOT NULL column without a default."""
    now = datetime(2026, 11, 1, tzinfo=UTC)
    fill: dict[type, object] = {
        sa.Integer: 0,
        sa.BigInteger: 0,
        sa.JSON: {},
        sa.String: "x",
        sa.DateTime: now,
    }
    row = dict(values)
    for column in table.columns:
        if column.name in row or column.nullable or column.server_default is not None:
            continue
        row[column.name] = next(v for t, v in fill.items() if isinstance(column.type, t))
    return row


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_identifiers_become_blind_indexes_and_sealed_values_and_back(
    backend: str, tmp_path: Path, databases: dict[str, str]
) -> None:
    url = f"sqlite:///{tmp_path / 'profile'}.db" if backend == "sqlite" else databases["profile"]
    service_dir = ROOT / "services" / "profile"
    if backend == "postgresql":
        downgrade(service_dir, url, "0010")
    else:
        upgrade(service_dir, url, "0010")
    tenant, profile_id, order_id = uuid4(), uuid4(), uuid4()
    # Reflected tables see SQLite's UUID columns as CHAR(32): raw statements there take the hex form.
    raw: Callable[[UUID], object] = (lambda u: u.hex) if backend == "sqlite" else (lambda u: u)
    pairs = [["email", "ana@example.com"], ["phone", "+5511987654321"], ["document", "52998224725"]]
    engine = make_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        profile, ident, order = (meta.tables[t] for t in ("profile", "profile_identifier", "profile_order"))
        with engine.begin() as conn:
            conn.execute(
                sa.insert(profile).values(
                    _filled(
                        profile,
                        {
                            "id": raw(profile_id),
                            "tenant_id": raw(tenant),
                            "email": "ana@example.com",
                            "status": "active",
                            "name": "Ana Souza",
                            "zip": "01310100",
                            "city": "São Paulo",
                            "state": "SP",
                        },
                    )
                )
            )
            for kind, value in pairs:
                conn.execute(
                    sa.insert(ident).values(
                        _filled(
                            ident,
                            {
                                "tenant_id": raw(tenant),
                                "kind": kind,
                                "value": value,
                                "profile_id": raw(profile_id),
                            },
                        )
                    )
                )
            conn.execute(
                sa.insert(order).values(
                    _filled(
                        order,
                        {
                            "order_id": raw(order_id),
                            "tenant_id": raw(tenant),
                            "profile_id": raw(profile_id),
                            "identifiers": pairs,
                        },
                    )
                )
            )

        upgrade(service_dir, url)
        keys = keyring()
        with Session(engine) as session:
            rows = {
                r.kind: r
                for r in session.exec(select(ProfileIdentifier).where(ProfileIdentifier.tenant_id == tenant))
            }
            assert {k: r.value for k, r in rows.items()} == {k: keys.index(tenant, k, v) for k, v in pairs}
            assert {k: keys.open(tenant, r.sealed) for k, r in rows.items()} == dict(pairs)
            stored = session.get(ProfileOrder, order_id)
            assert stored is not None
            assert stored.identifiers == [[k, keys.index(tenant, k, v)] for k, v in pairs]
            person = session.get(Profile, profile_id)
            assert person is not None
            assert person.email is not None
            assert keys.open(tenant, person.email) == "ana@example.com"
            assert person.phone is not None
            assert keys.open(tenant, person.phone) == "+5511987654321"
            blocking = session.exec(
                select(ProfileBlockKey).where(ProfileBlockKey.profile_id == profile_id)
            ).all()
            assert {b.key for b in blocking} == {
                keys.index(tenant, "block", k)[:32]
                for k in blocking_keys(
                    MatchFields(
                        name="Ana Souza",
                        zip="01310100",
                        city="São Paulo",
                        state="SP",
                        phones=("+5511987654321",),
                        emails=("ana@example.com",),
                        document="52998224725",
                    )
                )
            }
            assert blocking
        dump = " ".join(
            str(v)
            for t in ("profile", "profile_identifier", "profile_order")
            for v in _rows(engine, t, raw(tenant))
        )
        for _, value in pairs:
            assert value not in dump  # nothing readable left

        downgrade(service_dir, url, "0010")
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            ident, order, profile = (
                meta.tables[t] for t in ("profile_identifier", "profile_order", "profile")
            )
            assert {
                (r.kind, r.value)
                for r in conn.execute(sa.select(ident).where(ident.c.tenant_id == raw(tenant)))
            } == {tuple(p) for p in pairs}
            identifiers = sa.select(order.c.identifiers).where(order.c.order_id == raw(order_id))
            assert conn.execute(identifiers).scalar_one() == pairs
            email = sa.select(profile.c.email).where(profile.c.id == raw(profile_id))
            assert conn.execute(email).scalar_one() == "ana@example.com"
    finally:
        engine.dispose()
        upgrade(service_dir, url)


def _rows(engine: sa.Engine, table: str, tenant: object) -> list[object]:
    with engine.connect() as conn:
        found = sa.Table(table, sa.MetaData(), autoload_with=conn)
        return [tuple(r) for r in conn.execute(sa.select(found).where(found.c.tenant_id == tenant))]
