"""Ingest settings: ``INGEST_*`` variables plus the common ``CLIENTELA_*`` ones."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="INGEST_", extra="ignore", validate_by_name=True, frozen=True
    )

    service_name: str = "ingest"
    database_url: str = "sqlite:///.data/ingest.db"
    port: int = 8001


@lru_cache
def get_settings() -> IngestSettings:
    return IngestSettings()
