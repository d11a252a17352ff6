"""Personal data at rest, the pure parts: how profiles, snapshots, announced traits and inbound records are
sealed and opened (with a key rotation in between), and how import files expire."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session, select

from services.ingest import imports
from services.ingest.intake import open_payload
from services.ingest.models import ImportJob, ingest_registry
from services.profile.models import Profile, ProfileRecord, open_snapshot, profile_registry, seal_snapshot
from services.profile.profiles import as_announced, snapshot
from services.profile.traits import customer_traits
from shared.crypto import SecretError, keyring
from shared.db import make_engine, utcnow
from shared.records import Consent, CustomerRecord

NEW_SECRET = "a-rotated-secret-of-at-least-32-characters"
ROTATION_VARIABLES = ("CLIENTELA_SECRET_KEY", "CLIENTELA_OLD_SECRET_KEYS")


@pytest.fixture
def rotate() -> Iterator[Callable[[], None]]:
    """Rotate the process's secret (the current one becomes the old one); restored afterwards."""
    saved = {name: os.environ.get(name) for name in ROTATION_VARIABLES}

    def rotate() -> None:
        os.environ["CLIENTELA_OLD_SECRET_KEYS"] = os.environ["CLIENTELA_SECRET_KEY"]
        os.environ["CLIENTELA_SECRET_KEY"] = NEW_SECRET
        keyring.cache_clear()

    yield rotate
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    keyring.cache_clear()


def record() -> CustomerRecord:
    return CustomerRecord.model_validate(
        {
            "source": "crm",
            "email": "ana@example.com",
            "name": "Ana Quintiliano",
            "birth_date": "1990-05-20",
            "gender": "female",
            "address": {"street": "Rua Astolfo", "city": "Recife", "state": "PE", "zip": "50030-230"},
        }
    )


def test_a_snapshot_keeps_name_birth_date_and_cep_sealed_and_opens_to_what_was_made() -> None:
    tenant = uuid4()
    made = snapshot(record(), [], at=utcnow())
    stored = seal_snapshot(tenant, made)
    text = orjson.dumps(stored).decode()
    for personal in ("Quintiliano", "1990-05-20", "50030230"):
        assert personal not in text
    assert {k: stored[k] for k in ("gender", "city", "state", "country")} == {
        "gender": "female",
        "city": "Recife",
        "state": "PE",
        "country": "BR",
    }  # what filters and rules select on stays readable
    assert open_snapshot(tenant, stored) == made
    with pytest.raises(SecretError, match="does not open"):
        open_snapshot(uuid4(), stored)  # another tenant's key does not open it

    consents_only = snapshot(
        None, [Consent.model_validate({"purpose": "marketing_email", "status": "granted"})], at=utcnow()
    )
    assert seal_snapshot(tenant, consents_only) == consents_only  # nothing personal: nothing sealed


TEXT = st.characters(exclude_categories=["Cs"])  # text that can be encoded (no lone surrogates)
ATTRIBUTES: dict[str, st.SearchStrategy[Any]] = {
    "name": st.text(TEXT, min_size=1, max_size=40),
    "birth_date": st.dates().map(date.isoformat),
    "zip": st.from_regex(r"\d{8}", fullmatch=True),
    "city": st.text(TEXT, max_size=20),
    "consents": st.just([]),
}
TIMES = st.sampled_from(["2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"])


def test_a_snapshot_written_in_clear_through_the_orm_is_stored_sealed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'profile.db'}")
    profile_registry.metadata.create_all(engine)
    tenant, made = uuid4(), snapshot(record(), [], at=utcnow())
    try:
        with Session(engine) as session:
            stored = ProfileRecord(
                id=uuid4(),
                tenant_id=tenant,
                profile_id=uuid4(),
                kind="customer",
                type="correction",
                source="api",
                occurred_at=utcnow(),
                customer=made,
            )
            session.add(stored)
            session.commit()
            stored.customer = {**stored.customer, "name": "Ana Corrigida"}  # a later correction, in clear
            session.add(stored)
            session.commit()
        with engine.connect() as conn:
            raw = conn.execute(sa.text("SELECT customer FROM profile_record")).scalar_one()
        assert "Quintiliano" not in raw
        assert "Corrigida" not in raw
        assert "50030230" not in raw
        assert open_snapshot(tenant, orjson.loads(raw)) == {**made, "name": "Ana Corrigida"}
    finally:
        engine.dispose()


@given(st.lists(st.fixed_dictionaries({"at": TIMES}, optional=ATTRIBUTES), max_size=5))
def test_traits_folded_from_sealed_snapshots_are_the_traits_of_the_snapshots(
    snapshots: list[dict[str, Any]],
) -> None:
    tenant = uuid4()
    stored = [seal_snapshot(tenant, s) for s in snapshots]
    opened = [{**open_snapshot(tenant, s), "seq": str(i)} for i, s in enumerate(stored)]
    assert customer_traits(opened) == customer_traits([{**s, "seq": str(i)} for i, s in enumerate(snapshots)])


def test_a_profile_reads_and_writes_its_sealed_fields_in_clear() -> None:
    profile = Profile(tenant_id=uuid4())
    assert (profile.name, profile.birth_date, profile.zip) == (None, None, None)
    profile.name, profile.birth_date, profile.zip = "Ana Quintiliano", date(1990, 5, 20), "50030230"
    assert (profile.name, profile.birth_date, profile.zip) == (
        "Ana Quintiliano",
        date(1990, 5, 20),
        "50030230",
    )
    tokens = (profile.name_sealed, profile.birth_date_sealed, profile.zip_sealed)
    for personal in ("Quintiliano", "1990-05-20", "50030230"):
        assert personal not in str(tokens)
    profile.name, profile.birth_date, profile.zip = "Ana Quintiliano", date(1990, 5, 20), "50030230"
    assert (
        profile.name_sealed,
        profile.birth_date_sealed,
        profile.zip_sealed,
    ) == tokens  # same: not rewritten
    profile.name = None
    assert profile.name_sealed is None


def test_a_profile_remembers_what_it_opened_until_its_token_changes() -> None:
    tenant = uuid4()
    profile = Profile(tenant_id=tenant, phone=keyring().seal(tenant, "+5581987654321"))
    profile.set_person(name="Ana Quintiliano", birth_date=date(1990, 5, 20), zip="50030230")
    tokens = (profile.name_sealed, profile.birth_date_sealed, profile.zip_sealed)
    assert (profile.name, profile.birth_date, profile.zip) == (
        "Ana Quintiliano",
        date(1990, 5, 20),
        "50030230",
    )
    assert profile.contact_phone == "+5581987654321"
    profile.set_person(name="Ana Quintiliano", birth_date=date(1990, 5, 20), zip="50030230")
    assert (profile.name_sealed, profile.birth_date_sealed, profile.zip_sealed) == tokens  # not rewritten
    # A token set behind the properties' back (a load, a refresh, another writer) is opened, not remembered.
    profile.name_sealed = keyring().seal(tenant, "Bia Quintiliano")
    profile.phone = keyring().seal(tenant, "+5581900000000")
    assert profile.name == "Bia Quintiliano"
    assert profile.contact_phone == "+5581900000000"
    profile.set_person(name=None, birth_date=None, zip="50030231")
    assert all(v is None for v in (profile.name, profile.name_sealed, profile.birth_date_sealed))
    assert profile.zip == "50030231"
    assert profile.zip_sealed != tokens[2]
    # What it remembers is no field: never dumped, never written.
    assert "Bia" not in str(profile.model_dump())
    assert "50030231" not in str(profile.model_dump())


def test_values_sealed_before_a_rotation_open_after_it_and_new_ones_use_the_new_key(
    rotate: Callable[[], None],
) -> None:
    tenant = uuid4()
    profile = Profile(tenant_id=tenant)
    profile.name, profile.birth_date = "Ana Quintiliano", date(1990, 5, 20)
    stored = seal_snapshot(tenant, {"at": "2026-01-01T00:00:00+00:00", "name": "Ana Quintiliano"})
    payload = keyring().seal_bytes(tenant, orjson.dumps({"customer": {"email": "ana@example.com"}}))
    # A record stored before migration 0009: the bytes of a text token.
    older = keyring().seal(tenant, orjson.dumps({"customer": {"phone": "+5511912345678"}}).decode()).encode()
    announced = as_announced(tenant, {"birth_date": "1990-05-20", "zip": None, "city": "Recife"})
    old_id = keyring().current_id

    rotate()
    assert keyring().current_id != old_id
    assert (profile.name, profile.birth_date) == ("Ana Quintiliano", date(1990, 5, 20))
    assert open_snapshot(tenant, stored)["name"] == "Ana Quintiliano"
    assert open_payload(tenant, payload) == {"customer": {"email": "ana@example.com"}}
    assert open_payload(tenant, older) == {"customer": {"phone": "+5511912345678"}}
    # The announced hashes use the index secret (the oldest): an unchanged birth date is no change.
    assert as_announced(tenant, {"birth_date": "1990-05-20", "zip": None, "city": "Recife"}) == announced
    profile.zip = "50030230"
    assert str(profile.zip_sealed).split(".")[0] == keyring().current_id
    assert str(profile.name_sealed).split(".")[0] == old_id


def test_announced_traits_keep_the_birth_date_and_cep_as_keyed_hashes_only() -> None:
    tenant = uuid4()
    traits = {"birth_date": "1990-05-20", "zip": "50030230", "city": "Recife", "orders_count": 2}
    kept = as_announced(tenant, traits)
    assert (kept["city"], kept["orders_count"]) == ("Recife", 2)
    assert "1990-05-20" not in str(kept)
    assert "50030230" not in str(kept)
    assert kept == as_announced(tenant, dict(traits))
    assert kept["zip"] != as_announced(tenant, {**traits, "zip": "50030231"})["zip"]
    assert kept["birth_date"] != as_announced(uuid4(), traits)["birth_date"]  # keyed per tenant
    assert as_announced(tenant, {"birth_date": None, "zip": None}) == {"birth_date": None, "zip": None}


def test_import_uploads_go_when_the_job_ends_and_the_job_with_its_report_after_the_retention(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ingest.db'}")
    ingest_registry.metadata.create_all(engine)
    now = utcnow()
    with Session(engine) as session:
        jobs = {
            name: ImportJob(
                tenant_id=uuid4(),
                kind="customer",
                format="jsonl",
                files={"data": "data.upload"},
                status=status,
                finished_at=finished,
            )
            for name, status, finished in (
                ("old", "done", now - imports.RETENTION - timedelta(hours=1)),
                ("old_failed", "failed", now - imports.RETENTION - timedelta(hours=1)),
                ("recent", "done", now - timedelta(days=1)),
                ("running", "running", None),
            )
        }
        session.add_all(jobs.values())
        session.commit()
        ids = {name: job.id for name, job in jobs.items()}
    for job_id in ids.values():
        folder = imports.job_dir(tmp_path, job_id)
        folder.mkdir()
        (folder / "data.upload").write_text('{"email": "ana@example.com"}\n')
        (folder / imports.REPORT).write_text('{"row": 2, "errors": []}\n')

    imports.drop_uploads(tmp_path, ids["recent"])
    assert sorted(p.name for p in imports.job_dir(tmp_path, ids["recent"]).iterdir()) == [imports.REPORT]

    with Session(engine) as session:
        assert (
            imports.purge_finished(import_dir=tmp_path, session=session, before=now - imports.RETENTION) == 2
        )
        left = set(session.exec(select(ImportJob.id)).all())
    assert left == {ids["recent"], ids["running"]}
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(
        str(ids[name]) for name in ("recent", "running")
    )
    engine.dispose()
