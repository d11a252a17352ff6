"""The segmentation service's Kafka side: consumers of tenants and profiles, and its outbox relay.

Run inside the API process (default) or alone: ``python -m services.segmentation.consumer``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.engine import Engine

from services.segmentation.segments import apply_profile_updated
from services.segmentation.settings import get_settings
from shared.auth import TENANT_HANDLERS
from shared.consumer import ConsumerWorker, Handler
from shared.events import Event, ProfileUpdated
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings
from shared.topics import PROFILES, SEGMENTATION_DLQ, TENANTS, Topic
from shared.web import Worker, run_workers


def workers(engine: Engine, settings: ServiceSettings) -> Sequence[tuple[str, Worker]]:
    def consumer(name: str, topic: Topic, handlers: Mapping[type[Event], Handler]) -> ConsumerWorker:
        return ConsumerWorker(
            name=name,
            engine=engine,
            settings=settings,
            topics=[topic],
            handlers=handlers,
            dead_letter=SEGMENTATION_DLQ,
        )

    return [
        ("segmentation-outbox-relay", OutboxRelay(engine, settings)),
        ("segmentation-tenants", consumer("tenants", TENANTS, TENANT_HANDLERS)),
        ("segmentation-profiles", consumer("profiles", PROFILES, {ProfileUpdated: apply_profile_updated})),
    ]


if __name__ == "__main__":
    run_workers(get_settings(), workers)
