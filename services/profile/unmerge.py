"""Undoing a wrong merge: the merged profile comes back with what is its own, both sides are recomputed from
the stored history, and the two never merge again by themselves.

Which side everything belongs to after the split (merge M folded X into the profile that now owns the
cluster, O):

- Before M: what moved with M (its `moved_identifiers`, `moved_orders`, `moved_records`) goes back to X, and
  with X every profile that had been merged into X before; the rest stays with O.
- After M, in arrival order: a stored order or record belongs to the side of its strongest identifier
  whose side is known (the same priority as identity resolution), and its other, new identifiers follow it.
  A later merge into the cluster follows the side of the identifiers that linked it (X only when all of them
  are X's), taking what it moved along.
- A merge block keeps O and X apart: an event carrying identifiers of both attaches to the owner of its
  strongest identifier, as when merge protection refuses a merge.

Everything that can be read from the history is recomputed (traits, demographics, consents, behaviour,
contact e-mail); merges recorded after M keep their records (history), and a merge that followed X moves
its pointer to X.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.profile import identity, identity_rules
from services.profile.models import MergeRecord, Profile, ProfileIdentifier, ProfileOrder, ProfileRecord
from services.profile.profiles import load_history, match_again, profile_key, recompute_full
from shared.db import utcnow
from shared.errors import Conflict, NotFound
from shared.events import ProfilesUnmerged
from shared.outbox import add_event

Identifier = identity.Identifier


@dataclass(frozen=True)
class Unmerged:
    record: MergeRecord
    survivor: Profile
    restored: Profile


def find_merge(
    session: Session,
    owner: Profile,
    *,
    merge_id: UUID | None = None,
    identifier: Identifier | None = None,
) -> MergeRecord:
    """The merge to undo: by its id, or the latest merge into this profile that brought the identifier
    (normalised, readable: looked up by its blind index)."""
    query = select(MergeRecord).where(
        MergeRecord.tenant_id == owner.tenant_id,
        col(MergeRecord.merged_id).in_(select(Profile.id).where(Profile.merged_into == owner.id)),
    )
    if merge_id is not None:
        record = session.get(MergeRecord, merge_id)
        if record is None or record.tenant_id != owner.tenant_id:
            raise NotFound("No merge with this id.")
        if record.undone_at is not None:
            raise Conflict("This merge was undone already.")
        if record not in session.exec(query).all():
            raise Conflict("This merge is not part of this profile (it may have been undone or moved).")
        return record
    wanted = [*identity.blind(owner.tenant_id, [identifier])[0]] if identifier is not None else None
    candidates = [
        r
        for r in session.exec(query.where(col(MergeRecord.undone_at).is_(None))).all()
        if wanted in r.moved_identifiers
    ]
    if not candidates:
        raise Conflict("No merge into this profile brought this identifier.")
    return max(candidates, key=lambda r: r.created_at)


def unmerge(
    session: Session,
    record: MergeRecord,
    *,
    correlation_id: str | None = None,
    defaults: identity_rules.IdentityRules | None = None,
) -> Unmerged:
    """Split merge `record` (see the module docstring); the caller commits. `defaults`: the service's
    identity rules (`profiles.match_again`)."""
    restored = session.get(Profile, record.merged_id)
    if restored is None or restored.merged_into is None:
        raise Conflict("This merge is not in force.")
    locked = {p.id: p for p in identity.lock_profiles(session, [restored.merged_into, restored.id])}
    owner, restored = locked[restored.merged_into], locked[restored.id]
    plan = _plan(session, owner, restored, record)

    with_restored = [(i[0], i[1]) for i, side in plan.identifiers.items() if side == restored.id]
    for start in range(0, len(with_restored), 500):
        session.execute(
            sa.update(ProfileIdentifier)
            .where(
                col(ProfileIdentifier.tenant_id) == owner.tenant_id,
                sa.tuple_(col(ProfileIdentifier.kind), col(ProfileIdentifier.value)).in_(
                    with_restored[start : start + 500]
                ),
            )
            .values(profile_id=restored.id)
        )
    if plan.orders:
        session.execute(
            sa.update(ProfileOrder)
            .where(col(ProfileOrder.order_id).in_(plan.orders))
            .values(profile_id=restored.id)
        )
    if plan.records:
        session.execute(
            sa.update(ProfileRecord)
            .where(col(ProfileRecord.id).in_(plan.records))
            .values(profile_id=restored.id)
        )
    if plan.profiles:
        session.execute(
            sa.update(Profile).where(col(Profile.id).in_(plan.profiles)).values(merged_into=restored.id)
        )
    restored.status, restored.merged_into = "active", None
    record.undone_at = utcnow()
    identity.add_block(session, owner.tenant_id, owner.id, restored.id, merge_id=record.id)
    session.add_all([restored, record])
    session.flush()
    for profile in (owner, restored):
        profile.merges = len(session.exec(select(Profile.id).where(Profile.merged_into == profile.id)).all())
    add_event(
        session,
        ProfilesUnmerged(survivor_id=owner.id, restored_id=restored.id, merge_id=record.id),
        tenant_id=owner.tenant_id,
        key=profile_key(owner.tenant_id, restored.id),
        correlation_id=correlation_id,
    )
    history = load_history(session, [owner.id, restored.id])
    for profile in (owner, restored):
        orders, records = history[profile.id]
        profile.email = _contact_email(session, profile, orders, records)
        recompute_full(session, profile, orders, records, correlation_id=correlation_id)
    # Both are matched again: the restored profile's blocking keys went with the merge, and the survivor's
    # still hold the restored one's data. The pair itself is blocked (`add_block` above).
    match_again(session, [owner, restored], defaults=defaults, correlation_id=correlation_id)
    return Unmerged(record=record, survivor=owner, restored=restored)


@dataclass
class _Plan:
    identifiers: dict[tuple[str, str], UUID]
    orders: list[UUID]  # what goes back to the restored profile
    records: list[UUID]
    profiles: list[UUID]  # merged profiles whose pointer moves to the restored profile


def _plan(session: Session, owner: Profile, restored: Profile, record: MergeRecord) -> _Plan:
    cluster = [*session.exec(select(Profile.id).where(Profile.merged_into == owner.id)).all()]
    merges = sorted(
        session.exec(
            select(MergeRecord).where(
                col(MergeRecord.merged_id).in_(cluster), col(MergeRecord.undone_at).is_(None)
            )
        ).all(),
        key=lambda m: m.created_at,
    )
    # The restored profile takes back the profiles it had taken in before (newest first: chains unwind).
    followers = _taken_in(restored.id, merges, before=record.created_at)
    later = [m for m in merges if m.created_at > record.created_at and m.id != record.id]

    side: dict[tuple[str, str], UUID] = {(k, v): restored.id for k, v in record.moved_identifiers}
    moved_later = {(k, v) for m in later for k, v in m.moved_identifiers}
    for row in session.exec(select(ProfileIdentifier).where(ProfileIdentifier.profile_id == owner.id)).all():
        key = (row.kind, row.value)
        if key not in side and key not in moved_later and row.created_at <= record.created_at:
            side[key] = owner.id

    orders, records = load_history(session, [owner.id])[owner.id]
    entry_side: dict[UUID, UUID] = {}
    deferred: dict[UUID, MergeRecord] = {}
    for m in later:
        for moved in (*m.moved_orders, *m.moved_records):
            deferred[UUID(moved)] = m
    moved_back = {UUID(i) for i in (*record.moved_orders, *record.moved_records)}
    timeline: list[tuple[datetime, int, object]] = [
        *((o.recorded_at, 1, o) for o in orders),
        *((r.recorded_at, 1, r) for r in records),
        *((m.created_at, 0, m) for m in later),
    ]
    for _, _, entry in sorted(timeline, key=lambda t: (t[0], t[1])):
        if isinstance(entry, MergeRecord):
            links = [(k, v) for k, v in entry.linked_identifiers]
            goes = restored.id if links and all(side.get(i) == restored.id for i in links) else owner.id
            if goes == restored.id:
                followers |= _taken_in(entry.merged_id, merges, before=entry.created_at)
            for k, v in entry.moved_identifiers:
                side.setdefault((k, v), goes)
            for moved in (*entry.moved_orders, *entry.moved_records):
                entry_side[UUID(moved)] = goes
            continue
        assert isinstance(entry, ProfileOrder | ProfileRecord)
        entry_id = entry.order_id if isinstance(entry, ProfileOrder) else entry.id
        if entry_id in deferred:
            continue  # it came with a later merge: it follows that merge
        carried = [(k, v) for k, v in entry.identifiers]
        if entry.recorded_at <= record.created_at:
            goes = restored.id if entry_id in moved_back else owner.id
        else:
            known = sorted((i for i in carried if i in side), key=lambda i: identity.PRIORITY.index(i[0]))
            goes = side[known[0]] if known else owner.id
        entry_side[entry_id] = goes
        for identifier in carried:
            side.setdefault(identifier, goes)

    followers.discard(restored.id)
    return _Plan(
        identifiers={i: s for i, s in side.items() if s == restored.id},
        orders=[o.order_id for o in orders if entry_side.get(o.order_id) == restored.id],
        records=[r.id for r in records if entry_side.get(r.id) == restored.id],
        profiles=sorted(followers),
    )


def _taken_in(profile_id: UUID, merges: list[MergeRecord], *, before: datetime) -> set[UUID]:
    """The profile and those merged into it (directly or through others) before a time: they go together."""
    found = {profile_id}
    for earlier in reversed([m for m in merges if m.created_at < before]):  # newest first: chains unwind
        if earlier.survivor_id in found:
            found.add(earlier.merged_id)
    return found


def _contact_email(
    session: Session, profile: Profile, orders: list[ProfileOrder], records: list[ProfileRecord]
) -> str | None:
    """The first e-mail (by time) the profile's history carries that the profile still owns (sealed, as
    `Profile.email` keeps it)."""
    owned = {
        value: sealed
        for value, sealed in session.exec(
            select(ProfileIdentifier.value, ProfileIdentifier.sealed).where(
                ProfileIdentifier.profile_id == profile.id, ProfileIdentifier.kind == "email"
            )
        ).all()
    }
    current = identity.unseal(profile.tenant_id, profile.email)
    if current is not None and identity.blind(profile.tenant_id, [("email", current)])[0][1] in owned:
        return profile.email
    dated = [(o.placed_at, o.identifiers) for o in orders] + [(r.occurred_at, r.identifiers) for r in records]
    for _, carried in sorted(dated, key=lambda d: d[0]):
        for kind, value in carried:
            if kind == "email" and value in owned:
                return owned[value]
    return owned[min(owned)] if owned else None
