"""models.customer_traits_of: the traits of stored (sealed) snapshots are those of the opened snapshots, while
only the tokens that can still decide a sealed attribute are opened."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.profile import traits
from services.profile.models import SEALED_HAS, customer_traits_of, open_snapshot, seal_snapshot
from shared.crypto import Keyring

TENANT = uuid4()
AT = st.sampled_from(["2026-01-01T10:00:00+00:00", "2026-02-01T10:00:00+00:00", "2026-03-01T10:00:00+00:00"])
SEQ = st.sampled_from(["a", "b", "c"])  # few values: equal times and arrivals happen
CONSENT = st.fixed_dictionaries(
    {
        "purpose": st.sampled_from(["marketing_email", "profiling"]),
        "status": st.sampled_from(["granted", "revoked"]),
        "at": AT,
    }
)
MADE = st.fixed_dictionaries(
    {"at": AT, "consents": st.lists(CONSENT, max_size=2)},
    optional={
        "name": st.sampled_from(["Ana", "Bia", "Caio"]),
        "birth_date": st.sampled_from(["1990-05-20", "1985-01-02"]),
        "zip": st.sampled_from(["50030230", "01310100"]),
        "gender": st.sampled_from(["female", "male"]),
        "city": st.sampled_from(["Recife", "Olinda"]),
        "state": st.sampled_from(["PE", "SP"]),
    },
)
# How a snapshot is stored: sealed now (with the names of what its token holds), sealed before those names
# were recorded, or written in clear before migration 0015 sealed them.
STORED_AS = st.sampled_from(["sealed", "sealed without names", "clear"])


def stored_as(made: dict[str, Any], how: str) -> dict[str, Any]:
    if how == "clear":
        return made
    stored = seal_snapshot(TENANT, made)
    if how == "sealed without names":
        stored.pop(SEALED_HAS, None)
    return stored


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(MADE, SEQ, STORED_AS), max_size=7))
def test_the_traits_are_those_of_the_opened_snapshots(
    snapshots: list[tuple[dict[str, Any], str, str]],
) -> None:
    stored = [(stored_as(made, how), seq) for made, seq, how in snapshots]
    opened = [{**open_snapshot(TENANT, snapshot), "seq": seq} for snapshot, seq in stored]
    assert customer_traits_of(TENANT, stored) == traits.customer_traits(opened)


def test_a_long_history_opens_only_the_tokens_that_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = Keyring.open

    def counting_open(self: Keyring, tenant_id: UUID, token: str) -> str:
        opened.append(token)
        return real_open(self, tenant_id, token)

    history = [
        ({"at": f"2026-01-{day:02d}T10:00:00+00:00", "consents": [], "name": f"Ana {day}"}, "a")
        for day in range(1, 29)
    ]
    history.append(({"at": "2025-12-01T10:00:00+00:00", "consents": [], "zip": "50030230"}, "a"))
    stored = [(seal_snapshot(TENANT, made), seq) for made, seq in history]
    monkeypatch.setattr(Keyring, "open", counting_open)
    found = customer_traits_of(TENANT, stored)
    assert (found["name"], found["zip"], found["birth_date"]) == ("Ana 28", "50030230", None)
    assert len(opened) == 2  # the newest name and the only CEP, of 29 tokens
