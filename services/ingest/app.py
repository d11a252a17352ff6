"""The ingest service: the front door for everything a seller knows about its customers."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.ingest import keys
from services.ingest.api import router
from services.ingest.consumer import workers
from services.ingest.group_commit import GroupCommit
from services.ingest.schemas import BehaviourBatch, CustomerBatch, OrderBatch
from services.ingest.settings import IngestSettings, get_settings
from shared.records import BehaviourEvent, CustomerRecord, Order
from shared.web import create_service_app

SERVICE_DIR = Path(__file__).parent


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = create_service_app(
        settings=settings,
        service_dir=SERVICE_DIR,
        title="Clientela ingest",
        description="Orders and customer data in, from every channel; tenants and API keys.",
        routers=[router, keys.router],
        workers=workers,
        schemas=[Order, OrderBatch, CustomerRecord, CustomerBatch, BehaviourEvent, BehaviourBatch],
        body_limits={"/v1/imports": settings.import_max_bytes},
    )
    app.state.group_commit = GroupCommit(app.state.engine) if settings.group_commit else None
    return app
