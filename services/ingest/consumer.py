"""Ingest's background side: its outbox relay publishes tenants, keys and records, its import worker
processes bulk imports, and its privacy consumer answers data-subject requests (`services.ingest.privacy`).

Runs inside the API process (default) or alone: ``python -m services.ingest.consumer``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Engine

from services.ingest.imports import ImportWorker
from services.ingest.privacy import apply_erasure_requested, apply_report_requested
from services.ingest.settings import IngestSettings, get_settings
from shared.consumer import consumer_workers
from shared.events import PrivacyErasureRequested, PrivacyReportRequested
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings
from shared.topics import INGEST_DLQ, PRIVACY_REQUESTS
from shared.web import Worker, run_workers


def workers(engine: Engine, settings: ServiceSettings) -> Sequence[tuple[str, Worker]]:
    assert isinstance(settings, IngestSettings)
    return [
        ("ingest-outbox-relay", OutboxRelay(engine, settings)),
        ("ingest-imports", ImportWorker(engine, settings.import_dir)),
        *consumer_workers(
            engine,
            settings,
            dead_letter=INGEST_DLQ,
            consumers={
                "privacy": (
                    [PRIVACY_REQUESTS],
                    {
                        PrivacyReportRequested: apply_report_requested,
                        PrivacyErasureRequested: apply_erasure_requested,
                    },
                )
            },
        ),
    ]


if __name__ == "__main__":
    run_workers(get_settings(), workers)
