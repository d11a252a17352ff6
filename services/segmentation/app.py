"""The segmentation service: live segments of profiles and their members, and webhooks about them."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.segmentation.api import router
from services.segmentation.consumer import workers
from services.segmentation.settings import SegmentationSettings, get_settings
from services.segmentation.webhook_api import router as webhook_router
from shared.audit import router as audit_router
from shared.web import create_service_app

SERVICE_DIR = Path(__file__).parent


def create_app(settings: SegmentationSettings | None = None) -> FastAPI:
    return create_service_app(
        settings=settings or get_settings(),
        service_dir=SERVICE_DIR,
        title="Clientela segmentation",
        description="Segments of unified profiles, evaluated live as profiles change, and signed webhooks "
        "(Standard Webhooks) to the seller's systems when profiles enter or leave them.",
        routers=[router, webhook_router, audit_router],
        workers=workers,
    )
