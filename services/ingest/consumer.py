"""Ingest's background side: it consumes nothing yet; its outbox relay publishes tenants, keys and records,
and its import worker processes bulk imports.

Runs inside the API process (default) or alone: ``python -m services.ingest.consumer``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Engine

from services.ingest.imports import ImportWorker
from services.ingest.settings import IngestSettings, get_settings
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings
from shared.web import Worker, run_workers


def workers(engine: Engine, settings: ServiceSettings) -> Sequence[tuple[str, Worker]]:
    assert isinstance(settings, IngestSettings)
    return [
        ("ingest-outbox-relay", OutboxRelay(engine, settings)),
        ("ingest-imports", ImportWorker(engine, settings.import_dir)),
    ]


if __name__ == "__main__":
    run_workers(get_settings(), workers)
