"""The profile projection: this service's copy of each profile's segmentable traits, from ProfileUpdated.

Scalar traits are `profile_projection` columns; set-valued ones (sources, categories and products bought,
categories and products viewed with when, consents) are `profile_tag` rows. Version 2 of the event carries
every trait; a version 1 event (its producers may still be running during an upgrade) fills what it has
and leaves the rest as the last version 2 left it. Events older than the projection are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlmodel import Session, col, select

from services.segmentation import batch as batches
from services.segmentation.evaluate import Traits
from services.segmentation.models import ErasedProfile, Opened, ProfileProjection, ProfileTag, TagKind
from services.segmentation.rules import CONSENT_TAGS
from shared.db import assign, new_row, utcnow
from shared.events import ProfileUpdated, ProfileUpdatedV2, TenantMismatch
from shared.records import average_order_value, to_minor

Elements = Mapping[str, datetime | None]  # a tag kind's values -> time (None where it has none)


@dataclass(frozen=True)
class Applied:
    """A profile's projection refreshed by an event: its traits now, and which columns and tag kinds
    changed (None for a new profile). Segments whose rules read none of them keep their answer.

    The change set is computed here, by comparing the stored traits before and after, rather than taken
    from the event's `changed`: that list is relative to the producer's previous version, which this
    service may not have applied as such (a skipped version, or a version 1 event in between)."""

    projection: ProfileProjection
    traits: Traits
    changed: frozenset[str] | None
    before: Traits | None = None  # the traits before the event (None: a new profile)


def apply_event(
    session: Session, tenant_id: UUID, event: ProfileUpdated | ProfileUpdatedV2
) -> Applied | None:
    """Refresh the profile's projection and tags from the event; None if the event is stale."""
    batch = batches.current(session)
    if batch is not None:
        return _apply_batched(session, batch, tenant_id, event)
    projection = session.get(ProfileProjection, event.profile_id)
    if projection is not None and projection.tenant_id != tenant_id:
        raise TenantMismatch("the profile")
    if projection is not None and projection.profile_version >= event.profile_version:
        return None  # stale or redelivered version
    if projection is None and session.get(ErasedProfile, event.profile_id) is not None:
        return None  # erased at the person's request: an event still in flight does not bring it back
    before = traits(session, projection) if projection is not None else None
    projection, tags = _refreshed(projection, tenant_id, event)
    session.add(projection)
    replace_tags(session, projection, tags)
    session.flush()
    after = traits(session, projection)
    return Applied(projection, after, None if before is None else _differences(before, after), before)


def _refreshed(
    projection: ProfileProjection | None,
    tenant_id: UUID,
    event: ProfileUpdated | ProfileUpdatedV2,
    opened: Opened | None = None,
) -> tuple[ProfileProjection, dict[str, Elements]]:
    """The projection (created if new) with the event's scalars, and the event's tags. `opened`: a
    consumer batch's clear values of sealed tokens (`models.Opened`)."""
    if projection is None:
        projection = new_row(
            ProfileProjection,
            profile_id=event.profile_id,
            tenant_id=tenant_id,
            profile_version=event.profile_version,
            orders_count=event.orders_count,
            total_spent_minor=to_minor(event.total_spent),
        )
    if isinstance(event, ProfileUpdatedV2):
        _scalars_v2(projection, event, opened)
        tags = _tags_v2(event)
    else:
        _scalars_v1(projection, event)
        tags = _tags_v1(event)
    assign(projection, profile_version=event.profile_version, updated_at=utcnow())
    return projection, tags


def _apply_batched(
    session: Session, batch: batches.Batch, tenant_id: UUID, event: ProfileUpdated | ProfileUpdatedV2
) -> Applied | None:
    """`apply_event` within a consumer batch: on the batch's copy, the tags written when it is synced."""
    projection = batch.projection(session, event.profile_id)
    if projection is not None and projection.tenant_id != tenant_id:
        raise TenantMismatch("the profile")
    if projection is not None and projection.profile_version >= event.profile_version:
        return None  # stale or redelivered version
    if event.profile_id in batch.erased:
        return None  # erased at the person's request
    before = (
        None
        if projection is None
        else Traits(columns=projection.columns(batch.opened), tags=batch.tags[event.profile_id])
    )
    projection, tags = _refreshed(projection, tenant_id, event, batch.opened)
    if projection not in session:
        session.add(projection)
    batch.set_projection(projection)
    kept = {kind: elements for kind, elements in batch.tags[event.profile_id].items() if kind not in tags}
    kept.update((kind, dict(elements)) for kind, elements in tags.items() if elements)
    batch.tags[event.profile_id] = kept
    after = Traits(columns=projection.columns(batch.opened), tags=kept)
    return Applied(projection, after, None if before is None else _differences(before, after), before)


_BOOKKEEPING = frozenset({"profile_id", "tenant_id", "profile_version", "updated_at"})


def _differences(before: Traits, after: Traits) -> frozenset[str]:
    columns = {
        name
        for name, value in after.columns.items()
        if name not in _BOOKKEEPING and before.columns.get(name) != value
    }
    kinds = {
        kind for kind in {*before.tags, *after.tags} if before.tags.get(kind, {}) != after.tags.get(kind, {})
    }
    return frozenset(columns | kinds)


def _scalars_v1(projection: ProfileProjection, event: ProfileUpdated) -> None:
    projection.orders_count = event.orders_count
    projection.total_spent_minor = to_minor(event.total_spent)
    aov = average_order_value(event.total_spent, event.orders_count)
    projection.average_order_value_minor = to_minor(aov) if aov is not None else None
    projection.first_order_at = event.first_order_at
    projection.last_order_at = event.last_order_at
    projection.preferred_payment_method = event.preferred_payment_method
    projection.rfm_group = event.rfm_group
    projection.rfm_r, projection.rfm_f, projection.rfm_m = _rfm_scores(event.rfm_score)
    projection.clv_12m_minor = to_minor(event.clv_12m) if event.clv_12m is not None else None
    projection.churn_probability = event.churn_probability
    projection.next_order_at = event.next_order_at


def _rfm_scores(score: str | None) -> tuple[int | None, int | None, int | None]:
    """Version 1's `rfm_score` ("545") as its three digits."""
    if score is None or len(score) != 3 or not all(c in "12345" for c in score):
        return None, None, None
    return int(score[0]), int(score[1]), int(score[2])


def _scalars_v2(projection: ProfileProjection, event: ProfileUpdatedV2, opened: Opened | None = None) -> None:
    aov = event.average_order_value
    projection.set_sealed(birth_date=event.birth_date, zip=event.zip, opened=opened)  # see the model
    assign(
        projection,
        orders_count=event.orders_count,
        total_spent_minor=to_minor(event.total_spent),
        average_order_value_minor=to_minor(aov) if aov is not None else None,
        first_order_at=event.first_order_at,
        last_order_at=event.last_order_at,
        preferred_payment_method=event.preferred_payment_method,
        gender=event.gender,
        city=event.city,
        state=event.state,
        rfm_group=event.rfm_group,
        rfm_r=event.rfm_r,
        rfm_f=event.rfm_f,
        rfm_m=event.rfm_m,
        clv_12m_minor=to_minor(event.clv_12m) if event.clv_12m is not None else None,
        churn_probability=event.churn_probability,
        next_order_at=event.next_order_at,
        last_seen_at=event.last_seen_at,
        cart_abandoned_at=event.cart_abandoned_at,
    )


def _untimed(values: Iterable[str]) -> dict[str, datetime | None]:
    return dict.fromkeys(values)


def _tags_v1(event: ProfileUpdated) -> dict[str, Elements]:
    return {TagKind.source: _untimed(event.sources), TagKind.bought_category: _untimed(event.categories)}


def _tags_v2(event: ProfileUpdatedV2) -> dict[str, Elements]:
    tags: dict[str, Elements] = {
        TagKind.source: _untimed(event.sources),
        TagKind.bought_category: _untimed(event.categories),
        TagKind.bought_product: _untimed(event.products),
        TagKind.viewed_category: event.viewed_categories,
        TagKind.viewed_product: event.viewed_products,
    }
    for status, kind in CONSENT_TAGS.items():
        tags[kind] = _untimed(purpose for purpose, decision in event.consents.items() if decision == status)
    return tags


def replace_tags(session: Session, projection: ProfileProjection, tags: Mapping[str, Elements]) -> None:
    """Make the profile's tags of the given kinds exactly `tags` (other kinds are left alone), writing only
    the rows that differ."""
    current = session.exec(
        select(ProfileTag).where(
            ProfileTag.profile_id == projection.profile_id, col(ProfileTag.kind).in_(list(tags))
        )
    ).all()
    existing = {(row.kind, row.value): row for row in current}
    for row in current:
        wanted = tags[row.kind]
        if row.value not in wanted:
            session.delete(row)
        elif wanted[row.value] != row.at:
            row.at = wanted[row.value]
            session.add(row)
    for kind, elements in tags.items():
        for value, at in elements.items():
            if (kind, value) not in existing:
                session.add(
                    ProfileTag(
                        profile_id=projection.profile_id,
                        tenant_id=projection.tenant_id,
                        kind=kind,
                        value=value,
                        at=at,
                    )
                )


def delete(session: Session, projection: ProfileProjection) -> None:
    for row in session.exec(select(ProfileTag).where(ProfileTag.profile_id == projection.profile_id)):
        session.delete(row)
    session.delete(projection)


def traits(session: Session, projection: ProfileProjection) -> Traits:
    """What the Python evaluator reads for one profile: its columns and its tags."""
    tags: dict[str, dict[str, datetime | None]] = {}
    for row in session.exec(select(ProfileTag).where(ProfileTag.profile_id == projection.profile_id)):
        tags.setdefault(row.kind, {})[row.value] = row.at
    return Traits(columns=projection.columns(), tags=tags)


def traits_of(session: Session, profile_ids: list[UUID], chunk: int = 1000) -> dict[UUID, Traits]:
    """`traits` of many profiles, with two queries per chunk of ids."""
    found: dict[UUID, Traits] = {}
    for start in range(0, len(profile_ids), chunk):
        ids = profile_ids[start : start + chunk]
        tags: dict[UUID, dict[str, dict[str, datetime | None]]] = {}
        for row in session.exec(select(ProfileTag).where(col(ProfileTag.profile_id).in_(ids))):
            tags.setdefault(row.profile_id, {}).setdefault(row.kind, {})[row.value] = row.at
        for projection in session.exec(
            select(ProfileProjection).where(col(ProfileProjection.profile_id).in_(ids))
        ):
            found[projection.profile_id] = Traits(
                columns=projection.columns(), tags=tags.get(projection.profile_id, {})
            )
    return found
