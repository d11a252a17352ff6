"""Alembic environment of the segmentation service."""

from services.segmentation.models import segmentation_registry
from services.segmentation.settings import SegmentationSettings
from shared.audit import audit_registry
from shared.infra import infra_registry
from shared.migrations import run_env

run_env(
    [infra_registry.metadata, audit_registry.metadata, segmentation_registry.metadata],
    default_url=lambda: SegmentationSettings().database_url,
)
