"""Ingest's Kafka side: it consumes nothing yet; its outbox relay publishes tenants, keys and orders.

Runs inside the API process (default) or alone: ``python -m services.ingest.consumer``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Engine

from services.ingest.settings import get_settings
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings
from shared.web import Worker, run_workers


def workers(engine: Engine, settings: ServiceSettings) -> Sequence[tuple[str, Worker]]:
    return [("ingest-outbox-relay", OutboxRelay(engine, settings))]


if __name__ == "__main__":
    run_workers(get_settings(), workers)
