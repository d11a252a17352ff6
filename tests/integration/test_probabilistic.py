"""The probabilistic stage of identity resolution on the profile service's real database: profiles no
identifier links merge when they surely are one person, become a suggestion in the grey zone, and stay
apart when they are a family.
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.profile import (
    identity,
    identity_rules,
    matching,
    privacy,
    probabilistic,
    profiles,
    unmerge,
)
from services.profile.consumer import workers as profile_workers
from services.profile.models import (
    BlockKeyCheck,
    MergeRecord,
    MergeSuggestion,
    Profile,
    ProfileIdentifier,
    ProfileOrder,
)
from services.profile.profiles import ProfileBatch
from shared.consumer import ConsumerWorker
from shared.errors import Conflict
from shared.events import OrderIngested
from shared.records import Order
from shared.settings import ServiceSettings
from tests.support import SettingsFactory, auth, eventually, order_body

pytestmark = pytest.mark.integration

MARIA: dict[str, Any] = {
    "name": "Maria Aparecida Souza",
    "birth_date": "1985-03-02",
    "address": {"zip": "01310-100", "city": "São Paulo", "state": "SP"},
}


@pytest.fixture
def settings(make_settings: SettingsFactory) -> ServiceSettings:
    result: ServiceSettings = make_settings("profile")
    return result


def order(tenant: UUID, number: str, source: str = "site", **customer: Any) -> bytes:
    body = order_body(number, "unused@example.com", "10.00", source=source)
    body["customer"] = customer
    event = OrderIngested(order_id=uuid4(), order_version=1, order=Order.model_validate(body))
    return event.envelope(tenant).to_bytes()


def active(engine: Engine, tenant: UUID) -> list[Profile]:
    with Session(engine) as session:
        query = select(Profile).where(Profile.tenant_id == tenant, Profile.status == "active")
        return list(session.exec(query.order_by(col(Profile.created_at))))


def test_one_person_without_a_shared_identifier_merges_probabilistically(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    tenant = uuid4()
    profile_records.apply(
        [order(tenant, "M-1", email="maria.souza@example.com", phone="11987654321", **MARIA)]
    )
    # On Shopee: another e-mail, a typo in the surname, no phone (a shared phone would attach the order).
    typo: dict[str, Any] = {**MARIA, "name": "MARIA APARECIDA SOUSA"}
    profile_records.apply([order(tenant, "M-2", "shopee", email="cida85@example.com", **typo)])
    [maria] = active(engine, tenant)
    assert maria.orders_count == 2
    with Session(engine) as session:
        [record] = session.exec(select(MergeRecord).where(MergeRecord.tenant_id == tenant)).all()
        assert (record.method, record.rule, record.linked_by) == ("probabilistic", "probabilistic", [])
        assert record.score is not None
        assert record.score >= 0.95
        # And it can be undone like any merge; the two are then kept apart.
        unmerge.unmerge(session, record)
        session.commit()
    profile_records.apply([order(tenant, "M-3", "shopee", email="cida85@example.com", **typo)])
    assert sorted(p.orders_count for p in active(engine, tenant)) == [1, 2]


def test_a_look_alike_another_transaction_holds_is_scored_once_the_batch_commits(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    """With `consumer_defer_busy`: another member of the group is changing Maria's profile, so the batch
    does not wait for it holding its own profiles (two batches doing so wait for each other: a deadlock).
    It commits, then scores the pair in a transaction of its own, once Maria's profile is free."""
    tenant = uuid4()
    profile_records.apply(
        [order(tenant, "M-1", email="maria.souza@example.com", phone="11987654321", **MARIA)]
    )
    [maria] = active(engine, tenant)
    typo: dict[str, Any] = {**MARIA, "name": "MARIA APARECIDA SOUSA"}
    with engine.connect() as holder:
        holder.execute(sa.text("SELECT id FROM profile WHERE id = :id FOR UPDATE"), {"id": maria.id})
        batch = threading.Thread(
            target=profile_records.apply,
            kwargs={"may_defer": True},
            args=([order(tenant, "M-2", "shopee", email="cida85@example.com", **typo)],),
        )
        batch.start()

        def committed() -> None:
            assert len(active(engine, tenant)) == 2

        eventually(committed, timeout=10)
        assert batch.is_alive()  # scoring the pair waits for Maria's profile, holding nothing else
        holder.rollback()
    batch.join(timeout=30)
    assert not batch.is_alive()
    [one] = active(engine, tenant)
    assert (one.id, one.orders_count) == (maria.id, 2)
    with Session(engine) as session:
        [record] = session.exec(select(MergeRecord).where(MergeRecord.tenant_id == tenant)).all()
        assert record.method == "probabilistic"


def maria_in_two_members_at_once(
    engine: Engine,
    settings: ServiceSettings,
    profile_records: ConsumerWorker,
    monkeypatch: pytest.MonkeyPatch,
    tenant: UUID,
) -> ConsumerWorker:
    """Two members of a consumer group: while one batch's transaction (Maria's shop order), its second stage
    done, has not committed yet, the other member applies and commits her Shopee order. Neither second
    stage can see the other's blocking keys. Returns the other member."""
    other_member = dict(profile_workers(engine, settings))["profile-records"]
    assert isinstance(other_member, ConsumerWorker)
    hooks = profile_records.hooks
    assert isinstance(hooks, ProfileBatch)
    finish = hooks.finish
    typo: dict[str, Any] = {**MARIA, "name": "MARIA APARECIDA SOUSA"}

    def finish_while_the_other_member_commits(session: Session) -> None:
        finish(session)
        monkeypatch.setattr(hooks, "finish", finish)  # once
        other_member.apply([order(tenant, "M-2", "shopee", email="cida85@example.com", **typo)])
        assert len(active(engine, tenant)) == 1  # the other's: this batch's profile is not committed yet

    monkeypatch.setattr(hooks, "finish", finish_while_the_other_member_commits)
    profile_records.apply(
        [order(tenant, "M-1", email="maria.souza@example.com", phone="11987654321", **MARIA)]
    )
    return other_member


def test_look_alikes_new_in_two_concurrent_batches_merge_all_the_same(
    engine: Engine,
    settings: ServiceSettings,
    profile_records: ConsumerWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pair the two members' second stages could not see is scored after the commit."""
    tenant = uuid4()
    maria_in_two_members_at_once(engine, settings, profile_records, monkeypatch, tenant)
    [maria] = active(engine, tenant)
    assert maria.orders_count == 2
    with Session(engine) as session:
        [record] = session.exec(select(MergeRecord).where(MergeRecord.tenant_id == tenant)).all()
        assert (record.method, record.survivor_id) == ("probabilistic", maria.id)
        assert record.score is not None
        assert record.score >= 0.95
        stored = session.exec(select(ProfileOrder.profile_id).where(ProfileOrder.tenant_id == tenant))
        assert sorted(stored) == [maria.id, maria.id]
        # Read again, and deleted.
        assert not [c for c in session.exec(select(BlockKeyCheck)) if str(maria.id) in str(c.keys)]


def test_keys_a_stopped_consumer_did_not_read_again_are_read_by_another_batch(
    engine: Engine,
    settings: ServiceSettings,
    profile_records: ConsumerWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same, but the consumer stops between its commit and reading its keys again: its
    `BlockKeyCheck` stays, and a later batch of another consumer reads it once it is stale."""
    tenant = uuid4()
    hooks = profile_records.hooks
    assert hooks is not None
    monkeypatch.setattr(hooks, "after_commit", lambda session: None)  # it stops right after its commit
    other_member = maria_in_two_members_at_once(engine, settings, profile_records, monkeypatch, tenant)
    assert len(active(engine, tenant)) == 2
    with Session(engine) as session:
        left = session.exec(select(BlockKeyCheck.id)).all()
    assert left

    # Another batch, of another tenant, a minute later (here: at once).
    monkeypatch.setattr(profiles, "STALE_CHECK_S", 0.0)
    monkeypatch.setattr(profiles, "STALE_CHECKS_PER_BATCH", 1000)
    other_member.apply([order(uuid4(), "X-1", email="someone@example.com", name="Someone Else")])
    [maria] = active(engine, tenant)
    assert maria.orders_count == 2
    with Session(engine) as session:
        assert session.exec(select(BlockKeyCheck).where(col(BlockKeyCheck.id).in_(left))).all() == []


def test_an_erased_person_leaves_no_block_key_check(
    engine: Engine,
    settings: ServiceSettings,
    profile_records: ConsumerWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Erasure takes the person's profiles out of the checks still waiting to be read again (their keys'
    hashes and ids), and leaves another tenant's check as it was."""
    tenant, other_tenant = uuid4(), uuid4()
    hooks = profile_records.hooks
    assert hooks is not None
    monkeypatch.setattr(hooks, "after_commit", lambda session: None)  # the checks stay
    maria_in_two_members_at_once(engine, settings, profile_records, monkeypatch, tenant)
    profile_records.apply([order(other_tenant, "X-1", email="maria.souza@example.com", **MARIA)])
    mine = active(engine, tenant)
    with Session(engine) as session:
        before = {c.id: c.keys for c in session.exec(select(BlockKeyCheck))}
        theirs = {i: k for i, k in before.items() if str(other_tenant) in k}
        assert theirs
        assert [i for i, k in before.items() if str(mine[0].id) in str(k)]

        erased = privacy.erase(session, tenant, mine, mode="deletion")
        session.commit()

        assert erased["block_key_check"] >= 1
        after = {c.id: c.keys for c in session.exec(select(BlockKeyCheck))}
    assert not [k for k in after.values() if any(str(p.id) in str(k) for p in mine)]
    assert not [k for k in after.values() if str(tenant) in k]
    assert {i: after[i] for i in theirs} == theirs


def test_an_order_from_before_a_move_finds_its_person_whenever_it_arrives(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    """Beatriz buys on Shopee, moves to São Paulo, and an Amazon order from before the move (placed in
    Erechim) arrives before or after the move's order: either way she ends as one profile. (No birth date:
    her name and address are all that tell it is her.)"""
    beatriz: dict[str, Any] = {
        "name": "Beatriz Martins Carvalho",
        "address": {"zip": "99700-921", "city": "Erechim", "state": "RS"},
    }
    moved = {**beatriz, "address": {"zip": "05857-693", "city": "São Paulo", "state": "SP"}}

    def placed(tenant: UUID, number: str, source: str, day: str, **customer: Any) -> bytes:
        body = order_body(number, "unused@example.com", "10.00", source=source)
        body["customer"], body["placed_at"] = customer, f"2025-{day}T12:00:00Z"
        event = OrderIngested(order_id=uuid4(), order_version=1, order=Order.model_validate(body))
        return event.envelope(tenant).to_bytes()

    outcomes = []
    for amazon_last in (False, True):
        tenant = uuid4()
        shopee = [
            placed(tenant, "S-1", "shopee", "01-10", external_id="s1", **beatriz),
            placed(tenant, "S-2", "shopee", "06-10", external_id="s1", **moved),
        ]
        amazon = placed(tenant, "A-1", "amazon", "02-10", external_id="a1", **beatriz)
        for raw in [shopee[0], *([shopee[1], amazon] if amazon_last else [amazon, shopee[1]])]:
            profile_records.apply([raw])
        [profile] = active(engine, tenant)
        assert (profile.orders_count, profile.city) == (3, "São Paulo")
        with Session(engine) as session:
            [record] = session.exec(select(MergeRecord).where(MergeRecord.tenant_id == tenant)).all()
        outcomes.append((record.method, record.score))
    assert outcomes[0] == outcomes[1]


def test_a_profile_that_looked_like_one_merged_away_is_scored_against_its_survivor(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    """Antônio's shop order, then his Mercado Livre order with a typo in his name, which does not look enough
    like the shop's; then his Amazon order, which looks like both. It joins the likelier (Mercado Livre's);
    the shop's profile was a candidate of the Amazon one and is now scored against their survivor, which
    has the Amazon name: all three are one person, as they are when the orders come in another order."""
    home = {"zip": "03923-442", "city": "São Paulo", "state": "SP"}
    outcomes = []
    for arrival in (("site", "ml", "amazon"), ("site", "amazon", "ml")):
        tenant = uuid4()
        raws = {
            "site": order(
                tenant, "A-1", "site", email="antonio.p@example.com", name="Antônio Peixoto", address=home
            ),
            "ml": order(
                tenant, "A-2", "mercadolivre", external_id="m1", name="Antnio Castro Peixoto", address=home
            ),
            "amazon": order(
                tenant, "A-3", "amazon", external_id="a1", name="Antônio Castro Peixoto", address=home
            ),
        }
        for name in arrival:
            profile_records.apply([raws[name]])
        with Session(engine) as session:
            scores = sorted(
                r.score or 0 for r in session.exec(select(MergeRecord).where(MergeRecord.tenant_id == tenant))
            )
        outcomes.append(([p.orders_count for p in active(engine, tenant)], scores))
    assert outcomes[0][0] == outcomes[1][0] == [3], outcomes


def test_a_family_sharing_phone_and_address_stays_apart(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    tenant = uuid4()
    home = {"zip": "50030-230", "city": "Recife", "state": "PE", "street": "Rua da Aurora", "number": "100"}
    jose: dict[str, Any] = {"name": "José Ferreira Lima", "birth_date": "1960-07-01", "address": home}
    ana: dict[str, Any] = {"name": "Ana Ferreira Lima", "birth_date": "1992-01-15", "address": home}
    profile_records.apply([order(tenant, "F-1", email="jose@example.com", phone="81988887777", **jose)])
    profile_records.apply([order(tenant, "F-2", email="ana@example.com", **ana)])
    profile_records.apply([order(tenant, "F-3", email="ana@example.com", phone="81988887777", **ana)])
    assert sorted(p.orders_count for p in active(engine, tenant)) == [1, 2]
    with Session(engine) as session:
        assert session.exec(select(MergeSuggestion).where(MergeSuggestion.tenant_id == tenant)).all() == []


def test_a_grey_zone_pair_is_suggested_and_a_person_decides(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    tenant = uuid4()
    same_name: dict[str, Any] = {
        "name": "Maria Aparecida Souza",
        "address": {"city": "São Paulo", "state": "SP"},
    }
    # Three marketplace buyer ids (no e-mail: different e-mails would speak against them).
    profile_records.apply(
        [order(tenant, "G-1", "amazon", external_id="a1", birth_date="1985-03-02", **same_name)]
    )
    zipped: dict[str, Any] = {**same_name, "address": MARIA["address"]}
    profile_records.apply([order(tenant, "G-2", "shopee", external_id="s1", **zipped)])
    profile_records.apply([order(tenant, "G-3", "magalu", external_id="m1", **same_name)])
    assert len(active(engine, tenant)) == 3
    with Session(engine) as session:
        pending = probabilistic.list_suggestions(
            tenant_id=tenant, session=session, status="pending", after=None, limit=10
        )
        assert len(pending) >= 2
        assert all(0.6 <= s.score < 0.95 for s in pending)
        assert "Maria" not in str([s.contributions for s in pending])  # explained by levels, not values
        pending_ids = {s.id for s in pending}
        first, second = pending[:2]
        record = probabilistic.accept(session, first)
        session.commit()
        assert record.method == "manual"
        probabilistic.reject(session, second)
        session.commit()
        with pytest.raises(Conflict):
            probabilistic.reject(session, second)
    assert len(active(engine, tenant)) == 2
    # New orders of the same people do not bring decided pairs back.
    profile_records.apply([order(tenant, "G-4", "magalu", external_id="m1", **same_name)])
    with Session(engine) as session:
        again = probabilistic.list_suggestions(
            tenant_id=tenant, session=session, status="pending", after=None, limit=10
        )
        assert {s.id for s in again} <= pending_ids


def test_a_pending_suggestion_becomes_a_merge_when_new_data_makes_the_pair_sure(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    tenant = uuid4()
    profile_records.apply([order(tenant, "P-1", "amazon", external_id="a1", **MARIA)])
    city_only: dict[str, Any] = {"name": MARIA["name"], "address": {"city": "São Paulo", "state": "SP"}}
    profile_records.apply([order(tenant, "P-2", "shopee", external_id="s1", **city_only)])
    assert len(active(engine, tenant)) == 2
    with Session(engine) as session:
        [pending] = probabilistic.list_suggestions(
            tenant_id=tenant, session=session, status="pending", after=None, limit=10
        )
    assert 0.6 <= pending.score < 0.95
    # The Shopee buyer's next order brings her birth date and CEP: surely Maria now, whichever order the
    # two marketplaces' records came in.
    profile_records.apply([order(tenant, "P-3", "shopee", external_id="s1", **MARIA)])
    [maria] = active(engine, tenant)
    assert maria.orders_count == 3
    with Session(engine) as session:
        [record] = session.exec(select(MergeRecord).where(MergeRecord.tenant_id == tenant)).all()
        assert record.method == "probabilistic"
        assert record.score is not None
        assert record.score >= 0.95
        suggestion = session.get(MergeSuggestion, pending.id)
        assert suggestion is not None
        assert (suggestion.status, suggestion.decided_at is not None) == ("obsolete", True)


def test_suggestions_over_http(stack: Any) -> None:
    key = stack.create_tenant()
    h = auth(key)
    for number, extra in (("H-1", {"birth_date": "1985-03-02"}), ("H-2", {})):
        body = order_body(number, "unused@example.com", "10.00", source="amazon")
        body["customer"] = {"external_id": number}
        body["customer"].update(
            {"name": "Maria Aparecida Souza", "address": {"city": "São Paulo", "state": "SP"}, **extra}
        )
        if number == "H-2":
            body["customer"]["address"]["zip"] = "01310-100"
        assert stack.ingest.post("/v1/orders", json=body, headers=h).status_code == 202

    def one() -> dict[str, Any]:
        items = stack.profile.get("/v1/merge-suggestions", headers=h).json()["items"]
        assert len(items) == 1
        return dict(items[0])

    suggestion = eventually(one)
    assert len(suggestion["profile_ids"]) == 2
    assert {c["comparison"] for c in suggestion["contributions"]} >= {"name", "birth_date"}
    accepted = stack.profile.post(f"/v1/merge-suggestions/{suggestion['id']}/accept", headers=h)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["method"] == "manual"
    assert (
        stack.profile.post(f"/v1/merge-suggestions/{suggestion['id']}/reject", headers=h).status_code == 409
    )
    assert stack.profile.get("/v1/merge-suggestions", params={"status": "accepted"}, headers=h).json()[
        "items"
    ]

    def merged() -> None:
        items = stack.profile.get("/v1/profiles", headers=h).json()["items"]
        assert [p["orders_count"] for p in items] == [2]

    eventually(merged)


def test_a_profile_whose_data_did_not_change_is_not_scored_again(
    engine: Engine, profile_records: ConsumerWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = uuid4()
    scored: list[set[UUID]] = []
    opened = probabilistic._open

    def spy(sealed: probabilistic.Sealed, readable: dict[UUID, Any]) -> None:
        scored.append(set(sealed))
        opened(sealed, readable)

    monkeypatch.setattr(probabilistic, "_open", spy)
    maria = {"email": "maria.souza@example.com", "phone": "11987654321", **MARIA}
    profile_records.apply([order(tenant, "F-1", **maria)])
    [profile] = active(engine, tenant)
    assert scored == [{profile.id}]
    assert profile.match_fingerprint is not None
    assert "Maria" not in profile.match_fingerprint  # a keyed hash

    # Another order, the same person's data: nothing new to match (its totals change all the same).
    profile_records.apply([order(tenant, "F-2", **maria)])
    [profile] = active(engine, tenant)
    assert profile.orders_count == 2
    assert len(scored) == 1
    # She moved: scored again.
    moved = {**maria, "address": {"zip": "20040-020", "city": "Rio de Janeiro", "state": "RJ"}}
    profile_records.apply([order(tenant, "F-3", **moved)])
    assert scored[1:] == [{profile.id}]
    # New rules (thresholds, limits): every profile is scored again when it next changes.
    with Session(engine) as session:
        identity_rules.save(session, tenant, identity_rules.IdentityRules(merge_threshold=0.9))
        session.commit()
    profile_records.apply([order(tenant, "F-4", **moved)])
    assert scored[2:] == [{profile.id}]


def test_a_profiles_blocking_keys_follow_its_data_and_the_unchanged_ones_stay_as_stored(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    tenant = uuid4()
    maria = {"email": "maria.souza@example.com", "phone": "11987654321", **MARIA}
    identifiers = [("email", "maria.souza@example.com"), ("phone", "+5511987654321")]

    def stored(profile_id: UUID) -> dict[str, str]:
        """The profile's stored keys, each with the transaction that wrote its row (`xmin`)."""
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT key, CAST(xmin AS text) FROM profile_block_key WHERE profile_id = :p"),
                {"p": profile_id},
            )
            return {key: written for key, written in rows}

    def expected(profile: Profile) -> set[str]:
        fields = probabilistic.match_fields(profile, identifiers)
        return {probabilistic.hashed(tenant, key) for f in fields for key in matching.blocking_keys(f)}

    profile_records.apply([order(tenant, "K-1", **maria)])
    [profile] = active(engine, tenant)
    before = stored(profile.id)
    assert set(before) == expected(profile)
    # She moved: the keys of her new address come; those of the old one stay (an order from before the
    # move still finds her), untouched like the others.
    moved = {**maria, "address": {"zip": "20040-020", "city": "Rio de Janeiro", "state": "RJ"}}
    profile_records.apply([order(tenant, "K-2", **moved)])
    [profile] = active(engine, tenant)
    after = stored(profile.id)
    assert set(after) == expected(profile)
    assert set(after) > set(before)
    assert {key: after[key] for key in before} == before
    # Three moves later her first address is no longer among the last ones she had: its keys go.
    for number, (zip, city, state) in enumerate(
        [("50030-230", "Recife", "PE"), ("80010-000", "Curitiba", "PR"), ("40020-000", "Salvador", "BA")]
    ):
        address = {"zip": zip, "city": city, "state": state}
        profile_records.apply([order(tenant, f"K-{number + 3}", **{**maria, "address": address})])
    [profile] = active(engine, tenant)
    final = stored(profile.id)
    assert set(final) == expected(profile)
    kept = set(before) & set(final)
    assert kept  # the keys of her name with her birth date and phone
    assert set(before) - kept
    assert {key: final[key] for key in kept} == {key: before[key] for key in kept}


def _three_merged_in_one_go(
    engine: Engine, profile_records: ConsumerWorker, *, block_youngest: bool, defer_moves: bool = False
) -> tuple[list[Profile], UUID]:
    """Four profiles of a tenant (oldest first); the youngest merges into the middle one and the middle one
    into the oldest in one transaction, flushed once, as the probabilistic stage merges
    (`identity.merge(flush=False)`). With `block_youngest`, the youngest and the fourth were kept apart.
    With `defer_moves`, their rows move after both merges, in one statement (`move_deferred_rows`)."""
    tenant = uuid4()
    people: list[dict[str, Any]] = [
        {"name": name, "address": {"city": city, "state": state}}
        for name, city, state in (
            ("Ana Lima", "Recife", "PE"),
            ("Bruno Costa", "Curitiba", "PR"),
            ("Carla Dias", "Belém", "PA"),
            ("Davi Rocha", "Natal", "RN"),
        )
    ]
    for number, person in enumerate(people):
        profile_records.apply([order(tenant, f"C-{number}", email=f"p{number}@example.com", **person)])
    oldest, middle, youngest, apart = found = active(engine, tenant)
    if block_youngest:
        with Session(engine) as session:
            identity.add_block(session, tenant, youngest.id, apart.id, merge_id=None)
            session.commit()
    deferred: dict[str, Any] = {
        "links": [],
        "event_id": None,
        "method": "probabilistic",
        "flush": False,
        "defer_moves": defer_moves,
    }
    with Session(engine) as session:
        profiles = {p.id: p for p in session.exec(select(Profile).where(Profile.tenant_id == tenant))}
        orders = {
            pid: {
                str(o)
                for o in session.exec(select(ProfileOrder.order_id).where(ProfileOrder.profile_id == pid))
            }
            for pid in (youngest.id, middle.id)
        }
        first = identity.merge(session, profiles[middle.id], profiles[youngest.id], score=0.99, **deferred)
        second = identity.merge(session, profiles[oldest.id], profiles[middle.id], score=0.99, **deferred)
        identity.move_deferred_rows(session)
        session.commit()
        # What each merge moved, as merging one after the other moves it: the middle one took the youngest's
        # order, then moved on with its own and that one.
        assert set(first.moved_orders) == orders[youngest.id]
        assert set(second.moved_orders) == orders[youngest.id] | orders[middle.id]
        assert (len(first.moved_orders), len(second.moved_orders)) == (1, 2)
        three = [oldest.id, middle.id, youngest.id]
        for table in (ProfileOrder, ProfileIdentifier):
            owners = session.exec(select(table.profile_id).where(col(table.profile_id).in_(three))).all()
            assert set(owners) == {oldest.id}, table.__name__
    return found, tenant


@pytest.mark.parametrize("defer_moves", [False, True], ids=["moved-per-merge", "moved-at-once"])
def test_merges_flushed_once_leave_no_chain(
    engine: Engine, profile_records: ConsumerWorker, defer_moves: bool
) -> None:
    (oldest, middle, youngest, _), tenant = _three_merged_in_one_go(
        engine, profile_records, block_youngest=False, defer_moves=defer_moves
    )
    with Session(engine) as session:
        stored = {p.id: p for p in session.exec(select(Profile).where(Profile.tenant_id == tenant))}
        assert stored[youngest.id].merged_into == oldest.id  # not the middle one
        assert stored[middle.id].merged_into == oldest.id
        assert (stored[oldest.id].merges, stored[oldest.id].status) == (2, "active")
        assert len(session.exec(select(MergeRecord).where(MergeRecord.tenant_id == tenant)).all()) == 2


@pytest.mark.parametrize("defer_moves", [False, True], ids=["moved-per-merge", "moved-at-once"])
def test_merges_flushed_once_move_a_block_along(
    engine: Engine, profile_records: ConsumerWorker, defer_moves: bool
) -> None:
    (oldest, middle, youngest, apart), _ = _three_merged_in_one_go(
        engine, profile_records, block_youngest=True, defer_moves=defer_moves
    )
    with Session(engine) as session:
        assert identity.is_blocked(session, oldest.id, apart.id)
        assert not identity.is_blocked(session, youngest.id, apart.id)
        assert not identity.is_blocked(session, middle.id, apart.id)


@pytest.mark.parametrize("defer_moves", [False, True], ids=["moved-per-merge", "moved-at-once"])
def test_a_merge_of_many_moved_at_once_unmerges_like_one_moved_alone(
    engine: Engine, profile_records: ConsumerWorker, defer_moves: bool
) -> None:
    """Undoing the second merge gives the middle profile back with its own order and the youngest's, which
    it had taken in first: the merge records name the same rows however the rows were moved."""
    (oldest, middle, youngest, _), _ = _three_merged_in_one_go(
        engine, profile_records, block_youngest=False, defer_moves=defer_moves
    )
    with Session(engine) as session:
        record = session.exec(select(MergeRecord).where(MergeRecord.merged_id == middle.id)).one()
        unmerge.unmerge(session, record)
        session.commit()
    with Session(engine) as session:
        owners = {
            pid: session.exec(select(sa.func.count()).where(ProfileOrder.profile_id == pid)).one()
            for pid in (oldest.id, middle.id, youngest.id)
        }
        assert owners == {oldest.id: 1, middle.id: 2, youngest.id: 0}
        assert session.get(Profile, middle.id).status == "active"  # type: ignore[union-attr]
        assert session.get(Profile, youngest.id).merged_into == middle.id  # type: ignore[union-attr]


def test_a_survivor_of_a_probabilistic_merge_is_found_by_the_look_alikes_of_the_profile_it_took_in(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    """Ana's shop order (Mirassol), then her Amazon order from Rio (her name without the accent, her phone):
    the two merge. Then her Mercado Livre order from the same Rio address, a typo in her name: it looks like
    the Amazon profile only, which is now the shop profile's. It finds the survivor whether the three come in
    one batch or one by one (the survivor's blocking keys hold the Amazon address once it took it in)."""
    shop: dict[str, Any] = {
        "name": "Ana Laura da Conceição",
        "email": "ana.conceicao@example.com",
        "phone": "5511994452835",
        "address": {"zip": "15130-036", "city": "Mirassol", "state": "SP"},
    }
    rio = {"zip": "20735-058", "city": "Rio de Janeiro", "state": "RJ"}
    amazon = {"name": "Ana Laura da Conceicao", "phone": "(11) 99445-2835", "address": rio}
    mercado_livre = {"name": "Ana Lara da Conceição", "document": "87352003320", "address": rio}
    outcomes = []
    for batches in ((0, 0, 0), (0, 1, 2)):
        tenant = uuid4()
        raws = [
            order(tenant, "A-1", "site", **shop),
            order(tenant, "A-2", "amazon", external_id="a1", **amazon),
            order(tenant, "A-3", "mercadolivre", external_id="m1", **mercado_livre),
        ]
        for batch in sorted(set(batches)):
            profile_records.apply([raw for raw, b in zip(raws, batches, strict=True) if b == batch])
        with Session(engine) as session:
            methods = sorted(
                r.method for r in session.exec(select(MergeRecord).where(MergeRecord.tenant_id == tenant))
            )
        outcomes.append(([p.orders_count for p in active(engine, tenant)], methods))
    assert outcomes[0] == outcomes[1] == ([3], ["probabilistic", "probabilistic"]), outcomes


def test_the_survivor_of_an_accepted_suggestion_is_found_by_the_look_alikes_of_the_profile_it_took_in(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    """Ana's shop profile (Mirassol) and an Amazon profile from Rio that may be hers (the grey zone): a
    person accepts the suggestion. Her Mercado Livre order from the same Rio address then finds the survivor
    (its blocking keys now hold the Amazon address) and merges."""
    tenant = uuid4()
    rio = {"zip": "20735-058", "city": "Rio de Janeiro", "state": "RJ"}
    shop: dict[str, Any] = {
        "name": "Ana Laura da Conceição",
        "email": "ana.conceicao@example.com",
        "birth_date": "1990-05-04",
        "address": {"zip": "15130-036", "city": "Mirassol", "state": "SP"},
    }
    profile_records.apply([order(tenant, "A-1", "site", **shop)])
    amazon = {"name": "Ana L Conceicao", "birth_date": "1990-05-04", "address": rio}
    profile_records.apply([order(tenant, "A-2", "amazon", external_id="a1", **amazon)])
    with Session(engine) as session:
        [pending] = probabilistic.list_suggestions(
            tenant_id=tenant, session=session, status="pending", after=None, limit=10
        )
        record = probabilistic.accept(session, pending)
        profiles.after_manual_merge(session, record, correlation_id=None)
        session.commit()
        survivor_id = record.survivor_id
    mercado_livre = {"name": "Ana Lara da Conceição", "document": "87352003320", "address": rio}
    profile_records.apply([order(tenant, "A-3", "mercadolivre", external_id="m1", **mercado_livre)])
    [ana] = active(engine, tenant)
    assert (ana.id, ana.orders_count) == (survivor_id, 3)


def test_an_unmerged_profile_is_found_again_by_its_look_alikes(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    """A probabilistic merge took Cida's profile into Maria's (its blocking keys went with it); a person
    undoes it. Cida's next order, from Amazon with her own name and address and nothing that identifies
    her, joins Cida's profile (the same data), not Maria's."""
    tenant = uuid4()
    profile_records.apply(
        [order(tenant, "M-1", email="maria.souza@example.com", phone="11987654321", **MARIA)]
    )
    cida: dict[str, Any] = {**MARIA, "name": "MARIA APARECIDA SOUSA"}
    profile_records.apply([order(tenant, "M-2", "shopee", email="cida85@example.com", **cida)])
    with Session(engine) as session:
        [record] = session.exec(select(MergeRecord).where(MergeRecord.tenant_id == tenant)).all()
        unmerge.unmerge(session, record)
        session.commit()
        maria, restored = record.survivor_id, record.merged_id
    profile_records.apply([order(tenant, "M-3", "amazon", external_id="a9", **cida)])
    counts = {p.id: p.orders_count for p in active(engine, tenant)}
    assert counts == {maria: 1, restored: 2}
