"""Segmentation's part of data-subject requests (LGPD): what it holds about a person, and erasing it.

Handlers of the privacy topic (`privacy.report_requested`, `privacy.erasure_requested`, sent by the
profile service with the person's profile ids). They run in the profiles consumer, so an erasure is
ordered with the profile events of the same poll and never races the projection it deletes.

Erasure removes the projection, tags and memberships of the person's profiles and the webhook deliveries
that carried them. The membership history (segment size over time) stays right but anonymous: the
person's rows get a random id, and their current memberships end with an exit (`reason: erased`). The
erased profile ids are kept alone (`erased_profile`) so that a `profile.updated` still in flight is
ignored; the audit trail keeps its reads without them. Endpoints subscribed to `customer.erased` are
told (LGPD Art. 18 §6), with the profile ids only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import orjson
import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.segmentation import batch as batches
from services.segmentation import webhooks
from services.segmentation.models import (
    ErasedProfile,
    MembershipChange,
    ProfileProjection,
    ProfileTag,
    Segment,
    SegmentMember,
    SegmentMembershipEvent,
    WebhookDelivery,
    WebhookEndpoint,
)
from shared.audit import forget_reads
from shared.db import utcnow
from shared.events import (
    Envelope,
    PrivacyErasureRequested,
    PrivacyReportRequested,
)
from shared.outbox import purge_published
from shared.privacy import confirm_erasure, send_report_part

SERVICE = "segmentation"
# Events whose webhook payloads name a profile.
_ABOUT_PROFILES = (webhooks.SEGMENT_ENTERED, webhooks.SEGMENT_EXITED, webhooks.PROFILE_MERGED)
_SCAN = 1000


def deliveries_about(session: Session, tenant_id: UUID, profile_ids: Sequence[UUID]) -> list[WebhookDelivery]:
    """The deliveries (any status) whose payload carried one of these profiles. Scans the tenant's
    deliveries of profile events in pages: an erasure or a report is rare, deliveries are not indexed by
    profile."""
    wanted = {str(p) for p in profile_ids}
    found: list[WebhookDelivery] = []
    endpoints = session.exec(select(WebhookEndpoint.id).where(WebhookEndpoint.tenant_id == tenant_id)).all()
    if not endpoints or not wanted:
        return found
    last: UUID | None = None
    while True:
        query = select(WebhookDelivery).where(
            col(WebhookDelivery.endpoint_id).in_(endpoints),
            col(WebhookDelivery.event_type).in_(_ABOUT_PROFILES),
        )
        if last is not None:
            query = query.where(col(WebhookDelivery.id) > last)
        page = session.exec(query.order_by(col(WebhookDelivery.id)).limit(_SCAN)).all()
        if not page:
            return found
        for delivery in page:
            data = orjson.loads(delivery.payload).get("data", {})
            named = {str(data.get(k)) for k in ("profile_id", "survivor_id", "merged_id") if data.get(k)}
            if named & wanted:
                found.append(delivery)
        last = page[-1].id


def _opened(projection: ProfileProjection) -> dict[str, Any]:
    """A projection as the report shows it: its traits in clear (the sealed ones opened)."""
    columns = projection.columns()
    del columns["tenant_id"]
    return columns


def apply_report_requested(session: Session, envelope: Envelope, event: PrivacyReportRequested) -> None:
    """Answer with what this service holds about the person, sealed for the tenant."""
    tenant_id, ids = envelope.tenant_id, list(event.profile_ids)
    projections = session.exec(
        select(ProfileProjection).where(
            ProfileProjection.tenant_id == tenant_id, col(ProfileProjection.profile_id).in_(ids)
        )
    ).all()
    tags = session.exec(
        select(ProfileTag).where(ProfileTag.tenant_id == tenant_id, col(ProfileTag.profile_id).in_(ids))
    ).all()
    names = {s.id: s.name for s in session.exec(select(Segment).where(Segment.tenant_id == tenant_id))}
    members = session.exec(
        select(SegmentMember).where(
            SegmentMember.tenant_id == tenant_id, col(SegmentMember.profile_id).in_(ids)
        )
    ).all()
    history = session.exec(
        select(SegmentMembershipEvent)
        .where(SegmentMembershipEvent.tenant_id == tenant_id, col(SegmentMembershipEvent.profile_id).in_(ids))
        .order_by(col(SegmentMembershipEvent.at))
    ).all()
    deliveries = deliveries_about(session, tenant_id, ids)
    part: dict[str, Any] = {
        "origin": "Copied from the profile service's profile events (traits only, no contact data).",
        "traits": {
            "purpose": "Evaluate the seller's segments (who matches which rule).",
            "data": [_opened(p) for p in projections],
            "tags": [
                {"profile_id": str(t.profile_id), "kind": t.kind, "value": t.value, "at": t.at} for t in tags
            ],
        },
        "segments": {
            "purpose": "The seller's segments the person belongs to now, to personalise campaigns.",
            "data": [
                {
                    "segment_id": str(m.segment_id),
                    "segment_name": names.get(m.segment_id),
                    "profile_id": str(m.profile_id),
                    "entered_at": m.entered_at,
                }
                for m in members
            ],
        },
        "segment_history": {
            "purpose": "When the person entered and left segments (segment size over time).",
            "data": [
                {
                    "segment_id": str(h.segment_id),
                    "segment_name": names.get(h.segment_id),
                    "change": h.change,
                    "reason": h.reason,
                    "at": h.at,
                }
                for h in history
            ],
        },
        "webhook_deliveries": {
            "purpose": "Messages sent to the seller's own systems (its webhook endpoints) that carried the "
            "person's profile id and traits.",
            "data": [
                {
                    "delivery_id": str(d.id),
                    "endpoint_id": str(d.endpoint_id),
                    "event_type": d.event_type,
                    "status": d.status,
                    "created_at": d.created_at,
                    "delivered_at": d.delivered_at,
                    "payload": orjson.loads(d.payload),
                }
                for d in deliveries
            ],
        },
    }
    send_report_part(session, envelope, request_id=event.request_id, service=SERVICE, part=part)


def apply_erasure_requested(session: Session, envelope: Envelope, event: PrivacyErasureRequested) -> None:
    """Erase what this service holds about the person, tell the endpoints that want `customer.erased`,
    and confirm with counts."""
    tenant_id, ids = envelope.tenant_id, list(event.profile_ids)
    batch = batches.current(session)
    if batch is not None:  # what follows works on the tables: bring them up to date, then forget these
        batch.sync(session)
        batch.forget(ids)
        batch.erased.update(ids)
    erased: dict[str, int] = {}
    now = utcnow()
    anonymous = {p: uuid4() for p in ids}
    members = session.exec(
        select(SegmentMember).where(
            SegmentMember.tenant_id == tenant_id, col(SegmentMember.profile_id).in_(ids)
        )
    ).all()
    for member in members:
        # The history stays right (the segment's size over time) but anonymous: an exit, then the ids go.
        session.add(
            SegmentMembershipEvent(
                tenant_id=tenant_id,
                segment_id=member.segment_id,
                profile_id=member.profile_id,
                change=MembershipChange.exited.value,
                reason="erased",
                profile_version=0,
                at=now,
            )
        )
        session.delete(member)
    erased["segment_member"] = len(members)
    session.flush()
    anonymised = 0
    for profile_id, replacement in anonymous.items():
        result = session.execute(
            sa.update(SegmentMembershipEvent)
            .where(
                col(SegmentMembershipEvent.tenant_id) == tenant_id,
                col(SegmentMembershipEvent.profile_id) == profile_id,
            )
            .values(profile_id=replacement)
            .execution_options(synchronize_session=False)
        )
        anonymised += int(result.rowcount)  # type: ignore[attr-defined]
    erased["segment_membership_event_anonymised"] = anonymised
    deliveries = deliveries_about(session, tenant_id, ids)
    for delivery in deliveries:
        session.delete(delivery)
    erased["webhook_delivery"] = len(deliveries)
    tags = session.execute(
        sa.delete(ProfileTag)
        .where(col(ProfileTag.tenant_id) == tenant_id, col(ProfileTag.profile_id).in_(ids))
        .execution_options(synchronize_session=False)
    )
    erased["profile_tag"] = int(tags.rowcount)  # type: ignore[attr-defined]
    projections = session.execute(
        sa.delete(ProfileProjection)
        .where(col(ProfileProjection.tenant_id) == tenant_id, col(ProfileProjection.profile_id).in_(ids))
        .execution_options(synchronize_session=False)
    )
    erased["profile_projection"] = int(projections.rowcount)  # type: ignore[attr-defined]
    for profile_id in ids:
        if session.get(ErasedProfile, profile_id) is None:
            session.add(ErasedProfile(profile_id=profile_id, tenant_id=tenant_id, erased_at=now))
    erased["audit_event"] = forget_reads(session, tenant_id, ids)
    erased["outbox_message"] = purge_published(session)
    webhooks.enqueue_customer_erased(
        session,
        tenant_id,
        request_id=event.request_id,
        profile_ids=ids,
        mode=event.mode,
        event_id=envelope.event_id,
        occurred_at=envelope.occurred_at,
    )
    confirm_erasure(session, envelope, request_id=event.request_id, service=SERVICE, erased=erased)
