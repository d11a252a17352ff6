"""The second stage of identity resolution, on the database: profiles that no identifier links but that
look like one person (`services.profile.matching` scores them) merge, or become a suggestion a person
accepts or rejects.

After each consumer batch, every changed active profile gets its blocking keys stored (hashed: they hold
personal data) and is scored against the profiles sharing a key. Above `merge_threshold` the two merge
(recorded as probabilistic, with the score); between `suggest_threshold` and it, a `MergeSuggestion` is
kept for `GET /v1/merge-suggestions`. A pair that was unmerged, rejected or already suggested is not
scored again; the deterministic merge protection (one document, per-kind limits, merge limit) holds here
too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from uuid import UUID

import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.profile import identity, identity_rules, matching
from services.profile.models import (
    MergeRecord,
    MergeSuggestion,
    Profile,
    ProfileBlockKey,
    ProfileIdentifier,
    SealedRow,
)
from shared.crypto import keyring
from shared.db import any_of, bulk_insert, table_of, utcnow, write_columns
from shared.errors import Conflict, NotFound

# A key shared by more profiles than this says little (a common name in a big city): it finds no candidates.
MAX_PROFILES_PER_KEY = 100
_BLOCK_KEYS = table_of(ProfileBlockKey)


def hashed(tenant_id: UUID, key: str) -> str:
    """A blocking key as stored: its blind index for the tenant (keyed: a phone's digits are guessable)."""
    return keyring().index(tenant_id, "block", key)[:32]


@dataclass(frozen=True, slots=True)
class Candidate(SealedRow):
    """A profile a changed profile is scored against, as a plain row of what the score and the merge
    protection read. Candidates are most of the profiles the stage reads, and their number grows with the
    tenant; as ORM objects each cost its JSON traits and instance state. One that is to merge is loaded
    as a `Profile` then (`_loaded`)."""

    id: UUID
    tenant_id: UUID
    status: str
    merges: int
    created_at: datetime
    phone: str | None
    name_sealed: str | None
    birth_date_sealed: str | None
    zip_sealed: str | None
    city: str | None
    state: str | None


_PROFILES = table_of(Profile)
_CANDIDATES = sa.select(*(_PROFILES.c[f.name] for f in fields(Candidate)))


def _loaded(
    session: Session, known: dict[UUID, Profile | Candidate], profile: Profile | Candidate
) -> Profile:
    """The profile as an ORM object (a merge changes it), kept in `known` so later pairs see the change."""
    if isinstance(profile, Profile):
        return profile
    loaded = session.get(Profile, profile.id)
    if loaded is None:  # pragma: no cover - read in this transaction a moment ago
        raise NotFound("No profile with this id.")
    known[profile.id] = loaded
    return loaded


def _contact_phone(profile: Profile | Candidate) -> set[str]:
    if isinstance(profile, Profile):
        phone = profile.contact_phone
    else:
        phone = keyring().open(profile.tenant_id, profile.phone) if profile.phone else None
    return {phone} if phone else set()


def match_fields(
    profile: Profile | Candidate, identifiers: Iterable[identity.Identifier]
) -> matching.MatchFields:
    """What the score compares: the profile's name, birth date and address, the readable values of its
    identifiers and its contact phone."""
    found = list(identifiers)
    documents = [v for k, v in found if k == "document"]
    return matching.MatchFields(
        name=profile.name,
        birth_date=profile.birth_date,
        zip=profile.zip,
        city=profile.city,
        state=profile.state,
        phones=tuple(sorted({v for k, v in found if k == "phone"} | _contact_phone(profile))),
        emails=tuple(sorted(v for k, v in found if k == "email")),
        document=documents[0] if documents else None,
    )


def _identifiers(
    session: Session, profile_ids: list[UUID], readable: dict[UUID, list[identity.Identifier]] | None = None
) -> dict[UUID, list[identity.Identifier]]:
    """The profiles' identifiers as stored (blind indexes); their readable values into `readable` when
    given (what the score compares)."""
    found: dict[UUID, list[identity.Identifier]] = {pid: [] for pid in profile_ids}
    sealed = _sealed_identifiers(session, profile_ids, found)
    if readable is not None:
        _open(sealed, readable)
    return found


Sealed = dict[UUID, list[tuple[UUID, str, str]]]  # profile -> (tenant, kind, sealed value) of compared kinds


def _sealed_identifiers(
    session: Session, profile_ids: list[UUID], found: dict[UUID, list[identity.Identifier]]
) -> Sealed:
    """Fill `found` with the profiles' identifiers (blind indexes); return the sealed values of those the
    score compares, to open only for the profiles that get scored."""
    sealed: Sealed = {}
    for start in range(0, len(profile_ids), 1000):
        chunk = profile_ids[start : start + 1000]
        rows = session.execute(
            sa.select(
                col(ProfileIdentifier.profile_id),
                col(ProfileIdentifier.tenant_id),
                col(ProfileIdentifier.kind),
                col(ProfileIdentifier.value),
                col(ProfileIdentifier.sealed),
            ).where(any_of(session, col(ProfileIdentifier.profile_id), chunk))
        )
        for profile_id, tenant_id, kind, value, token in rows:
            found[profile_id].append((kind, value))
            if kind in _COMPARED:
                sealed.setdefault(profile_id, []).append((tenant_id, kind, token))
    return sealed


def _open(sealed: Sealed, readable: dict[UUID, list[identity.Identifier]]) -> None:
    keys = keyring()
    for profile_id, values in sealed.items():
        readable[profile_id] = [(kind, keys.open(tenant_id, token)) for tenant_id, kind, token in values]


def fingerprint(profile: Profile, identifiers: Iterable[identity.Identifier]) -> str:
    """What the score and the blocking keys of this profile depend on, as one keyed hash (it holds personal
    data): name, birth date, address, contact phone and the identifiers' blind indexes; and the merges
    count (the merge limit). Unchanged since the last scoring, the profile has nothing new to match: any
    candidate that changed is scored from its own side."""
    birth = profile.birth_date
    parts = [
        profile.name or "",
        birth.isoformat() if birth else "",
        profile.zip or "",
        profile.city or "",
        profile.state or "",
        *sorted(_contact_phone(profile)),
        *sorted(f"{kind}:{value}" for kind, value in identifiers),
        str(profile.merges),
    ]
    return keyring().index(profile.tenant_id, "match", "\x1f".join(parts))


_COMPARED = frozenset({"document", "email", "phone"})  # what `match_fields` reads


def second_stage(
    session: Session,
    profiles: list[Profile],
    *,
    weights: matching.Weights = matching.DEFAULT_WEIGHTS,
) -> list[MergeRecord]:
    """Index these (changed, active) profiles' blocking keys, score them against their candidates, merge or
    suggest. Returns the merges made (their survivors need recomputing)."""
    profiles = [p for p in profiles if p.status == "active"]
    if not profiles:
        return []
    identifiers: dict[UUID, list[identity.Identifier]] = {p.id: [] for p in profiles}
    sealed = _sealed_identifiers(session, list(identifiers), identifiers)
    changed = []
    for profile in profiles:
        now = fingerprint(profile, identifiers[profile.id])
        if now != profile.match_fingerprint:
            profile.match_fingerprint = now
            if profile not in session:
                session.add(profile)
            changed.append(profile)
    # One statement for all (the flush would write an UPDATE per profile). The profiles are stored: the
    # consumer's batch flushed them before this stage.
    write_columns(session, [p for p in changed if sa.inspect(p).persistent], ("match_fingerprint",))
    profiles = changed
    if not profiles:
        return []
    ids = [p.id for p in profiles]
    readable: dict[UUID, list[identity.Identifier]] = {}
    _open({pid: sealed[pid] for pid in ids if pid in sealed}, readable)
    fields = {p.id: match_fields(p, readable.get(p.id, [])) for p in profiles}
    keys = {p.id: {hashed(p.tenant_id, k) for k in matching.blocking_keys(fields[p.id])} for p in profiles}
    _store_keys(session, profiles, keys)

    wanted = sorted({k for ks in keys.values() for k in ks})
    holders: dict[str, set[UUID]] = {}
    for start in range(0, len(wanted), 1000):
        for key, holder in session.execute(
            sa.select(_BLOCK_KEYS.c.key, _BLOCK_KEYS.c.profile_id).where(
                any_of(session, _BLOCK_KEYS.c.key, wanted[start : start + 1000])
            )
        ):
            holders.setdefault(key, set()).add(holder)
    pairs: set[tuple[UUID, UUID]] = set()
    for profile in profiles:
        for key in keys[profile.id]:
            found = holders.get(key, set())
            if len(found) <= MAX_PROFILES_PER_KEY:
                pairs.update(tuple(sorted((profile.id, other))) for other in found if other != profile.id)  # type: ignore[misc]
    if not pairs:
        return []

    others = sorted({pid for pair in pairs for pid in pair} - set(ids))
    known: dict[UUID, Profile | Candidate] = {p.id: p for p in profiles}
    for start in range(0, len(others), 1000):
        for row in session.execute(
            _CANDIDATES.where(any_of(session, _PROFILES.c.id, others[start : start + 1000]))
        ):
            known[row.id] = Candidate(*row)
    identifiers.update(_identifiers(session, others, readable))
    for pid in others:
        if pid in known:
            fields[pid] = match_fields(known[pid], readable.get(pid, []))
    seen = _decided_pairs(session, pairs)
    blocked = identity.blocks_of(session, {pid for pair in pairs for pid in pair})

    session.flush()  # what the merges' statements read; their own changes are flushed once, at the end
    with session.no_autoflush:
        _load_likely_merges(session, pairs, known, fields, weights)
        merges = _score_pairs(
            session, sorted(pairs), known, identifiers, readable, fields, seen, blocked, weights
        )
    identity.move_deferred_rows(session)  # the merges' orders, records and identifiers, in one statement
    if merges:
        # What the merges changed of the profiles, in two statements (before anything flushes them): the
        # ORM's flush writes each run of profiles changed in the same columns apart, and merged and
        # surviving profiles alternate.
        merged = {m.merged_id: known[m.merged_id] for m in merges}
        kept = {m.survivor_id: known[m.survivor_id] for m in merges}
        write_columns(session, list(merged.values()), identity.MERGED_COLUMNS)
        write_columns(session, list(kept.values()), identity.SURVIVOR_COLUMNS)
        # A merged profile is no candidate any more.
        session.execute(
            sa.delete(_BLOCK_KEYS).where(
                any_of(session, _BLOCK_KEYS.c.profile_id, [m.merged_id for m in merges])
            )
        )
    session.flush()
    return merges


def _store_keys(session: Session, profiles: list[Profile], keys: dict[UUID, set[str]]) -> None:
    """Store the profiles' blocking keys: delete those they no longer have and insert the new ones (most
    of a changed profile's keys are the ones it had: a new order rarely brings a new name, CEP or phone).
    Core statements, not ORM rows: thousands of keys per batch (inserted with COPY on PostgreSQL)."""
    ids = [p.id for p in profiles]
    stored: dict[UUID, set[str]] = {pid: set() for pid in ids}
    for start in range(0, len(ids), 1000):
        for key, holder in session.execute(
            sa.select(_BLOCK_KEYS.c.key, _BLOCK_KEYS.c.profile_id).where(
                any_of(session, _BLOCK_KEYS.c.profile_id, ids[start : start + 1000])
            )
        ):
            stored[holder].add(key)
    gone = [(pid, key) for pid in ids for key in sorted(stored[pid] - keys[pid])]
    for start in range(0, len(gone), 1000):
        session.execute(
            sa.delete(_BLOCK_KEYS).where(
                sa.tuple_(_BLOCK_KEYS.c.profile_id, _BLOCK_KEYS.c.key).in_(gone[start : start + 1000])
            )
        )
    rows = [
        {"tenant_id": p.tenant_id, "key": k, "profile_id": p.id}
        for p in profiles
        for k in keys[p.id] - stored[p.id]
    ]
    bulk_insert(session, ProfileBlockKey, rows)


def _score_pairs(
    session: Session,
    pairs: list[tuple[UUID, UUID]],
    known: dict[UUID, Profile | Candidate],
    identifiers: dict[UUID, list[identity.Identifier]],
    readable: dict[UUID, list[identity.Identifier]],
    fields: dict[UUID, matching.MatchFields],
    seen: set[tuple[UUID, UUID]],
    blocked: set[tuple[UUID, UUID]],
    weights: matching.Weights,
) -> list[MergeRecord]:
    """Score each pair (in order: a merge changes what later pairs see), merge or suggest."""
    merges: list[MergeRecord] = []
    for a_id, b_id in pairs:
        a, b = known.get(a_id), known.get(b_id)
        if a is None or b is None or a.status != "active" or b.status != "active" or (a_id, b_id) in seen:
            continue
        if a.tenant_id != b.tenant_id or (a_id, b_id) in blocked:
            continue
        rules = identity_rules.rules_for(session, a.tenant_id)
        if not identity.can_merge(identifiers[a_id], identifiers[b_id], a.merges + b.merges, rules):
            continue
        match = matching.score(fields[a_id], fields[b_id], weights)
        decision = matching.decide(match, rules.merge_threshold, rules.suggest_threshold)
        if decision == "merge":
            a, b = _loaded(session, known, a), _loaded(session, known, b)
            survivor, merged = sorted((a, b), key=lambda p: (p.created_at, p.id))
            merges.append(
                identity.merge(
                    session,
                    survivor,
                    merged,
                    links=[],
                    event_id=None,
                    method="probabilistic",
                    score=round(match.probability, 4),
                    merged_identifiers=identifiers[merged.id],
                    flush=False,
                    in_no_block=not any(merged.id in pair for pair in blocked),
                    defer_moves=True,
                )
            )
            identifiers[survivor.id] = identifiers[survivor.id] + identifiers[merged.id]
            readable[survivor.id] = readable.get(survivor.id, []) + readable.get(merged.id, [])
            fields[survivor.id] = match_fields(survivor, readable[survivor.id])
            _move_blocks(blocked, merged.id, survivor.id)
        elif decision == "suggest":
            session.add(
                MergeSuggestion(
                    tenant_id=a.tenant_id,
                    profile_a=a_id,
                    profile_b=b_id,
                    score=round(match.probability, 4),
                    contributions=[asdict(c) for c in match.contributions],
                )
            )
    return merges


def _load_likely_merges(
    session: Session,
    pairs: set[tuple[UUID, UUID]],
    known: dict[UUID, Profile | Candidate],
    fields: dict[UUID, matching.MatchFields],
    weights: matching.Weights,
) -> None:
    """Load as `Profile`s, a thousand to a query, the candidates of the pairs that score a merge as they
    stand: a merge changes them, and `_loaded` would read them one by one. (The pairs are scored again in
    `_score_pairs`, where an earlier merge may change the answer: any other is loaded there.)"""
    wanted: set[UUID] = set()
    for a_id, b_id in pairs:
        a, b = known.get(a_id), known.get(b_id)
        if a is None or b is None or (isinstance(a, Profile) and isinstance(b, Profile)):
            continue
        rules = identity_rules.rules_for(session, a.tenant_id)
        match = matching.score(fields[a_id], fields[b_id], weights)
        if matching.decide(match, rules.merge_threshold, rules.suggest_threshold) == "merge":
            wanted.update(p.id for p in (a, b) if isinstance(p, Candidate))
    ids = sorted(wanted)
    for start in range(0, len(ids), 1000):
        for profile in session.exec(
            select(Profile).where(any_of(session, col(Profile.id), ids[start : start + 1000]))
        ):
            known[profile.id] = profile


def _move_blocks(blocked: set[tuple[UUID, UUID]], merged: UUID, survivor: UUID) -> None:
    """What `identity.merge` does to the stored blocks, on `identity.blocks_of`'s set: a block against the
    merged profile now holds against the survivor. (The set holds every block of the profiles scored, so
    the blocks that matter move with it.)"""
    for pair in [pair for pair in blocked if merged in pair]:
        blocked.discard(pair)
        other = pair[1] if pair[0] == merged else pair[0]
        if other != survivor:
            blocked.add((min(other, survivor), max(other, survivor)))


def _decided_pairs(session: Session, pairs: set[tuple[UUID, UUID]]) -> set[tuple[UUID, UUID]]:
    """Pairs already suggested (pending, accepted or rejected): not scored again."""
    ids = sorted({pid for pair in pairs for pid in pair})
    found: set[tuple[UUID, UUID]] = set()
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        for row in session.exec(
            select(MergeSuggestion).where(any_of(session, col(MergeSuggestion.profile_a), chunk))
        ):
            found.add((row.profile_a, row.profile_b))
    return found


def list_suggestions(
    *, tenant_id: UUID, session: Session, status: str, after: UUID | None, limit: int
) -> list[MergeSuggestion]:
    query = select(MergeSuggestion).where(
        MergeSuggestion.tenant_id == tenant_id, MergeSuggestion.status == status
    )
    if after is not None:
        query = query.where(col(MergeSuggestion.id) > after)
    return list(session.exec(query.order_by(col(MergeSuggestion.id)).limit(limit)).all())


def get_suggestion(suggestion_id: UUID, *, tenant_id: UUID, session: Session) -> MergeSuggestion:
    found = session.get(MergeSuggestion, suggestion_id)
    if found is None or found.tenant_id != tenant_id:
        raise NotFound("No merge suggestion with this id.")
    return found


def _pending(suggestion: MergeSuggestion) -> None:
    if suggestion.status != "pending":
        raise Conflict(f"This suggestion was {suggestion.status} already.")


def accept(session: Session, suggestion: MergeSuggestion) -> MergeRecord:
    """A person confirmed the pair is one person: merge them (recorded as manual, with the score)."""
    _pending(suggestion)
    profiles = {
        p.id: p for p in identity.lock_profiles(session, [suggestion.profile_a, suggestion.profile_b])
    }
    if len(profiles) != 2 or any(p.status != "active" for p in profiles.values()):
        suggestion.status, suggestion.decided_at = "obsolete", utcnow()
        session.add(suggestion)
        session.commit()
        raise Conflict("One of the two profiles was merged or changed since: the suggestion is obsolete.")
    a, b = profiles[suggestion.profile_a], profiles[suggestion.profile_b]
    mine = _identifiers(session, [a.id, b.id])
    rules = identity_rules.rules_for(session, a.tenant_id)
    if identity.is_blocked(session, a.id, b.id) or not identity.can_merge(
        mine[a.id], mine[b.id], a.merges + b.merges, rules
    ):
        raise Conflict("Merge protection refuses this merge (documents, limits or an undone merge).")
    survivor, merged = sorted((a, b), key=lambda p: (p.created_at, p.id))
    record = identity.merge(
        session, survivor, merged, links=[], event_id=None, method="manual", score=suggestion.score
    )
    suggestion.status, suggestion.decided_at = "accepted", utcnow()
    session.add(suggestion)
    return record


def reject(session: Session, suggestion: MergeSuggestion) -> None:
    """Not one person: the pair is never suggested or merged again by the probabilistic stage."""
    _pending(suggestion)
    suggestion.status, suggestion.decided_at = "rejected", utcnow()
    session.add(suggestion)
