"""The segmentation service's background side: consumers of tenants and profiles, its outbox relay, the
webhook dispatcher, and the segment evaluator (background full evaluations and the time-relative schedule).

Run inside the API process (default) or alone: ``python -m services.segmentation.consumer``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Engine

from services.segmentation.batch import ProfilesBatch
from services.segmentation.delivery import WebhookDispatcher
from services.segmentation.evaluations import SegmentEvaluator
from services.segmentation.privacy import apply_erasure_requested, apply_report_requested
from services.segmentation.segments import apply_profile_updated, apply_profiles_merged
from services.segmentation.settings import get_settings
from shared.auth import TENANT_HANDLERS
from shared.consumer import consumer_workers
from shared.events import (
    PrivacyErasureRequested,
    PrivacyReportRequested,
    ProfilesMerged,
    ProfileUpdated,
    ProfileUpdatedV2,
)
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings
from shared.topics import PRIVACY_REQUESTS, PROFILES, SEGMENTATION_DLQ, TENANTS
from shared.web import Worker, run_workers


def workers(engine: Engine, settings: ServiceSettings) -> Sequence[tuple[str, Worker]]:
    return [
        ("segmentation-outbox-relay", OutboxRelay(engine, settings)),
        ("segmentation-webhooks", WebhookDispatcher.from_settings(engine, settings)),
        ("segmentation-evaluations", SegmentEvaluator.from_settings(engine, settings)),
        *consumer_workers(
            engine,
            settings,
            dead_letter=SEGMENTATION_DLQ,
            consumers={
                "tenants": ([TENANTS], TENANT_HANDLERS),
                # Data-subject requests in the same consumer as profile events: an erasure never races the
                # projection it deletes.
                "profiles": (
                    [PROFILES, PRIVACY_REQUESTS],
                    {
                        ProfileUpdated: apply_profile_updated,
                        ProfileUpdatedV2: apply_profile_updated,
                        ProfilesMerged: apply_profiles_merged,
                        PrivacyReportRequested: apply_report_requested,
                        PrivacyErasureRequested: apply_erasure_requested,
                    },
                ),
            },
            hooks={"profiles": ProfilesBatch()},
        ),
    ]


if __name__ == "__main__":
    run_workers(get_settings(), workers)
