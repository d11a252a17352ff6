"""What ingest and segmentation send back to the profile service for a data-subject request: one place
that seals a report part for the tenant and stages the reply in the caller's transaction."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from sqlmodel import Session

from shared.crypto import keyring
from shared.events import Envelope, PrivacyErasureConfirmed, PrivacyReportPart
from shared.outbox import add_event


def send_report_part(
    session: Session, envelope: Envelope, *, request_id: UUID, service: str, part: dict[str, Any]
) -> None:
    """Answer a `privacy.report_requested` (`envelope`) with this service's part, sealed for the tenant."""
    sealed = keyring().seal(envelope.tenant_id, orjson.dumps(part, option=orjson.OPT_UTC_Z).decode())
    _reply(session, envelope, PrivacyReportPart(request_id=request_id, service=service, sealed_part=sealed))


def confirm_erasure(
    session: Session, envelope: Envelope, *, request_id: UUID, service: str, erased: dict[str, int]
) -> None:
    """Answer a `privacy.erasure_requested` (`envelope`): erased, with how many rows of each kind."""
    _reply(session, envelope, PrivacyErasureConfirmed(request_id=request_id, service=service, erased=erased))


def _reply(session: Session, envelope: Envelope, event: PrivacyReportPart | PrivacyErasureConfirmed) -> None:
    add_event(
        session,
        event,
        tenant_id=envelope.tenant_id,
        key=str(envelope.tenant_id),
        correlation_id=envelope.correlation_id,
    )
