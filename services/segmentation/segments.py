"""Segments: their lifecycle (create, change, delete) and membership, kept current in two ways.

Two paths keep `segment_member` current, with the two evaluators of the rule language (see `rules`):

- incremental (`apply_profile_updated`): a profile changed, so its projection is refreshed and that one
  profile is re-evaluated in Python against each of its tenant's segments, except those whose rules read
  none of the traits that changed and do not depend on time (their answer cannot have changed).
- full (`evaluate_segment`, `evaluate_range`): SQL (`compiler.compile_rule`) finds the members among the
  tenant's profiles, a range of profile ids at a time, and the difference with the current ones is
  applied. A segment is evaluated in full when it is created or its rule changes: within the request
  when its tenant has few profiles (`inline_max`), otherwise by the background worker in chunks, with
  progress (`evaluations`); the worker also re-evaluates time-relative rules on a schedule.
  `preview_segment` runs the same query without saving anything.

`announce` is the one place a membership change is made known: a SegmentMembershipChanged (v2) event
through the outbox, a webhook delivery for each endpoint that wants it and a `segment_membership_event`
history row, all in the transaction of the change.

Concurrency (PostgreSQL): a full evaluation locks the projection rows of the range it evaluates before
reading them, so a profile event applied at the same time waits for it (or it for the event) and the last
one decides on the latest traits. Members, history and evaluations reference their segment, so a change
racing with the segment's deletion fails and is retried rather than leaving rows of a deleted segment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar
from uuid import UUID, uuid5

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from services.segmentation import batch as batches
from services.segmentation import projection as projections
from services.segmentation import webhooks
from services.segmentation.compiler import compile_rule
from services.segmentation.compiler import projection as projection_table
from services.segmentation.evaluate import Traits, matches
from services.segmentation.models import (
    PENDING_EVALUATION,
    EvaluationStatus,
    MembershipChange,
    ProfileProjection,
    Segment,
    SegmentEvaluation,
    SegmentMember,
    SegmentMembershipEvent,
    TagKind,
)
from services.segmentation.rules import NOW, Rule, depends_on, dump_rule
from shared.db import after_row, is_deadlock, stage_insert, table_of, utcnow
from shared.errors import NotFound
from shared.events import (
    Envelope,
    MemberTraits,
    ProfilesMerged,
    ProfileUpdated,
    ProfileUpdatedV2,
    SegmentMembershipChangedV2,
    TenantMismatch,
)
from shared.outbox import add_event, insert_rows, outbox_row

log = logging.getLogger("clientela.segments")

member_table = table_of(SegmentMember)
CHUNK = 1000
T = TypeVar("T")


class Reason(StrEnum):
    """Why a membership changed (the event's `reason`, the history's and an evaluation's)."""

    profile_updated = "profile_updated"
    profile_merged = "profile_merged"
    segment_created = "segment_created"
    rule_changed = "rule_changed"
    schedule = "schedule"
    requested = "requested"
    segment_deleted = "segment_deleted"


# -- announcing a change -------------------------------------------------------------------------------


def member_traits(projection: ProfileProjection | None) -> MemberTraits | None:
    return None if projection is None else MemberTraits.model_validate(webhooks.traits(projection))


def _event(
    segment: Segment,
    profile_id: UUID,
    profile_version: int,
    change: MembershipChange,
    reason: str,
    projection: ProfileProjection | None,
) -> SegmentMembershipChangedV2:
    return SegmentMembershipChangedV2(
        segment_id=segment.id,
        segment_name=segment.name,
        profile_id=profile_id,
        change=change.value,
        profile_version=profile_version,
        reason=reason,
        traits=member_traits(projection),
    )


def announce(
    session: Session,
    segment: Segment,
    *,
    profile_id: UUID,
    profile_version: int,
    change: MembershipChange,
    reason: str,
    at: datetime,
    projection: ProfileProjection | None,
    cid: str | None = None,
    traits: Traits | None = None,
) -> None:
    """Make an entry or exit known, in the caller's transaction: the event through the outbox, a webhook
    delivery to each endpoint that wants it, and the history row. `projection` (the profile's traits) is
    loaded when not given. The webhook of an entry into a segment with a `purpose` is sent only when the
    person granted that purpose (`traits` say so, else the stored tags): webhooks follow consent like
    exports do (see `consent_changed`)."""
    if projection is None:
        projection = session.get(ProfileProjection, profile_id)
    envelope = add_event(
        session,
        _event(segment, profile_id, profile_version, change, reason, projection),
        tenant_id=segment.tenant_id,
        key=f"{segment.tenant_id}:{profile_id}",
        correlation_id=cid,
    )
    webhooks.enqueue_membership(
        session,
        segment,
        profile_id=profile_id,
        profile_version=profile_version,
        change=change.value,
        projection=projection,
        event_id=envelope.event_id,
        occurred_at=envelope.occurred_at,
        granted=None if traits is None else granted(traits, segment.purpose),
    )
    stage_insert(
        session,
        SegmentMembershipEvent,
        {
            "tenant_id": segment.tenant_id,
            "segment_id": segment.id,
            "profile_id": profile_id,
            "change": change.value,
            "reason": reason,
            "profile_version": profile_version,
            "at": at,
        },
    )


def granted(traits: Traits | None, purpose: str | None) -> bool:
    """Whether the person's latest decision for `purpose` is `granted`."""
    return (
        purpose is not None and traits is not None and purpose in traits.tags.get(TagKind.consent_granted, {})
    )


def consent_changed(
    session: Session,
    segment: Segment,
    applied: projections.Applied,
    *,
    member: bool,
    event_id: UUID,
    occurred_at: datetime,
) -> None:
    """A member of a segment with a `purpose` granted or withdrew that purpose while staying in: the
    webhooks say `segment.entered` / `segment.exited` (`reason` consent_granted / consent_revoked), so a
    revocation reaches the seller's systems within seconds, as it leaves exports. Membership itself (the
    rule's answer, its history and Kafka event) does not change."""
    if segment.purpose is None or applied.before is None or not member:
        return
    now_granted = granted(applied.traits, segment.purpose)
    if granted(applied.before, segment.purpose) == now_granted:
        return
    projection = applied.projection
    webhooks.enqueue_membership(
        session,
        segment,
        profile_id=projection.profile_id,
        profile_version=projection.profile_version,
        change=MembershipChange.entered.value if now_granted else MembershipChange.exited.value,
        projection=projection,
        event_id=uuid5(event_id, str(segment.id)),
        occurred_at=occurred_at,
        reason="consent_granted" if now_granted else "consent_revoked",
    )


# -- incremental: one profile ----------------------------------------------------------------------------


def _evaluate(
    session: Session,
    segment: Segment,
    rule: Rule,
    projection: ProfileProjection,
    traits: Traits,
    now: datetime,
    cid: str | None = None,
) -> bool:
    """Put one profile in or out of one segment (Python evaluator); whether its membership changed."""
    member = session.get(SegmentMember, (segment.id, projection.profile_id))
    inside = matches(rule, traits, now)
    if inside == (member is not None):
        return False
    if inside:
        session.add(
            SegmentMember(
                segment_id=segment.id,
                profile_id=projection.profile_id,
                tenant_id=segment.tenant_id,
                entered_at=now,
            )
        )
    else:
        session.delete(member)
    announce(
        session,
        segment,
        profile_id=projection.profile_id,
        profile_version=projection.profile_version,
        change=MembershipChange.entered if inside else MembershipChange.exited,
        reason=Reason.profile_updated,
        at=now,
        projection=projection,
        cid=cid,
        traits=traits,
    )
    return True


def apply_profile_updated(
    session: Session, envelope: Envelope, event: ProfileUpdated | ProfileUpdatedV2
) -> None:
    """Handler for ProfileUpdated (v1 and v2): refresh the projection, then re-evaluate the profile in the
    tenant's segments whose answer may have changed."""
    applied = projections.apply_event(session, envelope.tenant_id, event)
    if applied is None:
        return
    projection, traits, now = applied.projection, applied.traits, utcnow()
    batch = batches.current(session)
    if batch is not None:
        _evaluate_batched(session, batch, envelope, applied, now)
        return
    for segment in session.exec(select(Segment).where(Segment.tenant_id == envelope.tenant_id)).all():
        rule = _stored_rule(segment)
        if rule is None:
            continue
        reads = depends_on(rule)
        if applied.changed is not None and NOW not in reads and not reads & applied.changed:
            moved = False  # nothing this rule reads changed, and time does not matter to it: same answer
        else:
            moved = _evaluate(session, segment, rule, projection, traits, now, envelope.correlation_id)
        if (
            not moved
            and applied.before is not None
            and granted(applied.before, segment.purpose) != granted(traits, segment.purpose)
        ):
            member = session.get(SegmentMember, (segment.id, projection.profile_id)) is not None
            consent_changed(
                session,
                segment,
                applied,
                member=member,
                event_id=envelope.event_id,
                occurred_at=envelope.occurred_at,
            )


def _evaluate_batched(
    session: Session, batch: batches.Batch, envelope: Envelope, applied: projections.Applied, now: datetime
) -> None:
    """`apply_profile_updated`'s evaluation within a consumer batch: on the batch's segments and
    memberships (the members are written when the batch is synced)."""
    projection, traits, changed = applied.projection, applied.traits, applied.changed
    members = batch.members[projection.profile_id]
    for found in batch.tenant_segments(session, envelope.tenant_id):
        same = changed is not None and NOW not in found.reads and not found.reads & changed
        # (same: nothing this rule reads changed, and time does not matter to it: same answer)
        inside = (found.segment.id in members) if same else matches(found.rule, traits, now)
        if inside == (found.segment.id in members):
            consent_changed(
                session,
                found.segment,
                applied,
                member=inside,
                event_id=envelope.event_id,
                occurred_at=envelope.occurred_at,
            )
            continue
        if inside:
            members[found.segment.id] = now
        else:
            del members[found.segment.id]
        announce(
            session,
            found.segment,
            profile_id=projection.profile_id,
            profile_version=projection.profile_version,
            change=MembershipChange.entered if inside else MembershipChange.exited,
            reason=Reason.profile_updated,
            at=now,
            projection=projection,
            cid=envelope.correlation_id,
            traits=traits,
        )


def _stored_rule(segment: Segment) -> Rule | None:
    """A segment's rule; None (logged) if a rule saved by an older release no longer parses, so that one
    such segment cannot stop every profile update of its tenant."""
    return batches.stored_rule(segment)


def apply_profiles_merged(session: Session, envelope: Envelope, event: ProfilesMerged) -> None:
    """Handler for ProfilesMerged: the merged profile is gone (its traits now count in the survivor's next
    ProfileUpdated), so it leaves every segment. Endpoints subscribed to `profile.merged` are told. Within
    a consumer batch this works on the batch's copy (written when the batch is synced), so that a merge
    does not write out the batch before its time."""
    batch = batches.current(session)

    def projection_of(profile_id: UUID) -> ProfileProjection | None:
        if batch is not None:
            return batch.projection(session, profile_id)
        return session.get(ProfileProjection, profile_id)

    for profile_id in (event.merged_id, event.survivor_id):
        known = projection_of(profile_id)
        if known is not None and known.tenant_id != envelope.tenant_id:
            raise TenantMismatch("a merged profile")
    webhooks.enqueue_profile_merged(
        session, envelope.tenant_id, event, event_id=envelope.event_id, occurred_at=envelope.occurred_at
    )
    projection = projection_of(event.merged_id)
    if projection is None:
        return
    if batch is not None:
        segment_ids = list(batch.members[event.merged_id])
    else:
        members = session.exec(select(SegmentMember).where(SegmentMember.profile_id == event.merged_id)).all()
        segment_ids = [member.segment_id for member in members]
        for member in members:
            session.delete(member)
    now = utcnow()
    for segment_id in segment_ids:
        segment = session.get(Segment, segment_id)  # a batch loaded its tenants' segments: no query
        if segment is not None:
            announce(
                session,
                segment,
                profile_id=projection.profile_id,
                profile_version=projection.profile_version,
                change=MembershipChange.exited,
                reason=Reason.profile_merged,
                at=now,
                projection=projection,
                cid=envelope.correlation_id,
            )
    if batch is not None:
        batch.remove(session, event.merged_id)
    else:
        projections.delete(session, projection)


# -- full: SQL over ranges of profiles ------------------------------------------------------------------


def matching(
    session: Session, rule: Rule, *, tenant_id: UUID, now: datetime, where: Sequence[Any] = ()
) -> dict[UUID, int]:
    """The tenant's profiles (among those `where` selects) that satisfy the rule at `now`, with their
    versions: decided by SQL (`compiler.compile_rule`), and for the few SQL leaves undecided (a birth date
    or CEP its generalised copy cannot settle), by the Python evaluator on the opened values."""
    compiled = compile_rule(rule, now)
    select_from = [projection_table.c.tenant_id == tenant_id, compiled.may, *where]
    columns = [projection_table.c.profile_id, projection_table.c.profile_version]
    if compiled.exact:
        return {p: v for p, v in session.execute(sa.select(*columns).where(*select_from))}
    found: dict[UUID, int] = {}
    undecided: dict[UUID, int] = {}
    for profile_id, version, sure in session.execute(
        sa.select(*columns, compiled.sure.label("sure")).where(*select_from)
    ):
        (found if sure else undecided)[profile_id] = version
    for profile_id, traits in projections.traits_of(session, list(undecided)).items():
        if matches(rule, traits, now):
            found[profile_id] = undecided[profile_id]
    return found


def _in_range(column: sa.ColumnElement[UUID], after: UUID | None, upto: UUID | None) -> list[Any]:
    bounds: list[Any] = []
    if after is not None:
        bounds.append(column > after)
    if upto is not None:
        bounds.append(column <= upto)
    return bounds


def next_chunk(session: Session, tenant_id: UUID, *, after: UUID | None, size: int) -> list[UUID]:
    """The next `size` profile ids of the tenant after `after`, locked (PostgreSQL) until the caller's
    transaction ends: a profile event applied meanwhile waits, and is then evaluated on what this
    evaluation wrote (and the other way round)."""
    query = (
        sa.select(projection_table.c.profile_id)
        .where(
            projection_table.c.tenant_id == tenant_id, *_in_range(projection_table.c.profile_id, after, None)
        )
        .order_by(projection_table.c.profile_id)
        .limit(size)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return list(session.execute(query).scalars())


def evaluate_range(
    session: Session,
    segment: Segment,
    rule: Rule,
    *,
    now: datetime,
    reason: str,
    after: UUID | None = None,
    upto: UUID | None = None,
    cid: str | None = None,
) -> tuple[int, int]:
    """Make the segment's members with a profile id in (`after`, `upto`] (None: unbounded) exactly the
    tenant's profiles in that range that satisfy the rule at `now`, announcing each entry and exit (a
    member whose profile is gone leaves too). Returns (entered, exited); the caller commits."""
    matching_now = matching(
        session,
        rule,
        tenant_id=segment.tenant_id,
        now=now,
        where=_in_range(projection_table.c.profile_id, after, upto),
    )
    current = set(
        session.execute(
            sa.select(member_table.c.profile_id).where(
                member_table.c.segment_id == segment.id, *_in_range(member_table.c.profile_id, after, upto)
            )
        ).scalars()
    )
    exited = sorted(current - matching_now.keys())
    entered = sorted(matching_now.keys() - current)
    loaded = _load_projections(session, [*exited, *entered])
    for ids in _chunks(exited):
        session.execute(
            sa.delete(member_table).where(
                member_table.c.segment_id == segment.id, member_table.c.profile_id.in_(ids)
            )
        )
    for ids in _chunks(entered):
        session.execute(
            sa.insert(member_table),
            [
                {"segment_id": segment.id, "profile_id": p, "tenant_id": segment.tenant_id, "entered_at": now}
                for p in ids
            ],
        )
    for change, ids in ((MembershipChange.exited, exited), (MembershipChange.entered, entered)):
        for profile_id in ids:
            found = loaded.get(profile_id)
            announce(
                session,
                segment,
                profile_id=profile_id,
                profile_version=found.profile_version if found is not None else 0,
                change=change,
                reason=reason,
                at=now,
                projection=found,
                cid=cid,
            )
    return len(entered), len(exited)


def evaluate_segment(
    segment: Segment,
    rule: Rule,
    *,
    session: Session,
    now: datetime,
    reason: str = Reason.requested,
    chunk: int = CHUNK,
) -> tuple[int, int]:
    """Full evaluation in SQL within the caller's transaction: make the members exactly the tenant's
    profiles that satisfy the rule at `now`, announcing each entry and exit; returns (entered, exited).
    The caller commits."""
    entered = exited = 0
    after: UUID | None = None
    while ids := next_chunk(session, segment.tenant_id, after=after, size=chunk):
        e, x = evaluate_range(session, segment, rule, now=now, reason=reason, after=after, upto=ids[-1])
        entered, exited, after = entered + e, exited + x, ids[-1]
    e, x = evaluate_range(session, segment, rule, now=now, reason=reason, after=after)
    return entered + e, exited + x


def _chunks(ids: Sequence[UUID], size: int = CHUNK) -> Iterable[Sequence[UUID]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _load_projections(session: Session, profile_ids: list[UUID]) -> dict[UUID, ProfileProjection]:
    """These profiles' projections, with a query per chunk of ids."""
    found: dict[UUID, ProfileProjection] = {}
    for ids in _chunks(profile_ids):
        for row in session.exec(select(ProfileProjection).where(col(ProfileProjection.profile_id).in_(ids))):
            found[row.profile_id] = row
    return found


def preview_segment(
    rule: Rule, *, tenant_id: UUID, session: Session, now: datetime, sample_size: int
) -> tuple[int, list[UUID]]:
    """How many of the tenant's profiles satisfy the rule now, and the first few of them (by id)."""
    compiled = compile_rule(rule, now)
    if not compiled.exact:  # some profiles are decided on their opened values
        found = matching(session, rule, tenant_id=tenant_id, now=now)
        return len(found), sorted(found)[:sample_size]
    selected = (
        sa.select(projection_table.c.profile_id)
        .where(projection_table.c.tenant_id == tenant_id, compiled.may)
        .subquery()
    )
    count = session.execute(sa.select(sa.func.count()).select_from(selected)).scalar_one()
    sample = session.execute(
        sa.select(selected.c.profile_id).order_by(selected.c.profile_id).limit(sample_size)
    )
    return int(count), list(sample.scalars())


# -- the lifecycle ---------------------------------------------------------------------------------------


def profile_count(session: Session, tenant_id: UUID) -> int:
    query = sa.select(sa.func.count()).where(projection_table.c.tenant_id == tenant_id)
    return int(session.execute(query).scalar_one())


def start_evaluation(
    session: Session, segment: Segment, rule: Rule, *, reason: str, inline_max: int, now: datetime
) -> SegmentEvaluation:
    """A full evaluation of the segment (whatever was queued or running for it is cancelled: it was for an
    older rule). With at most `inline_max` profiles in the tenant it is done here, in the caller's
    transaction; otherwise it is queued for the background worker. The caller commits."""
    _cancel_pending(session, segment.id, now)
    total = profile_count(session, segment.tenant_id)
    job = SegmentEvaluation(
        tenant_id=segment.tenant_id,
        segment_id=segment.id,
        reason=reason,
        profiles_total=total,
        created_at=now,
    )
    if total <= inline_max:
        started = utcnow()
        job.entered, job.exited = evaluate_segment(
            segment, rule, session=session, now=now, reason=reason, chunk=CHUNK
        )
        job.status, job.evaluated_at, job.processed = EvaluationStatus.done, now, total
        job.started_at, job.finished_at = started, utcnow()
    session.add(job)
    return job


def _cancel_pending(session: Session, segment_id: UUID, now: datetime) -> None:
    session.execute(
        sa.update(SegmentEvaluation)
        .where(
            col(SegmentEvaluation.segment_id) == segment_id,
            col(SegmentEvaluation.status).in_(PENDING_EVALUATION),
        )
        .values(status=EvaluationStatus.cancelled, finished_at=now, lease_owner=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )


def queue_evaluation(
    session: Session, *, segment_id: UUID, tenant_id: UUID, reason: str, now: datetime
) -> tuple[SegmentEvaluation, bool]:
    """Queue a full evaluation for the background worker, unless one is queued or running already: the
    evaluation, and whether it is a new one. Commits."""
    pending = _pending(session, segment_id)
    if pending is not None:
        return pending, False
    job = SegmentEvaluation(tenant_id=tenant_id, segment_id=segment_id, reason=reason, created_at=now)
    session.add(job)
    try:
        session.commit()
    except IntegrityError:  # queued by another process meanwhile (one pending per segment), or deleted
        session.rollback()
        pending = _pending(session, segment_id)
        if pending is None:
            raise NotFound("No segment with this id.") from None
        return pending, False
    session.refresh(job)
    return job, True


def _pending(session: Session, segment_id: UUID) -> SegmentEvaluation | None:
    return session.exec(
        select(SegmentEvaluation).where(
            SegmentEvaluation.segment_id == segment_id,
            col(SegmentEvaluation.status).in_(PENDING_EVALUATION),
        )
    ).first()


def _retrying(session: Session, work: Callable[[], T], attempts: int = 3) -> T:
    """Run `work` (which commits), again after a deadlock or a conflict: an evaluation within a request
    locks profile rows in id order while a consumer batch may lock them in any order, and PostgreSQL then
    aborts one of the two (the consumer retries its batch by itself); the schedule may queue an evaluation
    of the segment meanwhile (one pending per segment: the retry cancels it)."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except (OperationalError, IntegrityError) as exc:
            session.rollback()
            retry = isinstance(exc, IntegrityError) or is_deadlock(exc)
            if not retry or attempt == attempts:
                raise
            log.warning(
                "concurrent change; trying again",
                extra={"attempt": attempt, "error_type": type(exc.orig).__name__},
            )
    raise AssertionError("unreachable")


def create_segment(
    name: str,
    rule: Rule,
    *,
    purpose: str | None = None,
    tenant_id: UUID,
    session: Session,
    inline_max: int,
    now: datetime | None = None,
) -> Segment:
    """Create a segment and evaluate it over every profile of the tenant: at once, in the same transaction,
    for a tenant of at most `inline_max` profiles; otherwise in the background."""
    at = now or utcnow()

    def create() -> Segment:
        segment = Segment(
            tenant_id=tenant_id,
            name=name,
            rule=dump_rule(rule),
            purpose=purpose,
            time_relative=NOW in depends_on(rule),
            created_at=at,
            updated_at=at,
        )
        session.add(segment)
        session.flush()
        start_evaluation(session, segment, rule, reason=Reason.segment_created, inline_max=inline_max, now=at)
        session.commit()
        session.refresh(segment)
        return segment

    return _retrying(session, create)


def update_segment(
    segment_id: UUID,
    changes: dict[str, Any],
    *,
    tenant_id: UUID,
    session: Session,
    inline_max: int,
    now: datetime | None = None,
) -> Segment:
    """Change the name, purpose or rule (`changes` holds the parsed rule). A different rule is evaluated
    again in full (at once or in the background, as at creation); the members stay as they are until
    then."""
    at = now or utcnow()

    def update() -> Segment:
        segment = get_segment(segment_id, tenant_id=tenant_id, session=session, lock="change")
        if "name" in changes:
            segment.name = changes["name"]
        if "purpose" in changes:
            segment.purpose = changes["purpose"]
        rule: Rule | None = changes.get("rule")
        if rule is not None and dump_rule(rule) != segment.rule:
            segment.rule = dump_rule(rule)
            segment.time_relative = NOW in depends_on(rule)
        else:
            rule = None
        segment.updated_at = at
        session.add(segment)
        session.flush()
        if rule is not None:
            start_evaluation(
                session, segment, rule, reason=Reason.rule_changed, inline_max=inline_max, now=at
            )
        session.commit()
        session.refresh(segment)
        return segment

    return _retrying(session, update)


def delete_segment(segment_id: UUID, *, tenant_id: UUID, session: Session) -> int:
    """Delete a segment with its members, history and evaluations. Each member's exit is still announced
    on Kafka (reason `segment_deleted`), so that consumers keeping a copy of the members drop them; no
    webhooks are sent for them, and the segment's pending deliveries are stopped. Returns the number of
    members it had."""
    get_segment(segment_id, tenant_id=tenant_id, session=session)  # another tenant's: 404, nothing locked

    def delete() -> int:
        # Its evaluations first, then the segment: the order a running evaluation takes them in.
        session.exec(
            select(SegmentEvaluation.id).where(SegmentEvaluation.segment_id == segment_id).with_for_update()
        ).all()
        segment = get_segment(segment_id, tenant_id=tenant_id, session=session, lock="delete")
        members = _announce_deletion(session, segment)
        webhooks.forget_segment(session, segment)
        # Members, history and evaluations go with it (ON DELETE CASCADE).
        session.execute(sa.delete(Segment).where(col(Segment.id) == segment.id))
        session.commit()
        return members

    return _retrying(session, delete)


def _announce_deletion(session: Session, segment: Segment) -> int:
    """Every member's exit on the outbox (written in bulk: a segment may have millions): the count."""
    members = 0
    after: UUID | None = None
    while True:
        query = (
            select(SegmentMember.profile_id, ProfileProjection)
            .outerjoin(ProfileProjection, col(ProfileProjection.profile_id) == col(SegmentMember.profile_id))
            .where(SegmentMember.segment_id == segment.id)
            .order_by(col(SegmentMember.profile_id))
            .limit(CHUNK)
        )
        if after is not None:
            query = query.where(col(SegmentMember.profile_id) > after)
        rows = session.exec(query).all()
        if not rows:
            return members
        insert_rows(
            session,
            [
                outbox_row(
                    SegmentMembershipChangedV2,
                    _event(
                        segment,
                        profile_id,
                        found.profile_version if found is not None else 0,
                        MembershipChange.exited,
                        Reason.segment_deleted,
                        found,
                    ).model_dump(mode="json"),
                    tenant_id=segment.tenant_id,
                    key=f"{segment.tenant_id}:{profile_id}",
                )
                for profile_id, found in rows
            ],
        )
        members += len(rows)
        after = rows[-1][0]


# -- reading ---------------------------------------------------------------------------------------------


_LOCKS: dict[str, Any] = {"change": {"key_share": True}, "delete": True}


def get_segment(
    segment_id: UUID, *, tenant_id: UUID, session: Session, lock: Literal["change", "delete"] | None = None
) -> Segment:
    """The tenant's segment (404 otherwise). `lock` holds it until the transaction ends (PostgreSQL):
    "change" against another change or a deletion (FOR NO KEY UPDATE: membership changes that reference
    the segment go on), "delete" against everything (a membership change waits, then fails on the
    foreign key and is retried without the segment)."""
    segment = session.get(Segment, segment_id, with_for_update=_LOCKS[lock] if lock else None)
    if segment is None or segment.tenant_id != tenant_id:
        raise NotFound("No segment with this id.")
    return segment


def list_segments(
    *, tenant_id: UUID, session: Session, after: UUID | None = None, limit: int = 1000
) -> list[Segment]:
    """Oldest first; `after` is the last id of the previous page."""
    query = select(Segment).where(Segment.tenant_id == tenant_id)
    last = session.get(Segment, after) if after is not None else None
    if last is not None and last.tenant_id == tenant_id:
        query = query.where(after_row(col(Segment.created_at), col(Segment.id), last.created_at, last.id))
    return list(session.exec(query.order_by(col(Segment.created_at), col(Segment.id)).limit(limit)).all())


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
