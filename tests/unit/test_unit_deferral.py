"""Which events of a consumer batch wait for a later transaction (`profiles._linked_to`): those that carry
an identifier another member of the group is writing, and every event linked to them."""

from __future__ import annotations

from uuid import UUID, uuid4

from services.profile.profiles import _linked_to

TENANT = uuid4()


def key(kind: str, value: str) -> tuple[UUID, str, str]:
    return (TENANT, kind, value)


def test_an_event_with_a_busy_identifier_waits_and_an_unrelated_one_does_not() -> None:
    busy, free = uuid4(), uuid4()
    carried = [
        (busy, [key("email", "bia")], uuid4()),
        (free, [key("email", "ana")], uuid4()),
    ]
    assert _linked_to({key("email", "bia")}, carried, {}) == {busy}


def test_events_linked_by_an_identifier_an_owner_or_their_order_wait_together() -> None:
    first, by_phone, by_owner, next_version, other = (uuid4() for _ in range(5))
    order, bia = uuid4(), uuid4()
    carried = [
        (first, [key("email", "bia"), key("phone", "119")], order),
        (by_phone, [key("phone", "119"), key("email", "bia.work")], uuid4()),
        # Another of Bia's identifiers, not on the first event: linked through the profile that owns both.
        (by_owner, [key("document", "529")], uuid4()),
        (next_version, [key("email", "new")], order),  # a later version of the first event's order
        (other, [key("email", "carla")], uuid4()),
    ]
    owner: dict[tuple[UUID, str, str], UUID | None] = {
        key("phone", "119"): bia,
        key("document", "529"): bia,
        key("email", "carla"): uuid4(),
        key("email", "new"): None,
    }
    assert _linked_to({key("email", "bia")}, carried, owner) == {first, by_phone, by_owner, next_version}


def test_nothing_busy_leaves_every_event() -> None:
    carried = [(uuid4(), [key("email", "ana")], uuid4())]
    assert _linked_to(set(), carried, {}) == set()
