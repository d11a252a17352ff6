"""Segmentation settings: ``SEGMENTATION_*`` variables plus the common ``CLIENTELA_*`` ones."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class SegmentationSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="SEGMENTATION_", extra="ignore", validate_by_name=True, frozen=True
    )

    service_name: str = "segmentation"
    database_url: str = "sqlite:///.data/segmentation.db"
    port: int = 8003


@lru_cache
def get_settings() -> SegmentationSettings:
    return SegmentationSettings()
