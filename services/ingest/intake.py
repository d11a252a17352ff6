"""Accepting records — orders, customer records, behaviour events — one or a thousand at a time.

Every record is validated and normalised on its own: one bad record never blocks the others. The valid
ones are stored, with their outbox events, in one transaction (bulk inserts), so a 2xx means durable; in
two when a concurrent batch holds some of them (another version of the same order in flight): the others
do not wait for it (`accept`).

A record is identified by (tenant, kind, source, external_id). Sent again it is
- a *duplicate* when its canonical body is identical (no new event),
- *stale* when it carries an `updated_at` not later than the stored version's (never overwrites),
- otherwise a new *version* (status change, return, corrected data), published as a new event.
When either version lacks `updated_at`, the later arrival wins. Behaviour events are immutable: the
same event id is always a duplicate.

The stored version is the canonical JSON sealed for the tenant (AES-GCM, `shared.crypto`): one seal per
stored record, of the bytes already serialised for its hash; `open_payload` reads it back.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, NamedTuple, TypeVar
from uuid import UUID, uuid4

import orjson
import sqlalchemy as sa
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from services.ingest import quality, suppression
from services.ingest.models import InboundRecord
from shared.crypto import BINARY, keyring
from shared.db import bulk_insert, is_deadlock, lock_key, table_of, try_xact_locks, utcnow, xact_locks
from shared.errors import field_errors
from shared.events import BehaviourRecorded, CustomerRecorded, Event, OrderIngested
from shared.outbox import insert_rows, outbox_row
from shared.records import BehaviourEvent, Customer, CustomerRecord, Order

M = TypeVar("M", bound=BaseModel)
MAX_ATTEMPTS = 5


class Outcome(StrEnum):
    accepted = "accepted"
    updated = "updated"
    duplicate = "duplicate"
    stale = "stale"
    rejected = "rejected"
    suppressed = "suppressed"  # the person asked to be erased (services.ingest.suppression)


@dataclass(frozen=True)
class ItemResult:
    index: int
    outcome: Outcome
    id: UUID | None = None
    version: int | None = None
    errors: list[dict[str, Any]] | None = None


def digest(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()


def customer_identity(customer: Customer, source: str) -> str:
    """The strongest identifier, for Kafka keys (keeps one person's records in order) and for keying
    customer records that have no id of their own. Hashed by the callers: keys show up in tools."""
    if customer.document:
        return f"document:{customer.document}"
    if customer.email:
        return f"email:{customer.email}"
    if customer.phone:
        return f"phone:{customer.phone}"
    return f"customer_id:{source}:{customer.external_id}"


@dataclass(frozen=True)
class Kind(Generic[M]):
    """How one kind of record is identified, versioned and announced."""

    name: str
    model: type[M]
    external_id: Callable[[M, str], str]  # (record, body hash) -> id on its source
    updated_at: Callable[[M], datetime | None]
    event_type: type[Event]
    # (record id, version, the record as JSON: serialised already, an `orjson.Fragment`) -> the payload
    payload: Callable[[UUID, int, orjson.Fragment], dict[str, Any]]
    kafka_key: Callable[[UUID, M], str]
    immutable: bool = False
    adapter: TypeAdapter[M] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapter", TypeAdapter(self.model))


def _order_key(tenant_id: UUID, order: Order) -> str:
    return f"{tenant_id}:{digest(str(tenant_id), customer_identity(order.customer, order.source))[:32]}"


def _customer_key(tenant_id: UUID, record: CustomerRecord) -> str:
    return f"{tenant_id}:{digest(str(tenant_id), customer_identity(record, record.source))[:32]}"


def _behaviour_key(tenant_id: UUID, event: BehaviourEvent) -> str:
    ref = event.customer
    if ref is not None and (ref.document or ref.email or ref.phone or ref.external_id):
        identity = customer_identity(Customer.model_construct(**ref.model_dump()), event.source)
    else:
        identity = f"anonymous:{event.anonymous_id}"
    return f"{tenant_id}:{digest(str(tenant_id), identity)[:32]}"


ORDERS: Kind[Order] = Kind(
    name="order",
    model=Order,
    external_id=lambda order, _: order.external_id,
    updated_at=lambda order: order.updated_at,
    event_type=OrderIngested,
    payload=lambda record_id, version, body: {
        "order_id": str(record_id),
        "order_version": version,
        "order": body,
    },
    kafka_key=_order_key,
)
CUSTOMERS: Kind[CustomerRecord] = Kind(
    name="customer",
    model=CustomerRecord,
    # A record without the source's customer id is keyed by its strongest identifier (hashed).
    external_id=lambda rec, _: rec.external_id or "h:" + digest(customer_identity(rec, rec.source))[:40],
    updated_at=lambda rec: rec.updated_at,
    event_type=CustomerRecorded,
    payload=lambda record_id, version, body: {
        "record_id": str(record_id),
        "record_version": version,
        "customer": body,
    },
    kafka_key=_customer_key,
)
BEHAVIOUR: Kind[BehaviourEvent] = Kind(
    name="behaviour",
    model=BehaviourEvent,
    external_id=lambda ev, body_hash: ev.event_id or "h:" + body_hash[:40],
    updated_at=lambda ev: None,
    event_type=BehaviourRecorded,
    payload=lambda record_id, _version, body: {"record_id": str(record_id), "event": body},
    kafka_key=_behaviour_key,
    immutable=True,
)


@dataclass
class _State:
    id: UUID
    version: int
    body_hash: str
    source_updated_at: datetime | None
    new: bool
    changed: bool = False
    sealed: bytes | None = None  # the new version's canonical JSON, sealed


class _Valid(NamedTuple, Generic[M]):
    """A record that passed validation, with what storing and announcing it needs."""

    position: int  # in the request
    record: M
    body_hash: str
    key: tuple[str, str]  # (source, external_id)
    sealed: bytes  # the canonical JSON, sealed
    body_json: orjson.Fragment  # the canonical JSON, as the event's payload carries it
    kafka_key: str


def open_payload(tenant_id: UUID, sealed: bytes) -> dict[str, Any]:
    """A stored record's canonical JSON (`InboundRecord.payload_sealed`), opened."""
    keys = keyring()
    if sealed[:1] == BINARY:
        found: dict[str, Any] = orjson.loads(keys.open_bytes(tenant_id, sealed))
    else:  # stored before migration 0009: a text token's bytes
        found = orjson.loads(keys.open(tenant_id, bytes(sealed).decode()))
    return found


def decide(stored: _State, body_hash: str, updated_at: datetime | None, *, immutable: bool) -> Outcome:
    """What a stored record becomes when it arrives again (see the module docstring)."""
    if stored.body_hash == body_hash or immutable:
        return Outcome.duplicate
    if (
        updated_at is not None
        and stored.source_updated_at is not None
        and updated_at <= stored.source_updated_at
    ):
        return Outcome.stale
    return Outcome.updated


def accept(
    kind: Kind[M],
    items: Sequence[Any],
    *,
    tenant_id: UUID,
    session: Session,
    correlation_id: str | Sequence[str | None] | None = None,
) -> list[ItemResult]:
    """Validate, store and announce `items` (raw JSON values, or records already validated); a result per
    item, in order. `correlation_id`: the request's, or one per item (records of several requests
    committed together, see `group_commit`)."""

    def cid(index: int) -> str | None:
        if correlation_id is None or isinstance(correlation_id, str):
            return correlation_id
        return correlation_id[index]

    results: list[ItemResult | None] = [None] * len(items)
    tally = quality.Tally(kind.name)
    keys = keyring()
    # Everything that does not depend on what is stored is done before the records' locks are taken
    # (`_try_lock_keys`): a batch holding them makes the batches that carry other versions of its records
    # wait.
    valid: list[_Valid[M]] = []
    for index, raw in enumerate(items):
        try:
            record = raw if isinstance(raw, kind.model) else kind.adapter.validate_python(raw)
        except ValidationError as exc:
            errors = field_errors(exc.errors())
            results[index] = ItemResult(index, Outcome.rejected, errors=errors)
            tally.rejected(errors)
            continue
        body = record.model_dump(mode="json")
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        body_hash = hashlib.sha256(canonical).hexdigest()
        source: str = body["source"]
        valid.append(
            _Valid(
                index,
                record,
                body_hash,
                (source, kind.external_id(record, body_hash)),
                # What a new version stores (sealed) and publishes: the same canonical JSON, serialised once.
                keys.seal_bytes(tenant_id, canonical),
                orjson.Fragment(canonical),
                kind.kafka_key(tenant_id, record),
            )
        )
        tally.valid(body)

    erased = suppression.suppressed(session, tenant_id, [(v.position, v.record) for v in valid])
    if erased:
        for index in erased:
            results[index] = ItemResult(index, Outcome.suppressed)
            tally.outcome(Outcome.suppressed.value)
        valid = [v for v in valid if v.position not in erased]
    # The records no other transaction holds are stored now, without waiting; those a concurrent batch
    # holds (another version of the same order in flight) after it committed, in a transaction of their own.
    # A batch waiting with its other records' locks taken made every batch sharing one of those wait too.
    held = _try_lock_keys(session, tenant_id, kind.name, {v.key for v in valid})
    store = functools.partial(
        _store, kind, tenant_id=tenant_id, session=session, results=results, correlation_id=cid
    )
    store([v for v in valid if v.key not in held], counts=tally, locked=True)
    if held:
        store([v for v in valid if v.key in held], counts=quality.Tally(kind.name), locked=False)
    return [r for r in results if r is not None]


def _store(
    kind: Kind[M],
    part: list[_Valid[M]],
    *,
    tenant_id: UUID,
    session: Session,
    results: list[ItemResult | None],
    correlation_id: Callable[[int], str | None],
    counts: quality.Tally,
    locked: bool,
) -> None:
    """Store these valid records (their results into `results`) and commit, with the quality `counts`
    gathered so far and their outcomes. `locked`: this transaction holds their locks already."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        tally = quality.Tally(kind.name, counts.counts.copy())
        record_keys = {v.key for v in part}
        if not locked:
            _lock_keys(session, tenant_id, kind.name, record_keys)
        states = _load_states(session, tenant_id, kind.name, record_keys)
        outbox: list[dict[str, Any]] = []
        for index, record, body_hash, key, sealed, body_json, kafka_key in part:
            state = states.get(key)
            updated_at = kind.updated_at(record)
            if state is None:
                state = states[key] = _State(
                    uuid4(), 1, body_hash, updated_at, new=True, changed=True, sealed=sealed
                )
                outcome = Outcome.accepted
            else:
                outcome = decide(state, body_hash, updated_at, immutable=kind.immutable)
                if outcome == Outcome.updated:
                    state.version += 1
                    state.body_hash, state.source_updated_at = body_hash, updated_at
                    state.sealed = sealed
                    state.changed = True
            results[index] = ItemResult(index, outcome, state.id, state.version)
            tally.outcome(outcome.value)
            if outcome in (Outcome.accepted, Outcome.updated):
                outbox.append(
                    outbox_row(
                        kind.event_type,
                        kind.payload(state.id, state.version, body_json),
                        tenant_id=tenant_id,
                        key=kafka_key,
                        correlation_id=correlation_id(index),
                    )
                )
        try:
            _write(session, tenant_id, kind.name, states, outbox)
            quality.add(session, tenant_id, tally)
            session.commit()
            return
        except (IntegrityError, OperationalError) as exc:
            # The same record was inserted concurrently (or two batches deadlocked on it): decide again
            # against the rows that won. Anything else (the database is down) is not ours to retry.
            session.rollback()
            retryable = isinstance(exc, IntegrityError) or is_deadlock(exc)
            if not retryable or attempt >= MAX_ATTEMPTS:
                raise
            locked = False  # the rollback released them


def _try_lock_keys(
    session: Session, tenant_id: UUID, kind: str, keys: set[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Take the records' transaction locks that are free (PostgreSQL; see `_lock_keys`), without waiting;
    return the keys another transaction holds."""
    if not keys or session.get_bind().dialect.name != "postgresql":
        return set()
    by_hash = {lock_key(tenant_id, kind, *key): key for key in keys}
    return {by_hash[k] for k in try_xact_locks(session, by_hash)}


def _lock_keys(session: Session, tenant_id: UUID, kind: str, keys: set[tuple[str, str]]) -> None:
    """Serialise concurrent requests that touch the same records (PostgreSQL): each takes a transaction
    lock per key (a 64-bit hash of it), in one sorted order (no deadlocks), before reading them. Two
    batches carrying versions of the same order never both insert it, and batches with different records
    never wait for each other. SQLite has a single writer anyway."""
    if keys and session.get_bind().dialect.name == "postgresql":
        xact_locks(session, {lock_key(tenant_id, kind, *key) for key in keys})


_INBOUND = table_of(InboundRecord)
_STATE = sa.select(
    _INBOUND.c.source,
    _INBOUND.c.external_id,
    _INBOUND.c.id,
    _INBOUND.c.version,
    _INBOUND.c.body_hash,
    _INBOUND.c.source_updated_at,
)
# On PostgreSQL a batch's (source, external_id) pairs are joined as two arrays: `(source, external_id) IN
# ((…), …)` is planned as an OR of a thousand conditions, 110 ms for a batch of 1,000 against 9 ms,
# measured, and spent while the batch holds its records' locks.
_PAIRS = (
    sa.func.unnest(
        sa.bindparam("sources", type_=postgresql.ARRAY(sa.String())),
        sa.bindparam("external_ids", type_=postgresql.ARRAY(sa.String())),
    )
    .table_valued("source", "external_id")
    .render_derived(name="w")
)
# Each pair is looked up on its own (LATERAL … LIMIT 1: the unique key's index, one probe per pair), whatever
# the statistics say. Joined plainly, a young table's statistics (a new tenant, or none yet) estimate one
# row for the tenant, and PostgreSQL hashes all of the tenant's records for every batch: the cost grows with
# the table, and the plan, cached by the prepared statement, is kept. Measured in `make bench-ingest`: one
# run in three planned it so, and this lookup took 8 s of PostgreSQL's CPU instead of 0.45.
_ONE_STATE = (
    _STATE.where(
        _INBOUND.c.tenant_id == sa.bindparam("tenant_id"),
        _INBOUND.c.kind == sa.bindparam("kind"),
        _INBOUND.c.source == _PAIRS.c.source,
        _INBOUND.c.external_id == _PAIRS.c.external_id,
    )
    .limit(1)  # (tenant, kind, source, external_id) is unique: never more than one
    .lateral("s")
)
_STATES_OF_PAIRS = sa.select(*_ONE_STATE.c).select_from(_PAIRS).join(_ONE_STATE, sa.true())


def _load_states(
    session: Session, tenant_id: UUID, kind: str, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], _State]:
    if not keys:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        pairs = sorted(keys)
        rows = session.execute(
            _STATES_OF_PAIRS,
            {
                "tenant_id": tenant_id,
                "kind": kind,
                "sources": [p[0] for p in pairs],
                "external_ids": [p[1] for p in pairs],
            },
        )
    else:
        in_batch = sa.tuple_(_INBOUND.c.source, _INBOUND.c.external_id).in_(keys)
        rows = session.execute(
            _STATE.where(_INBOUND.c.tenant_id == tenant_id, _INBOUND.c.kind == kind, in_batch)
        )
    return {
        (r.source, r.external_id): _State(r.id, r.version, r.body_hash, r.source_updated_at, new=False)
        for r in rows
    }


def _write(
    session: Session,
    tenant_id: UUID,
    kind: str,
    states: dict[tuple[str, str], _State],
    outbox: list[dict[str, Any]],
) -> None:
    now = utcnow()
    inserts = [
        {
            "id": s.id,
            "tenant_id": tenant_id,
            "kind": kind,
            "source": source,
            "external_id": external_id,
            "version": s.version,
            "body_hash": s.body_hash,
            "source_updated_at": s.source_updated_at,
            "payload_sealed": s.sealed,
            "received_at": now,
            "updated_at": now,
        }
        for (source, external_id), s in sorted(states.items())  # one lock order for concurrent batches
        if s.new
    ]
    bulk_insert(session, InboundRecord, inserts)
    updates = [
        {
            "record_id": s.id,
            "version": s.version,
            "body_hash": s.body_hash,
            "source_updated_at": s.source_updated_at,
            "payload_sealed": s.sealed,
            "updated_at": now,
        }
        for _key, s in sorted(states.items())
        if s.changed and not s.new
    ]
    if updates:  # one executemany (pipelined), not a round trip per row
        table = InboundRecord.metadata.tables[InboundRecord.__tablename__]
        session.connection().execute(
            sa.update(table)
            .where(table.c.id == sa.bindparam("record_id"))
            .values(
                {
                    c: sa.bindparam(c)
                    for c in ("version", "body_hash", "source_updated_at", "payload_sealed", "updated_at")
                }
            ),
            updates,
        )
    insert_rows(session, outbox)
