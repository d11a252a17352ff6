"""bench.resolver_floor: records sharing an identifier make one group, but two documents never join."""

from __future__ import annotations

from bench.resolver_floor import groups


def test_records_sharing_an_identifier_join_through_any_chain() -> None:
    records = [
        [("email", "a")],
        [("phone", "p")],
        [("email", "a"), ("phone", "p")],  # joins the first two
        [("email", "b")],
    ]
    assert groups(records) == 2


def test_two_documents_never_join_and_a_record_without_identifiers_is_its_own() -> None:
    records = [
        [("document", "111"), ("email", "family")],
        [("document", "222"), ("email", "x")],
        [("email", "family"), ("email", "x")],  # would join the two people: it joins the first only
        [],
    ]
    assert groups(records) == 3
