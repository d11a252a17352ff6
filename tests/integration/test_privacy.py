"""Data-subject requests (LGPD Art. 18) across the three services on the real Kafka and PostgreSQL:
access reports assembled from every service, erasure propagated and confirmed, a scan of all three
databases afterwards, `customer.erased` to the seller's webhook endpoint, no resurrection by later
records, and the requests that complete at once (confirmation, correction, consent revocation)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
import sqlalchemy as sa
from sqlmodel import Session

from services.profile.profiles import apply_order
from shared.db import make_engine
from shared.events import OrderIngested
from shared.records import Order
from tests.conftest import db_url
from tests.privacy_scan import scan
from tests.support import Stack, auth, eventually

pytestmark = pytest.mark.integration

MARIA = {
    "email": "maria.privacidade@example.com",
    "cpf": "52998224725",
    "phone": "11987651234",
    "name": "Maria Privacidade Souza",
    "street": "Rua das Erasuras",
}
JOAO_EMAIL = "joao.controle@example.com"


@pytest.fixture(autouse=True)
def local_webhook_receivers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENTATION_WEBHOOK_ALLOW_PRIVATE", "true")


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A seller's webhook receiver on 127.0.0.1 (signatures are checked by the webhook tests)."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(orjson.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks", received
    server.shutdown()
    server.server_close()


def maria_order(external_id: str, total: str) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "source": "site",
        "status": "paid",
        "placed_at": "2026-11-20T10:00:00-03:00",
        "currency": "BRL",
        "total": total,
        "customer": {
            "email": MARIA["email"],
            "document": "529.982.247-25",
            "phone": "(11) 98765-1234",
            "name": MARIA["name"],
            "birth_date": "1988-04-12",
            "address": {
                "street": MARIA["street"],
                "number": "42",
                "city": "Campinas",
                "state": "SP",
                "zip": "13010-111",
            },
        },
        "items": [
            {"sku": "SKU-P", "name": "Produto", "category": "livros", "quantity": 1, "unit_price": total}
        ],
    }


def joao_order(external_id: str) -> dict[str, Any]:
    return {**maria_order(external_id, "10.00"), "customer": {"email": JOAO_EMAIL}}


def post(stack: Stack, key: str, body: dict[str, Any]) -> None:
    response = stack.ingest.post("/v1/orders", json=body, headers=auth(key))
    assert response.status_code == 202, response.text


def profile_of(stack: Stack, key: str, email: str) -> dict[str, Any] | None:
    items = stack.profile.get("/v1/profiles", params={"email": email}, headers=auth(key)).json()["items"]
    return items[0] if items else None


def request(stack: Stack, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = stack.profile.post("/v1/privacy/requests", json=body, headers=auth(key))
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    return created


def completed(stack: Stack, key: str, request_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any]:
        found: dict[str, Any] = stack.profile.get(
            f"/v1/privacy/requests/{request_id}", headers=auth(key)
        ).json()
        assert found["status"] == "completed", found
        return found

    return eventually(check, timeout=30)


def tenants() -> list[UUID]:
    engine = sa.create_engine(db_url("ingest").replace("+psycopg", "+psycopg"))
    try:
        with engine.connect() as conn:
            return [UUID(str(t)) for t in conn.execute(sa.text("SELECT id FROM tenant")).scalars()]
    finally:
        engine.dispose()


DATABASES = {s: db_url(s) for s in ("ingest", "profile", "segmentation")}


def test_access_then_deletion_across_every_service(
    stack: Stack, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = receiver
    key = stack.create_tenant("Loja Privada")
    endpoint = stack.segmentation.post(
        "/v1/webhook-endpoints",
        json={"url": url, "event_types": ["segment.entered", "customer.erased"]},
        headers=auth(key),
    )
    assert endpoint.status_code == 201, endpoint.text
    segment = stack.segmentation.post(
        "/v1/segments",
        json={"name": "Compradores", "rule": {"field": "orders_count", "op": "gte", "value": 1}},
        headers=auth(key),
    )
    assert segment.status_code == 201, segment.text
    segment_id = segment.json()["id"]
    post(stack, key, maria_order("P-1", "120.00"))
    post(stack, key, maria_order("P-2", "80.00"))
    post(stack, key, joao_order("J-1"))

    def both_members() -> list[str]:
        page = stack.segmentation.get(f"/v1/segments/{segment_id}/members", headers=auth(key)).json()
        assert len(page["items"]) == 2, page
        maria = profile_of(stack, key, MARIA["email"])
        assert maria is not None
        assert maria["orders_count"] == 2
        assert any(
            r["data"].get("profile_id") == maria["id"] for r in received if r["type"] == "segment.entered"
        )
        return [m["profile_id"] for m in page["items"]]

    eventually(both_members, timeout=30)
    maria = profile_of(stack, key, MARIA["email"])
    assert maria is not None
    joao = profile_of(stack, key, JOAO_EMAIL)
    assert joao is not None

    # Access: a summary at once, the complete report once ingest and segmentation answered.
    access = request(stack, key, {"type": "access", "subject": {"email": MARIA["email"].upper()}})
    assert access["found"] is True
    assert access["summary"]["categories"]["orders"] == 2
    assert set(access["awaiting"]) == {"ingest", "segmentation"}
    done = completed(stack, key, access["id"])
    report = stack.profile.get(done["report_url"], headers=auth(key))
    assert report.status_code == 200, report.text
    services = report.json()["services"]
    assert set(services) == {"profile", "ingest", "segmentation"}
    assert services["profile"]["profile"]["data"]["name"] == MARIA["name"]
    assert {i["kind"] for i in services["profile"]["identifiers"]["data"]} >= {"email", "document", "phone"}
    raw = services["ingest"]["records"]["data"]
    assert sorted(r["external_id"] for r in raw) == ["P-1", "P-2"]
    assert raw[0]["record"]["customer"]["address"]["street"] == MARIA["street"]
    assert [m["segment_id"] for m in services["segmentation"]["segments"]["data"]] == [segment_id]
    assert services["segmentation"]["webhook_deliveries"]["data"], "the segment.entered delivery carried her"
    for section in ("profile", "identifiers", "orders"):
        assert services["profile"][section]["purpose"]
    # Reading the report is a read of personal data: audited.
    audit = stack.profile.get("/v1/audit-log", params={"profile_id": maria["id"]}, headers=auth(key)).json()
    assert "privacy.report" in {e["action"] for e in audit["items"]}
    # So are segmentation's reads: the members pages above, and an export (a chunk at a time).
    exported = stack.segmentation.get(f"/v1/segments/{segment_id}/export", headers=auth(key))
    assert exported.status_code == 200, exported.text
    assert "1988-04-12" in exported.text
    seg_reads = stack.segmentation.get(
        "/v1/audit-log", params={"profile_id": maria["id"]}, headers=auth(key)
    ).json()
    assert {"segment.members", "segment.export"} <= {e["action"] for e in seg_reads["items"]}
    assert all(e["route"].startswith("/v1/segments/{segment_id}/") for e in seg_reads["items"])

    # Before the erasure the scan finds her everywhere (it is not vacuous) ...
    needles = [MARIA["email"], MARIA["cpf"], MARIA["phone"], MARIA["name"], MARIA["street"]]
    before = scan(DATABASES, needles, tenants())
    assert {h.database for h in before} == {"ingest", "profile"}, [str(h) for h in before]
    assert {h.needle for h in before} == set(needles)
    # Her birth date and CEP are in every service, segmentation included (it segments on them), but
    # only sealed: in clear, only generalised (year and month of birth, the CEP's first five digits).
    assert services["segmentation"]["traits"]["data"][0]["birth_date"] == "1988-04-12"
    assert services["segmentation"]["traits"]["data"][0]["zip"] == "13010111"
    private = ["1988-04-12", "13010111"]
    assert {h.database for h in scan(DATABASES, private, tenants())} == {"ingest", "profile", "segmentation"}
    in_clear = scan(DATABASES, private, tenants(), sealed=False)
    assert in_clear == [], [str(h) for h in in_clear]
    needles += private

    # ... deletion by document: confirmed by every service ...
    deletion = request(stack, key, {"type": "deletion", "subject": {"document": "529.982.247-25"}})
    assert deletion["found"] is True
    assert deletion["profile_ids"] == [maria["id"]]
    done = completed(stack, key, deletion["id"])
    assert set(done["confirmations"]) == {"profile", "ingest", "segmentation"}
    assert done["confirmations"]["ingest"]["erased"]["inbound_record"] == 2
    assert done["confirmations"]["segmentation"]["erased"]["profile_projection"] == 1
    assert done["confirmations"]["segmentation"]["erased"]["audit_event"] >= 2
    assert done["profile_ids"] == []
    assert "@" not in orjson.dumps(done).decode()

    # ... after it, none of her data is in any database, while João's still is.
    after = scan(DATABASES, needles, tenants())
    assert after == [], [str(h) for h in after]
    for service in (stack.profile, stack.segmentation):  # the reads stay, without her profile id
        reads = service.get("/v1/audit-log", params={"profile_id": maria["id"]}, headers=auth(key))
        assert reads.json()["items"] == []
        assert service.get("/v1/audit-log", headers=auth(key)).json()["items"]
    assert scan(DATABASES, [JOAO_EMAIL], tenants()), "the scan still finds someone who was not erased"
    assert stack.profile.get(f"/v1/profiles/{maria['id']}", headers=auth(key)).status_code == 404
    assert profile_of(stack, key, MARIA["email"]) is None
    members = stack.segmentation.get(f"/v1/segments/{segment_id}/members", headers=auth(key)).json()
    assert [m["profile_id"] for m in members["items"]] == [joao["id"]]
    # The seller's systems are told (Art. 18 §6), with her profile id only.
    erased = eventually(lambda: next(r for r in received if r["type"] == "customer.erased"))
    assert erased["data"]["profile_ids"] == [maria["id"]]
    assert erased["data"]["request_id"] == deletion["id"]

    # A later order carrying her identifiers does not bring her back: refused at the door (suppressed).
    again = stack.ingest.post("/v1/orders", json=maria_order("P-3", "50.00"), headers=auth(key))
    assert (again.status_code, again.json()["status"]) == (200, "suppressed")
    # An order of hers still in flight (accepted before the erasure, consumed after it) is dropped by the
    # profile service too.
    (tenant_id,) = tenants()
    in_flight = OrderIngested(
        order_id=uuid4(), order_version=1, order=Order.model_validate(maria_order("P-0", "9.00"))
    )
    engine = make_engine(DATABASES["profile"])
    try:
        with Session(engine) as session:
            apply_order(session, in_flight.envelope(tenant_id), in_flight)
            session.commit()
    finally:
        engine.dispose()
    assert profile_of(stack, key, MARIA["email"]) is None
    # Someone who only shares her phone, with an e-mail of their own, is someone else: accepted.
    neighbour = {
        **maria_order("N-1", "5.00"),
        "customer": {"email": "vizinho@example.com", "phone": "11987651234"},
    }
    assert stack.ingest.post("/v1/orders", json=neighbour, headers=auth(key)).status_code == 202
    post(stack, key, joao_order("J-2"))
    eventually(lambda: _orders(stack, key, JOAO_EMAIL, 2))
    eventually(lambda: _orders(stack, key, "vizinho@example.com", 1))
    assert profile_of(stack, key, MARIA["email"]) is None
    assert scan(DATABASES, [MARIA["email"], MARIA["cpf"]], tenants()) == []


def _orders(stack: Stack, key: str, email: str, count: int) -> None:
    found = profile_of(stack, key, email)
    assert found is not None
    assert found["orders_count"] == count


def test_requests_that_complete_at_once(stack: Stack) -> None:
    key = stack.create_tenant("Loja Direitos")
    post(stack, key, maria_order("Q-1", "99.00"))
    eventually(lambda: _orders(stack, key, MARIA["email"], 1))
    maria = profile_of(stack, key, MARIA["email"])
    assert maria is not None

    nobody = request(stack, key, {"type": "confirmation", "subject": {"email": "ninguem@example.com"}})
    assert nobody["status"] == "completed"
    assert nobody["found"] is False
    assert nobody["summary"] == {"holds_data": False}

    confirmation = request(stack, key, {"type": "confirmation", "subject": {"phone": "+55 11 98765-1234"}})
    assert confirmation["status"] == "completed"
    assert confirmation["found"] is True
    assert confirmation["summary"]["categories"]["orders"] == 1

    correction = request(
        stack,
        key,
        {
            "type": "correction",
            "subject": {"profile_id": maria["id"]},
            "correction": {"name": "Maria P. Souza"},
        },
    )
    assert correction["status"] == "completed"
    shown = stack.profile.get(f"/v1/profiles/{maria['id']}", headers=auth(key)).json()
    assert shown["name"] == "Maria P. Souza"

    revocation = request(
        stack,
        key,
        {"type": "consent_revocation", "subject": {"email": MARIA["email"]}, "purposes": ["profiling"]},
    )
    assert revocation["status"] == "completed"
    consents = stack.profile.get(f"/v1/profiles/{maria['id']}/consents", headers=auth(key)).json()
    assert consents["consents"]["profiling"]["status"] == "revoked"

    listed = stack.profile.get("/v1/privacy/requests", headers=auth(key)).json()
    assert len(listed["items"]) == 4


@pytest.mark.parametrize(
    "body",
    [
        {"type": "deletion", "subject": {}},
        {"type": "deletion", "subject": {"email": "a@example.com", "phone": "11999999999"}},
        {"type": "correction", "subject": {"email": "a@example.com"}},
        {"type": "access", "subject": {"email": "a@example.com"}, "purposes": ["profiling"]},
        {"type": "forget_me", "subject": {"email": "a@example.com"}},
    ],
)
def test_invalid_requests_are_refused_without_echoing_data(stack: Stack, body: dict[str, Any]) -> None:
    key = stack.create_tenant("Loja Erros")
    response = stack.profile.post("/v1/privacy/requests", json=body, headers=auth(key))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "a@example.com" not in response.text


def test_anonymisation_keeps_only_unlinked_aggregates(stack: Stack) -> None:
    key = stack.create_tenant("Loja Anonima")
    post(stack, key, maria_order("A-1", "70.00"))
    post(stack, key, maria_order("A-2", "30.00"))
    eventually(lambda: _orders(stack, key, MARIA["email"], 2))
    maria = profile_of(stack, key, MARIA["email"])
    assert maria is not None
    created = request(
        stack, key, {"type": "anonymisation", "subject": {"email": MARIA["email"]}, "suppress": False}
    )
    done = completed(stack, key, created["id"])
    assert set(done["confirmations"]) == {"profile", "ingest", "segmentation"}
    assert scan(DATABASES, [MARIA["email"], MARIA["cpf"], MARIA["name"], MARIA["street"]], tenants()) == []
    engine = sa.create_engine(DATABASES["profile"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id, orders_count, total_spent_minor, email, phone FROM profile"
                    " WHERE status = 'anonymised'"
                )
            ).all()
    finally:
        engine.dispose()
    assert [(r.orders_count, r.total_spent_minor, r.email, r.phone) for r in rows] == [(2, 10000, None, None)]
    assert str(rows[0].id) != maria["id"]
    # Without suppression, a later order starts a new, unrelated profile.
    post(stack, key, maria_order("A-3", "10.00"))
    eventually(lambda: _orders(stack, key, MARIA["email"], 1))
    fresh = profile_of(stack, key, MARIA["email"])
    assert fresh is not None
    assert fresh["id"] != maria["id"]


def test_a_revoked_consent_leaves_webhooks_and_exports_within_seconds(
    stack: Stack, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = receiver
    key = stack.create_tenant("Loja Consentimento")
    endpoint = stack.segmentation.post(
        "/v1/webhook-endpoints",
        json={"url": url, "event_types": ["segment.entered", "segment.exited"]},
        headers=auth(key),
    )
    assert endpoint.status_code == 201, endpoint.text
    segment = stack.segmentation.post(
        "/v1/segments",
        json={
            "name": "Newsletter",
            "purpose": "marketing_email",
            "rule": {"field": "orders_count", "op": "gte", "value": 1},
        },
        headers=auth(key),
    )
    assert segment.status_code == 201, segment.text
    segment_id = segment.json()["id"]
    granted = {
        **maria_order("C-1", "20.00"),
        "consents": [{"purpose": "marketing_email", "status": "granted", "source": "checkout"}],
    }
    post(stack, key, granted)
    post(stack, key, joao_order("C-2"))  # no consent: a member, but no webhook for this purpose

    def entered() -> dict[str, Any]:
        found = [r for r in received if r["type"] == "segment.entered"]
        assert len(found) == 1, received
        members = stack.segmentation.get(f"/v1/segments/{segment_id}/members", headers=auth(key)).json()
        assert len(members["items"]) == 2
        return found[0]

    maria_id = eventually(entered, timeout=30)["data"]["profile_id"]

    def exported() -> list[str]:
        response = stack.segmentation.get(
            f"/v1/segments/{segment_id}/export", params={"format": "jsonl"}, headers=auth(key)
        )
        assert response.status_code == 200, response.text
        return [orjson.loads(line)["profile_id"] for line in response.text.splitlines() if line]

    assert exported() == [maria_id]
    revoked = stack.profile.put(
        f"/v1/profiles/{maria_id}/consents",
        json={"consents": [{"purpose": "marketing_email", "status": "revoked"}]},
        headers=auth(key),
    )
    assert revoked.status_code == 200, revoked.text

    def exited() -> dict[str, Any]:
        found = [r for r in received if r["type"] == "segment.exited"]
        assert len(found) == 1, received
        assert exported() == []
        return found[0]

    left = eventually(exited, timeout=10)
    assert left["data"]["profile_id"] == maria_id
    assert left["data"]["reason"] == "consent_revoked"
    # Still a member (the rule does not read consent): the membership did not change, only what may be sent.
    members = stack.segmentation.get(f"/v1/segments/{segment_id}/members", headers=auth(key)).json()
    assert maria_id in {m["profile_id"] for m in members["items"]}
