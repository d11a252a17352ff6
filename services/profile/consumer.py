"""The profile service's Kafka side: consumers of tenants and orders, and its outbox relay.

Run inside the API process (default) or alone: ``python -m services.profile.consumer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.engine import Engine

from services.profile import identity_rules
from services.profile.privacy import apply_erasure_confirmed, apply_report_part
from services.profile.profiles import ProfileBatch, apply_behaviour, apply_customer_record, apply_order
from services.profile.refresh import TraitsRefresher
from services.profile.settings import get_settings
from shared.auth import TENANT_HANDLERS
from shared.consumer import consumer_workers
from shared.events import (
    BehaviourRecorded,
    CustomerRecorded,
    OrderIngested,
    PrivacyErasureConfirmed,
    PrivacyReportPart,
)
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings
from shared.topics import BEHAVIOUR, CUSTOMERS, ORDERS, PRIVACY_REPLIES, PROFILE_DLQ, TENANTS
from shared.web import Worker, run_workers


def workers(engine: Engine, settings: ServiceSettings) -> Sequence[tuple[str, Worker]]:
    return [
        ("profile-outbox-relay", OutboxRelay(engine, settings)),
        (
            "profile-traits-refresh",
            TraitsRefresher(engine, every=timedelta(hours=getattr(settings, "traits_refresh_hours", 24))),
        ),
        *consumer_workers(
            engine,
            settings,
            dead_letter=PROFILE_DLQ,
            consumers={
                # Tenants/keys have their own consumer so a backlog of orders never delays a new key.
                "tenants": ([TENANTS], TENANT_HANDLERS),
                # Answers to data-subject requests: apart from the records, so a backlog never delays them.
                "privacy": (
                    [PRIVACY_REPLIES],
                    {PrivacyReportPart: apply_report_part, PrivacyErasureConfirmed: apply_erasure_confirmed},
                ),
                "records": (
                    [ORDERS, CUSTOMERS, BEHAVIOUR],
                    {
                        OrderIngested: apply_order,
                        CustomerRecorded: apply_customer_record,
                        BehaviourRecorded: apply_behaviour,
                    },
                ),
            },
            hooks={"records": ProfileBatch(identity_rules.service_defaults(settings))},
        ),
    ]


if __name__ == "__main__":
    run_workers(get_settings(), workers)
