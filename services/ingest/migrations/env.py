"""Alembic environment of the ingest service."""

from services.ingest.models import ingest_registry
from services.ingest.settings import IngestSettings
from shared.infra import infra_registry
from shared.migrations import run_env

run_env(
    [infra_registry.metadata, ingest_registry.metadata], default_url=lambda: IngestSettings().database_url
)
