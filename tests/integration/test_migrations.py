"""Each service's migrations: upgrade, downgrade and upgrade again, on PostgreSQL and SQLite,
and the models match what the migrations build (no pending autogenerate diff)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from services.ingest.models import ingest_registry
from services.profile.models import profile_registry
from services.segmentation.models import segmentation_registry
from shared.db import make_engine
from shared.infra import infra_registry
from shared.migrations import downgrade, upgrade

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
METADATA = {
    "ingest": ingest_registry.metadata,
    "profile": profile_registry.metadata,
    "segmentation": segmentation_registry.metadata,
}
SERVICES = sorted(METADATA)


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def expected_tables(service: str) -> set[str]:
    return set(METADATA[service].tables) | set(infra_registry.metadata.tables)


def pending_diff(url: str, service: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            merged = sa.MetaData()
            for metadata in (infra_registry.metadata, METADATA[service]):
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
