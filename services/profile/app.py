"""The profile service: one unified profile per person, from orders and customer data."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.profile.api import router
from services.profile.consumer import workers
from services.profile.privacy_api import router as privacy_router
from services.profile.settings import ProfileSettings, get_settings
from shared.audit import router as audit_router
from shared.web import create_service_app

SERVICE_DIR = Path(__file__).parent


def create_app(settings: ProfileSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    return create_service_app(
        settings=settings,
        service_dir=SERVICE_DIR,
        title="Clientela profiles",
        description="Unified customer profiles (one per person per seller) and their traits.",
        routers=[router, privacy_router, audit_router],
        workers=workers,
        max_in_flight=settings.max_in_flight,
        audit_flush_seconds=settings.audit_flush_seconds,
    )
