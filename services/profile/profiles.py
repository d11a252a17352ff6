"""Profile domain logic: a profile per person within a tenant, found through its identifiers, with
traits recomputed from its orders.

Which profile a record belongs to, and merges, are decided in `identity`; here the traits are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.profile import identity
from services.profile.models import MergeRecord, Profile, ProfileIdentifier, ProfileOrder
from shared.db import utcnow
from shared.errors import Invalid, NotFound
from shared.events import Envelope, OrderIngested, ProfilesMerged, ProfileUpdated
from shared.normalize import is_relay_email, normalize_document, normalize_email, normalize_phone
from shared.outbox import add_event
from shared.records import OrderStatus, from_minor, to_minor

COUNTED_STATUSES = [s.value for s in OrderStatus if s.counts_as_spend]


def profile_key(tenant_id: UUID, profile_id: UUID) -> str:
    return f"{tenant_id}:{profile_id}"


def apply_order(session: Session, envelope: Envelope, event: OrderIngested) -> None:
    """Handler for OrderIngested: attach the order version to its profile and recompute the traits."""
    tenant_id = envelope.tenant_id
    order = event.order
    email = order.customer.email
    contact_email = email if email and not is_relay_email(email) else None
    profile, merges = identity.resolve(
        session,
        tenant_id,
        identity.identifiers_of(order.customer, order.source),
        contact_email=contact_email,
        event_id=envelope.event_id,
    )
    announce_merges(session, merges, correlation_id=envelope.correlation_id)

    stored = session.get(ProfileOrder, event.order_id)
    if stored is not None and stored.order_version >= event.order_version:
        if merges:
            recompute(session, profile, correlation_id=envelope.correlation_id)
        return  # an older version arriving late never overwrites a newer one
    previous_profile_id = stored.profile_id if stored is not None else None
    if stored is None:
        stored = ProfileOrder(
            order_id=event.order_id,
            tenant_id=tenant_id,
            profile_id=profile.id,
            order_version=event.order_version,
            source=order.source,
            status=order.status.value,
            total_minor=to_minor(order.total),
            placed_at=order.placed_at,
        )
    stored.profile_id = profile.id
    stored.order_version = event.order_version
    stored.status = order.status.value
    stored.total_minor = to_minor(order.total)
    stored.placed_at = order.placed_at
    session.add(stored)
    session.flush()

    recompute(session, profile, correlation_id=envelope.correlation_id)
    if previous_profile_id is not None and previous_profile_id != profile.id:
        # The order's e-mail changed: the profile it left must be recomputed too.
        previous = session.get(Profile, previous_profile_id)
        if previous is not None:
            recompute(session, previous, correlation_id=envelope.correlation_id)


def announce_merges(session: Session, merges: list[MergeRecord], *, correlation_id: str | None) -> None:
    for record in merges:
        add_event(
            session,
            ProfilesMerged(
                survivor_id=record.survivor_id,
                merged_id=record.merged_id,
                rule=record.rule,
                merge_id=record.id,
            ),
            tenant_id=record.tenant_id,
            # The merged profile's key: after its last update, in the same partition.
            key=profile_key(record.tenant_id, record.merged_id),
            correlation_id=correlation_id,
        )


def recompute(session: Session, profile: Profile, *, correlation_id: str | None = None) -> None:
    """Recompute purchase traits from the stored orders and announce them (ProfileUpdated)."""
    count, total, first, last = session.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(ProfileOrder.total_minor), 0),
            sa.func.min(ProfileOrder.placed_at),
            sa.func.max(ProfileOrder.placed_at),
        ).where(col(ProfileOrder.profile_id) == profile.id, col(ProfileOrder.status).in_(COUNTED_STATUSES))
    ).one()
    profile.orders_count = int(count)
    profile.total_spent_minor = int(total)
    profile.first_order_at = first
    profile.last_order_at = last
    profile.version += 1
    profile.updated_at = utcnow()
    session.add(profile)
    add_event(
        session,
        ProfileUpdated(
            profile_id=profile.id,
            profile_version=profile.version,
            orders_count=profile.orders_count,
            total_spent=from_minor(profile.total_spent_minor),
            first_order_at=profile.first_order_at,
            last_order_at=profile.last_order_at,
        ),
        tenant_id=profile.tenant_id,
        key=profile_key(profile.tenant_id, profile.id),
        correlation_id=correlation_id,
    )


def get_profile(profile_id: UUID, *, tenant_id: UUID, session: Session) -> Profile:
    profile = session.get(Profile, profile_id)
    if profile is None or profile.tenant_id != tenant_id:
        raise NotFound("No profile with this id.")
    return profile


def list_merges(profile_id: UUID, *, tenant_id: UUID, session: Session) -> list[MergeRecord]:
    """The merges this profile took part in (as survivor or as the merged one), oldest first."""
    get_profile(profile_id, tenant_id=tenant_id, session=session)
    query = select(MergeRecord).where(
        MergeRecord.tenant_id == tenant_id,
        sa.or_(col(MergeRecord.survivor_id) == profile_id, col(MergeRecord.merged_id) == profile_id),
    )
    return list(session.exec(query.order_by(col(MergeRecord.created_at))).all())


def _document(value: str) -> str:
    return normalize_document(value)[1]


LOOKUPS: dict[str, Callable[[str], str]] = {
    "email": normalize_email,
    "phone": normalize_phone,
    "document": _document,
}


def list_profiles(
    *, tenant_id: UUID, session: Session, lookup: dict[str, str], after: UUID | None, limit: int
) -> list[Profile]:
    """Profiles of a tenant, optionally only those owning the given identifiers (normalised first)."""
    query = select(Profile).where(Profile.tenant_id == tenant_id, Profile.status == "active")
    for kind, raw in lookup.items():
        try:
            value = LOOKUPS[kind](raw) if kind in LOOKUPS else raw
        except ValueError:
            raise Invalid(f"`{kind}` is not valid.") from None
        owner = select(ProfileIdentifier.profile_id).where(
            ProfileIdentifier.tenant_id == tenant_id,
            ProfileIdentifier.kind == kind,
            ProfileIdentifier.value == value,
        )
        query = query.where(col(Profile.id).in_(owner))
    if after is not None:
        query = query.where(col(Profile.id) > after)
    return list(session.exec(query.order_by(col(Profile.id)).limit(limit)).all())
