"""The second stage of identity resolution, on the database: profiles that no identifier links but that
look like one person (`services.profile.matching` scores them) merge, or become a suggestion a person
accepts or rejects.

After each consumer batch, every changed active profile gets its blocking keys stored (hashed: they hold
personal data) and is scored against the profiles sharing a key. Above `merge_threshold` the two merge
(recorded as probabilistic, with the score); between `suggest_threshold` and it, a `MergeSuggestion` is
kept for `GET /v1/merge-suggestions`. A pair that was unmerged, accepted or rejected is not scored again;
a pending suggestion is, when one of the two changes (it then merges, shows the new score, or becomes
obsolete). The deterministic merge protection (one document, per-kind limits, merge limit) holds here too.
After the batch commits, the keys it inserted are read again (`missed_pairs`; kept until then in
`BlockKeyCheck`): look-alikes that another consumer of the group stored at the same time are scored then.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import date, datetime
from typing import Any
from uuid import UUID

import orjson
import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.profile import identity, identity_rules, matching
from services.profile.models import (
    BlockKeyCheck,
    MergeRecord,
    MergeSuggestion,
    Profile,
    ProfileBlockKey,
    ProfileIdentifier,
    SealedRow,
)
from shared.crypto import keyring, open_text
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
    match_variants_sealed: str | None

    @property
    def match_variants(self) -> str | None:
        return open_text(self.tenant_id, self.match_variants_sealed)


_PROFILES = table_of(Profile)
_CANDIDATES = sa.select(*(_PROFILES.c[f.name] for f in fields(Candidate)))


def _loaded(
    session: Session,
    known: dict[UUID, Profile | Candidate],
    profile: Profile | Candidate,
    busy: set[UUID] | None = None,
) -> Profile | None:
    """The profile as an ORM object (a merge changes it), kept in `known` so later pairs see the change.
    With `busy`: locked, or None (and in `busy`) while another transaction holds it."""
    if isinstance(profile, Profile):
        return profile
    if busy is None:
        loaded = session.get(Profile, profile.id)
    else:
        query = select(Profile).where(col(Profile.id) == profile.id).with_for_update(skip_locked=True)
        loaded = session.exec(query).first()
        if loaded is None:
            busy.add(profile.id)
            return None
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


# What the score compares of a profile: its own name, birth date and address, then each other combination of
# them its records carried (`traits.person_variants`), each with the profile's identifiers. A pair scores the
# best of its combinations (`_best`).
Fields = list[matching.MatchFields]


def match_fields(profile: Profile | Candidate, identifiers: Iterable[identity.Identifier]) -> Fields:
    """What the score compares: the profile's name, birth date and address (and the other ones its records
    carried), the readable values of its identifiers and its contact phone."""
    variants = orjson.loads(profile.match_variants) if profile.match_variants else []
    return _with_persons_of(
        [_own_fields(profile, identifiers)],
        [
            matching.MatchFields(
                name=name,
                birth_date=date.fromisoformat(birth) if birth else None,
                zip=zip,
                city=city,
                state=state,
            )
            for name, birth, zip, city, state in variants
        ],
    )


def _with_persons_of(fields: Fields, other: Fields) -> Fields:
    """`fields`, and the names, birth dates and addresses of `other` they lack, each with the identifiers
    and contact phone of `fields`' first (a profile's variants; a merge's survivor, until it is
    recomputed)."""
    own = fields[0]
    found = {_person(f): f for f in fields}
    for f in other:
        found.setdefault(
            _person(f),
            replace(own, name=f.name, birth_date=f.birth_date, zip=f.zip, city=f.city, state=f.state),
        )
    return list(found.values())


def _person(fields: matching.MatchFields) -> tuple[object, ...]:
    return (fields.name, fields.birth_date, fields.zip, fields.city, fields.state)


def _best(a: Fields, b: Fields, weights: matching.Weights) -> matching.Match:
    """The score of the two profiles' best matching combinations (their own ones first, on a tie)."""
    best: matching.Match | None = None
    for x in a:
        for y in b:
            match = matching.score(x, y, weights)
            if best is None or match.probability > best.probability:
                best = match
    if best is None:  # pragma: no cover - match_fields gives at least the profile's own
        raise ValueError("no fields to compare")
    return best


def _own_fields(
    profile: Profile | Candidate, identifiers: Iterable[identity.Identifier]
) -> matching.MatchFields:
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
    data): name, birth date, address (and the other ones its records carried), contact phone and the
    identifiers' blind indexes; and the merges count (the merge limit). Unchanged since the last scoring,
    the profile has nothing new to match: any candidate that changed is scored from its own side."""
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
        profile.match_variants or "",
    ]
    return keyring().index(profile.tenant_id, "match", "\x1f".join(parts))


_COMPARED = frozenset({"document", "email", "phone"})  # what `match_fields` reads


# Set in a consumer batch's session info when it may defer what other transactions hold (`second_stage`).
NO_WAITING = "clientela.no_waiting"
# Per blocking key a consumer batch's second stage inserted: the tenant, the batch's profiles that inserted
# it, and every holder the stage saw (`second_stage`'s `seen`, read again by `missed_pairs` after commit).
SeenKeys = dict[str, tuple[UUID, set[UUID], set[UUID]]]


def second_stage(
    session: Session,
    profiles: list[Profile],
    *,
    weights: matching.Weights = matching.DEFAULT_WEIGHTS,
    seen: SeenKeys | None = None,
) -> list[MergeRecord]:
    """Index these (changed, active) profiles' blocking keys, score them against their candidates, merge or
    suggest. Returns the merges made (their survivors need recomputing). `seen`, when given, is filled with
    the keys stored and the holders found: what `missed_pairs` checks after the transaction commits."""
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
    keys = {
        p.id: {hashed(p.tenant_id, k) for f in fields[p.id] for k in matching.blocking_keys(f)}
        for p in profiles
    }
    added = _store_keys(session, profiles, keys)

    holders = _holders(session, sorted({k for ks in keys.values() for k in ks}))
    pairs: set[tuple[UUID, UUID]] = set()
    for profile in profiles:
        for key in keys[profile.id]:
            found = holders.get(key, set())
            if seen is not None and (profile.id, key) in added:
                seen.setdefault(key, (profile.tenant_id, set(), found))[1].add(profile.id)
            if len(found) <= MAX_PROFILES_PER_KEY:
                pairs.update(_pairs_with(profile.id, found))
    if not pairs:
        return []
    # In a batch that may defer (`consumer_defer_busy`: NO_WAITING in the session's info), the candidates
    # another transaction holds (another member of the group is changing them now) are not waited for,
    # holding this batch's profiles: their pairs are scored after the batch commits, as the keys' holders it
    # did not see (`missed_pairs`).
    no_waiting = session.info.get(NO_WAITING, False) and session.get_bind().dialect.name == "postgresql"
    busy: set[UUID] | None = set() if no_waiting else None
    merges = _merge_or_suggest(
        session, pairs, {p.id: p for p in profiles}, identifiers, readable, fields, weights, busy
    )
    if busy and seen is not None:
        # Each of the batch's profiles that waits is paired again with every holder of its keys.
        for profile in profiles:
            if profile.id in busy:
                for key in keys[profile.id]:
                    tenant_id, mine, _ = seen.get(key, (profile.tenant_id, set(), set()))
                    seen[key] = (tenant_id, mine | {profile.id}, set())
    return merges


def stored_seen(seen: SeenKeys) -> dict[str, Any]:
    """`seen` as `BlockKeyCheck.keys` stores it: by tenant, each key's batch profiles and the other
    holders it saw (most keys: none)."""
    found: dict[str, dict[str, list[list[str]]]] = {}
    for key, (tenant_id, mine, holders) in seen.items():
        found.setdefault(str(tenant_id), {})[key] = [
            sorted(str(p) for p in mine),
            sorted(str(p) for p in holders - mine),
        ]
    return found


def loaded_seen(stored: dict[str, Any]) -> SeenKeys:
    """`stored_seen`'s inverse."""
    seen: SeenKeys = {}
    for tenant, keys in stored.items():
        for key, (mine, others) in keys.items():
            ours = {UUID(p) for p in mine}
            seen[key] = (UUID(tenant), ours, ours | {UUID(p) for p in others})
    return seen


def forget_checks(session: Session, tenant_id: UUID, ids: Sequence[UUID]) -> int:
    """Erasure: take these profiles out of every `BlockKeyCheck` still waiting to be read again (their
    blocking keys' hashes and their ids); a key left with none of its batch's profiles goes, and a check
    left with no key is deleted. Returns how many checks changed."""
    gone, tenant = {str(i) for i in ids}, str(tenant_id)
    changed = 0
    query = select(BlockKeyCheck).where(sa.cast(col(BlockKeyCheck.keys), sa.Text).contains(tenant))
    for check in session.exec(query.with_for_update()):
        keys = check.keys.get(tenant)
        if not keys or not any(gone.intersection(mine + others) for mine, others in keys.values()):
            continue
        kept = {
            key: [[p for p in mine if p not in gone], [p for p in others if p not in gone]]
            for key, (mine, others) in keys.items()
            if set(mine) - gone
        }
        rest = {t: k for t, k in check.keys.items() if t != tenant}
        if kept:
            rest[tenant] = kept
        if rest:
            check.keys = rest
            session.add(check)
        else:
            session.delete(check)
        changed += 1
    return changed


def _holders(session: Session, keys: list[str]) -> dict[str, set[UUID]]:
    """The profiles holding each of these blocking keys (a key nobody holds is left out)."""
    found: dict[str, set[UUID]] = {}
    for start in range(0, len(keys), 1000):
        for key, holder in session.execute(
            sa.select(_BLOCK_KEYS.c.key, _BLOCK_KEYS.c.profile_id).where(
                any_of(session, _BLOCK_KEYS.c.key, keys[start : start + 1000])
            )
        ):
            found.setdefault(key, set()).add(holder)
    return found


def _pairs_with(profile_id: UUID, others: Iterable[UUID]) -> Iterable[tuple[UUID, UUID]]:
    """The pairs of a profile with each of the others, in their stored order (lower id first)."""
    return ((min(profile_id, o), max(profile_id, o)) for o in others if o != profile_id)


def missed_pairs(session: Session, seen: SeenKeys) -> set[tuple[UUID, UUID]]:
    """The pairs a committed second stage could not see: each key's holders that it did not find then, with
    the batch's profiles that inserted the key.

    Two consumers of a group run their batches' second stages at the same time. Each stores its profiles'
    new blocking keys, then reads who holds them; neither sees the other's new keys before the other
    commits, and two look-alikes that both brought a key would never be scored
    (`tests/integration/test_probabilistic.py` makes it happen). Read again after each commit, at least one
    of the two batches finds the other's keys: the one that commits last reads after both commits, if it
    did not see the other's keys the first time. Only the keys the batch inserted are read again: one
    stored before was there for the other batch to see."""
    pairs: set[tuple[UUID, UUID]] = set()
    for key, holders in _holders(session, sorted(seen)).items():
        _, mine, before = seen[key]
        new = holders - before
        if new and len(holders) <= MAX_PROFILES_PER_KEY:
            for profile_id in mine:
                pairs.update(_pairs_with(profile_id, new))
    return pairs


def score_missed(
    session: Session,
    pairs: set[tuple[UUID, UUID]],
    *,
    weights: matching.Weights = matching.DEFAULT_WEIGHTS,
) -> list[MergeRecord]:
    """Score `missed_pairs`' pairs as the second stage would have, their profiles locked first; merge or
    suggest. Returns the merges made (their survivors need recomputing)."""
    ids = sorted({pid for pair in pairs for pid in pair})
    known: dict[UUID, Profile | Candidate] = {p.id: p for p in identity.lock_all_at_once(session, ids)}
    readable: dict[UUID, list[identity.Identifier]] = {}
    identifiers = _identifiers(session, list(known), readable)
    fields = {pid: match_fields(p, readable.get(pid, [])) for pid, p in known.items()}
    return _merge_or_suggest(session, pairs, known, identifiers, readable, fields, weights)


def _merge_or_suggest(
    session: Session,
    pairs: set[tuple[UUID, UUID]],
    known: dict[UUID, Profile | Candidate],
    identifiers: dict[UUID, list[identity.Identifier]],
    readable: dict[UUID, list[identity.Identifier]],
    fields: dict[UUID, Fields],
    weights: matching.Weights,
    busy: set[UUID] | None = None,
) -> list[MergeRecord]:
    """Score the pairs, the profiles in `known` read already (with their identifiers, readable values and
    fields) and the others read here as candidates; merge or suggest. With `busy`, a candidate a merge
    would change is locked first, without waiting: one another transaction holds is left out of its
    merges (and put in `busy`)."""
    others = sorted({pid for pair in pairs for pid in pair} - set(known))
    for start in range(0, len(others), 1000):
        for row in session.execute(
            _CANDIDATES.where(any_of(session, _PROFILES.c.id, others[start : start + 1000]))
        ):
            known[row.id] = Candidate(*row)
    identifiers.update(_identifiers(session, others, readable))
    for pid in others:
        if pid in known:
            fields[pid] = match_fields(known[pid], readable.get(pid, []))
    suggested = _suggested_pairs(session, pairs)
    blocked = identity.blocks_of(session, {pid for pair in pairs for pid in pair})

    session.flush()  # what the merges' statements read; their own changes are flushed once, at the end
    merges: list[MergeRecord] = []
    decided: set[tuple[UUID, UUID]] = set()
    with session.no_autoflush:
        while pairs:
            decided |= pairs
            # Each pair's score as the profiles stand; the pairs are decided best first (`_score_pairs`).
            scored = {
                pair: _best(fields[pair[0]], fields[pair[1]], weights)
                for pair in pairs
                if _eligible(session, pair, known, identifiers, suggested, blocked)
            }
            _load_likely_merges(session, scored, known, busy)
            merges += _score_pairs(
                session, scored, known, identifiers, readable, fields, suggested, blocked, weights, busy
            )
            # A pair one of whose profiles a merge took in is now a pair with the survivor, which has the
            # names and addresses of both: scored in another round.
            pairs = _after_merges(pairs, {m.merged_id: m.survivor_id for m in merges}) - decided
            if pairs:
                suggested.update(_suggested_pairs(session, pairs))
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


def _after_merges(pairs: set[tuple[UUID, UUID]], into: dict[UUID, UUID]) -> set[tuple[UUID, UUID]]:
    """The pairs with each profile merged (`into`: merged -> survivor) replaced by its last survivor."""

    def last(profile_id: UUID) -> UUID:
        while profile_id in into:
            profile_id = into[profile_id]
        return profile_id

    found: set[tuple[UUID, UUID]] = set()
    for a, b in pairs:
        if a in into or b in into:
            a, b = last(a), last(b)
            if a != b:
                found.add((min(a, b), max(a, b)))
    return found


def _store_keys(
    session: Session, profiles: list[Profile], keys: dict[UUID, set[str]]
) -> set[tuple[UUID, str]]:
    """Store the profiles' blocking keys: delete those they no longer have and insert the new ones (most
    of a changed profile's keys are the ones it had: a new order rarely brings a new name, CEP or phone).
    Core statements, not ORM rows: thousands of keys per batch (inserted with COPY on PostgreSQL). Returns
    the keys inserted, with their profiles."""
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
    added = {(p.id, k) for p in profiles for k in keys[p.id] - stored[p.id]}
    tenants = {p.id: p.tenant_id for p in profiles}
    bulk_insert(
        session,
        ProfileBlockKey,
        [{"tenant_id": tenants[pid], "key": k, "profile_id": pid} for pid, k in sorted(added)],
    )
    return added


def _eligible(
    session: Session,
    pair: tuple[UUID, UUID],
    known: dict[UUID, Profile | Candidate],
    identifiers: dict[UUID, list[identity.Identifier]],
    suggested: dict[tuple[UUID, UUID], MergeSuggestion],
    blocked: set[tuple[UUID, UUID]],
) -> bool:
    """May the pair be scored: both profiles active in one tenant, not split by an unmerge, not decided by a
    person, and merge protection (documents, per-kind limits, merge limit) lets them be one."""
    a, b = known.get(pair[0]), known.get(pair[1])
    if a is None or b is None or a.status != "active" or b.status != "active":
        return False
    suggestion = suggested.get(pair)
    if suggestion is not None and suggestion.status != "pending":
        return False
    if a.tenant_id != b.tenant_id or pair in blocked:
        return False
    rules = identity_rules.rules_for(session, a.tenant_id)
    return identity.can_merge(identifiers[pair[0]], identifiers[pair[1]], a.merges + b.merges, rules)


def _score_pairs(
    session: Session,
    scored: dict[tuple[UUID, UUID], matching.Match],
    known: dict[UUID, Profile | Candidate],
    identifiers: dict[UUID, list[identity.Identifier]],
    readable: dict[UUID, list[identity.Identifier]],
    fields: dict[UUID, Fields],
    suggested: dict[tuple[UUID, UUID], MergeSuggestion],
    blocked: set[tuple[UUID, UUID]],
    weights: matching.Weights,
    busy: set[UUID] | None = None,
) -> list[MergeRecord]:
    """Decide each pair, merge or suggest: best score first, so that a profile that looks like two others
    that cannot both take it in (two documents, the merge limit) joins the likelier one, whatever the
    profiles' ids. A pair with a profile an earlier merge changed is scored again. A pair suggested before
    is scored again while the suggestion is pending (one of the two changed: new evidence may now make the
    pair a merge, or no pair at all); one decided by a person is not."""
    merges: list[MergeRecord] = []
    changed: set[UUID] = set()
    for a_id, b_id in sorted(scored, key=lambda pair: (-scored[pair].probability, pair)):
        if not _eligible(session, (a_id, b_id), known, identifiers, suggested, blocked):
            continue  # an earlier merge took one of them in, or used up what merge protection allows
        a, b = known[a_id], known[b_id]
        suggestion = suggested.get((a_id, b_id))
        rules = identity_rules.rules_for(session, a.tenant_id)
        match = (
            _best(fields[a_id], fields[b_id], weights)
            if a_id in changed or b_id in changed
            else scored[(a_id, b_id)]
        )
        decision = matching.decide(match, rules.merge_threshold, rules.suggest_threshold)
        both: list[Profile] = []
        if decision == "merge":
            if busy is None or not {a_id, b_id} & busy:
                loaded = (_loaded(session, known, a, busy), _loaded(session, known, b, busy))
                both = [p for p in loaded if p is not None and p.status == "active"]
            if len(both) < 2:
                # Another transaction holds one of them (or merged it away since it was read): both wait,
                # with every pair they are in, to be scored again once this batch commits (`second_stage`).
                if busy is not None:
                    busy.update((a_id, b_id))
                continue
        if suggestion is not None:
            _rescored(session, suggestion, match, decision)
        if both:
            survivor, merged = sorted(both, key=lambda p: (p.created_at, p.id))
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
            fields[survivor.id] = _with_persons_of(
                match_fields(survivor, readable[survivor.id]), fields[merged.id]
            )
            changed.add(survivor.id)
            _move_blocks(blocked, merged.id, survivor.id)
        elif decision == "suggest" and suggestion is None:
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
    scored: dict[tuple[UUID, UUID], matching.Match],
    known: dict[UUID, Profile | Candidate],
    busy: set[UUID] | None = None,
) -> None:
    """Load as `Profile`s, a thousand to a query, the candidates of the pairs that score a merge as they
    stand: a merge changes them, and `_loaded` would read them one by one. (An earlier merge may change a
    pair's answer in `_score_pairs`: any other is loaded there.) With `busy`, locked without waiting: those
    another transaction holds go in `busy`."""
    wanted: set[UUID] = set()
    for (a_id, b_id), match in scored.items():
        a, b = known.get(a_id), known.get(b_id)
        if a is None or b is None or (isinstance(a, Profile) and isinstance(b, Profile)):
            continue
        rules = identity_rules.rules_for(session, a.tenant_id)
        if matching.decide(match, rules.merge_threshold, rules.suggest_threshold) == "merge":
            wanted.update(p.id for p in (a, b) if isinstance(p, Candidate))
    ids = sorted(wanted - (busy or set()))
    for start in range(0, len(ids), 1000):
        query = select(Profile).where(any_of(session, col(Profile.id), ids[start : start + 1000]))
        for profile in session.exec(query if busy is None else query.with_for_update(skip_locked=True)):
            known[profile.id] = profile
    if busy is not None:
        busy.update(pid for pid in ids if not isinstance(known[pid], Profile))


def _move_blocks(blocked: set[tuple[UUID, UUID]], merged: UUID, survivor: UUID) -> None:
    """What `identity.merge` does to the stored blocks, on `identity.blocks_of`'s set: a block against the
    merged profile now holds against the survivor. (The set holds every block of the profiles scored, so
    the blocks that matter move with it.)"""
    for pair in [pair for pair in blocked if merged in pair]:
        blocked.discard(pair)
        other = pair[1] if pair[0] == merged else pair[0]
        if other != survivor:
            blocked.add((min(other, survivor), max(other, survivor)))


def _suggested_pairs(
    session: Session, pairs: set[tuple[UUID, UUID]]
) -> dict[tuple[UUID, UUID], MergeSuggestion]:
    """The suggestions made of these pairs before (pending, or decided: those are not scored again)."""
    ids = sorted({pid for pair in pairs for pid in pair})
    found: dict[tuple[UUID, UUID], MergeSuggestion] = {}
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        for row in session.exec(
            select(MergeSuggestion).where(any_of(session, col(MergeSuggestion.profile_a), chunk))
        ):
            if (row.profile_a, row.profile_b) in pairs:
                found[(row.profile_a, row.profile_b)] = row
    return found


def _rescored(
    session: Session, suggestion: MergeSuggestion, match: matching.Match, decision: str | None
) -> None:
    """A pending suggestion's pair scored again: still in the grey zone, it shows the new score; else it
    is obsolete (the stage merges the pair, or the two no longer look alike)."""
    if decision == "suggest":
        suggestion.score = round(match.probability, 4)
        suggestion.contributions = [asdict(c) for c in match.contributions]
    else:
        suggestion.status, suggestion.decided_at = "obsolete", utcnow()
    session.add(suggestion)


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
