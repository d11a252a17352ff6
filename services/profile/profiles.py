"""Profile domain logic: a profile per person within a tenant, found through its identifiers, with
traits recomputed from its orders.

Which profile a record belongs to, and merges, are decided in `identity`; here the traits are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from typing import Any, Protocol, TypeVar, cast
from uuid import UUID, uuid4

import orjson
import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.profile import identity, identity_rules, probabilistic, traits
from services.profile.models import (
    BlockKeyCheck,
    MergeRecord,
    Profile,
    ProfileIdentifier,
    ProfileOrder,
    ProfileRecord,
    SealedRow,
    open_snapshot,
    seal_snapshot,
)
from services.profile.suppression import suppressed
from shared.consumer import describe_error
from shared.crypto import keyring
from shared.db import (
    add_new,
    any_of,
    assign,
    copy_new_rows,
    is_deadlock,
    new_row,
    table_of,
    utcnow,
    write_columns,
)
from shared.errors import Invalid, NotFound
from shared.events import (
    BehaviourRecorded,
    CustomerRecorded,
    Envelope,
    Event,
    OrderIngested,
    ProfilesMerged,
    ProfileUpdatedV2,
    TenantMismatch,
)
from shared.normalize import is_relay_email, normalize_document, normalize_email, normalize_phone
from shared.outbox import add_event
from shared.records import (
    Consent,
    Customer,
    CustomerRecord,
    CustomerRef,
    Order,
    average_order_value,
    from_minor,
    to_minor,
)

log = logging.getLogger(__name__)


def profile_key(tenant_id: UUID, profile_id: UUID) -> str:
    return f"{tenant_id}:{profile_id}"


def apply_order(session: Session, envelope: Envelope, event: OrderIngested) -> None:
    """Handler for OrderIngested: keep the order's latest version with its profile; the traits follow."""
    order = event.order
    stored = _stored(session, ProfileOrder, event.order_id)
    if stored is not None and stored.tenant_id != envelope.tenant_id:
        raise TenantMismatch("the order")
    identifiers = identifiers_for(event)
    if suppressed(session, envelope.tenant_id, identifiers):
        return  # a person erased at their request (LGPD): see services.profile.suppression
    profile, merges = _resolve(
        session, envelope, identifiers, order.customer, order.updated_at or order.placed_at
    )
    if stored is not None and stored.order_version >= event.order_version:
        if merges:
            recompute(session, profile, correlation_id=envelope.correlation_id)
        return  # an older version arriving late never overwrites a newer one
    previous_profile_id = stored.profile_id if stored is not None else None
    latest = {
        "profile_id": profile.id,
        "order_version": event.order_version,
        **order_facts(order),
        "identifiers": [
            [kind, value] for kind, value in identity.blind_in(session, envelope.tenant_id, identifiers)
        ],
        "customer": seal_snapshot(
            envelope.tenant_id,
            snapshot(order.customer, order.consents, at=order.updated_at or order.placed_at),
        ),
        "recorded_at": utcnow(),
    }
    if stored is None:
        stored = new_row(
            ProfileOrder, order_id=event.order_id, tenant_id=envelope.tenant_id, source=order.source, **latest
        )
        add_new(session, stored)
    else:
        assign(stored, **latest)
        if stored not in session:
            session.add(stored)
    _keep(session, ProfileOrder, stored.order_id, stored)

    recompute(session, profile, correlation_id=envelope.correlation_id)
    if previous_profile_id is not None and previous_profile_id != profile.id:
        # The order's identifiers changed: the profile it left must be recomputed too.
        previous = session.get(Profile, previous_profile_id)
        if previous is not None:
            recompute(session, previous, correlation_id=envelope.correlation_id)


def order_facts(order: Order) -> dict[str, Any]:
    """What a stored order (`ProfileOrder`) keeps of the order for the traits, as its columns."""
    return {
        "status": order.status.value,
        "total_minor": to_minor(order.total),
        "placed_at": order.placed_at,
        "items": [{"sku": i.sku, "category": i.category, "quantity": i.quantity} for i in order.items],
        "payments": [{"method": p.method.value, "installments": p.installments} for p in order.payments],
    }


def _check_record_tenant(session: Session, envelope: Envelope, record_id: UUID) -> None:
    known = _stored(session, ProfileRecord, record_id)
    if known is not None and known.tenant_id != envelope.tenant_id:
        raise TenantMismatch("the record")


# The orders and records a consumer batch's events name, loaded once (`ProfileBatch.prepare`) and kept
# current by the handlers, in the session's `info` under these keys.
_KNOWN_ROWS = {ProfileOrder: "known_orders", ProfileRecord: "known_records"}
Row = TypeVar("Row", ProfileOrder, ProfileRecord)


def _stored(session: Session, model: type[Row], key: UUID) -> Row | None:
    """The row stored under this key: from those the consumer batch loaded and stored (no query and no
    flush per event), else read."""
    known = session.info.get(_KNOWN_ROWS[model])
    if isinstance(known, dict) and key in known:
        return cast(Row | None, known[key])
    return session.get(model, key)


def _keep(session: Session, model: type[Row], key: UUID, row: Row) -> None:
    """`row` is now stored under `key`: a later version in the same batch finds it (`_stored`)."""
    known = session.info.get(_KNOWN_ROWS[model])
    if isinstance(known, dict):
        known[key] = row


def _load_stored(session: Session, model: type[Row], keys: list[UUID]) -> dict[UUID, Row | None]:
    """The rows stored under these keys (primary keys), in one query: None for those not stored yet."""
    (column,) = table_of(model).primary_key.columns
    found: dict[UUID, Row | None] = dict.fromkeys(keys)
    if keys:
        for row in session.exec(select(model).where(any_of(session, column, keys))):
            found[getattr(row, column.key)] = row
    return found


def _resolve(
    session: Session,
    envelope: Envelope,
    identifiers: list[identity.Identifier],
    customer: Customer | CustomerRef | None,
    seen_at: datetime,
) -> tuple[Profile, list[MergeRecord]]:
    """The record's profile after identity resolution (merges announced); `seen_at`: the record's time."""
    email = customer.email if customer is not None else None
    profile, merges = identity.resolve(
        session,
        envelope.tenant_id,
        identifiers,
        contact_email=email if email and not is_relay_email(email) else None,
        contact_phone=customer.phone if customer is not None else None,
        event_id=envelope.event_id,
        seen_at=seen_at,
    )
    announce_merges(session, merges, correlation_id=envelope.correlation_id)
    return profile, merges


def snapshot(
    customer: Customer | CustomerRecord | None, consents: Sequence[Consent], *, at: datetime
) -> dict[str, Any]:
    """What a record says about the person (demographics, location, consents) and when: what
    `traits.customer_traits` folds into the profile. Stored through `models.seal_snapshot`."""
    found: dict[str, Any] = {"at": at.isoformat()}
    if customer is not None:
        found["name"] = customer.name
        found["birth_date"] = customer.birth_date.isoformat() if customer.birth_date else None
        found["gender"] = customer.gender.value if customer.gender else None
        if customer.address is not None:
            for field in ("city", "state", "zip", "country"):
                found[field] = getattr(customer.address, field)
    found["consents"] = [
        {
            "purpose": c.purpose.value,
            "status": c.status.value,
            "at": (c.at or at).isoformat(),
            "source": c.source,
            "text_version": c.text_version,
        }
        for c in consents
    ]
    return {k: v for k, v in found.items() if v is not None}


def apply_customer_record(session: Session, envelope: Envelope, event: CustomerRecorded) -> None:
    """Handler for CustomerRecorded: identity, demographics, location and consents from a CRM/form record."""
    record = event.customer
    _check_record_tenant(session, envelope, event.record_id)
    identifiers = identifiers_for(event)
    if suppressed(session, envelope.tenant_id, identifiers):
        return  # a person erased at their request (LGPD)
    profile, merges = _resolve(
        session, envelope, identifiers, record, record.updated_at or envelope.occurred_at
    )
    stored = _stored(session, ProfileRecord, event.record_id)
    if stored is not None and stored.record_version >= event.record_version:
        if merges:
            recompute(session, profile, correlation_id=envelope.correlation_id)
        return  # an older version arriving late never overwrites a newer one
    if stored is not None:
        previous = session.get(Profile, stored.profile_id)
        if sa.inspect(stored).pending:  # stored by this batch, not written yet: replaced before it is
            session.expunge(stored)
        else:
            session.delete(stored)
            session.flush()
        if previous is not None and previous.id != profile.id:
            recompute(session, previous, correlation_id=envelope.correlation_id)
    at = record.updated_at or envelope.occurred_at
    _store_record(
        session,
        envelope,
        profile,
        identifiers_for(event),
        id=event.record_id,
        record_version=event.record_version,
        kind="customer",
        type="customer_record",
        source=record.source,
        occurred_at=at,
        customer=seal_snapshot(envelope.tenant_id, snapshot(record, record.consents, at=at)),
    )


def apply_behaviour(session: Session, envelope: Envelope, event: BehaviourRecorded) -> None:
    """Handler for BehaviourRecorded: who did it (known identifiers and/or the device) and what."""
    behaviour = event.event
    _check_record_tenant(session, envelope, event.record_id)
    identifiers = identifiers_for(event)
    if suppressed(session, envelope.tenant_id, identifiers):
        return  # a person erased at their request (LGPD)
    profile, _ = _resolve(session, envelope, identifiers, behaviour.customer, behaviour.occurred_at)
    properties = {
        k: str(behaviour.properties[k])[:200] for k in ("sku", "category") if behaviour.properties.get(k)
    }
    _store_record(
        session,
        envelope,
        profile,
        identifiers_for(event),
        id=event.record_id,
        kind="behaviour",
        type=behaviour.type.value,
        source=behaviour.source,
        occurred_at=behaviour.occurred_at,
        properties=properties,
    )


def _store_record(
    session: Session,
    envelope: Envelope,
    profile: Profile,
    identifiers: list[identity.Identifier],
    **fields: Any,
) -> None:
    """Keep the record in the profile's history (traits are computed from it)."""
    record = new_row(
        ProfileRecord,
        tenant_id=envelope.tenant_id,
        profile_id=profile.id,
        identifiers=[
            [kind, value] for kind, value in identity.blind_in(session, envelope.tenant_id, identifiers)
        ],
        **fields,
    )
    add_new(session, record)
    _keep(session, ProfileRecord, record.id, record)
    recompute(session, profile, correlation_id=envelope.correlation_id)


def _linked_to(
    busy: set[tuple[UUID, str, str]],
    carried: list[tuple[UUID, list[tuple[UUID, str, str]], UUID]],
    owner: dict[tuple[UUID, str, str], UUID | None],
) -> set[UUID]:
    """The events (ids) that carry one of the `busy` identifiers, and every event linked to one of them
    through an identifier, its owner or the same order or record: one person's events stay together."""
    parent: dict[object, object] = {}

    def root(node: object) -> object:
        path = []
        while (up := parent.setdefault(node, node)) != node:
            path.append(node)
            node = up
        for step in path:
            parent[step] = node
        return node

    for event_id, identifiers, record in carried:
        links: list[object] = [*identifiers, record]
        links += [found for i in identifiers if (found := owner.get(i)) is not None]
        mine = root(event_id)
        for node in links:
            other = root(node)
            if other != mine:
                parent[other] = mine
    waiting = {root(key) for key in busy}
    return {event_id for event_id, _, _ in carried if root(event_id) in waiting}


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


# The batch's `BlockKeyCheck` id and the blocking keys its second stage inserted, with the holders it saw
# (`probabilistic.SeenKeys`), for `ProfileBatch.after_commit`; and how often that tries to score the pairs
# it finds.
_SEEN_KEYS = "clientela.block_keys_seen"
MISSED_PAIRS_ATTEMPTS = 3
# A batch's `BlockKeyCheck` left this long is read again by another batch, a few at a time.
STALE_CHECK_S = 60.0
STALE_CHECKS_PER_BATCH = 5


class ProfileBatch:
    """Batch hooks of the records consumer: the identity graph and the stored orders a poll's events
    touch are loaded in a few queries, and each touched profile is recomputed (and announced) once per
    batch instead of once per event; then the probabilistic stage looks at the changed profiles."""

    def __init__(self, defaults: identity_rules.IdentityRules = identity_rules.DEFAULT) -> None:
        # The service's rules, for tenants without their own (`identity_rules.service_defaults`).
        self.defaults = defaults

    def prepare(
        self, session: Session, events: list[tuple[Envelope, Event]], *, may_defer: bool = False
    ) -> set[UUID]:
        """Load the graph and the stored orders and records the events touch. With `may_defer`, returns
        the events (ids) another transaction's records are in the way of (`identity.Graph.preload`):
        those, and every event of the batch linked to them by an identifier, an owner or a record, are
        left for a transaction after this one."""
        graph = identity.Graph()
        wanted: dict[UUID, set[identity.Identifier]] = {}
        carried: list[tuple[UUID, list[tuple[UUID, str, str]], UUID]] = []
        for envelope, event in events:
            if isinstance(event, OrderIngested | CustomerRecorded | BehaviourRecorded):
                tenant_id = envelope.tenant_id
                blinded = identity.blind(tenant_id, identifiers_for(event), graph.blinded)
                wanted.setdefault(tenant_id, set()).update(blinded)
                key = event.order_id if isinstance(event, OrderIngested) else event.record_id
                carried.append((envelope.event_id, [(tenant_id, *i) for i in blinded], key))
        busy = graph.preload(session, wanted, may_defer=may_defer)
        deferred = _linked_to(busy, carried, graph.owner) if busy and may_defer else set()
        order_ids: list[UUID] = []
        record_ids: list[UUID] = []
        for envelope, event in events:
            if envelope.event_id in deferred:
                continue
            if isinstance(event, OrderIngested):
                order_ids.append(event.order_id)
            elif isinstance(event, CustomerRecorded | BehaviourRecorded):
                record_ids.append(event.record_id)
        orders = _load_stored(session, ProfileOrder, order_ids)
        graph.keep.extend(stored for stored in orders.values() if stored is not None)
        session.info.update(
            identity_graph=graph,
            known_orders=orders,
            known_records=_load_stored(session, ProfileRecord, record_ids),
            dirty={},
            identity_defaults=self.defaults,
        )
        session.info[probabilistic.NO_WAITING] = may_defer
        copy_new_rows(session, Profile, ProfileIdentifier, ProfileOrder, ProfileRecord)
        return deferred

    def finish(self, session: Session) -> None:
        dirty: dict[UUID, str | None] = session.info.pop("dirty", {})
        known = session.info.pop("identity_graph", None)
        loaded: dict[UUID, Profile] = {}
        if isinstance(known, identity.Graph):
            identity.write_sightings(session, known)
            loaded = known.profiles
        for key in _KNOWN_ROWS.values():
            session.info.pop(key, None)
        session.flush()
        identity.move_deferred_rows(session)  # the batch's merges' rows, before anything reads them
        try:
            if dirty:
                profiles = self._recompute(session, dirty, loaded)
                seen: probabilistic.SeenKeys = {}
                match_rounds(session, profiles, dirty, seen=seen)
                if seen:  # kept with the batch: read again after it commits, by this consumer or another
                    check = BlockKeyCheck(keys=probabilistic.stored_seen(seen))
                    session.add(check)
                    session.info[_SEEN_KEYS] = (check.id, seen)
        finally:
            session.info.pop("identity_rules", None)  # a rule change applies from the next batch
            session.info.pop("identity_defaults", None)
            session.info.pop(probabilistic.NO_WAITING, None)

    def after_commit(self, session: Session) -> None:
        """Score the pairs the batch's second stage could not see (`probabilistic.missed_pairs`: another
        consumer of the group stored look-alikes at the same time), in a transaction of their own, and
        delete the batch's `BlockKeyCheck`; with those of batches whose consumer could not (stopped, or
        failed here), once they are `STALE_CHECK_S` old. Most batches find no pair: one query per thousand
        keys, and the delete."""
        checks: list[tuple[UUID, probabilistic.SeenKeys]] = []
        own = session.info.pop(_SEEN_KEYS, None)
        if own is not None:
            checks.append(own)
        cutoff = utcnow() - timedelta(seconds=STALE_CHECK_S)
        stale = (
            select(BlockKeyCheck)
            .where(col(BlockKeyCheck.created_at) < cutoff)
            .order_by(col(BlockKeyCheck.created_at))
            .limit(STALE_CHECKS_PER_BATCH)
            .with_for_update(skip_locked=True)
        )
        checks += [(row.id, probabilistic.loaded_seen(row.keys)) for row in session.exec(stale)]
        if not checks:
            session.rollback()  # only read: end the transaction
            return
        failure: Exception | None = None
        for attempt in range(1, MISSED_PAIRS_ATTEMPTS + 1):
            self.defaults_into(session)
            try:
                pairs = set().union(*(probabilistic.missed_pairs(session, seen) for _, seen in checks))
                merges = probabilistic.score_missed(session, pairs) if pairs else []
                merges = take_in(session, merges, {}, {})
                ids = [check_id for check_id, _ in checks]
                session.execute(sa.delete(BlockKeyCheck).where(col(BlockKeyCheck.id).in_(ids)))
                session.commit()
                if merges:
                    log.info("pairs a concurrent batch hid merged", extra={"merges": len(merges)})
                return
            except sa.exc.IntegrityError as exc:
                failure = exc
            except sa.exc.OperationalError as exc:
                if not is_deadlock(exc):
                    raise
                failure = exc
            session.rollback()
            log.info("scoring missed pairs met a concurrent write", extra={"attempt": attempt})
        log.warning(
            "missed pairs left for a later batch",
            extra={"error": describe_error(failure) if failure is not None else None},
        )

    def defaults_into(self, session: Session) -> None:
        """The service's identity rules, for the tenants without their own (`identity_rules.rules_for`)."""
        session.info["identity_defaults"] = self.defaults
        session.info.pop("identity_rules", None)

    @staticmethod
    def _recompute(
        session: Session, dirty: dict[UUID, str | None], loaded: dict[UUID, Profile]
    ) -> dict[UUID, Profile]:
        """Recompute and announce these profiles (those still active); return them. Those not `loaded`
        already (the batch's graph locked and created most) are read in one query per thousand."""
        session.flush()
        ids = sorted(dirty)
        history = history_rows(session, ids)
        profiles = {pid: loaded[pid] for pid in ids if pid in loaded}
        missing = [pid for pid in ids if pid not in loaded]
        for start in range(0, len(missing), 1000):
            chunk = missing[start : start + 1000]
            profiles.update(
                (p.id, p)
                for p in session.exec(select(Profile).where(any_of(session, col(Profile.id), chunk)))
            )
        recomputed = []
        for profile_id in ids:
            profile = profiles.get(profile_id)
            if profile is not None and profile.status == "active":
                recompute_full(session, profile, *history[profile_id], correlation_id=dirty[profile_id])
                recomputed.append(profile)
        # One statement for all of them: the flush would write each set of changed traits apart.
        write_columns(session, recomputed, RECOMPUTED)
        return profiles


def match_rounds(
    session: Session,
    profiles: dict[UUID, Profile],
    dirty: dict[UUID, str | None],
    *,
    seen: probabilistic.SeenKeys | None = None,
    correlation_id: str | None = None,
) -> list[MergeRecord]:
    """The probabilistic stage on these recomputed profiles; then again on the survivors of its merges,
    recomputed, until it merges no more: a survivor holds the names and addresses of the profiles it took
    in, and its blocking keys must hold them too, or a later look-alike of a profile it took in would not
    find it (and the profiles would depend on where a poll's batch ends). `dirty`: each profile's
    correlation id; `correlation_id`: the merges' announcements'. Returns the merges."""
    merges = probabilistic.second_stage(session, [profiles[pid] for pid in sorted(profiles)], seen=seen)
    return take_in(session, merges, profiles, dirty, seen=seen, correlation_id=correlation_id)


def take_in(
    session: Session,
    merges: list[MergeRecord],
    loaded: dict[UUID, Profile],
    dirty: dict[UUID, str | None],
    *,
    seen: probabilistic.SeenKeys | None = None,
    correlation_id: str | None = None,
) -> list[MergeRecord]:
    """After the probabilistic stage's `merges`: announce them, recompute their survivors (those `loaded`
    already are not read again) and put those through the stage again, until it merges no more (see
    `match_rounds`). Returns every merge, these first."""
    made: list[MergeRecord] = []
    known = dict(loaded)
    while merges:
        announce_merges(session, merges, correlation_id=correlation_id)
        made += merges
        survivors = {m.survivor_id: dirty.get(m.survivor_id) for m in merges}
        known.update(ProfileBatch._recompute(session, survivors, known))
        merges = probabilistic.second_stage(
            session, [known[pid] for pid in sorted(survivors) if pid in known], seen=seen
        )
    return made


def match_again(
    session: Session,
    changed: Sequence[Profile],
    *,
    defaults: identity_rules.IdentityRules | None = None,
    correlation_id: str | None = None,
) -> list[MergeRecord]:
    """Outside the consumer (an accepted suggestion, an unmerge): these recomputed profiles through the
    probabilistic stage as a consumer batch puts them (`match_rounds`), scored and keyed again even where
    their data is what it was before a merge (an unmerged profile's keys went with its merge). `defaults`:
    the service's rules, for tenants without their own."""
    for profile in changed:
        profile.match_fingerprint = None
    if defaults is not None:
        session.info["identity_defaults"] = defaults
    try:
        dirty: dict[UUID, str | None] = {p.id: correlation_id for p in changed}
        return match_rounds(session, {p.id: p for p in changed}, dirty, correlation_id=correlation_id)
    finally:
        if defaults is not None:
            session.info.pop("identity_defaults", None)
            session.info.pop("identity_rules", None)  # the tenants' rules it cached with these defaults


def after_manual_merge(
    session: Session,
    record: MergeRecord,
    *,
    correlation_id: str | None,
    defaults: identity_rules.IdentityRules | None = None,
) -> None:
    """Announce a merge made outside the consumer (an accepted suggestion), recompute the survivor and put
    it through the probabilistic stage again (`match_again`): it now holds the other profile's data."""
    announce_merges(session, [record], correlation_id=correlation_id)
    survivor = session.get(Profile, record.survivor_id)
    if survivor is not None:
        recompute(session, survivor, correlation_id=correlation_id)
        match_again(session, [survivor], defaults=defaults, correlation_id=correlation_id)


def recompute(session: Session, profile: Profile, *, correlation_id: str | None = None) -> None:
    """Recompute the profile's traits and announce them: now, or once at the end of a consumer batch."""
    dirty = session.info.get("dirty")
    if isinstance(dirty, dict):
        dirty[profile.id] = correlation_id
        return
    session.flush()
    recompute_full(
        session, profile, *history_rows(session, [profile.id])[profile.id], correlation_id=correlation_id
    )


def load_history(
    session: Session, profile_ids: list[UUID]
) -> dict[UUID, tuple[list[ProfileOrder], list[ProfileRecord]]]:
    """The stored orders and records of these profiles: everything their traits are computed from."""
    found: dict[UUID, tuple[list[ProfileOrder], list[ProfileRecord]]] = {pid: ([], []) for pid in profile_ids}
    for start in range(0, len(profile_ids), 1000):
        chunk = profile_ids[start : start + 1000]
        for stored in session.exec(select(ProfileOrder).where(col(ProfileOrder.profile_id).in_(chunk))):
            found[stored.profile_id][0].append(stored)
        for record in session.exec(select(ProfileRecord).where(col(ProfileRecord.profile_id).in_(chunk))):
            found[record.profile_id][1].append(record)
    return found


class HistoryOrder(Protocol):
    """What the traits read of a stored order: a `ProfileOrder`, or a row of `history_rows`."""

    source: str
    status: str
    total_minor: int
    placed_at: datetime
    items: list[dict[str, Any]]
    payments: list[dict[str, Any]]
    customer: dict[str, Any]
    recorded_at: datetime


class HistoryRecord(Protocol):
    """What the traits read of a stored record: a `ProfileRecord`, or a row of `history_rows`."""

    kind: str
    type: str
    occurred_at: datetime
    properties: dict[str, Any]
    customer: dict[str, Any]
    recorded_at: datetime


_ORDER_FACTS = [
    col(ProfileOrder.profile_id),
    *(getattr(ProfileOrder, name) for name in HistoryOrder.__annotations__),
]
_RECORD_FACTS = [
    col(ProfileRecord.profile_id),
    *(getattr(ProfileRecord, name) for name in HistoryRecord.__annotations__),
]


def history_rows(
    session: Session, profile_ids: list[UUID]
) -> dict[UUID, tuple[list[HistoryOrder], list[HistoryRecord]]]:
    """`load_history` for the consumer's hot path: only the columns the traits read, as plain rows (no
    ORM objects to build and track: a profile's whole history is read each time it changes)."""
    found: dict[UUID, tuple[list[HistoryOrder], list[HistoryRecord]]] = {pid: ([], []) for pid in profile_ids}
    for start in range(0, len(profile_ids), 1000):
        chunk = profile_ids[start : start + 1000]
        for row in session.execute(
            sa.select(*_ORDER_FACTS).where(any_of(session, col(ProfileOrder.profile_id), chunk))
        ):
            found[row.profile_id][0].append(row)
        for row in session.execute(
            sa.select(*_RECORD_FACTS).where(any_of(session, col(ProfileRecord.profile_id), chunk))
        ):
            found[row.profile_id][1].append(row)
    return found


# The columns `recompute_full` (and `announce`) set.
RECOMPUTED = (
    "name_sealed",
    "birth_date_sealed",
    "gender",
    "city",
    "state",
    "zip_sealed",
    "match_variants_sealed",
    "country",
    "consents",
    "attributes_at",
    "behaviour",
    "last_seen_at",
    "orders_count",
    "total_spent_minor",
    "first_order_at",
    "last_order_at",
    "purchases",
    "version",
    "updated_at",
    "announced",
)


def recompute_full(
    session: Session,
    profile: Profile,
    rows: Sequence[HistoryOrder],
    records: Sequence[HistoryRecord],
    *,
    correlation_id: str | None,
) -> None:
    """Every trait of the profile from its history (orders and records), then a ProfileUpdated."""
    facts = [
        traits.OrderFacts(o.source, o.status, o.total_minor, o.placed_at, o.items, o.payments) for o in rows
    ]
    computed = traits.purchase_traits(facts)
    tenant_id = profile.tenant_id
    snapshots = [
        {**open_snapshot(tenant_id, o.customer), "seq": o.recorded_at.isoformat()} for o in rows if o.customer
    ]
    snapshots += [
        {**open_snapshot(tenant_id, r.customer), "seq": r.recorded_at.isoformat()}
        for r in records
        if r.kind == "customer"
    ]
    person = traits.customer_traits(snapshots)
    variants = traits.person_variants(snapshots, person)
    profile.set_person(  # sealed: a new token only when changed
        name=person["name"],
        birth_date=date.fromisoformat(person["birth_date"]) if person["birth_date"] else None,
        zip=person["zip"],
        variants=orjson.dumps(variants).decode() if variants else None,
    )
    times = [datetime.fromisoformat(s["at"]) for s in snapshots]
    seen = [
        traits.BehaviourFacts(r.type, r.occurred_at, r.properties.get("sku"), r.properties.get("category"))
        for r in records
        if r.kind == "behaviour"
    ]
    assign(
        profile,
        gender=person["gender"],
        city=person["city"],
        state=person["state"],
        country=person["country"],
        consents=person["consents"],
        attributes_at=max(times) if times else None,
        behaviour=traits.behaviour_traits(seen, [o.placed_at for o in rows], now=utcnow()),
        last_seen_at=max((e.occurred_at for e in seen), default=None),
        orders_count=computed.orders_count,
        total_spent_minor=computed.total_spent_minor,
        first_order_at=computed.first_order_at,
        last_order_at=computed.last_order_at,
        purchases=computed.purchases,
    )
    announce(session, profile, correlation_id=correlation_id)


def announce(session: Session, profile: Profile, *, correlation_id: str | None) -> None:
    """A new version of the profile, and its `profile.updated` event (v2) with every segmentable trait
    and the names of those that changed since the last one announced."""
    assign(profile, version=profile.version + 1, updated_at=utcnow())
    traits = segmentable_traits(profile)
    kept = as_announced(profile.tenant_id, traits)
    before = profile.announced  # read once: an ORM attribute, for each of the traits
    event = ProfileUpdatedV2.model_validate(
        {
            **traits,
            "profile_id": profile.id,
            "profile_version": profile.version,
            "changed": sorted(k for k, v in kept.items() if before.get(k, _UNSET) != v),
        }
    )
    assign(profile, announced=kept)
    if profile not in session:
        session.add(profile)
    add_event(
        session,
        event,
        tenant_id=profile.tenant_id,
        key=profile_key(profile.tenant_id, profile.id),
        correlation_id=correlation_id,
    )


_UNSET = object()
# Personal data among the announced traits: `profile.announced` keeps their keyed hashes, enough to tell
# whether they changed.
HASHED_TRAITS = ("birth_date", "zip")


def as_announced(tenant_id: UUID, traits: dict[str, Any]) -> dict[str, Any]:
    """The traits as kept in `profile.announced`: the birth date and CEP as blind indexes."""
    keys = keyring()
    return {
        k: keys.index(tenant_id, f"announced:{k}", v) if k in HASHED_TRAITS and v is not None else v
        for k, v in traits.items()
    }


def segmentable_traits(profile: Profile) -> dict[str, Any]:
    """What `profile.updated` v2 carries besides ids and versions, in its JSON form: no contact data."""
    predicted, purchases, behaviour = profile.predicted, profile.purchases, profile.behaviour
    rfm = predicted.get("rfm", {})
    clv = predicted.get("clv_12m_minor")
    total = from_minor(profile.total_spent_minor)
    aov = average_order_value(total, profile.orders_count)
    return {
        "orders_count": profile.orders_count,
        "total_spent": str(total),
        "average_order_value": None if aov is None else str(aov),
        "first_order_at": _iso(profile.first_order_at),
        "last_order_at": _iso(profile.last_order_at),
        "sources": sorted(purchases.get("by_source", {})),
        "categories": purchases.get("top_categories", []),
        "products": purchases.get("top_products", []),
        "preferred_payment_method": purchases.get("preferred_payment_method"),
        "birth_date": birth_date.isoformat() if (birth_date := profile.birth_date) else None,
        "gender": profile.gender,
        "city": profile.city,
        "state": profile.state,
        "zip": profile.zip,
        "consents": {purpose: c["status"] for purpose, c in sorted(profile.consents.items())},
        "rfm_group": predicted.get("rfm_group"),
        "rfm_r": rfm.get("r"),
        "rfm_f": rfm.get("f"),
        "rfm_m": rfm.get("m"),
        "clv_12m": str(from_minor(clv)) if clv is not None else None,
        "churn_probability": predicted.get("churn_probability"),
        "next_order_at": predicted.get("next_order_at"),
        "last_seen_at": behaviour.get("last_seen_at"),
        "viewed_categories": behaviour.get("categories_viewed_at", {}),
        "viewed_products": behaviour.get("products_viewed_at", {}),
        "cart_abandoned_at": behaviour.get("cart_abandoned_at"),
    }


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def get_profile(profile_id: UUID, *, tenant_id: UUID, session: Session) -> Profile:
    profile = session.get(Profile, profile_id)
    if profile is None or profile.tenant_id != tenant_id:
        raise NotFound("No profile with this id.")
    return profile


# --- The API's two hot reads, without the ORM ------------------------------------------------------------
# `GET /v1/profiles/{id}` and `GET /v1/profiles?email=` read with SQLAlchemy Core selects of the columns
# shown: loading a `Profile` through the ORM (identity map, instance state, SQLModel's model) costs about
# twice the CPU of the row itself, for reads that change nothing. Code that changes a profile, or follows
# it elsewhere, keeps `get_profile` and `list_profiles`.


@dataclass(frozen=True, slots=True)
class ProfileRow(SealedRow):
    """A profile as read for the API (`read_profile`, `find_profiles`): what `ProfileRead.of` shows, the
    sealed columns opened on access like `Profile`'s."""

    id: UUID
    tenant_id: UUID
    email: str | None
    phone: str | None
    status: str
    merged_into: UUID | None
    name_sealed: str | None
    birth_date_sealed: str | None
    gender: str | None
    city: str | None
    state: str | None
    zip_sealed: str | None
    country: str | None
    consents: dict[str, Any]
    last_seen_at: datetime | None
    purchases: dict[str, Any]
    behaviour: dict[str, Any]
    predicted: dict[str, Any]
    orders_count: int
    total_spent_minor: int
    first_order_at: datetime | None
    last_order_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


_PROFILE = table_of(Profile)
_IDENTIFIERS = table_of(ProfileIdentifier)
_ROW = sa.select(*(_PROFILE.c[f.name] for f in fields(ProfileRow)))
_BY_ID = _ROW.where(_PROFILE.c.id == sa.bindparam("id"), _PROFILE.c.tenant_id == sa.bindparam("tenant_id"))


def _owned(tenant_id: Any, kind: Any, value: Any) -> sa.ColumnElement[bool]:
    """The profile owns this identifier (a blind index): values, or bound parameters."""
    owners = sa.select(_IDENTIFIERS.c.profile_id).where(
        _IDENTIFIERS.c.tenant_id == tenant_id, _IDENTIFIERS.c.kind == kind, _IDENTIFIERS.c.value == value
    )
    return _PROFILE.c.id.in_(owners)


def _blinded(tenant_id: UUID, kind: str, raw: str) -> str:
    """The blind index a lookup looks for (Invalid for a value that cannot be normalised)."""
    ((_, value),) = identity.blind(tenant_id, [(kind, _normalise(kind, raw))])
    return value


# `find_profiles` by one identifier, no filter, first page: built once (building a statement, and its cache
# key, per request cost about as much CPU as running it).
_TENANT: sa.BindParameter[UUID] = sa.bindparam("tenant_id")
_BY_IDENTIFIER = (
    _ROW.where(
        _PROFILE.c.tenant_id == _TENANT,
        _PROFILE.c.status == "active",
        _owned(_TENANT, sa.bindparam("kind"), sa.bindparam("value")),
    )
    .order_by(_PROFILE.c.id)
    .limit(sa.bindparam("limit"))
)


def read_profile(profile_id: UUID, *, tenant_id: UUID, session: Session) -> ProfileRow:
    """`get_profile` for showing: the same profile (a merged one too, with its `merged_into`) or NotFound."""
    row = session.connection().execute(_BY_ID, {"id": profile_id, "tenant_id": tenant_id}).one_or_none()
    if row is None:
        raise NotFound("No profile with this id.")
    return ProfileRow(*row)


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


def _normalise(kind: str, raw: str) -> str:
    try:
        return LOOKUPS[kind](raw) if kind in LOOKUPS else raw
    except ValueError:
        raise Invalid(f"`{kind}` is not valid.") from None


def normalised_identifier(kind: str, raw: str) -> identity.Identifier:
    """An identifier typed by a person, normalised as ingest normalises it (Invalid when it cannot be)."""
    value = _normalise(kind, raw)
    if kind == "email" and is_relay_email(value):
        raise Invalid(
            "A marketplace relay e-mail identifies a buyer only within its source: use customer_id."
        )
    if kind == "customer_id":
        source, sep, external_id = value.partition(":")
        if not sep or not external_id:
            raise Invalid("`customer_id` is `<source>:<the customer's id there>`.")
        value = f"{source.strip().lower()}:{external_id}"
    return (kind, value)


@dataclass(frozen=True)
class ListFilters:
    state: str | None = None
    city: str | None = None
    min_orders: int | None = None
    updated_since: datetime | None = None


def list_profiles(
    *,
    tenant_id: UUID,
    session: Session,
    lookup: dict[str, str],
    filters: ListFilters = ListFilters(),
    after: UUID | None,
    limit: int,
) -> list[Profile]:
    """Profiles of a tenant, optionally only those owning the given identifiers (normalised first) and
    matching the filters."""
    query = select(Profile).where(*_listed(tenant_id, lookup, filters, after))
    return list(session.exec(query.order_by(col(Profile.id)).limit(limit)).all())


def find_profiles(
    *,
    tenant_id: UUID,
    session: Session,
    lookup: dict[str, str],
    filters: ListFilters = ListFilters(),
    after: UUID | None,
    limit: int,
) -> list[ProfileRow]:
    """`list_profiles` for showing (no ORM): the same profiles, in the same order."""
    connection = session.connection()
    if len(lookup) == 1 and filters == ListFilters() and after is None:  # the usual search: one statement
        ((kind, raw),) = lookup.items()
        params = {
            "tenant_id": tenant_id,
            "kind": kind,
            "value": _blinded(tenant_id, kind, raw),
            "limit": limit,
        }
        return [ProfileRow(*row) for row in connection.execute(_BY_IDENTIFIER, params)]
    query = _ROW.where(*_listed(tenant_id, lookup, filters, after)).order_by(_PROFILE.c.id).limit(limit)
    return [ProfileRow(*row) for row in connection.execute(query)]


def _listed(
    tenant_id: UUID, lookup: dict[str, str], filters: ListFilters, after: UUID | None
) -> list[sa.ColumnElement[bool]]:
    """The conditions of `list_profiles` and `find_profiles` (Invalid for an identifier that cannot be
    normalised)."""
    profile = _PROFILE.c
    where = [profile.tenant_id == tenant_id, profile.status == "active"]
    if filters.state is not None:
        where.append(profile.state == filters.state)
    if filters.city is not None:
        where.append(sa.func.lower(profile.city) == filters.city.strip().lower())
    if filters.min_orders is not None:
        where.append(profile.orders_count >= filters.min_orders)
    if filters.updated_since is not None:
        where.append(profile.updated_at >= filters.updated_since)
    for kind, raw in lookup.items():
        where.append(_owned(tenant_id, kind, _blinded(tenant_id, kind, raw)))
    if after is not None:
        where.append(profile.id > after)
    return where


def timeline(profile_id: UUID, *, tenant_id: UUID, session: Session, limit: int) -> list[dict[str, Any]]:
    """What happened to this person, newest first: orders (latest version each), customer records (type
    `customer_record`, no contents: those are the profile's fields), behaviour events (their type, with
    the product or category) and merges."""
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
            "at": record.occurred_at,
            "type": record.type,
            "record_id": str(record.id),
            "source": record.source,
            **({"properties": record.properties} if record.properties else {}),
        }
        for record in session.exec(
            select(ProfileRecord)
            .where(ProfileRecord.profile_id == owner)
            .order_by(col(ProfileRecord.occurred_at).desc())
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


# --- Consents -------------------------------------------------------------------------------------------


def update_consents(
    session: Session, profile: Profile, consents: Sequence[Consent], *, correlation_id: str | None
) -> Profile:
    """Record the person's decisions (from the seller's preference centre) in the profile's history, as a
    record of their own, and recompute: the newest decision per purpose wins, and `profile.updated` tells
    segmentation at once (a revoked consent leaves the segments that need it)."""
    owner = (
        profile
        if profile.merged_into is None
        else get_profile(profile.merged_into, tenant_id=profile.tenant_id, session=session)
    )
    now = utcnow()
    record_own(session, owner, "consent_update", snapshot(None, consents, at=now), at=now)
    recompute(session, owner, correlation_id=correlation_id)
    return owner


def record_own(
    session: Session, owner: Profile, type_: str, customer: dict[str, Any], *, at: datetime
) -> None:
    """A record the API itself adds to a profile's history (`consent_update`, a privacy `correction`):
    newer than every other, so the newest-record-wins rules let it decide. The caller recomputes."""
    session.add(
        ProfileRecord(
            id=uuid4(),
            tenant_id=owner.tenant_id,
            profile_id=owner.id,
            kind="customer",
            type=type_,
            source="api",
            occurred_at=at,
            identifiers=[],
            customer=seal_snapshot(owner.tenant_id, customer),
        )
    )


def consent_history(session: Session, profile: Profile) -> list[dict[str, Any]]:
    """Every consent decision the profile's history holds (orders, customer records, the API), newest
    first."""
    rows, records = load_history(session, [profile.id])[profile.id]
    found: list[dict[str, Any]] = []
    sources = [("order", o.customer) for o in rows] + [
        ("api" if r.type == "consent_update" else "customer_record", r.customer)
        for r in records
        if r.kind == "customer"
    ]
    for origin, customer in sources:
        for consent in customer.get("consents", ()):
            found.append({**consent, "origin": origin})
    return sorted(found, key=lambda c: (c["at"], c["purpose"]), reverse=True)
