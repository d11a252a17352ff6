"""Segments: the profile projection, incremental membership, full evaluation, membership events."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.segmentation.models import ProfileProjection, Segment, SegmentMember
from services.segmentation.rules import Rule, dump_rule, matches, parse_rule
from shared.db import utcnow
from shared.errors import NotFound
from shared.events import Envelope, ProfilesMerged, ProfileUpdated, SegmentMembershipChanged
from shared.outbox import add_event
from shared.records import average_order_value, from_minor, to_minor


def traits(projection: ProfileProjection) -> dict[str, Decimal | int | None]:
    total = from_minor(projection.total_spent_minor)
    count = projection.orders_count
    return {
        "orders_count": count,
        "total_spent": total,
        "average_order_value": average_order_value(total, count),
    }


def _announce(
    session: Session, segment: Segment, projection: ProfileProjection, change: str, cid: str | None
) -> None:
    add_event(
        session,
        SegmentMembershipChanged(
            segment_id=segment.id,
            profile_id=projection.profile_id,
            change="entered" if change == "entered" else "exited",
            profile_version=projection.profile_version,
        ),
        tenant_id=segment.tenant_id,
        key=f"{segment.tenant_id}:{projection.profile_id}",
        correlation_id=cid,
    )


def _evaluate(
    session: Session, segment: Segment, rule: Rule, projection: ProfileProjection, cid: str | None = None
) -> None:
    member = session.get(SegmentMember, (segment.id, projection.profile_id))
    inside = matches(rule, traits(projection))
    if inside and member is None:
        session.add(
            SegmentMember(
                segment_id=segment.id, profile_id=projection.profile_id, tenant_id=segment.tenant_id
            )
        )
        _announce(session, segment, projection, "entered", cid)
    elif not inside and member is not None:
        session.delete(member)
        _announce(session, segment, projection, "exited", cid)


def apply_profile_updated(session: Session, envelope: Envelope, event: ProfileUpdated) -> None:
    """Handler for ProfileUpdated: refresh the projection, then re-evaluate the tenant's segments."""
    projection = session.get(ProfileProjection, event.profile_id)
    if projection is not None and projection.profile_version >= event.profile_version:
        return  # stale or redelivered version
    if projection is None:
        projection = ProfileProjection(
            profile_id=event.profile_id,
            tenant_id=envelope.tenant_id,
            profile_version=event.profile_version,
            orders_count=event.orders_count,
            total_spent_minor=to_minor(event.total_spent),
        )
    projection.profile_version = event.profile_version
    projection.orders_count = event.orders_count
    projection.total_spent_minor = to_minor(event.total_spent)
    projection.first_order_at = event.first_order_at
    projection.last_order_at = event.last_order_at
    projection.updated_at = utcnow()
    session.add(projection)
    session.flush()
    for segment in session.exec(select(Segment).where(Segment.tenant_id == envelope.tenant_id)).all():
        _evaluate(session, segment, parse_rule(segment.rule), projection, envelope.correlation_id)


def apply_profiles_merged(session: Session, envelope: Envelope, event: ProfilesMerged) -> None:
    """Handler for ProfilesMerged: the merged profile is gone (its traits now count in the survivor's next
    ProfileUpdated), so it leaves every segment."""
    projection = session.get(ProfileProjection, event.merged_id)
    if projection is None:
        return
    members = session.exec(select(SegmentMember).where(SegmentMember.profile_id == event.merged_id)).all()
    for member in members:
        segment = session.get(Segment, member.segment_id)
        session.delete(member)
        if segment is not None:
            _announce(session, segment, projection, "exited", envelope.correlation_id)
    session.delete(projection)


def create_segment(name: str, rule: Rule, *, tenant_id: UUID, session: Session) -> Segment:
    """Create a segment and evaluate it over every profile of the tenant, in one transaction."""
    segment = Segment(tenant_id=tenant_id, name=name, rule=dump_rule(rule))
    session.add(segment)
    session.flush()
    projections = session.exec(select(ProfileProjection).where(ProfileProjection.tenant_id == tenant_id))
    for projection in projections:
        _evaluate(session, segment, rule, projection)
    session.commit()
    session.refresh(segment)
    return segment


def get_segment(segment_id: UUID, *, tenant_id: UUID, session: Session) -> Segment:
    segment = session.get(Segment, segment_id)
    if segment is None or segment.tenant_id != tenant_id:
        raise NotFound("No segment with this id.")
    return segment


def list_segments(*, tenant_id: UUID, session: Session) -> list[Segment]:
    query = select(Segment).where(Segment.tenant_id == tenant_id).order_by(col(Segment.created_at))
    return list(session.exec(query).all())


def segment_size(segment_id: UUID, *, session: Session) -> int:
    query = sa.select(sa.func.count()).where(col(SegmentMember.segment_id) == segment_id)
    return int(session.execute(query).scalar_one())


def list_members(
    segment_id: UUID, *, tenant_id: UUID, session: Session, after: UUID | None, limit: int
) -> list[SegmentMember]:
    get_segment(segment_id, tenant_id=tenant_id, session=session)
    query = select(SegmentMember).where(SegmentMember.segment_id == segment_id)
    if after is not None:
        query = query.where(col(SegmentMember.profile_id) > after)
    return list(session.exec(query.order_by(col(SegmentMember.profile_id)).limit(limit)).all())
