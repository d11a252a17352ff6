"""The identity graph: which profile a record belongs to, and when two profiles are one person.

Deterministic rules (first stage):
- A record's identifiers are looked up (blocked placeholder values are ignored). The record belongs to the
  owner of its strongest identifier (document > source customer id > e-mail > relay e-mail > phone); with
  none owned, a new profile.
- Another profile that owns one of the record's *merge-grade* identifiers (document, source customer id,
  e-mail, relay e-mail) is the same person: the two merge, the older one survives and the other keeps
  answering with `merged_into`. A phone alone never merges (families share phones): a record whose only
  known identifier is a phone joins its holder, one that also brings a document, customer id or e-mail
  nobody holds is a new profile (the relative on the family phone).
- Merge protection: two different documents never merge; a merge that would exceed a per-kind limit
  (e-mails, phones, ...) or the limit of merges per profile does not happen. An identifier that would
  break a limit, or a second document, is not attached.
- Every merge is recorded (`MergeRecord`: event, rule, linking kinds, what moved) and announced.

Identifiers are stored and compared as blind indexes (`shared.crypto`: HMAC-SHA256 under a key derived for
the tenant): `resolve` takes the normalised values a record carries, drops the blocked ones and works on
(kind, index) pairs from then on; the readable value is kept only sealed (AES-GCM) next to the index, for
the probabilistic stage and the profile's contact e-mail. Orders, records and merge records keep the
indexes too.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from services.profile import identity_rules
from services.profile.models import (
    MergeBlock,
    MergeRecord,
    Profile,
    ProfileIdentifier,
    ProfileOrder,
    ProfileRecord,
)
from shared import identifiers as shared_identifiers
from shared.crypto import keyring
from shared.db import (
    add_new,
    any_of,
    is_lock_unavailable,
    lock_key,
    new_row,
    table_of,
    try_xact_locks,
    utcnow,
    xact_locks,
)
from shared.records import Customer, CustomerRef

Identifier = tuple[str, str]  # (kind, normalised value)

PRIORITY = identity_rules.KINDS  # the default priority; a tenant may set its own (`identity_rules`)
# A device id links what a person did before and after identifying themselves (as the major CDPs do).
MERGE_KINDS = frozenset({"document", "customer_id", "email", "relay_email", "anonymous_id"})
# Placeholders people type into forms; they identify nobody.
BLOCKED: frozenset[Identifier] = frozenset(
    {
        ("email", "teste@teste.com"),
        ("email", "test@test.com"),
        ("email", "email@email.com"),
        ("email", "naotem@naotem.com"),
        ("email", "sem@email.com"),
        ("email", "a@a.com"),
        ("phone", "+5511999999999"),
        ("phone", "+5511900000000"),
        ("phone", "+5511111111111"),
    }
)
_ORDERS = table_of(ProfileOrder)
_RECORDS = table_of(ProfileRecord)
_BLOCKED_LOCAL_PARTS = frozenset({"noreply", "no-reply", "naoresponda", "nao-responda"})


def identifiers_of(customer: Customer | CustomerRef, source: str) -> list[Identifier]:
    """The (kind, normalised value) pairs that identify a customer, strongest first, less blocked values."""
    return [i for i in shared_identifiers.identifiers_of(customer, source) if not blocked(i)]


def blind(
    tenant_id: UUID, identifiers: list[Identifier], memo: dict[tuple[UUID, str, str], str] | None = None
) -> list[Identifier]:
    """The (kind, blind index) pairs of normalised identifiers: what the graph stores and compares.
    `memo`: indexes already computed (a consumer batch's graph keeps them: each event's are needed thrice)."""
    keys = keyring()
    if memo is None:
        return [(kind, keys.index(tenant_id, kind, value)) for kind, value in identifiers]
    found = []
    for kind, value in identifiers:
        index = memo.get((tenant_id, kind, value))
        if index is None:
            index = memo[(tenant_id, kind, value)] = keys.index(tenant_id, kind, value)
        found.append((kind, index))
    return found


def blind_in(session: Session, tenant_id: UUID, identifiers: list[Identifier]) -> list[Identifier]:
    """`blind`, with the indexes the session's consumer batch already computed (its graph's memo)."""
    known = graph(session)
    return blind(tenant_id, identifiers, known.blinded if known is not None else None)


def seal(tenant_id: UUID, value: str | None) -> str | None:
    """A readable value (a contact e-mail) as stored: sealed for the tenant."""
    return None if value is None else keyring().seal(tenant_id, value)


def unseal(tenant_id: UUID, token: str | None) -> str | None:
    return None if token is None else keyring().open(tenant_id, token)


def blocked(identifier: Identifier) -> bool:
    kind, value = identifier
    if identifier in BLOCKED:
        return True
    return kind == "email" and value.partition("@")[0] in _BLOCKED_LOCAL_PARTS


class Graph:
    """What a consumer batch knows of the identity graph, loaded in a few queries up front (`preload`) and
    kept current as the batch attaches, creates and merges; without it every lookup is a query."""

    def __init__(self) -> None:
        self.owner: dict[tuple[UUID, str, str], UUID | None] = {}  # (tenant, kind, value) -> profile
        self.of_profile: dict[UUID, list[Identifier]] = {}
        self.profiles: dict[UUID, Profile] = {}  # the owners, locked, and the profiles created in the batch
        # The owners' identifier rows: as read (`Seen`), or as ORM rows once the batch changes them.
        self.rows: dict[tuple[UUID, str, str], ProfileIdentifier | Seen] = {}
        # Earlier first sightings of rows read as `Seen`, written together by `write_sightings`.
        self.sightings: dict[tuple[UUID, str, str], datetime] = {}
        self.keep: list[object] = []  # strong references: the session's identity map is weak
        self.blinded: dict[tuple[UUID, str, str], str] = {}  # (tenant, kind, value) -> blind index
        # Profiles in no merge block (no unmerge split them): their merges need not look for blocks.
        self.unblocked: set[UUID] = set()

    def preload(
        self, session: Session, wanted: dict[UUID, set[Identifier]], *, may_defer: bool = False
    ) -> set[tuple[UUID, str, str]]:
        """Load the owners of these identifiers, locked, and every identifier of those owners. Identifiers
        nobody owns yet are locked too (PostgreSQL: a transaction lock per identifier, `_key_locks`), so
        two members of a consumer group never both create a profile for one new identifier (one would fail
        at its commit and apply its whole batch again).

        Without `may_defer` the batch takes all those locks at once, waiting until it can
        (`lock_all_at_once`). With it, it takes the free ones and returns the identifiers another
        transaction is writing now (their owner or their lock is held, or somebody stored them since they
        were read): the events that carry them wait for a later transaction (`ProfileBatch.prepare`), and
        the graph forgets them."""
        keys = {
            (tenant_id, *identifier)
            for tenant_id, identifiers in wanted.items()
            for identifier in identifiers
        }
        found = _owners_of(session, keys)
        self.owner.update((key, found.get(key)) for key in keys)
        postgres = session.get_bind().dialect.name == "postgresql"
        locked: dict[UUID, Profile] = {}
        claimed: set[tuple[UUID, str, str]] = set()  # new identifiers whose lock the batch holds
        busy: set[tuple[UUID, str, str]] = set()
        for _ in range(PRELOAD_ROUNDS):
            live = keys - busy
            owners = {owner for key in live if (owner := self.owner[key]) is not None} - set(locked)
            new = {key for key in live if self.owner[key] is None} - claimed
            if may_defer and postgres:
                query = _in_id_order(session, list(owners)).with_for_update(skip_locked=True)
                got = list(session.exec(query)) if owners else []
                held = _try_key_locks(session, new)
                taken = owners - {p.id for p in got}
                busy |= held | {key for key in live if self.owner[key] in taken}
            else:
                got = lock_all_at_once(session, list(owners), keys=_key_locks(new)) if owners or new else []
                held = set()
            locked.update((p.id, p) for p in got)
            claimed |= new - held
            # Read again, once locked: between the first read and the lock another transaction may have
            # merged an owner away, or stored a new identifier. An owner the batch holds cannot change.
            now = _owners_of(session, keys - busy)
            moved = {key for key in keys - busy if now.get(key) != self.owner[key]}
            if not moved:
                break
            for key in moved:
                self.owner[key] = now.get(key)  # and the new owners are locked in the next round
        else:
            busy |= moved  # still moving: left for later (with `may_defer`)
        self.profiles.update(locked)
        for key in busy:
            del self.owner[key]
        free = set(locked)
        if free:
            # Plain rows, read once locked: most are only read, and a batch reads thousands.
            for tenant_id, kind, value, profile_id, seen_at in session.execute(
                _SEEN.where(any_of(session, col(ProfileIdentifier.profile_id), free))
            ):
                self.of_profile.setdefault(profile_id, []).append((kind, value))
                self.owner[(tenant_id, kind, value)] = profile_id
                self.rows[(tenant_id, kind, value)] = Seen(value, seen_at)
            self.unblocked = free - {pid for pair in blocks_of(session, free) for pid in pair}
        return busy


def _key_lock(key: tuple[UUID, str, str]) -> int:
    """The transaction lock of an identifier nobody owns yet (`shared.db.lock_key`)."""
    tenant_id, kind, value = key
    return lock_key(tenant_id, "identifier", kind, value)


def _key_locks(keys: set[tuple[UUID, str, str]]) -> set[int]:
    return {_key_lock(key) for key in keys}


def _try_key_locks(session: Session, keys: set[tuple[UUID, str, str]]) -> set[tuple[UUID, str, str]]:
    """Take the free ones of these identifiers' locks, without waiting; return those another transaction
    holds."""
    by_lock: dict[int, list[tuple[UUID, str, str]]] = {}
    for key in keys:
        by_lock.setdefault(_key_lock(key), []).append(key)
    return {key for lock in try_xact_locks(session, by_lock) for key in by_lock[lock]}


def _owners_of(session: Session, keys: set[tuple[UUID, str, str]]) -> dict[tuple[UUID, str, str], UUID]:
    """The owners some of these identifiers have now."""
    by_tenant: dict[UUID, list[Identifier]] = {}
    for tenant_id, kind, value in keys:
        by_tenant.setdefault(tenant_id, []).append((kind, value))
    return {
        (tenant_id, *identifier): owner
        for tenant_id, identifiers in by_tenant.items()
        for identifier, owner in _chunked_owners(session, tenant_id, sorted(identifiers)).items()
    }


def blocks_of(session: Session, profile_ids: set[UUID]) -> set[tuple[UUID, UUID]]:
    """Every block (`MergeBlock`: two profiles split by an unmerge, lower id first) of these profiles, with
    one another or with others, in one query per thousand ids. A profile in none of them is in no block:
    its merge has no block to move."""
    ids = sorted(profile_ids)
    found: set[tuple[UUID, UUID]] = set()
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        for low, high in session.execute(
            sa.select(col(MergeBlock.profile_a), col(MergeBlock.profile_b)).where(
                sa.or_(
                    any_of(session, col(MergeBlock.profile_a), chunk),
                    any_of(session, col(MergeBlock.profile_b), chunk),
                )
            )
        ):
            found.add((low, high))
    return found


@dataclass(frozen=True, slots=True)
class Seen:
    """What the resolution reads of a stored identifier it does not change: its value and when it was
    first seen (`_row`). One to change is loaded as a `ProfileIdentifier` (`_stored`)."""

    value: str
    seen_at: datetime | None


_SEEN = sa.select(
    col(ProfileIdentifier.tenant_id),
    col(ProfileIdentifier.kind),
    col(ProfileIdentifier.value),
    col(ProfileIdentifier.profile_id),
    col(ProfileIdentifier.seen_at),
)


def _chunked_owners(
    session: Session, tenant_id: UUID, identifiers: list[Identifier]
) -> dict[Identifier, UUID]:
    found: dict[Identifier, UUID] = {}
    postgres = session.get_bind().dialect.name == "postgresql"
    for start in range(0, len(identifiers), 500):
        chunk = identifiers[start : start + 500]
        if postgres:
            # The pairs as a relation joined to the primary key: one index probe per pair. With kinds and
            # values as two `= ANY` arrays PostgreSQL probes every kind with every value, or scans the table.
            rows = session.execute(
                _OWNERS_OF_PAIRS,
                {"tenant": tenant_id, "kinds": [k for k, _ in chunk], "values": [v for _, v in chunk]},
            )
            found.update({(kind, value): owner for kind, value, owner in rows})
            continue
        # Kinds and values apart (the index's columns), the pairs checked here.
        wanted = set(chunk)
        rows = session.execute(
            sa.select(
                col(ProfileIdentifier.kind), col(ProfileIdentifier.value), col(ProfileIdentifier.profile_id)
            ).where(
                col(ProfileIdentifier.tenant_id) == tenant_id,
                col(ProfileIdentifier.kind).in_({kind for kind, _ in chunk}),
                col(ProfileIdentifier.value).in_({value for _, value in chunk}),
            )
        )
        found.update({(kind, value): owner for kind, value, owner in rows if (kind, value) in wanted})
    return found


# Each pair is one probe of the primary key (LATERAL … LIMIT 1) whatever the statistics say: joined plainly,
# a young tenant's statistics (one row estimated) made PostgreSQL hash all of the tenant's identifiers for
# every batch (tests/integration/test_query_plans.py).
_OWNERS_OF_PAIRS = sa.text(
    "SELECT wanted.kind, wanted.value, i.profile_id"
    " FROM unnest(CAST(:kinds AS varchar[]), CAST(:values AS varchar[])) AS wanted(kind, value)"
    " JOIN LATERAL (SELECT profile_id FROM profile_identifier"
    " WHERE tenant_id = :tenant AND kind = wanted.kind AND value = wanted.value LIMIT 1) AS i ON true"
)


def graph(session: Session) -> Graph | None:
    found = session.info.get("identity_graph")
    return found if isinstance(found, Graph) else None


def _rank(kind: str) -> int:
    return PRIORITY.index(kind)


def _identifiers(session: Session, profile_id: UUID) -> list[Identifier]:
    known = graph(session)
    if known is not None and profile_id in known.of_profile:
        return list(known.of_profile[profile_id])
    rows = session.exec(
        select(ProfileIdentifier.kind, ProfileIdentifier.value).where(
            ProfileIdentifier.profile_id == profile_id
        )
    ).all()
    return [(kind, value) for kind, value in rows]


def lock_profiles(session: Session, profile_ids: list[UUID]) -> list[Profile]:
    """The profiles, locked in id order (PostgreSQL) so concurrent merges cannot interleave. In a batch,
    the owners were locked when the graph was loaded."""
    known = graph(session)
    if known is not None and all(pid in known.profiles for pid in profile_ids):
        return [known.profiles[pid] for pid in sorted(profile_ids)]
    query = _in_id_order(session, profile_ids)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return list(session.exec(query).all())


def _in_id_order(session: Session, profile_ids: list[UUID]) -> SelectOfScalar[Profile]:
    return select(Profile).where(any_of(session, col(Profile.id), profile_ids)).order_by(col(Profile.id))


# How often a batch reads its identifiers' owners again after locking them, when another transaction moved
# some in between (`Graph.preload`).
PRELOAD_ROUNDS = 5
# How long a batch tries to take its owners' locks all at once before it waits for them as other writers do.
ALL_AT_ONCE_S = 60.0


def lock_all_at_once(session: Session, profile_ids: list[UUID], keys: Collection[int] = ()) -> list[Profile]:
    """`lock_profiles` for a consumer batch's owners: all of them, or none while another transaction holds
    one (`NOWAIT` under a savepoint, tried again after a pause). Waiting for the rest while holding the first
    ones is what made two consumers of one group deadlock: the other batch's probabilistic stage went on to
    write survivors this one had just locked, then each waited for the other (PostgreSQL's log, 2026-12-01).
    After `ALL_AT_ONCE_S` it waits for them as `lock_profiles` does. `keys`: transaction locks
    (`shared.db.lock_key`) taken with them, the same way."""
    if session.get_bind().dialect.name != "postgresql" or not (profile_ids or keys):
        return lock_profiles(session, profile_ids)
    query = _in_id_order(session, profile_ids).with_for_update(nowait=True)
    deadline, pause = time.monotonic() + ALL_AT_ONCE_S, 0.02
    while time.monotonic() < deadline:
        savepoint = session.begin_nested()
        try:
            locked = list(session.exec(query).all()) if profile_ids else []
            free = not try_xact_locks(session, keys)
        except sa.exc.OperationalError as exc:
            if not is_lock_unavailable(exc):
                raise
            free = False
        if not free:
            savepoint.rollback()  # and with it the locks this attempt took
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
            continue
        savepoint.commit()
        return locked
    xact_locks(session, keys)
    return lock_profiles(session, profile_ids)


def is_blocked(session: Session, a: UUID, b: UUID) -> bool:
    """Were these two profiles split by an unmerge (so they must not merge again by themselves)?"""
    known = graph(session)
    if known is not None and (a in known.unblocked or b in known.unblocked):
        return False
    low, high = sorted((a, b))
    return session.get(MergeBlock, (low, high)) is not None


def add_block(session: Session, tenant_id: UUID, a: UUID, b: UUID, *, merge_id: UUID | None) -> None:
    known = graph(session)
    if known is not None:
        known.unblocked.difference_update((a, b))
    low, high = sorted((a, b))
    if session.get(MergeBlock, (low, high)) is None:
        session.add(MergeBlock(tenant_id=tenant_id, profile_a=low, profile_b=high, merge_id=merge_id))


def can_merge(
    mine: list[Identifier],
    theirs: list[Identifier],
    merges: int,
    rules: identity_rules.IdentityRules = identity_rules.DEFAULT,
) -> bool:
    """Merge protection: no two documents, no kind over its limit, not too many merges."""
    if merges >= rules.max_merges:
        return False
    union = set(mine) | set(theirs)
    return all(sum(1 for kind, _ in union if kind == k) <= rules.limit(k) for k in PRIORITY)


def resolve(
    session: Session,
    tenant_id: UUID,
    identifiers: list[Identifier],
    *,
    contact_email: str | None,
    event_id: UUID | None,
    seen_at: datetime | None = None,
    contact_phone: str | None = None,
) -> tuple[Profile, list[MergeRecord]]:
    """The profile a record with these identifiers belongs to (created when none does), after the merges
    its identifiers call for; and those merges. `seen_at` is the record's own time: contested identifiers
    (a profile's limit reached, a phone two profiles carry) go to the earliest record's profile, so the
    outcome does not depend on which consumer saw which record first.

    `identifiers` are normalised readable values; `contact_email` and `contact_phone` too (stored sealed)."""
    rules = identity_rules.rules_for(session, tenant_id)
    readable = [i for i in identifiers if not rules.blocks(*i)]
    identifiers = blind_in(session, tenant_id, readable)
    known = graph(session)
    plain = dict(zip(identifiers, (value for _, value in readable), strict=True))
    contact_email = seal(tenant_id, contact_email)
    owned: dict[Identifier, UUID] = {}
    if known is not None and all((tenant_id, *i) in known.owner for i in identifiers):
        owned = {i: pid for i in identifiers if (pid := known.owner[(tenant_id, *i)]) is not None}
    elif identifiers:
        owned = _chunked_owners(session, tenant_id, identifiers)
    merges: list[MergeRecord] = []
    # A record that brings merge-grade identifiers nobody owns and shares only a phone with a profile is
    # somebody new (a relative on the family phone), not that profile's owner; unless every such profile
    # knows nobody (`_knows_nobody`): then it joins them, as it would have had it come first.
    only_phones = (
        not any(kind in MERGE_KINDS for kind, _ in owned)
        and any(kind in MERGE_KINDS for kind, _ in identifiers)
        and not all(_knows_nobody(session, pid) for pid in set(owned.values()))
    )
    if not owned or only_phones or _brings_another_document(session, identifiers, owned, rules):
        # A new person: every identifier nobody holds is theirs.
        # id and times are set here: no flush needed
        target = new_row(
            Profile, tenant_id=tenant_id, email=contact_email, phone=seal(tenant_id, contact_phone)
        )
        add_new(session, target)
        if known is not None:
            known.of_profile[target.id] = []
            known.profiles[target.id] = target
            known.unblocked.add(target.id)
        fresh = [i for i in identifiers if i not in owned]
        _attach(session, tenant_id, target, fresh, plain, have=[], rules=rules, seen_at=seen_at)
        _claim(session, tenant_id, target, owned, rules=rules, seen_at=seen_at)
        return target, merges
    else:
        owners = {
            pid: min((rules.rank(k) for (k, _), p in owned.items() if p == pid))
            for pid in set(owned.values())
        }
        profiles = {p.id: p for p in lock_profiles(session, list(owners))}
        target = profiles[min(owners, key=lambda pid: (owners[pid], profiles[pid].created_at, pid))]
        for other_id in sorted(owners, key=lambda pid: (profiles[pid].created_at, pid)):
            other = profiles[other_id]
            if other.id == target.id or other.status == "merged":  # the target, or already folded into it
                continue
            links = [i for i, p in owned.items() if p == other.id and i[0] in MERGE_KINDS]
            if not links and _knows_nobody(session, other.id):  # its phone links it, as merge-grade ones do
                links = [i for i, p in owned.items() if p == other.id]
            if not links:
                continue
            links.sort(key=lambda i: (rules.rank(i[0]), i[1]))
            mine, theirs = _identifiers(session, target.id), _identifiers(session, other.id)
            if not can_merge(mine, theirs, target.merges + other.merges, rules) or is_blocked(
                session, target.id, other.id
            ):
                continue
            survivor, merged = sorted((target, other), key=lambda p: (p.created_at, p.id))
            # In a consumer batch the rows move at its end, with the other merges' (`move_deferred_rows`).
            batched = known is not None and session.get_bind().dialect.name == "postgresql"
            merges.append(
                merge(
                    session,
                    survivor,
                    merged,
                    links=links,
                    event_id=event_id,
                    flush=not batched,
                    defer_moves=batched,
                )
            )
            target = survivor
    _claim(session, tenant_id, target, owned, rules=rules, seen_at=seen_at)
    fresh = [i for i in identifiers if i not in owned]
    _attach(session, tenant_id, target, fresh, plain, rules=rules, seen_at=seen_at)
    if target.email is None and contact_email is not None:
        target.email = contact_email
        session.add(target)
    if target.phone is None and contact_phone is not None:
        target.phone = seal(tenant_id, contact_phone)
        session.add(target)
    return target, merges


def _knows_nobody(session: Session, profile_id: UUID) -> bool:
    """The profile holds no merge-grade identifier: its records carried a phone alone. The phone it shares
    with somebody known is not another person's, so, whichever record came first, it ends with them."""
    return not any(kind in MERGE_KINDS for kind, _ in _identifiers(session, profile_id))


def _brings_another_document(
    session: Session,
    identifiers: list[Identifier],
    owned: dict[Identifier, UUID],
    rules: identity_rules.IdentityRules,
) -> bool:
    """The record brings a document nobody holds while the profile it would join (the owner of its
    strongest known identifier) holds another: two documents are two people (a family's shared e-mail),
    so the record is somebody new rather than a second document silently dropped."""
    if not owned or not any(i[0] == "document" and i not in owned for i in identifiers):
        return False
    best = min(rules.rank(kind) for kind, _ in owned)
    joined = {pid for (kind, _), pid in owned.items() if rules.rank(kind) == best}
    return any(kind == "document" for pid in joined for kind, _ in _identifiers(session, pid))


def _attach(
    session: Session,
    tenant_id: UUID,
    profile: Profile,
    new: list[Identifier],
    plain: dict[Identifier, str],
    *,
    have: list[Identifier] | None = None,
    rules: identity_rules.IdentityRules,
    seen_at: datetime | None,
) -> None:
    """Attach unowned identifiers (blind indexes; `plain` has their readable values, stored sealed). At a
    kind's limit (e.g. a second document) the profile keeps the earliest seen: a newcomer from an earlier
    record replaces the latest seen one, else it stays out."""
    have = _identifiers(session, profile.id) if have is None else have
    for kind, value in new:
        same_kind = [i for i in have if i[0] == kind]
        if len(same_kind) >= rules.limit(kind):
            latest = max(same_kind, key=lambda i: _seen_key(_row(session, tenant_id, i)))
            if seen_at is None or (seen_at, value) >= _seen_key(_row(session, tenant_id, latest)):
                continue
            _detach(session, tenant_id, profile, latest)
            have.remove(latest)
        row = new_row(
            ProfileIdentifier,
            tenant_id=tenant_id,
            kind=kind,
            value=value,
            sealed=keyring().seal(tenant_id, plain[(kind, value)]),
            profile_id=profile.id,
            seen_at=seen_at,
        )
        add_new(session, row)
        have.append((kind, value))
        known = graph(session)
        if known is not None:
            known.owner[(tenant_id, kind, value)] = profile.id
            known.of_profile.setdefault(profile.id, []).append((kind, value))
            known.rows[(tenant_id, kind, value)] = row


_NEVER = datetime.max.replace(tzinfo=UTC)


def _seen_key(row: ProfileIdentifier | Seen | None) -> tuple[datetime, str]:
    if row is None:
        return (_NEVER, "")
    return (row.seen_at or _NEVER, row.value)


def _row(session: Session, tenant_id: UUID, identifier: Identifier) -> ProfileIdentifier | Seen | None:
    """The stored identifier, to read its value and first sighting."""
    known = graph(session)
    key = (tenant_id, *identifier)
    if known is not None and key in known.rows:
        return known.rows[key]
    return session.get(ProfileIdentifier, key)


def _stored(session: Session, tenant_id: UUID, identifier: Identifier) -> ProfileIdentifier | None:
    """The stored identifier as an ORM row, to change or delete (kept in the batch's graph)."""
    known = graph(session)
    key = (tenant_id, *identifier)
    found = known.rows.get(key) if known is not None else None
    if isinstance(found, ProfileIdentifier):
        return found
    row = session.get(ProfileIdentifier, key)
    if known is not None and row is not None:
        known.rows[key] = row
        if key in known.sightings:  # from now on the ORM row carries it
            row.seen_at = known.sightings.pop(key)
    return row


_SIGHTING = (
    sa.update(table_of(ProfileIdentifier))
    .where(
        table_of(ProfileIdentifier).c.tenant_id == sa.bindparam("_tenant_id"),
        table_of(ProfileIdentifier).c.kind == sa.bindparam("_kind"),
        table_of(ProfileIdentifier).c.value == sa.bindparam("_value"),
    )
    .values(seen_at=sa.bindparam("_seen_at"))
)


def write_sightings(session: Session, known: Graph) -> None:
    """Write the earlier first sightings the batch found (`_claim`), in one statement."""
    if known.sightings:
        rows = [
            {"_tenant_id": t, "_kind": k, "_value": v, "_seen_at": at}
            for (t, k, v), at in known.sightings.items()
        ]
        known.sightings.clear()
        session.execute(_SIGHTING, rows)


def _detach(session: Session, tenant_id: UUID, profile: Profile, identifier: Identifier) -> None:
    row = _stored(session, tenant_id, identifier)
    if row is not None:
        session.delete(row)
        session.flush()
    known = graph(session)
    if known is not None:
        known.owner[(tenant_id, *identifier)] = None
        known.rows.pop((tenant_id, *identifier), None)
        if identifier in known.of_profile.get(profile.id, []):
            known.of_profile[profile.id].remove(identifier)


def _claim(
    session: Session,
    tenant_id: UUID,
    target: Profile,
    owned: dict[Identifier, UUID],
    *,
    rules: identity_rules.IdentityRules,
    seen_at: datetime | None,
) -> None:
    """Identifiers of the record already owned: the earliest time they were seen is kept, and one that
    another profile holds without merging (a shared phone) goes to the profile of its earliest record."""
    if seen_at is None:
        return
    known = graph(session)
    for identifier, owner_id in owned.items():
        seen = _row(session, tenant_id, identifier)
        if seen is None or (seen.seen_at is not None and seen.seen_at <= seen_at):
            continue
        key = (tenant_id, *identifier)
        if known is not None and isinstance(seen, Seen) and target.id in (owner_id, known.owner.get(key)):
            # Only seen earlier: kept in the graph and written with the batch's others.
            known.rows[key] = Seen(seen.value, seen_at)
            known.sightings[key] = seen_at
            continue
        row = _stored(session, tenant_id, identifier)
        if row is None:  # pragma: no cover - read in this transaction a moment ago
            continue
        if owner_id != target.id and row.profile_id != target.id:
            have = _identifiers(session, target.id)
            if identifier[0] in MERGE_KINDS or sum(1 for k, _ in have if k == identifier[0]) >= rules.limit(
                identifier[0]
            ):
                continue  # merge-grade identifiers moved by merges, not here; no room
            previous = row.profile_id
            row.profile_id = target.id
            if known is not None:
                known.owner[(tenant_id, *identifier)] = target.id
                if identifier in known.of_profile.get(previous, []):
                    known.of_profile[previous].remove(identifier)
                known.of_profile.setdefault(target.id, []).append(identifier)
        row.seen_at = seen_at
        session.add(row)


def _move(session: Session, key: sa.Column[UUID], merged: UUID, survivor: UUID) -> list[str]:
    """Repoint the rows of `key`'s table from the merged profile to the survivor; the keys moved."""
    table = key.table
    moved = session.execute(
        sa.update(table).where(table.c.profile_id == merged).values(profile_id=survivor).returning(key)
    )
    return [str(value) for value in moved.scalars()]


# A merge's three moves in one round trip: data-modifying CTEs all run to completion, each names its rows.
_MOVE_ROWS = sa.text(
    "WITH o AS (UPDATE profile_order SET profile_id = :survivor WHERE profile_id = :merged"
    " RETURNING order_id),"
    " r AS (UPDATE profile_record SET profile_id = :survivor WHERE profile_id = :merged RETURNING id),"
    " i AS (UPDATE profile_identifier SET profile_id = :survivor WHERE profile_id = :merged"
    " RETURNING tenant_id, kind, value)"
    " SELECT 'order', CAST(order_id AS text), NULL, NULL FROM o"
    " UNION ALL SELECT 'record', CAST(id AS text), NULL, NULL FROM r"
    " UNION ALL SELECT 'identifier', CAST(tenant_id AS text), kind, value FROM i"
)


def _move_rows(session: Session, merged: UUID, survivor: UUID) -> tuple[list[str], list[str]]:
    """Repoint the merged profile's orders, records and identifiers to the survivor; the orders and records
    moved. Core statements: the ORM would test every object of the session (thousands in a consumer batch)
    to keep them current. The session's identifier rows are kept current by the keys the statement returns;
    its orders and records are left to the caller."""
    if session.get_bind().dialect.name != "postgresql":
        orders = _move(session, _ORDERS.c.order_id, merged, survivor)
        records = _move(session, _RECORDS.c.id, merged, survivor)
        session.execute(
            sa.update(ProfileIdentifier)
            .where(col(ProfileIdentifier.profile_id) == merged)
            .values(profile_id=survivor)
            .execution_options(synchronize_session="fetch")
        )
        return orders, records
    orders, records = [], []
    for what, key, kind, value in session.execute(_MOVE_ROWS, {"merged": merged, "survivor": survivor}):
        if what == "order":
            orders.append(key)
        elif what == "record":
            records.append(key)
        else:
            row = session.identity_map.get(identity_key(ProfileIdentifier, (UUID(key), kind, value)))
            if row is not None:
                set_committed_value(row, "profile_id", survivor)
    return orders, records


# Many merges' moves in one round trip (`move_deferred_rows`): each merged profile's rows go straight to
# the survivor it ends with; each row names the profile it left.
# (The `ANY` has the merged ids found by the index whatever the statistics say.)
_MOVE_MANY = sa.text(
    "WITH o AS (UPDATE profile_order t SET profile_id = m.survivor"
    " FROM unnest(CAST(:merged AS uuid[]), CAST(:survivor AS uuid[])) AS m(merged, survivor)"
    " WHERE t.profile_id = m.merged AND t.profile_id = ANY(CAST(:merged AS uuid[]))"
    " RETURNING m.merged, t.order_id),"
    " r AS (UPDATE profile_record t SET profile_id = m.survivor"
    " FROM unnest(CAST(:merged AS uuid[]), CAST(:survivor AS uuid[])) AS m(merged, survivor)"
    " WHERE t.profile_id = m.merged AND t.profile_id = ANY(CAST(:merged AS uuid[]))"
    " RETURNING m.merged, t.id),"
    " i AS (UPDATE profile_identifier t SET profile_id = m.survivor"
    " FROM unnest(CAST(:merged AS uuid[]), CAST(:survivor AS uuid[])) AS m(merged, survivor)"
    " WHERE t.profile_id = m.merged AND t.profile_id = ANY(CAST(:merged AS uuid[]))"
    " RETURNING m.merged, t.tenant_id, t.kind, t.value)"
    " SELECT 'order', merged, CAST(order_id AS text), NULL, NULL FROM o"
    " UNION ALL SELECT 'record', merged, CAST(id AS text), NULL, NULL FROM r"
    " UNION ALL SELECT 'identifier', merged, CAST(tenant_id AS text), kind, value FROM i"
)
_DEFERRED = "clientela.deferred_moves"


def move_deferred_rows(session: Session) -> None:
    """Move the rows of the merges made with `defer_moves` (in the order they were made), in one statement,
    and name in each merge record the orders and records its merge moved: what moving them merge by merge
    would have moved (a profile merged into one that is merged later moves on with it)."""
    merges: list[MergeRecord] = session.info.pop(_DEFERRED, [])
    if not merges:
        return
    final = {m.merged_id: m.survivor_id for m in merges}
    for merged_id in final:  # a survivor merged later: its rows and those it took in end with its survivor
        while final[merged_id] in final:
            final[merged_id] = final[final[merged_id]]
    rows_of: dict[UUID, list[tuple[str, str]]] = {}
    params = {"merged": list(final), "survivor": list(final.values())}
    # No autoflush: the merges' own changes are the caller's to write (not the ORM's, row by row).
    with session.no_autoflush:
        moved_rows = session.execute(_MOVE_MANY, params).all()
    for what, left, key, kind, value in moved_rows:
        if what == "identifier":
            row = session.identity_map.get(identity_key(ProfileIdentifier, (UUID(key), kind, value)))
            if row is not None:
                set_committed_value(row, "profile_id", final[left])
        else:
            rows_of.setdefault(left, []).append((what, key))
    for record in merges:
        moved = rows_of.pop(record.merged_id, [])
        # With those the merge moved in the session (`_merge`: the batch's own orders), once each.
        record.moved_orders = list(
            dict.fromkeys([*record.moved_orders, *(k for w, k in moved if w == "order")])
        )
        record.moved_records = [key for what, key in moved if what == "record"]
        rows_of.setdefault(record.survivor_id, []).extend(moved)


def merge(
    session: Session,
    survivor: Profile,
    merged: Profile,
    *,
    links: list[Identifier],
    event_id: UUID | None,
    method: str = "deterministic",
    score: float | None = None,
    merged_identifiers: list[Identifier] | None = None,
    flush: bool = True,
    in_no_block: bool = False,
    defer_moves: bool = False,
) -> MergeRecord:
    """Fold `merged` into `survivor`: identifiers, orders and records move; `merged` keeps a pointer.
    `merged_identifiers`: the merged profile's identifiers as stored, when the caller has them.
    `flush=False`: the caller flushed the orders, records and identifiers of the session before and
    flushes the merge's own changes (profiles, record) after, once for many merges (the probabilistic
    stage); the merge then flushes only where its statements would miss a change of an earlier merge.
    `in_no_block`: the caller knows `merged` is in no `MergeBlock` (none to move; the batch's graph knows it
    of the profiles it loaded). `defer_moves` (PostgreSQL): the orders, records and identifiers move later,
    with those of the caller's other merges, in one statement (`move_deferred_rows`, which the caller runs
    after flushing the session, before anything reads them by profile); the merge itself then needs no
    flush before it."""
    if flush:
        session.flush()
    with session.no_autoflush:
        record = _merge(
            session,
            survivor,
            merged,
            links,
            event_id,
            method,
            score,
            merged_identifiers,
            in_no_block,
            defer_moves and session.get_bind().dialect.name == "postgresql",
        )
    if flush:
        session.flush()
    known = graph(session)
    if known is not None:
        moved = [(kind, value) for kind, value in record.moved_identifiers]
        for kind, value in moved:
            known.owner[(survivor.tenant_id, kind, value)] = survivor.id
        known.of_profile[survivor.id] = known.of_profile.get(survivor.id, []) + moved
        known.of_profile[merged.id] = []
    return record


_MERGED_HERE = "clientela.merged_here"


def _merged_here(session: Session) -> dict[UUID, list[Profile]]:
    """The profiles merged in the session's current transaction, by the profile they point at."""
    transaction = session.get_transaction()
    kept = session.info.get(_MERGED_HERE)
    if kept is None or kept[0] is not transaction:
        kept = session.info[_MERGED_HERE] = (transaction, {})
    found: dict[UUID, list[Profile]] = kept[1]
    return found


# The columns a merge changes: of the merged profile, and of the survivor.
MERGED_COLUMNS = ("status", "merged_into", "version", "updated_at")
SURVIVOR_COLUMNS = ("merges", "email", "phone")


def _merge(
    session: Session,
    survivor: Profile,
    merged: Profile,
    links: list[Identifier],
    event_id: UUID | None,
    method: str,
    score: float | None,
    merged_identifiers: list[Identifier] | None,
    in_no_block: bool,
    defer_moves: bool,
) -> MergeRecord:
    """`merge`'s statements and changes, without autoflush."""
    moved_identifiers = (
        list(merged_identifiers) if merged_identifiers is not None else _identifiers(session, merged.id)
    )
    # Orders, records and identifiers move (one statement on PostgreSQL) and are named (`_move_rows`). The
    # batch's own orders are kept current below; a record object of the session may keep the merged id
    # until the commit, where it only names the profile a newer version of it leaves (to recompute: a
    # merged profile is not).
    moved_orders, moved_records = ([], []) if defer_moves else _move_rows(session, merged.id, survivor.id)
    known_orders = session.info.get("known_orders")
    if isinstance(known_orders, dict):
        for stored in known_orders.values():
            if stored is not None and stored.profile_id == merged.id:
                set_committed_value(stored, "profile_id", survivor.id)
                if (
                    defer_moves
                ):  # perhaps not written yet: then it is written with the survivor, and named here
                    moved_orders.append(str(stored.order_id))
    # A block against the merged profile now holds against the survivor that took it in (those an earlier
    # merge moved are written first). A profile the batch knows to be in none has nothing to move.
    known = graph(session)
    if not in_no_block and (known is None or merged.id not in known.unblocked):
        if session.info.pop("unflushed_blocks", False):
            session.flush()
        for block in session.exec(
            select(MergeBlock).where(
                sa.or_(col(MergeBlock.profile_a) == merged.id, col(MergeBlock.profile_b) == merged.id)
            )
        ).all():
            other = block.profile_b if block.profile_a == merged.id else block.profile_a
            session.delete(block)
            session.info["unflushed_blocks"] = True
            if other != survivor.id:
                add_block(session, survivor.tenant_id, survivor.id, other, merge_id=block.merge_id)
    # Profiles merged into `merged` earlier now point straight at the survivor (no chains): those merged
    # in earlier transactions in the table (merged profiles are not read again in this transaction: the
    # session's copies are left as they are), those merged in this one in the session, which writes them
    # later (no flush here: in the probabilistic stage it would write each merge's profiles apart).
    # `merges` counts the profiles pointing at it (an unmerge recounts it): none, nothing to repoint.
    merged_here = _merged_here(session)
    if merged.merges:
        session.execute(
            sa.update(Profile)
            .where(col(Profile.merged_into) == merged.id)
            .values(merged_into=survivor.id)
            .execution_options(synchronize_session=False)
        )
        for earlier in merged_here.pop(merged.id, []):
            earlier.merged_into = survivor.id
            merged_here.setdefault(survivor.id, []).append(earlier)
    merged.status = "merged"
    merged.merged_into = survivor.id
    merged_here.setdefault(survivor.id, []).append(merged)
    merged.version += 1
    merged.updated_at = utcnow()
    survivor.merges += merged.merges + 1
    if survivor.email is None:
        survivor.email = merged.email
    if survivor.phone is None:
        survivor.phone = merged.phone
    record = MergeRecord(
        tenant_id=survivor.tenant_id,
        survivor_id=survivor.id,
        merged_id=merged.id,
        rule=links[0][0] if method == "deterministic" else method,
        linked_by=sorted({kind for kind, _ in links}, key=_rank),
        linked_identifiers=[[kind, value] for kind, value in links],
        moved_identifiers=[[kind, value] for kind, value in moved_identifiers],
        moved_orders=moved_orders,
        moved_records=moved_records,
        method=method,
        score=score,
        event_id=event_id,
    )
    session.add_all([merged, survivor, record])
    if defer_moves:
        session.info.setdefault(_DEFERRED, []).append(record)
    return record
