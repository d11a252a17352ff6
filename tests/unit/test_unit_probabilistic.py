"""services.profile.probabilistic: the merge blocks the second stage keeps in memory follow a merge the way
`identity.merge` moves the stored ones."""

from __future__ import annotations

from uuid import UUID, uuid4

from services.profile.probabilistic import _move_blocks, loaded_seen, stored_seen


def ids(n: int) -> list[UUID]:
    return [UUID(int=i) for i in range(1, n + 1)]


def test_a_block_against_the_merged_profile_now_holds_against_the_survivor() -> None:
    a, b, c, d = ids(4)
    blocked = {(a, c), (b, d)}  # c was split from a by an unmerge
    _move_blocks(blocked, merged=a, survivor=d)  # a merges into d: d and c must stay apart now
    assert blocked == {(c, d), (b, d)}


def test_blocks_keep_lower_id_first_and_a_block_with_the_survivor_itself_goes() -> None:
    a, b, c, _ = ids(4)
    blocked = {(b, c), (a, c)}
    _move_blocks(blocked, merged=c, survivor=a)
    assert blocked == {(a, b)}  # (b, c) -> (a, b), lower id first; (a, c) named the survivor: gone


def test_other_blocks_are_left_alone() -> None:
    a, b, c, d = ids(4)
    blocked = {(a, b)}
    _move_blocks(blocked, merged=c, survivor=d)
    assert blocked == {(a, b)}


def test_the_keys_a_batch_saw_are_stored_and_loaded_as_they_were() -> None:
    tenant, other_tenant = uuid4(), uuid4()
    mine, theirs, also_mine = uuid4(), uuid4(), uuid4()
    seen = {
        "k1": (tenant, {mine}, {mine}),
        "k2": (tenant, {mine, also_mine}, {mine, also_mine, theirs}),
        "k3": (other_tenant, {theirs}, {theirs}),
    }
    stored = stored_seen(seen)
    assert stored[str(tenant)]["k1"] == [[str(mine)], []]  # nobody else held it: nothing more to store
    assert loaded_seen(stored) == seen
