"""Profile domain logic: a profile per person within a tenant, found through its identifiers, with
traits recomputed from its orders.

Identity, first stage: an order's identifiers (e-mail, phone, document, the source's customer id) are
looked up; the order joins the oldest profile that owns any of them, and the identifiers nobody owns yet
are attached to it. Merging two existing profiles (and undoing a merge) is the next stage.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.profile.models import Profile, ProfileIdentifier, ProfileOrder
from shared.db import utcnow
from shared.errors import Invalid, NotFound
from shared.events import Envelope, OrderIngested, ProfileUpdated
from shared.normalize import is_relay_email, normalize_document, normalize_email, normalize_phone
from shared.outbox import add_event
from shared.records import Customer, CustomerRef, OrderStatus, from_minor, to_minor

COUNTED_STATUSES = [s.value for s in OrderStatus if s.counts_as_spend]


def profile_key(tenant_id: UUID, profile_id: UUID) -> str:
    return f"{tenant_id}:{profile_id}"


def apply_order(session: Session, envelope: Envelope, event: OrderIngested) -> None:
    """Handler for OrderIngested: attach the order version to its profile and recompute the traits."""
    tenant_id = envelope.tenant_id
    order = event.order
    email = order.customer.email
    contact_email = email if email and not is_relay_email(email) else None
    profile = resolve(session, tenant_id, identifiers_of(order.customer, order.source), contact_email)

    stored = session.get(ProfileOrder, event.order_id)
    if stored is not None and stored.order_version >= event.order_version:
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


def identifiers_of(customer: Customer | CustomerRef, source: str) -> list[tuple[str, str]]:
    """The (kind, normalised value) pairs that identify a customer, strongest first."""
    found: list[tuple[str, str]] = []
    if customer.document:
        found.append(("document", customer.document))
    if customer.email and is_relay_email(customer.email):
        found.append(("relay_email", f"{source}:{customer.email}"))  # identifies only within its marketplace
    elif customer.email:
        found.append(("email", customer.email))
    if customer.phone:
        found.append(("phone", customer.phone))
    if customer.external_id:
        found.append(("customer_id", f"{source}:{customer.external_id}"))
    return found


def resolve(
    session: Session, tenant_id: UUID, identifiers: list[tuple[str, str]], email: str | None
) -> Profile:
    """The profile these identifiers belong to (created when none does); unowned identifiers join it."""
    owned = {
        (row.kind, row.value): row.profile_id
        for row in session.exec(
            select(ProfileIdentifier).where(
                ProfileIdentifier.tenant_id == tenant_id,
                sa.tuple_(col(ProfileIdentifier.kind), col(ProfileIdentifier.value)).in_(identifiers),
            )
        )
    }
    owners = set(owned.values())
    profile: Profile | None = None
    if owners:
        profile = session.exec(
            select(Profile)
            .where(col(Profile.id).in_(owners))
            .order_by(col(Profile.created_at), col(Profile.id))
        ).first()
    if profile is None:
        profile = Profile(tenant_id=tenant_id, email=email)
        session.add(profile)
        session.flush()
    elif profile.email is None and email is not None and owned.get(("email", email)) in (None, profile.id):
        profile.email = email
    for kind, value in identifiers:
        if (kind, value) not in owned:
            session.add(ProfileIdentifier(tenant_id=tenant_id, kind=kind, value=value, profile_id=profile.id))
    session.flush()
    return profile


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
    query = select(Profile).where(Profile.tenant_id == tenant_id)
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
