"""Ingest's part of data-subject requests (LGPD): the raw records it keeps, reported or erased.

Handlers of the privacy topic, sent by the profile service with the ids of ingest's records that reached
the person's profile (`order.ingested` `order_id`, `customer.recorded` / `behaviour.recorded`
`record_id`): nothing personal travels in the request. The report part is sealed for the tenant. An
erasure deletes those records, keeps the suppression hashes (so that intake refuses records that carry
the person's identifiers again) and purges the published outbox (whose bodies held the records).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.ingest.intake import open_payload
from services.ingest.models import InboundRecord, PrivacySuppression
from shared.events import (
    Envelope,
    PrivacyErasureRequested,
    PrivacyReportRequested,
)
from shared.outbox import purge_published
from shared.privacy import confirm_erasure, send_report_part

SERVICE = "ingest"
_CHUNK = 500


def _records(session: Session, tenant_id: UUID, ids: list[UUID]) -> Iterable[InboundRecord]:
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        yield from session.exec(
            select(InboundRecord).where(
                InboundRecord.tenant_id == tenant_id, col(InboundRecord.id).in_(chunk)
            )
        )


def apply_report_requested(session: Session, envelope: Envelope, event: PrivacyReportRequested) -> None:
    tenant_id = envelope.tenant_id
    data: list[dict[str, Any]] = [
        {
            "record_id": str(r.id),
            "kind": r.kind,
            "source": r.source,
            "external_id": r.external_id,
            "version": r.version,
            "received_at": r.received_at,
            "updated_at": r.updated_at,
            "record": open_payload(tenant_id, r.payload_sealed),
        }
        for r in _records(session, tenant_id, list(event.record_ids))
    ]
    part = {
        "origin": "Sent by the seller's systems (its shop, marketplaces, CRM) to Clientela's ingest API, "
        "as received after validation and normalisation; the latest version of each.",
        "records": {
            "purpose": "Keep what was accepted, to detect resends and updates and to rebuild profiles.",
            "data": data,
        },
    }
    send_report_part(session, envelope, request_id=event.request_id, service=SERVICE, part=part)


def apply_erasure_requested(session: Session, envelope: Envelope, event: PrivacyErasureRequested) -> None:
    tenant_id, ids = envelope.tenant_id, list(event.record_ids)
    deleted = 0
    for start in range(0, len(ids), _CHUNK):
        result = session.execute(
            sa.delete(InboundRecord)
            .where(
                col(InboundRecord.tenant_id) == tenant_id,
                col(InboundRecord.id).in_(ids[start : start + _CHUNK]),
            )
            .execution_options(synchronize_session=False)
        )
        deleted += int(result.rowcount)  # type: ignore[attr-defined]
    for value in event.suppress:
        if session.get(PrivacySuppression, (tenant_id, value)) is None:
            session.add(PrivacySuppression(tenant_id=tenant_id, hash=value, request_id=event.request_id))
    purged = purge_published(session)
    erased = {"inbound_record": deleted, "outbox_message": purged}
    confirm_erasure(session, envelope, request_id=event.request_id, service=SERVICE, erased=erased)
