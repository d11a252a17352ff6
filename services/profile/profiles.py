"""Profile domain logic: a profile per person within a tenant, found through its identifiers, with
traits recomputed from its orders.

Which profile a record belongs to, and merges, are decided in `identity`; here the traits are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.profile import identity, traits
from services.profile.models import MergeRecord, Profile, ProfileIdentifier, ProfileOrder
from shared.db import utcnow
from shared.errors import Invalid, NotFound
from shared.events import (
    BehaviourRecorded,
    CustomerRecorded,
    Envelope,
    Event,
    OrderIngested,
    ProfilesMerged,
    ProfileUpdated,
)
from shared.normalize import is_relay_email, normalize_document, normalize_email, normalize_phone
from shared.outbox import add_event
from shared.records import Consent, Customer, CustomerRecord, CustomerRef, from_minor, to_minor


def profile_key(tenant_id: UUID, profile_id: UUID) -> str:
    return f"{tenant_id}:{profile_id}"


def apply_order(session: Session, envelope: Envelope, event: OrderIngested) -> None:
    """Handler for OrderIngested: attach the order version to its profile and recompute the traits."""
    tenant_id = envelope.tenant_id
    order = event.order
    profile, merges = _resolve(session, envelope, identifiers_for(event), order.customer)
    record_customer(profile, order.customer, order.consents, at=order.updated_at or order.placed_at)
    stored = _stored_order(session, event.order_id)
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
    stored.items = [{"sku": i.sku, "category": i.category, "quantity": i.quantity} for i in order.items]
    stored.payments = [{"method": p.method.value, "installments": p.installments} for p in order.payments]
    session.add(stored)
    known = session.info.get("known_orders")
    if isinstance(known, dict):
        known[stored.order_id] = stored  # a later version in the same batch finds it

    recompute(session, profile, correlation_id=envelope.correlation_id)
    if previous_profile_id is not None and previous_profile_id != profile.id:
        # The order's e-mail changed: the profile it left must be recomputed too.
        previous = session.get(Profile, previous_profile_id)
        if previous is not None:
            recompute(session, previous, correlation_id=envelope.correlation_id)


def _resolve(
    session: Session,
    envelope: Envelope,
    identifiers: list[identity.Identifier],
    customer: Customer | CustomerRef | None,
) -> tuple[Profile, list[MergeRecord]]:
    """The record's profile after identity resolution; merged profiles' traits folded into survivors."""
    email = customer.email if customer is not None else None
    profile, merges = identity.resolve(
        session,
        envelope.tenant_id,
        identifiers,
        contact_email=email if email and not is_relay_email(email) else None,
        event_id=envelope.event_id,
    )
    for record in merges:
        survivor, merged = session.get(Profile, record.survivor_id), session.get(Profile, record.merged_id)
        if survivor is not None and merged is not None:
            absorb(survivor, merged)
    announce_merges(session, merges, correlation_id=envelope.correlation_id)
    return profile, merges


ATTRIBUTES = ("name", "birth_date", "gender")
LOCATION = ("city", "state", "zip", "country")


def record_customer(
    profile: Profile, customer: Customer | CustomerRecord, consents: Sequence[Consent], *, at: datetime
) -> None:
    """Demographics, location and consents from a record: the newest data wins; nothing is erased by a
    record that lacks a field."""
    if profile.attributes_at is None or at >= profile.attributes_at:
        for field in ATTRIBUTES:
            value = getattr(customer, field)
            if value is not None:
                setattr(profile, field, value.value if field == "gender" else value)
        if customer.address is not None:
            for field in LOCATION:
                value = getattr(customer.address, field)
                if value is not None:
                    setattr(profile, field, value)
        profile.attributes_at = at
    decisions = dict(profile.consents)
    for consent in consents:
        when = (consent.at or at).isoformat()
        current = decisions.get(consent.purpose.value)
        if current is None or when >= current["at"]:
            decisions[consent.purpose.value] = {
                "status": consent.status.value,
                "at": when,
                "source": consent.source,
                "text_version": consent.text_version,
            }
    profile.consents = decisions


def absorb(survivor: Profile, merged: Profile) -> None:
    """Fold a merged profile's own data into the survivor (orders and identifiers moved already)."""
    for field in (*ATTRIBUTES, *LOCATION):
        if getattr(survivor, field) is None:
            setattr(survivor, field, getattr(merged, field))
    decisions = dict(survivor.consents)
    for purpose, decision in merged.consents.items():
        if purpose not in decisions or decision["at"] > decisions[purpose]["at"]:
            decisions[purpose] = decision
    survivor.consents = decisions
    survivor.behaviour = {
        k: survivor.behaviour.get(k, 0) + merged.behaviour.get(k, 0)
        for k in {*survivor.behaviour, *merged.behaviour}
    }
    seen = [t for t in (survivor.last_seen_at, merged.last_seen_at) if t is not None]
    survivor.last_seen_at = max(seen) if seen else None


def apply_customer_record(session: Session, envelope: Envelope, event: CustomerRecorded) -> None:
    """Handler for CustomerRecorded: identity, demographics, location and consents from a CRM/form record."""
    record = event.customer
    profile, _ = _resolve(session, envelope, identifiers_for(event), record)
    record_customer(profile, record, record.consents, at=record.updated_at or envelope.occurred_at)
    recompute(session, profile, correlation_id=envelope.correlation_id)


def apply_behaviour(session: Session, envelope: Envelope, event: BehaviourRecorded) -> None:
    """Handler for BehaviourRecorded: who did it (known identifiers and/or the device), last seen, counts."""
    behaviour = event.event
    profile, _ = _resolve(session, envelope, identifiers_for(event), behaviour.customer)
    if profile.last_seen_at is None or behaviour.occurred_at > profile.last_seen_at:
        profile.last_seen_at = behaviour.occurred_at
    counts = dict(profile.behaviour)
    counts[behaviour.type.value] = counts.get(behaviour.type.value, 0) + 1
    profile.behaviour = counts
    recompute(session, profile, correlation_id=envelope.correlation_id)


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


def identifiers_for(event: OrderIngested | CustomerRecorded | BehaviourRecorded) -> list[identity.Identifier]:
    """The identifiers a record carries (what identity resolution looks up)."""
    if isinstance(event, OrderIngested):
        return identity.identifiers_of(event.order.customer, event.order.source)
    if isinstance(event, CustomerRecorded):
        return identity.identifiers_of(event.customer, event.customer.source)
    behaviour = event.event
    found = identity.identifiers_of(behaviour.customer, behaviour.source) if behaviour.customer else []
    if behaviour.anonymous_id:
        found.append(("anonymous_id", f"{behaviour.source}:{behaviour.anonymous_id}"))
    return found


class ProfileBatch:
    """Batch hooks of the records consumer: the identity graph and the stored orders a poll's events
    touch are loaded in a few queries, and each touched profile is recomputed (and announced) once per
    batch instead of once per event."""

    def prepare(self, session: Session, events: list[tuple[Envelope, Event]]) -> None:
        graph = identity.Graph()
        wanted: dict[UUID, set[identity.Identifier]] = {}
        order_ids: list[UUID] = []
        for envelope, event in events:
            if isinstance(event, OrderIngested | CustomerRecorded | BehaviourRecorded):
                wanted.setdefault(envelope.tenant_id, set()).update(identifiers_for(event))
            if isinstance(event, OrderIngested):
                order_ids.append(event.order_id)
        graph.preload(session, wanted)
        known: dict[UUID, ProfileOrder | None] = dict.fromkeys(order_ids)
        if order_ids:
            for stored in session.exec(select(ProfileOrder).where(col(ProfileOrder.order_id).in_(order_ids))):
                known[stored.order_id] = stored
                graph.keep.append(stored)
        session.info.update(identity_graph=graph, known_orders=known, dirty={})

    def finish(self, session: Session) -> None:
        dirty: dict[UUID, str | None] = session.info.pop("dirty", {})
        session.info.pop("identity_graph", None)
        session.info.pop("known_orders", None)
        if not dirty:
            return
        orders: dict[UUID, list[ProfileOrder]] = {pid: [] for pid in dirty}
        for stored in session.exec(select(ProfileOrder).where(col(ProfileOrder.profile_id).in_(list(dirty)))):
            orders[stored.profile_id].append(stored)
        for profile_id in sorted(dirty):
            profile = session.get(Profile, profile_id)
            if profile is not None and profile.status == "active":
                _recompute_now(session, profile, orders[profile_id], correlation_id=dirty[profile_id])


def _stored_order(session: Session, order_id: UUID) -> ProfileOrder | None:
    known = session.info.get("known_orders")
    if isinstance(known, dict) and order_id in known:
        found: ProfileOrder | None = known[order_id]
        return found
    return session.get(ProfileOrder, order_id)


def recompute(session: Session, profile: Profile, *, correlation_id: str | None = None) -> None:
    """Recompute the profile's traits and announce them: now, or once at the end of a consumer batch."""
    dirty = session.info.get("dirty")
    if isinstance(dirty, dict):
        dirty[profile.id] = correlation_id
        return
    rows = list(session.exec(select(ProfileOrder).where(ProfileOrder.profile_id == profile.id)).all())
    _recompute_now(session, profile, rows, correlation_id=correlation_id)


def _recompute_now(
    session: Session, profile: Profile, rows: list[ProfileOrder], *, correlation_id: str | None
) -> None:
    facts = [
        traits.OrderFacts(o.source, o.status, o.total_minor, o.placed_at, o.items, o.payments) for o in rows
    ]
    computed = traits.purchase_traits(facts)
    profile.orders_count = computed.orders_count
    profile.total_spent_minor = computed.total_spent_minor
    profile.first_order_at = computed.first_order_at
    profile.last_order_at = computed.last_order_at
    profile.purchases = computed.purchases
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
            sources=sorted(profile.purchases.get("by_source", {})),
            categories=profile.purchases.get("top_categories", []),
            preferred_payment_method=profile.purchases.get("preferred_payment_method"),
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


def timeline(profile_id: UUID, *, tenant_id: UUID, session: Session, limit: int) -> list[dict[str, Any]]:
    """What happened to this person, newest first: orders (latest version each) and merges."""
    profile = get_profile(profile_id, tenant_id=tenant_id, session=session)
    owner = profile.merged_into or profile.id
    entries: list[dict[str, Any]] = [
        {
            "at": order.placed_at,
            "type": "order",
            "order_id": str(order.order_id),
            "source": order.source,
            "status": order.status,
            "total": str(from_minor(order.total_minor)),
            "version": order.order_version,
        }
        for order in session.exec(
            select(ProfileOrder)
            .where(ProfileOrder.profile_id == owner)
            .order_by(col(ProfileOrder.placed_at).desc())
            .limit(limit)
        )
    ]
    entries += [
        {
            "at": record.created_at,
            "type": "merge",
            "merge_id": str(record.id),
            "survivor_id": str(record.survivor_id),
            "merged_id": str(record.merged_id),
            "rule": record.rule,
        }
        for record in list_merges(owner, tenant_id=tenant_id, session=session)
    ]
    return sorted(entries, key=lambda e: e["at"], reverse=True)[:limit]
