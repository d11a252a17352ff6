"""Personal data at rest, on the real stack: an order, a customer record and an import of one person leave
none of the person's e-mail, CPF, phone, name, street, birth date or CEP readable in any table of the three
databases (outboxes included), while the API still shows them; and what was sealed before a key rotation
still opens after it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from services.ingest.intake import open_payload
from services.ingest.models import InboundRecord
from services.profile.models import Profile, ProfileOrder, ProfileRecord, open_snapshot
from services.profile.profiles import as_announced
from shared.crypto import BINARY, keyring
from shared.db import make_engine, utcnow
from shared.migrations import downgrade, upgrade
from shared.outbox import purge_published
from tests.conftest import truncate_all
from tests.support import Stack, auth, eventually

pytestmark = pytest.mark.integration

EMAIL = "lia.quintiliano@example.com"
CPF = "52998224725"
PHONE = "11987654321"
NAME = "Lia Quintiliano Borba"
STREET = "Rua Professor Astolfo Vasconcelos"
BIRTH_DATE = "1987-03-14"
CEP = "04538132"
CONTACT = {
    "e-mail": EMAIL,
    "CPF": CPF,
    "phone": PHONE,
    "name": "Quintiliano",
    "street": "Astolfo Vasconcelos",
}
PERSONAL = {**CONTACT, "birth date": BIRTH_DATE, "CEP": CEP}


def customer(**extra: Any) -> dict[str, Any]:
    return {
        "email": EMAIL.upper(),
        "document": "529.982.247-25",
        "phone": f"+55 (11) {PHONE[2:7]}-{PHONE[7:]}",
        "name": NAME.upper(),
        "birth_date": BIRTH_DATE,
        "gender": "female",
        "address": {
            "street": STREET,
            "number": "1234",
            "district": "Itaim Bibi",
            "city": "São Paulo",
            "state": "SP",
            "zip": "04538-132",
        },
        **extra,
    }


def order(external_id: str, total: str = "150.00") -> dict[str, Any]:
    return {
        "external_id": external_id,
        "source": "site",
        "status": "paid",
        "placed_at": "2026-11-20T10:00:00-03:00",
        "currency": "BRL",
        "total": total,
        "customer": customer(),
        "items": [{"sku": "SKU-1", "name": "Produto", "quantity": 1, "unit_price": total}],
    }


def found_in(url: str, needles: dict[str, str]) -> dict[str, list[str]]:
    """Which needles appear in clear in which `table.column`, over every row of every table (bytes read
    as UTF-8, JSON as its text)."""
    engine = make_engine(url)
    hits: dict[str, list[str]] = {}
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            for table in meta.tables.values():
                for row in conn.execute(sa.select(table)):
                    for column, value in zip(table.columns, row, strict=True):
                        if value is None:
                            continue
                        if isinstance(value, bytes | memoryview):
                            text = bytes(value).decode("utf-8", "replace")
                        elif isinstance(value, dict | list):
                            text = orjson.dumps(value).decode()
                        else:
                            text = str(value)
                        for label, needle in needles.items():
                            if needle in text:
                                hits.setdefault(label, []).append(f"{table.name}.{column.name}")
    finally:
        engine.dispose()
    return hits


def all_published(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            left = conn.execute(sa.text("SELECT count(*) FROM outbox_message WHERE published_at IS NULL"))
            assert left.scalar_one() == 0
    finally:
        engine.dispose()


def purge_outbox(url: str) -> int:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            deleted = purge_published(session)
            session.commit()
        return deleted
    finally:
        engine.dispose()


def profile_of(stack: Stack, key: str) -> dict[str, Any]:
    listed = stack.profile.get("/v1/profiles", params={"email": EMAIL}, headers=auth(key))
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert len(items) == 1
    item = items[0]
    assert item["orders_count"] == 2
    response = stack.profile.get(f"/v1/profiles/{item['id']}", headers=auth(key))
    assert response.status_code == 200
    found: dict[str, Any] = response.json()
    return found


def test_no_personal_data_in_clear_in_the_databases_yet_the_api_shows_it(
    stack: Stack, clean_databases: dict[str, str]
) -> None:
    key = stack.create_tenant()
    for number in ("P-1", "P-2"):
        response = stack.ingest.post(
            "/v1/orders", json=order(number), headers={**auth(key), "Idempotency-Key": f"k-{number}"}
        )
        assert response.status_code == 202, response.text
    record = stack.ingest.post(
        "/v1/customers", json=customer(external_id="c-1", source="site"), headers=auth(key)
    )
    assert record.status_code == 202, record.text
    upload = orjson.dumps(customer(external_id="c-2", source="crm")) + b"\n" + b'{"source": 1}\n'
    imported = stack.ingest.post(
        "/v1/imports",
        data={"format": "jsonl", "kind": "customers"},
        files=[("files", ("people.jsonl", upload, "application/x-ndjson"))],
        headers=auth(key),
    )
    assert imported.status_code == 202, imported.text

    def done() -> dict[str, Any]:
        job: dict[str, Any] = stack.ingest.get(
            f"/v1/imports/{imported.json()['id']}", headers=auth(key)
        ).json()
        assert job["status"] == "done", job
        return job

    assert (eventually(done)["accepted"], eventually(done)["rejected"]) == (1, 1)

    profile = eventually(lambda: profile_of(stack, key))
    # The API shows everything as before.
    assert (profile["email"], profile["phone"], profile["name"]) == (EMAIL, f"+55{PHONE}", NAME.title())
    assert (profile["birth_date"], profile["gender"]) == (BIRTH_DATE, "female")
    assert profile["location"] == {"city": "São Paulo", "state": "SP", "zip": CEP, "country": "BR"}

    def settled() -> None:
        for service in ("ingest", "profile", "segmentation"):
            all_published(clean_databases[service])
        timeline = stack.profile.get(f"/v1/profiles/{profile['id']}/timeline", headers=auth(key))
        assert {e["type"] for e in timeline.json()["items"]} >= {"order", "customer_record"}

    eventually(settled)
    # Published events are still in the outboxes (until their retention ends), sealed like the rest;
    # segmentation's projection has her birth date and CEP sealed, generalised in clear.
    for service in ("ingest", "profile", "segmentation"):
        assert found_in(clean_databases[service], PERSONAL) == {}, service
    assert generalised(clean_databases["segmentation"]) == [(1987, 3, CEP[:5])]
    for service in ("ingest", "profile", "segmentation"):
        purge_outbox(clean_databases[service])

    # The import's upload (the rows in clear) is gone; the report (row numbers and reasons) stays.
    folder = Path(stack.ingest.app.state.settings.import_dir) / imported.json()["id"]  # type: ignore[attr-defined]
    assert sorted(p.name for p in folder.iterdir()) == ["rejected.jsonl"]
    assert EMAIL not in (folder / "rejected.jsonl").read_text()

    # Ingest's stored records open back into what was accepted.
    engine = make_engine(clean_databases["ingest"])
    try:
        with Session(engine) as session:
            stored = session.exec(select(InboundRecord).where(InboundRecord.kind == "order")).all()
            payloads = [open_payload(r.tenant_id, r.payload_sealed) for r in stored]
    finally:
        engine.dispose()
    assert sorted(p["external_id"] for p in payloads) == ["P-1", "P-2"]
    assert {p["customer"]["email"] for p in payloads} == {EMAIL}
    assert {p["customer"]["address"]["street"] for p in payloads} == {STREET}


def generalised(url: str) -> list[tuple[int, int, str]]:
    """Segmentation's clear copies of the birth date and CEP: year and month, first five digits."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.text("SELECT birth_year, birth_month, zip_prefix FROM profile_projection")
            return [tuple(row) for row in conn.execute(query)]
    finally:
        engine.dispose()


NEW_SECRET = "a-rotated-secret-of-at-least-32-characters"
ROTATION_VARIABLES = ("CLIENTELA_SECRET_KEY", "CLIENTELA_OLD_SECRET_KEYS")


@pytest.fixture
def rotate(clean_databases: dict[str, str]) -> Iterator[Callable[[], str]]:
    """Rotate the process's secret (the test secret becomes the old one), as an operator would: returns the
    old key id. The environment is restored afterwards, then the keyring forgotten (the stack's threads may
    still be running: they build the next one from the restored environment), and the databases emptied:
    what the rotated secret sealed opens with no other test's keyring (a migration's downgrade would fail)."""
    saved = {name: os.environ.get(name) for name in ROTATION_VARIABLES}

    def rotate() -> str:
        old = keyring()
        os.environ["CLIENTELA_OLD_SECRET_KEYS"] = os.environ["CLIENTELA_SECRET_KEY"]
        os.environ["CLIENTELA_SECRET_KEY"] = NEW_SECRET
        keyring.cache_clear()
        assert keyring().current_id != old.current_id
        return old.current_id

    yield rotate
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    keyring.cache_clear()
    for url in clean_databases.values():
        truncate_all(url)


def test_values_sealed_before_a_key_rotation_still_open_after_it(
    stack: Stack, clean_databases: dict[str, str], rotate: Callable[[], str]
) -> None:
    key = stack.create_tenant()
    assert stack.ingest.post("/v1/orders", json=order("R-1"), headers=auth(key)).status_code == 202
    first = eventually(lambda: _one_profile(stack, key, orders=1))
    old_id = rotate()

    # Read after the rotation: everything sealed under the old secret opens.
    again = stack.profile.get(f"/v1/profiles/{first['id']}", headers=auth(key)).json()
    assert {k: again[k] for k in ("email", "phone", "name", "birth_date", "location")} == {
        k: first[k] for k in ("email", "phone", "name", "birth_date", "location")
    }
    # New writes: the same person is found (identifier hashes keep the oldest secret) and the new values
    # are sealed under the new secret, next to old ones.
    assert stack.ingest.post("/v1/orders", json=order("R-2", "90.00"), headers=auth(key)).status_code == 202
    after = eventually(lambda: _one_profile(stack, key, orders=2))
    assert after["id"] == first["id"]
    assert (after["name"], after["birth_date"], after["location"]["zip"]) == (NAME.title(), BIRTH_DATE, CEP)

    ingest = make_engine(clean_databases["ingest"])
    profile_db = make_engine(clean_databases["profile"])
    try:
        with Session(ingest) as session:
            stored = {r.external_id: r for r in session.exec(select(InboundRecord))}
            # Sealed as bytes (`Keyring.seal_bytes`): the marker, then the key's id.
            assert {r.payload_sealed[:1] for r in stored.values()} == {BINARY}
            assert {r.payload_sealed[1:9].decode() for r in stored.values()} == {old_id, keyring().current_id}
            assert open_payload(stored["R-1"].tenant_id, stored["R-1"].payload_sealed)["total"] == "150.00"
        with Session(profile_db) as session:
            person = session.get(Profile, UUID(first["id"]))
            assert person is not None
            assert person.name_sealed is not None
            assert person.name_sealed.split(".")[0] == old_id  # unchanged value: the old token is kept
            assert person.name == NAME.title()
    finally:
        ingest.dispose()
        profile_db.dispose()


def _one_profile(stack: Stack, key: str, *, orders: int) -> dict[str, Any]:
    listed = stack.profile.get("/v1/profiles", params={"document": CPF}, headers=auth(key))
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert len(items) == 1
    assert items[0]["orders_count"] == orders
    item = items[0]
    return dict(item)


# -- the migrations that sealed what was stored in clear ----------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def _insert(conn: sa.Connection, table: sa.Table, values: dict[str, Any]) -> None:
    """`values` plus a plain value for every other NOT NULL column without a default."""
    fill: dict[type, object] = {
        sa.Integer: 0,
        sa.BigInteger: 0,
        sa.JSON: {},
        sa.String: "x",
        sa.DateTime: utcnow(),
    }
    row = dict(values)
    for column in table.columns:
        if column.name not in row and not column.nullable and column.server_default is None:
            row[column.name] = next(v for t, v in fill.items() if isinstance(column.type, t))
    conn.execute(sa.insert(table).values(row))


def _dump(engine: sa.Engine, tables: Sequence[str]) -> str:
    meta = sa.MetaData()
    meta.reflect(engine, only=list(tables))
    with engine.connect() as conn:
        return " ".join(str(tuple(row)) for t in tables for row in conn.execute(sa.select(meta.tables[t])))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_profile_fields_and_snapshots_are_sealed_by_the_migration_and_opened_by_its_downgrade(
    backend: str, tmp_path: Path, clean_databases: dict[str, str]
) -> None:
    url = f"sqlite:///{tmp_path / 'profile'}.db" if backend == "sqlite" else clean_databases["profile"]
    service_dir = ROOT / "services" / "profile"
    (downgrade if backend == "postgresql" else upgrade)(service_dir, url, "0013")
    tenant, profile_id, order_id, record_id = uuid4(), uuid4(), uuid4(), uuid4()
    raw: Callable[[UUID], object] = (lambda u: u.hex) if backend == "sqlite" else (lambda u: u)
    person = {"name": NAME, "birth_date": BIRTH_DATE, "zip": CEP}
    snapshot = {
        "at": "2026-11-20T13:00:00+00:00",
        **person,
        "city": "São Paulo",
        "state": "SP",
        "consents": [],
    }
    announced = {"birth_date": BIRTH_DATE, "zip": CEP, "city": "São Paulo", "orders_count": 1}
    engine = make_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.begin() as conn:
            common = {"tenant_id": raw(tenant), "profile_id": raw(profile_id)}
            _insert(
                conn,
                meta.tables["profile"],
                {
                    "id": raw(profile_id),
                    "tenant_id": raw(tenant),
                    "status": "active",
                    "name": NAME,
                    "birth_date": date.fromisoformat(BIRTH_DATE),
                    "zip": CEP,
                    "city": "São Paulo",
                    "announced": announced,
                },
            )
            _insert(
                conn,
                meta.tables["profile_order"],
                {"order_id": raw(order_id), **common, "customer": snapshot},
            )
            _insert(
                conn,
                meta.tables["profile_record"],
                {"id": raw(record_id), **common, "kind": "customer", "customer": snapshot},
            )

        upgrade(service_dir, url)
        assert found_in(url, {k: v for k, v in PERSONAL.items() if k in ("name", "birth date", "CEP")}) == {}
        with Session(engine) as session:
            profile = session.get(Profile, profile_id)
            assert profile is not None
            assert (profile.name, profile.birth_date, profile.zip, profile.city) == (
                NAME,
                date.fromisoformat(BIRTH_DATE),
                CEP,
                "São Paulo",
            )
            assert profile.announced == as_announced(tenant, announced)
            stored_order = session.get(ProfileOrder, order_id)
            stored_record = session.get(ProfileRecord, record_id)
            assert stored_order is not None
            assert stored_record is not None
            for stored in (stored_order.customer, stored_record.customer):
                assert (stored["city"], stored["state"]) == ("São Paulo", "SP")
                assert open_snapshot(tenant, stored) == snapshot

        downgrade(service_dir, url, "0013")
        meta = sa.MetaData()
        meta.reflect(engine)
        profile_t, order_t, record_t = (
            meta.tables[t] for t in ("profile", "profile_order", "profile_record")
        )
        with engine.connect() as conn:
            row = conn.execute(sa.select(profile_t).where(profile_t.c.id == raw(profile_id))).one()
            assert (row.name, row.birth_date, row.zip) == (NAME, date.fromisoformat(BIRTH_DATE), CEP)
            assert _json(row.announced) == announced
            for table in (order_t, record_t):
                assert [_json(c) for c in conn.execute(sa.select(table.c.customer)).scalars()] == [snapshot]
    finally:
        engine.dispose()
        upgrade(service_dir, url)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_inbound_payloads_are_sealed_by_the_migration_and_opened_by_its_downgrade(
    backend: str, tmp_path: Path, clean_databases: dict[str, str]
) -> None:
    url = f"sqlite:///{tmp_path / 'ingest'}.db" if backend == "sqlite" else clean_databases["ingest"]
    service_dir = ROOT / "services" / "ingest"
    (downgrade if backend == "postgresql" else upgrade)(service_dir, url, "0003")
    tenant = uuid4()
    raw: Callable[[UUID], object] = (lambda u: u.hex) if backend == "sqlite" else (lambda u: u)
    payloads = {f"M-{n}": order(f"M-{n}", f"{100 + n}.00") for n in range(3)}
    engine = make_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.begin() as conn:
            for external_id, payload in payloads.items():
                _insert(
                    conn,
                    meta.tables["inbound_record"],
                    {
                        "id": raw(uuid4()),
                        "tenant_id": raw(tenant),
                        "kind": "order",
                        "source": "site",
                        "external_id": external_id,
                        "payload": payload,
                    },
                )

        upgrade(service_dir, url)
        assert EMAIL.upper() not in _dump(engine, ["inbound_record"])
        assert STREET not in _dump(engine, ["inbound_record"])
        with Session(engine) as session:
            stored = {r.external_id: r for r in session.exec(select(InboundRecord))}
            assert {k: open_payload(tenant, r.payload_sealed) for k, r in stored.items()} == payloads
            # 0009 kept the text tokens as their bytes; a record stored since is sealed as bytes.
            assert all(r.payload_sealed[:1] != BINARY for r in stored.values())
            newer = stored["M-0"]
            newer.payload_sealed = keyring().seal_bytes(
                tenant, orjson.dumps(payloads["M-0"], option=orjson.OPT_SORT_KEYS)
            )
            session.add(newer)
            session.commit()

        downgrade(service_dir, url, "0008")  # the binary value is sealed again as a text token
        with engine.connect() as conn:
            tokens: dict[str, str] = dict(
                conn.execute(sa.text("SELECT external_id, payload_sealed FROM inbound_record")).all()
            )
        assert all(isinstance(t, str) and "." in t for t in tokens.values())
        assert {k: orjson.loads(keyring().open(tenant, t)) for k, t in tokens.items()} == payloads
        upgrade(service_dir, url)

        downgrade(service_dir, url, "0003")
        meta = sa.MetaData()
        meta.reflect(engine)
        table = meta.tables["inbound_record"]
        with engine.connect() as conn:
            back = {r.external_id: _json(r.payload) for r in conn.execute(sa.select(table))}
        assert back == payloads
    finally:
        engine.dispose()
        upgrade(service_dir, url)


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value
