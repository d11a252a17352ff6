"""Ingest settings: ``INGEST_*`` variables plus the common ``CLIENTELA_*`` ones."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="INGEST_", extra="ignore", validate_by_name=True, frozen=True
    )

    service_name: str = "ingest"
    database_url: str = "sqlite:///.data/ingest.db"
    port: int = 8001
    import_dir: Path = Field(Path(".data/imports"), description="Where uploaded import files are kept.")
    import_max_bytes: int = Field(2 * 1024**3, description="Largest upload accepted by POST /v1/imports.")
    group_commit: bool = Field(
        True,
        description="Single records posted at the same time (without an Idempotency-Key) are stored in one "
        "transaction (services/ingest/group_commit.py); false: a transaction per request.",
    )


@lru_cache
def get_settings() -> IngestSettings:
    return IngestSettings()
