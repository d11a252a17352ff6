"""Contract: a JSON sample per event type and version, as it appears on Kafka, must keep parsing.

A new version gets a new sample file (`samples/<type>.v<version>.json`); an existing sample is never edited
to fit changed code, since producers already running still send exactly that.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.events import (
    EVENT_TYPES,
    BehaviourRecorded,
    CustomerRecorded,
    Envelope,
    Event,
    OrderIngested,
    decode,
)

SAMPLES = Path(__file__).parent / "samples"


def sample_path(key: tuple[str, int]) -> Path:
    type_, version = key
    return SAMPLES / f"{type_}.v{version}.json"


def load(key: tuple[str, int]) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(sample_path(key).read_bytes())
    return data


def parse(data: dict[str, Any]) -> tuple[Envelope, Event | None]:
    envelope = Envelope.from_bytes(orjson.dumps(data))
    return envelope, decode(envelope)


KEYS = sorted(EVENT_TYPES)
# Optional fields added to an existing version after its sample was written (an additive, compatible change).
ADDED_LATER: dict[tuple[str, int], set[str]] = {
    ("profile.updated", 1): {"rfm_group", "rfm_score", "clv_12m", "churn_probability", "next_order_at"},
}
IDS = [f"{t}.v{v}" for t, v in KEYS]


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_every_event_version_has_a_sample(key: tuple[str, int]) -> None:
    assert sample_path(key).is_file(), f"add tests/contract/samples/{sample_path(key).name}"


def test_every_sample_is_a_known_event_version() -> None:
    names = {p.name for p in SAMPLES.glob("*.json")}
    assert names == {sample_path(key).name for key in KEYS}


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_sample_parses_into_its_class(key: tuple[str, int]) -> None:
    raw = sample_path(key).read_bytes()
    envelope = Envelope.from_bytes(raw)
    assert (envelope.type, envelope.version) == key
    assert envelope.occurred_at.utcoffset() is not None
    event = decode(envelope)
    assert type(event) is EVENT_TYPES[key]


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_sample_is_in_the_form_producers_write(key: tuple[str, int]) -> None:
    data = load(key)
    envelope, event = parse(data)
    assert event is not None
    assert set(data) == set(Envelope.model_fields)
    assert orjson.loads(envelope.to_bytes()) == data
    # Every payload field present, in its canonical JSON form; fields added to a version later (listed in
    # ADDED_LATER) are optional with a null default, so a sample written before them lacks only those.
    dumped = event.model_dump(mode="json")
    added = set(dumped) - set(data["payload"])
    assert added <= ADDED_LATER.get(key, set()), f"fields missing from the sample: {added}"
    assert {name: dumped[name] for name in added} == dict.fromkeys(added)
    assert {name: value for name, value in dumped.items() if name not in added} == data["payload"]


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_unknown_payload_field_is_ignored(key: tuple[str, int]) -> None:
    data = load(key)
    _, original = parse(data)
    data["payload"]["added_in_a_later_release"] = {"nested": [1, "two", None]}
    _, event = parse(data)
    assert type(event) is EVENT_TYPES[key]
    assert event == original


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_unknown_envelope_field_is_ignored(key: tuple[str, int]) -> None:
    data = load(key)
    _, original = parse(data)
    data["schema_hint"] = "ignored"
    envelope, event = parse(data)
    assert (envelope.type, envelope.version) == key
    assert event == original


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_unknown_later_version_is_ignored_not_misread(key: tuple[str, int]) -> None:
    data = load(key)
    data["version"] = max(v for t, v in EVENT_TYPES if t == key[0]) + 1
    envelope, event = parse(data)
    assert envelope.type == key[0]
    assert event is None


def test_unknown_nested_order_fields_are_ignored() -> None:
    data = load((OrderIngested.TYPE, OrderIngested.VERSION))
    _, original = parse(data)
    order = copy.deepcopy(data["payload"]["order"])
    order["channel"] = "app"
    order["customer"]["phone_verified"] = True
    order["items"][0]["gtin"] = "7890000000000"
    data["payload"]["order"] = order
    _, event = parse(data)
    assert event == original


def test_only_ingest_records_carry_contact_data() -> None:
    # Contact data travels only in what ingest accepted (for profile to resolve identities); the events
    # of profile and segmentation carry ids and traits, never e-mails.
    carriers = {(c.TYPE, c.VERSION) for c in (OrderIngested, CustomerRecorded, BehaviourRecorded)}
    for key in KEYS:
        text = sample_path(key).read_text(encoding="utf-8")
        if key in carriers:
            assert "@example.com" in text
        else:
            assert "@" not in text, f"{key} must not carry e-mails"
