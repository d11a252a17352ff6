"""Segmentation settings: ``SEGMENTATION_*`` variables plus the common ``CLIENTELA_*`` ones."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

# Standard Webhooks' example schedule: the first attempt at once, then retries 5 s, 5 min, 30 min, 2 h, 5 h,
# 10 h, 14 h, 20 h and 24 h after each failure (10 attempts, the last 75 h 35 min after the first).
DEFAULT_RETRY_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)


class SegmentationSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="SEGMENTATION_", extra="ignore", validate_by_name=True, frozen=True
    )

    service_name: str = "segmentation"
    database_url: str = "sqlite:///.data/segmentation.db"
    port: int = 8003

    # Webhooks (see services/segmentation/delivery.py and ssrf.py).
    webhook_allow_private: bool = Field(
        False,
        description="DEVELOPMENT AND TESTS ONLY: accept http URLs and loopback, private, link-local, CGNAT "
        "and unique-local addresses for webhook endpoints (a receiver on 127.0.0.1). Never in production.",
    )
    webhook_timeout_s: float = Field(15.0, gt=0, le=60, description="Connect, read and write timeout.")
    webhook_retry_schedule_s: tuple[float, ...] = Field(
        DEFAULT_RETRY_SCHEDULE_S,
        min_length=1,
        description="Delay before each retry, counted from the failure before it (±10 % jitter); a "
        "delivery gets 1 + len(schedule) attempts. Default: Standard Webhooks', 10 attempts over ~3 days.",
    )
    webhook_disable_after_hours: float = Field(
        120.0, gt=0, description="An endpoint whose every attempt has failed for this long is disabled."
    )
    webhook_concurrency: int = Field(16, ge=1, le=256, description="Endpoints served at once.")
    webhook_endpoint_parallelism: int = Field(
        8,
        ge=1,
        le=64,
        description="Requests in flight to one endpoint at once. Deliveries about one profile are still sent "
        "one after another, in the order they were made; 1 sends every delivery to an endpoint in order.",
    )
    webhook_retention_days: int = Field(30, ge=1, description="Finished deliveries are kept this long.")
    webhook_poll_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often an idle dispatcher looks for due deliveries (retries falling due, deliveries "
        "queued by other processes); deliveries queued in its own process wake it at once.",
    )

    # Full evaluations (see services/segmentation/evaluations.py).
    evaluate_inline_max_profiles: int = Field(
        5000,
        ge=0,
        description="A segment created or changed in a tenant with at most this many profiles is evaluated "
        "within the request (its members are there in the answer); above it, in the background with "
        "progress. 0: always in the background.",
    )
    evaluation_chunk: int = Field(1000, ge=1, le=100_000, description="Profiles per background step.")
    reevaluate_hours: float = Field(
        24.0,
        gt=0,
        description="Segments whose rules depend on time (`within_last_days`, `age`, ...) are evaluated "
        "again this often, so that people leave (and enter) as time passes.",
    )
    evaluation_poll_interval_s: float = Field(0.5, gt=0, description="Evaluation worker poll interval.")


@lru_cache
def get_settings() -> SegmentationSettings:
    return SegmentationSettings()
