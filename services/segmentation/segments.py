"""Segments: incremental membership on profile changes, full evaluation in SQL, preview, membership events.

Two paths keep `segment_member` current, with the two evaluators of the rule language (see `rules`):

- incremental (`apply_profile_updated`): a profile changed, so its projection is refreshed and that one
  profile is re-evaluated in Python against each of its tenant's segments, except those whose rules read
  none of the traits that changed and do not depend on time (their answer cannot have changed).
- full (`evaluate_segment`, on `create_segment`): one SQL query over the tenant's projection
  (`compiler.compile_rule`) finds the members, and the difference with the current ones is applied;
  `preview_segment` runs the same query without saving anything.

Each entry and exit is announced as a SegmentMembershipChanged event through the outbox, and queued as a
webhook delivery for the endpoints that want it (`webhooks`), in the same transaction as the membership
change.
"""

from __future__ import annotations

import logging
from datetime import datetime
from uuid import UUID

import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.segmentation import projection as projections
from services.segmentation import webhooks
from services.segmentation.compiler import compile_rule
from services.segmentation.compiler import projection as projection_table
from services.segmentation.evaluate import Traits, matches
from services.segmentation.models import ProfileProjection, Segment, SegmentMember
from services.segmentation.rules import NOW, InvalidRule, Rule, depends_on, dump_rule, load_rule
from shared.db import utcnow
from shared.errors import NotFound
from shared.events import (
    Envelope,
    ProfilesMerged,
    ProfileUpdated,
    ProfileUpdatedV2,
    SegmentMembershipChanged,
)
from shared.outbox import add_event

log = logging.getLogger("clientela.segments")


def _announce(
    session: Session,
    segment: Segment,
    profile_id: UUID,
    profile_version: int,
    change: str,
    cid: str | None,
    projection: ProfileProjection | None = None,
) -> None:
    """Announce an entry or exit: the event through the outbox, and a webhook delivery to each endpoint
    that wants it, both in the caller's transaction."""
    envelope = add_event(
        session,
        SegmentMembershipChanged(
            segment_id=segment.id,
            profile_id=profile_id,
            change="entered" if change == "entered" else "exited",
            profile_version=profile_version,
        ),
        tenant_id=segment.tenant_id,
        key=f"{segment.tenant_id}:{profile_id}",
        correlation_id=cid,
    )
    webhooks.enqueue_membership(
        session,
        segment,
        profile_id=profile_id,
        profile_version=profile_version,
        change=change,
        projection=projection,
        event_id=envelope.event_id,
        occurred_at=envelope.occurred_at,
    )


def _evaluate(
    session: Session,
    segment: Segment,
    rule: Rule,
    projection: ProfileProjection,
    traits: Traits,
    now: datetime,
    cid: str | None = None,
) -> None:
    """Put one profile in or out of one segment (Python evaluator)."""
    member = session.get(SegmentMember, (segment.id, projection.profile_id))
    inside = matches(rule, traits, now)
    if inside and member is None:
        session.add(
            SegmentMember(
                segment_id=segment.id, profile_id=projection.profile_id, tenant_id=segment.tenant_id
            )
        )
        _announce(
            session, segment, projection.profile_id, projection.profile_version, "entered", cid, projection
        )
    elif not inside and member is not None:
        session.delete(member)
        _announce(
            session, segment, projection.profile_id, projection.profile_version, "exited", cid, projection
        )


def apply_profile_updated(
    session: Session, envelope: Envelope, event: ProfileUpdated | ProfileUpdatedV2
) -> None:
    """Handler for ProfileUpdated (v1 and v2): refresh the projection, then re-evaluate the profile in the
    tenant's segments whose answer may have changed."""
    applied = projections.apply_event(session, envelope.tenant_id, event)
    if applied is None:
        return
    projection, traits, now = applied.projection, applied.traits, utcnow()
    for segment in session.exec(select(Segment).where(Segment.tenant_id == envelope.tenant_id)).all():
        rule = _stored_rule(segment)
        if rule is None:
            continue
        reads = depends_on(rule)
        if applied.changed is not None and NOW not in reads and not reads & applied.changed:
            continue  # nothing this rule reads changed, and time does not matter to it: same answer
        _evaluate(session, segment, rule, projection, traits, now, envelope.correlation_id)


def _stored_rule(segment: Segment) -> Rule | None:
    """A segment's rule; None (logged) if a rule saved by an older release no longer parses, so that one
    such segment cannot stop every profile update of its tenant."""
    try:
        return load_rule(segment.rule)
    except InvalidRule as exc:
        log.warning(
            "segment rule is no longer valid; not evaluated",
            extra={"segment_id": str(segment.id), "errors": [e.path for e in exc.errors]},
        )
        return None


def apply_profiles_merged(session: Session, envelope: Envelope, event: ProfilesMerged) -> None:
    """Handler for ProfilesMerged: the merged profile is gone (its traits now count in the survivor's next
    ProfileUpdated), so it leaves every segment. Endpoints subscribed to `profile.merged` are told."""
    webhooks.enqueue_profile_merged(
        session, envelope.tenant_id, event, event_id=envelope.event_id, occurred_at=envelope.occurred_at
    )
    projection = session.get(ProfileProjection, event.merged_id)
    if projection is None:
        return
    members = session.exec(select(SegmentMember).where(SegmentMember.profile_id == event.merged_id)).all()
    for member in members:
        segment = session.get(Segment, member.segment_id)
        session.delete(member)
        if segment is not None:
            _announce(
                session,
                segment,
                projection.profile_id,
                projection.profile_version,
                "exited",
                envelope.correlation_id,
                projection,
            )
    projections.delete(session, projection)


def _matching(rule: Rule, *, tenant_id: UUID, now: datetime) -> sa.Select[tuple[UUID, int]]:
    """The tenant's profiles that satisfy the rule (SQL evaluator), by profile id."""
    return sa.select(projection_table.c.profile_id, projection_table.c.profile_version).where(
        projection_table.c.tenant_id == tenant_id, compile_rule(rule, now)
    )


def create_segment(
    name: str, rule: Rule, *, tenant_id: UUID, session: Session, now: datetime | None = None
) -> Segment:
    """Create a segment and evaluate it over every profile of the tenant, in one transaction."""
    segment = Segment(tenant_id=tenant_id, name=name, rule=dump_rule(rule))
    session.add(segment)
    session.flush()
    evaluate_segment(segment, rule, session=session, now=now or utcnow())
    session.commit()
    session.refresh(segment)
    return segment


def evaluate_segment(segment: Segment, rule: Rule, *, session: Session, now: datetime) -> tuple[int, int]:
    """Full evaluation in SQL: make the members exactly the tenant's profiles that satisfy the rule at
    `now`, announcing each entry and exit; returns (entered, exited). The caller commits."""
    rows = session.execute(_matching(rule, tenant_id=segment.tenant_id, now=now)).all()
    matching = {profile_id: profile_version for profile_id, profile_version in rows}
    current = session.exec(select(SegmentMember).where(SegmentMember.segment_id == segment.id)).all()
    exited = [m for m in current if m.profile_id not in matching]
    for member in exited:
        version = session.get(ProfileProjection, member.profile_id)
        session.delete(member)
        _announce(
            session,
            segment,
            member.profile_id,
            version.profile_version if version else 0,
            "exited",
            None,
            version,
        )
    inside = {m.profile_id for m in current}
    entered = [(p, v) for p, v in matching.items() if p not in inside]
    # The webhook payloads read the projections: loaded in a few queries rather than one per profile.
    loaded = (
        _load_projections(session, [p for p, _ in entered])
        if entered and webhooks.wanted(session, segment.tenant_id, webhooks.SEGMENT_ENTERED, segment.id)
        else {}
    )
    for profile_id, profile_version in entered:
        session.add(SegmentMember(segment_id=segment.id, profile_id=profile_id, tenant_id=segment.tenant_id))
        _announce(session, segment, profile_id, profile_version, "entered", None, loaded.get(profile_id))
    return len(entered), len(exited)


def _load_projections(
    session: Session, profile_ids: list[UUID], chunk: int = 1000
) -> dict[UUID, ProfileProjection]:
    """These profiles' projections, with a query per `chunk` of ids."""
    found: dict[UUID, ProfileProjection] = {}
    for start in range(0, len(profile_ids), chunk):
        ids = profile_ids[start : start + chunk]
        for row in session.exec(select(ProfileProjection).where(col(ProfileProjection.profile_id).in_(ids))):
            found[row.profile_id] = row
    return found


def preview_segment(
    rule: Rule, *, tenant_id: UUID, session: Session, now: datetime, sample_size: int
) -> tuple[int, list[UUID]]:
    """How many of the tenant's profiles satisfy the rule now, and the first few of them (by id)."""
    matching = _matching(rule, tenant_id=tenant_id, now=now).subquery()
    count = session.execute(sa.select(sa.func.count()).select_from(matching)).scalar_one()
    sample = session.execute(
        sa.select(matching.c.profile_id).order_by(matching.c.profile_id).limit(sample_size)
    )
    return int(count), list(sample.scalars())


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
