"""Fixtures for the integration and e2e tests: the real PostgreSQL and Kafka started by `make test`.

Unit tests use none of these. Nothing is mocked: each test gets freshly truncated service databases
and its own set of Kafka topics (a unique prefix), deleted afterwards.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from kafka.admin import KafkaAdminClient

from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.profile.app import create_app as create_profile
from services.profile.settings import ProfileSettings
from services.segmentation.app import create_app as create_segmentation
from services.segmentation.settings import SegmentationSettings
from shared.migrations import upgrade
from shared.settings import ServiceSettings
from shared.topics import ensure_topics
from tests.support import ADMIN_TOKEN, KAFKA, SettingsFactory, Stack

# The suite shares two cores with Kafka, PostgreSQL and the services' processes: hypothesis' timing checks
# (slow input generation, per-example deadlines) would measure the machine's load, not the code.
hypothesis.settings.register_profile(
    "clientela", suppress_health_check=[hypothesis.HealthCheck.too_slow], deadline=None
)
hypothesis.settings.load_profile("clientela")

# The secret that keys identifier hashes and seals personal data (shared.crypto); services started as
# processes by the e2e tests inherit it.
os.environ.setdefault("CLIENTELA_SECRET_KEY", "test-only-secret-key-0123456789abcdefghijkl")
ROOT = Path(__file__).resolve().parents[1]
PG = os.environ.get("CLIENTELA_TEST_PG", "postgresql+psycopg://clientela:clientela@127.0.0.1:5432")
SERVICES = ("ingest", "profile", "segmentation")
SETTINGS: dict[str, type[ServiceSettings]] = {
    "ingest": IngestSettings,
    "profile": ProfileSettings,
    "segmentation": SegmentationSettings,
}


DB_SUFFIX = os.environ.get("CLIENTELA_TEST_DB_SUFFIX", "test")


def db_url(service: str) -> str:
    return f"{PG}/clientela_{service}_{DB_SUFFIX}"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def infrastructure() -> None:
    pg_host, pg_port = PG.rsplit("@", 1)[-1].split(":")
    if not _answers(pg_host, int(pg_port)):
        pytest.fail("PostgreSQL does not answer: run `make db-up` (make test does it for you)")
    kafka_host, kafka_port = KAFKA.split(":")
    if not _answers(kafka_host, int(kafka_port)):
        pytest.fail("Kafka does not answer: run `make kafka-up` (make test does it for you)")


@pytest.fixture(scope="session")
def databases(infrastructure: None) -> dict[str, str]:
    """The three test databases, emptied and migrated to head with each service's own migrations."""
    urls = {service: db_url(service) for service in SERVICES}
    for service, url in urls.items():
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        engine.dispose()
        upgrade(ROOT / "services" / service, url)
    return urls


def truncate_all(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        tables = [
            t
            for t in sa.inspect(conn).get_table_names()
            if t != "alembic_version"  # keep the migration state
        ]
        if tables:
            conn.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"))
    engine.dispose()


@pytest.fixture
def clean_databases(databases: dict[str, str]) -> dict[str, str]:
    for url in databases.values():
        truncate_all(url)
    return databases


@pytest.fixture
def topic_prefix(infrastructure: None) -> Iterator[str]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    ensure_topics(KAFKA, prefix)
    yield prefix
    admin = KafkaAdminClient(bootstrap_servers=KAFKA)
    try:
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(prefix)])
    finally:
        admin.close()


@pytest.fixture
def make_settings(clean_databases: dict[str, str], topic_prefix: str) -> SettingsFactory:
    def make(service: str, **overrides: Any) -> ServiceSettings:
        values: dict[str, Any] = {
            "database_url": clean_databases[service],
            "kafka_bootstrap_servers": KAFKA,
            "topic_prefix": topic_prefix,
            "consumer_group_prefix": f"test-{topic_prefix}",
            "admin_token": ADMIN_TOKEN,
            "run_migrations": False,
            "outbox_poll_interval_s": 0.02,
        }
        values.update(overrides)
        return SETTINGS[service](**values)

    return make


@pytest.fixture
def stack(make_settings: SettingsFactory) -> Iterator[Stack]:
    with ExitStack() as stack:
        clients = [
            stack.enter_context(TestClient(factory(make_settings(service)), raise_server_exceptions=True))
            for service, factory in (
                ("ingest", create_ingest),
                ("profile", create_profile),
                ("segmentation", create_segmentation),
            )
        ]
        yield Stack(*clients)
