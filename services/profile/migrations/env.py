"""Alembic environment of the profile service."""

from services.profile.models import profile_registry
from services.profile.settings import ProfileSettings
from shared.audit import audit_registry
from shared.infra import infra_registry
from shared.migrations import run_env

run_env(
    [infra_registry.metadata, audit_registry.metadata, profile_registry.metadata],
    default_url=lambda: ProfileSettings().database_url,
)
