"""What the profiles consumer's batch (one Kafka poll, one transaction) keeps in memory.

`ProfilesBatch.prepare` locks and loads, in a few queries, everything the poll's profile events read: the
projections (FOR UPDATE on PostgreSQL, in profile id order, like a full evaluation's chunks, so that the
memberships read next are the ones that evaluation left), their tags, their memberships and the tenants'
segments with their parsed rules. The handlers then work on this copy; tags and memberships are written
as the difference with what was stored, with a statement per kind of change, when the batch finishes (or
before a handler that reads the tables themselves: `sync`). A profile the batch did not load is loaded
when first needed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.segmentation.models import (
    ErasedProfile,
    Opened,
    ProfileProjection,
    ProfileTag,
    Segment,
    SegmentMember,
)
from services.segmentation.rules import InvalidRule, Rule, depends_on, load_rule
from shared.db import any_of, bulk_insert, copy_new_rows, table_of, write_columns
from shared.events import Envelope, Event, ProfilesMerged, ProfileUpdated, ProfileUpdatedV2

log = logging.getLogger("clientela.segments")

KEY = "clientela.segmentation_batch"
CHUNK = 1000

tag_table = table_of(ProfileTag)
member_table = table_of(SegmentMember)
# What a profile event sets of a stored projection (every column but its key), written by `sync`.
PROJECTED = tuple(c.key for c in table_of(ProfileProjection).columns if not c.primary_key)

Tags = dict[str, dict[str, datetime | None]]


@dataclass(frozen=True)
class Rules:
    segment: Segment
    rule: Rule
    reads: frozenset[str]


def stored_rule(segment: Segment) -> Rule | None:
    """A segment's rule; None (logged) if a rule saved by an older release no longer parses, so that one
    such segment cannot stop every profile update of its tenant."""
    try:
        return load_rule(segment.rule)
    except InvalidRule as exc:
        log.warning(
            "segment rule is no longer valid; not evaluated",
            extra={"segment_id": str(segment.id), "errors": [e.path for e in exc.errors]},
        )
        return None


def _chunks(ids: Sequence[UUID]) -> Iterable[Sequence[UUID]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


@dataclass
class Batch:
    projections: dict[UUID, ProfileProjection | None] = field(default_factory=dict)
    tenants: dict[UUID, UUID] = field(default_factory=dict)  # profile -> tenant (for tag rows)
    tags: dict[UUID, Tags] = field(default_factory=dict)  # as the batch left them
    stored_tags: dict[UUID, Tags] = field(default_factory=dict)  # as in the table
    # profile -> segment -> entered_at (None: the stored row, unchanged); and the stored segment ids.
    members: dict[UUID, dict[UUID, datetime | None]] = field(default_factory=dict)
    stored_members: dict[UUID, set[UUID]] = field(default_factory=dict)
    segments: dict[UUID, list[Rules]] = field(default_factory=dict)  # tenant -> its segments
    erased: set[UUID] = field(default_factory=set)  # profiles erased at the person's request (LGPD)
    opened: Opened = field(default_factory=dict)  # sealed tokens' clear values, for this poll only

    # -- loading ---------------------------------------------------------------------------------------
    def load(self, session: Session, profile_ids: Iterable[UUID]) -> None:
        # Not `set(profile_ids) - self.projections.keys()`: a set minus a dict's keys view walks every key
        # of the dict, and `projection` asks for one profile per event: a batch's loads grew with the square
        # of its size (a third of the segmentation consumer's time at 3,000 events, measured).
        ids = sorted({p for p in profile_ids if p not in self.projections})
        if not ids:
            return
        postgres = session.get_bind().dialect.name == "postgresql"
        for chunk in _chunks(ids):
            query = (
                select(ProfileProjection)
                .where(any_of(session, col(ProfileProjection.profile_id), chunk))
                .order_by(col(ProfileProjection.profile_id))
            )
            if postgres:
                query = query.with_for_update()
            self.projections.update(dict.fromkeys(chunk))
            for projection in session.exec(query):
                self.projections[projection.profile_id] = projection
                self.tenants[projection.profile_id] = projection.tenant_id
            self.erased.update(
                session.exec(
                    select(ErasedProfile.profile_id).where(
                        any_of(session, col(ErasedProfile.profile_id), chunk)
                    )
                )
            )
        for profile_id in ids:
            self.stored_tags[profile_id], self.members[profile_id] = {}, {}
            self.stored_members[profile_id] = set()
        for chunk in _chunks(ids):
            rows = session.execute(
                sa.select(tag_table.c.profile_id, tag_table.c.kind, tag_table.c.value, tag_table.c.at).where(
                    any_of(session, tag_table.c.profile_id, chunk)
                )
            )
            for profile_id, kind, value, at in rows:
                self.stored_tags[profile_id].setdefault(kind, {})[value] = at
            rows = session.execute(
                sa.select(member_table.c.profile_id, member_table.c.segment_id).where(
                    any_of(session, member_table.c.profile_id, chunk)
                )
            )
            for profile_id, segment_id in rows:
                self.stored_members[profile_id].add(segment_id)
                self.members[profile_id][segment_id] = None
        for profile_id in ids:
            self.tags[profile_id] = {k: dict(v) for k, v in self.stored_tags[profile_id].items()}

    def load_segments(self, session: Session, tenant_ids: Iterable[UUID]) -> None:
        wanted = sorted({t for t in tenant_ids if t not in self.segments})
        if not wanted:
            return
        for tenant_id in wanted:
            self.segments[tenant_id] = []
        query = select(Segment).where(col(Segment.tenant_id).in_(wanted)).order_by(col(Segment.created_at))
        for segment in session.exec(query):
            rule = stored_rule(segment)
            if rule is not None:
                self.segments[segment.tenant_id].append(Rules(segment, rule, frozenset(depends_on(rule))))

    # -- reading and changing ----------------------------------------------------------------------------
    def projection(self, session: Session, profile_id: UUID) -> ProfileProjection | None:
        self.load(session, [profile_id])
        return self.projections[profile_id]

    def set_projection(self, projection: ProfileProjection) -> None:
        self.projections[projection.profile_id] = projection
        self.tenants[projection.profile_id] = projection.tenant_id

    def tenant_segments(self, session: Session, tenant_id: UUID) -> list[Rules]:
        self.load_segments(session, [tenant_id])
        return self.segments[tenant_id]

    def forget(self, profile_ids: Iterable[UUID]) -> None:
        """Drop what is kept of these profiles (after `sync`): they are read again when next needed."""
        for profile_id in profile_ids:
            for kept in (self.projections, self.tenants, self.tags, self.stored_tags):
                kept.pop(profile_id, None)
            self.members.pop(profile_id, None)
            self.stored_members.pop(profile_id, None)

    def remove(self, session: Session, profile_id: UUID) -> None:
        """The profile is gone (merged into another): its projection is deleted, and its tags and
        memberships are dropped from the batch's copy (deleted from the tables when it is synced)."""
        self.load(session, [profile_id])
        projection = self.projections[profile_id]
        if projection is not None:
            if sa.inspect(projection).persistent:
                session.delete(projection)
            else:  # created by this batch: never written
                session.expunge(projection)
        self.projections[profile_id] = None
        self.tags[profile_id] = {}
        self.members[profile_id] = {}

    # -- writing -----------------------------------------------------------------------------------------
    def sync(self, session: Session) -> None:
        """Write the projections, then the tags and memberships that differ from the tables. The stored
        projections the batch changed go in one statement (`write_columns`): the ORM's flush writes each
        run of projections changed in the same columns apart, an UPDATE per run; new ones are copied in
        with the flush (`copy_new_rows`, set up by `ProfilesBatch.prepare`). A removed projection is None
        here (`remove`)."""
        changed = [
            projection
            for projection in self.projections.values()
            if projection is not None and (state := sa.inspect(projection)).persistent and state.modified
        ]
        write_columns(session, changed, PROJECTED)
        session.flush()
        deletes: list[dict[str, Any]] = []
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for profile_id, tags in self.tags.items():
            stored = self.stored_tags[profile_id]
            if tags == stored:
                continue
            for kind, elements in stored.items():
                wanted = tags.get(kind, {})
                for value, at in elements.items():
                    if value not in wanted:
                        deletes.append({"p": profile_id, "k": kind, "v": value})
                    elif wanted[value] != at:
                        updates.append({"p": profile_id, "k": kind, "v": value, "a": wanted[value]})
            for kind, elements in tags.items():
                known = stored.get(kind, {})
                for value, at in elements.items():
                    if value not in known:
                        inserts.append(
                            {
                                "profile_id": profile_id,
                                "tenant_id": self.tenants[profile_id],
                                "kind": kind,
                                "value": value,
                                "at": at,
                            }
                        )
            self.stored_tags[profile_id] = {k: dict(v) for k, v in tags.items()}
        tag_key = sa.and_(
            tag_table.c.profile_id == sa.bindparam("p"),
            tag_table.c.kind == sa.bindparam("k"),
            tag_table.c.value == sa.bindparam("v"),
        )
        if deletes:
            session.execute(tag_table.delete().where(tag_key), deletes)
        if updates:
            session.execute(tag_table.update().where(tag_key).values(at=sa.bindparam("a")), updates)
        bulk_insert(session, ProfileTag, inserts)  # COPY on PostgreSQL: new profiles bring several tags each
        self._sync_members(session)

    def _sync_members(self, session: Session) -> None:
        gone: list[dict[str, Any]] = []
        new: list[dict[str, Any]] = []
        for profile_id, members in self.members.items():
            stored = self.stored_members[profile_id]
            for segment_id in stored:
                if segment_id not in members or members[segment_id] is not None:
                    gone.append({"s": segment_id, "p": profile_id})
            for segment_id, entered_at in members.items():
                if entered_at is not None:
                    new.append(
                        {
                            "segment_id": segment_id,
                            "profile_id": profile_id,
                            "tenant_id": self.tenants[profile_id],
                            "entered_at": entered_at,
                        }
                    )
            self.stored_members[profile_id] = set(members)
            self.members[profile_id] = dict.fromkeys(members)
        if gone:
            session.execute(
                member_table.delete().where(
                    member_table.c.segment_id == sa.bindparam("s"),
                    member_table.c.profile_id == sa.bindparam("p"),
                ),
                gone,
            )
        bulk_insert(session, SegmentMember, new)


def current(session: Session) -> Batch | None:
    found = session.info.get(KEY)
    return found if isinstance(found, Batch) else None


class ProfilesBatch:
    """Batch hooks of the profiles consumer (`shared.consumer.BatchHooks`)."""

    def prepare(
        self, session: Session, events: list[tuple[Envelope, Event]], *, may_defer: bool = False
    ) -> None:
        """Never defers: one member owns each profile's partition."""
        batch = Batch()
        updated = [(e, ev) for e, ev in events if isinstance(ev, ProfileUpdated | ProfileUpdatedV2)]
        merged = [(e, ev) for e, ev in events if isinstance(ev, ProfilesMerged)]
        batch.load(
            session,
            [ev.profile_id for _, ev in updated]
            + [i for _, ev in merged for i in (ev.merged_id, ev.survivor_id)],
        )
        batch.load_segments(session, [e.tenant_id for e, _ in updated + merged])
        session.info[KEY] = batch
        copy_new_rows(session, ProfileProjection)  # a poll's new profiles: COPY, not an INSERT each

    def finish(self, session: Session) -> None:
        batch = session.info.pop(KEY, None)
        if isinstance(batch, Batch):
            batch.sync(session)

    def after_commit(self, session: Session) -> None:
        """Nothing: the batch's work is all in its transaction."""
