"""The profiles consumer applies a poll's events in one batch: several versions of one profile in a poll
(with a stale one and a merge among them) give what applying them one at a time gives."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID, uuid4

import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.segmentation.models import ProfileProjection, ProfileTag
from shared.events import ProfilesMerged, ProfileUpdatedV2
from tests.integration.test_segment_membership import Service, seg  # noqa: F401

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def _event(profile_id: UUID, version: int, orders: int, categories: list[str]) -> ProfileUpdatedV2:
    return ProfileUpdatedV2(
        profile_id=profile_id, profile_version=version, changed=["orders_count"], orders_count=orders,
        total_spent=Decimal(10 * orders), average_order_value=None, first_order_at=NOW, last_order_at=NOW,
        sources=["site"], categories=categories, products=[], preferred_payment_method=None, birth_date=None,
        gender=None, city=None, state="SP", zip=None, consents={}, rfm_group=None, rfm_r=None, rfm_f=None,
        rfm_m=None, clv_12m=None, churn_probability=None, next_order_at=None, last_seen_at=None,
        viewed_categories={}, viewed_products={}, cart_abandoned_at=None,
    )  # fmt: skip


def _tags(service: Service, profile_id: UUID) -> set[tuple[str, str]]:
    with Session(service.engine) as session:
        rows = session.exec(select(ProfileTag).where(ProfileTag.profile_id == profile_id)).all()
    return {(r.kind, r.value) for r in rows}


def test_versions_of_a_profile_in_one_poll(seg: Service) -> None:  # noqa: F811
    buyers = seg.create({"field": "orders_count", "op": "gte", "value": 2}, name="buyers")
    b_fans = seg.create({"field": "bought_categories", "op": "contains", "value": "b"}, name="b")
    one, two = uuid4(), uuid4()
    seg.deliver(
        _event(one, 1, 2, ["b"]),  # enters both
        _event(two, 1, 3, ["b"]),
        _event(one, 2, 1, ["a"]),  # leaves both
        _event(one, 1, 5, ["b"]),  # stale
        _event(one, 3, 4, ["b", "c"]),  # enters both again
        ProfilesMerged(survivor_id=one, merged_id=two, merge_id=uuid4(), rule="email"),
    )
    assert seg.members(buyers) == seg.members(b_fans) == {one}
    assert [(c, p) for c, p, _ in seg.history(buyers["id"])] == [
        ("entered", one), ("entered", two), ("exited", one), ("entered", one), ("exited", two),
    ]  # fmt: skip
    assert _tags(seg, one) == {("source", "site"), ("bought_category", "b"), ("bought_category", "c")}
    assert _tags(seg, two) == set()
    seg.deliver(_event(one, 4, 4, ["c"]))  # a later poll: the tags written by the batch are the stored ones
    assert seg.members(buyers) == {one}
    assert seg.members(b_fans) == set()
    assert _tags(seg, one) == {("source", "site"), ("bought_category", "c")}


def test_merges_in_one_poll_with_profiles_new_to_it(seg: Service) -> None:  # noqa: F811
    buyers = seg.create({"field": "orders_count", "op": "gte", "value": 2}, name="buyers")
    one, two, three = uuid4(), uuid4(), uuid4()
    seg.deliver(_event(one, 1, 2, ["b"]), _event(two, 1, 2, ["b"]))  # stored by an earlier poll
    seg.deliver(
        _event(three, 1, 3, ["c"]),  # new in this poll, and merged in it: never written
        ProfilesMerged(survivor_id=one, merged_id=three, merge_id=uuid4(), rule="email"),
        _event(two, 2, 4, ["b", "c"]),  # changed in this poll, then merged
        ProfilesMerged(survivor_id=one, merged_id=two, merge_id=uuid4(), rule="phone"),
        _event(one, 2, 9, ["b", "c"]),  # the survivor's news after the merges
    )
    assert seg.members(buyers) == {one}
    assert [(c, p) for c, p, _ in seg.history(buyers["id"])] == [
        ("entered", one), ("entered", two), ("entered", three), ("exited", three), ("exited", two),
    ]  # fmt: skip
    assert _tags(seg, two) == _tags(seg, three) == set()
    assert _tags(seg, one) == {("source", "site"), ("bought_category", "b"), ("bought_category", "c")}
    with Session(seg.engine) as session:
        left = session.exec(
            select(ProfileProjection).where(col(ProfileProjection.profile_id).in_([two, three]))
        )
        assert left.all() == []
    # A later poll merging a profile the batch never loaded before.
    four = uuid4()
    seg.deliver(_event(four, 1, 2, ["d"]))
    seg.deliver(ProfilesMerged(survivor_id=one, merged_id=four, merge_id=uuid4(), rule="email"))
    assert seg.members(buyers) == {one}
    assert _tags(seg, four) == set()


def test_a_poll_writes_new_projections_with_copy_and_stored_ones_in_one_update(seg: Service) -> None:  # noqa: F811
    """The projections of a poll: the new ones copied in, the stored ones changed (in different columns)
    written by one UPDATE from a scratch table (`write_columns`), not an UPDATE per run of projections
    changed alike; what is read back is what each event said."""
    old = [uuid4() for _ in range(3)]
    seg.deliver(*(_event(p, 1, 1, ["a"]) for p in old))
    statements: list[str] = []
    sa.event.listen(seg.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    new = uuid4()
    moved = _event(old[1], 2, 1, ["a"]).model_copy(update={"state": "RJ"})  # another column than old[0]'s
    seg.deliver(_event(old[0], 2, 5, ["a"]), moved, _event(new, 1, 2, ["b"]))
    # COPY goes to the driver itself (no statement event): the new row shows below, read back.
    writes = [
        s for s in statements if s.startswith(("INSERT", "UPDATE", "WITH")) and "profile_projection" in s
    ]
    assert len(writes) == 1, writes
    assert writes[0].startswith("WITH w AS (DELETE FROM")
    assert 'UPDATE "profile_projection"' in writes[0]
    with Session(seg.engine) as session:
        rows = {
            p.profile_id: (p.profile_version, p.orders_count, p.state)
            for p in session.exec(
                select(ProfileProjection).where(col(ProfileProjection.profile_id).in_([*old, new]))
            )
        }
    assert rows == {old[0]: (2, 5, "SP"), old[1]: (2, 1, "RJ"), old[2]: (1, 1, "SP"), new: (1, 2, "SP")}
