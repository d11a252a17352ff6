"""Profile settings: ``PROFILE_*`` variables plus the common ``CLIENTELA_*`` ones."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ProfileSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROFILE_", extra="ignore", validate_by_name=True, frozen=True
    )

    service_name: str = "profile"
    database_url: str = "sqlite:///.data/profile.db"
    port: int = 8002
    traits_refresh_hours: float = Field(
        24, gt=0, description="Tenant-wide traits (RFM, CLV, churn) are refreshed this often (and on demand)."
    )
    match_merge_threshold: float = Field(
        0.95, ge=0, le=1, description="Probabilistic stage: merge at or above this match probability."
    )
    match_suggest_threshold: float = Field(
        0.6, ge=0, le=1, description="Probabilistic stage: suggest a merge at or above this probability."
    )
    max_in_flight: int = Field(
        32,
        ge=0,
        description="Requests this process handles at once; past it, others get a 503 with `Retry-After` "
        "at once instead of queueing (0: no bound). Health, readiness and metrics are never refused.",
    )
    audit_flush_seconds: float = Field(
        0.2,
        ge=0,
        description="Reads are audited through an in-memory queue written this often (a SIGKILL loses at "
        "most this much of the audit trail); 0: each read's audit event is committed before it is answered.",
    )


@lru_cache
def get_settings() -> ProfileSettings:
    return ProfileSettings()
