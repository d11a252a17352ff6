"""End to end: no personal data in the logs (LGPD).

The three services run as processes at DEBUG level, so that every logger speaks. A seller's whole flow goes
through them, the failure paths included (they are the ones that tend to quote what they refuse): orders,
customer records and behaviour events, one at a time and in batches, with distinctive personal data in
every format a channel sends; invalid e-mails, CPFs and phones; a marketplace's native payload (accepted and
refused); a CSV import with a rejected row; lookups by e-mail, phone and CPF (in the query string); identity
rules that block a shop's own e-mail and phone; refused segment rules; consent decisions; a segment and its
export; a webhook endpoint with a receiver; a merge and its undoing; and two poisoned Kafka messages that
end in the dead-letter topic.

Then the services are stopped and every line they wrote is scanned for each e-mail (any case), CPF and phone
(by their digits, whatever the formatting), name, street, CEP and birth date, and for the API key and the
webhook secret. The answers to refused requests are scanned the same way: they may name a field, never
repeat its value. A leak is reported as the secret's kind, masked, and the line it is on.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
from kafka import KafkaProducer

from shared.topics import ORDERS
from tests.support import ADMIN_TOKEN, KAFKA, auth, eventually

if TYPE_CHECKING:  # annotations only: pytest itself loads the conftest that defines the fixtures
    from tests.e2e.conftest import ServiceStack

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "marketplaces"

# --- The scan -----------------------------------------------------------------------------------------------

# Digit needles shorter than this would be found by chance in the digits of ids, times and durations.
MIN_DIGITS = 10
_NON_DIGITS = re.compile(r"\D")


@dataclass(frozen=True)
class Secret:
    """A value that must never appear. `digits`: matched against the digits of a line only, so that any
    formatting of a number (`(21) 97351-8264`, `+55.21.97351.8264`) is caught."""

    kind: str
    value: str = field(repr=False)
    digits: bool = False

    def __post_init__(self) -> None:
        if self.digits and not (self.value.isdigit() and len(self.value) >= MIN_DIGITS):
            raise ValueError(f"a digits secret needs at least {MIN_DIGITS} digits and nothing else")
        if not self.digits and len(self.value) < 6:
            raise ValueError("a text secret this short would match by chance")

    @property
    def masked(self) -> str:
        """Enough to tell the secrets apart in a report, not enough to read them."""
        return f"{self.value[:2]}…{self.value[-2:]} ({len(self.value)} chars)"


@dataclass(frozen=True)
class Leak:
    secret: Secret
    where: str
    line: int

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.secret.kind} {self.secret.masked}"


def texts(kind: str, *values: str) -> list[Secret]:
    return [Secret(kind, value) for value in values]


def digits(kind: str, *values: str) -> list[Secret]:
    return [Secret(kind, _NON_DIGITS.sub("", value), digits=True) for value in values]


def _haystacks(line: str) -> tuple[str, str]:
    """The line in lower case (plus its JSON values unescaped, if it is JSON) and its digits."""
    text = line
    with contextlib.suppress(ValueError):
        text += "\n" + json.dumps(json.loads(line), ensure_ascii=False)
    return text.lower(), _NON_DIGITS.sub("", line)


def find_leaks(secrets: Iterable[Secret], logs: Mapping[str, str]) -> list[Leak]:
    """Every (secret, place, line number) where a secret appears; `logs` maps a name to a text."""
    wanted = list(secrets)
    leaks: list[Leak] = []
    for where, text in logs.items():
        for number, line in enumerate(text.splitlines(), 1):
            lowered, line_digits = _haystacks(line)
            for secret in wanted:
                if secret.value in line_digits if secret.digits else secret.value.lower() in lowered:
                    leaks.append(Leak(secret, where, number))
    return leaks


def assert_no_leaks(secrets: Iterable[Secret], logs: Mapping[str, str]) -> None:
    __tracebackhide__ = True  # pytest would print this frame's arguments: the logs, the secrets
    leaks = find_leaks(secrets, logs)
    if leaks:  # pytest.fail, not assert: pytest's assertion report would print the values themselves
        pytest.fail(f"{len(leaks)} leak(s) of personal data:\n" + "\n".join(map(str, leaks[:50])))


def test_the_scan_finds_each_kind_of_secret_in_any_format() -> None:
    secrets = [
        *texts("e-mail", "Maria.Souza@Example.com"),
        *digits("cpf", "529.982.247-25"),
        *digits("phone", "+55 (11) 91234-5678"),
    ]
    logs = {
        "clean": '{"msg": "request", "route": "/v1/profiles", "request_id": "5291234567825", "ms": 2.5}',
        "leaky": "\n".join(
            [
                '{"msg": "ok"}',
                '{"msg": "lookup maria.souza@example.COM"}',
                '{"msg": "doc 52998224725"}',
                '{"msg": "tel (11) 91234-5678 / +55.11.91234.5678"}',
                '{"msg": "\\u004daria.souza@example.com"}',
            ]
        ),
    }
    found = [(leak.where, leak.line, leak.secret.kind) for leak in find_leaks(secrets, logs)]
    assert found == [
        ("leaky", 2, "e-mail"),
        ("leaky", 3, "cpf"),
        ("leaky", 4, "phone"),
        ("leaky", 5, "e-mail"),
    ]
    with pytest.raises(pytest.fail.Exception) as failure:
        assert_no_leaks(secrets, logs)
    assert "maria" not in str(failure.value).lower()
    assert "52998224725" not in str(failure.value)
    with pytest.raises(ValueError, match="digits"):
        digits("cep", "01310-100")


# --- The people ---------------------------------------------------------------------------------------------

# Wilhelmina: buys on the site, is registered in the CRM, browses; later linked by mistake to a Shopee
# account (a merge, undone).
EMAIL_1 = "Wilhelmina.Quixabeira+lgpd@Example.com"
NAME_1 = "Wilhelmina Quixabeira Zanetti"
CPF_1 = "739.146.285-37"
PHONE_1 = ("(21) 97351-8264", "+55 21 97351-8264", "21973518264", "+55.21.97351.8264")
STREET_1 = "Rua Zeferino Quintanilha"
DISTRICT_1 = "Jardim Ubirajara"
CEP_1 = "04127-903"
BIRTH_1 = "1983-07-29"
# Teodoro: batch orders and customer records.
EMAIL_2 = "teodoro.vasconcelos.k7@example.com.br"
NAME_2 = "Teodoro Vasconcelos Brum"
CPF_2 = "846.290.317-31"
PHONE_2 = ("(31) 98642-1357", "0xx31 98642 1357")
# A Shopee account (its buyer id and phone), merged into Wilhelmina's profile by mistake.
SHOPEE_ID = "sh-77001"
PHONE_5 = ("(48) 99127-6603", "+55 48 9 9127 6603")
# Ofélia: arrives in a CSV import.
EMAIL_3 = "ofelia.brandao.csv@example.org"
NAME_3 = "Ofélia Brandão Tavares"
CPF_3 = "517.308.264-07"
# Leocádia: a Mercado Livre buyer (native payload).
EMAIL_4 = "lfurtado.z9m4@mail.mercadolivre.com"
NAME_4 = ("Leocádia", "Furtado Bittencourt")
CPF_4 = "62840195720"
PHONE_4 = ("11", "3847-2951")
# Invalid values: refused, and never repeated.
BAD_EMAIL = "wilhelmina.quixabeira@@example"
BAD_CPF = "739.146.285-00"
BAD_PHONE = "(00) 4815-16234"
# The shop's own contacts, blocked as identifiers in its identity rules.
SHOP_EMAIL = "compras.lojalgpd.q3@example.com"
SHOP_PHONE = "(62) 3391-7740"
# Only ever sent in poisoned Kafka messages.
POISON_EMAIL = "poison.kafka.zq@example.net"
POISON_NAME = "Envenenado Kafkiano"

SECRETS = [
    *texts("e-mail", EMAIL_1, EMAIL_2, EMAIL_3, EMAIL_4, BAD_EMAIL, POISON_EMAIL, SHOP_EMAIL),
    *texts("name", NAME_1, "Quixabeira", "Zanetti", NAME_2, "Vasconcelos", NAME_3, "Brandão", "Tavares"),
    *texts("name", " ".join(NAME_4), "Leocádia", "Bittencourt", POISON_NAME, "Kafkiano"),
    *texts("street", STREET_1, "Zeferino", "Quintanilha", DISTRICT_1, "Ubirajara"),
    *texts("CEP", CEP_1, CEP_1.replace("-", "")),
    *texts("birth date", BIRTH_1),
    *texts("phone", "97351-8264", "973518264", "98642-1357", "986421357", "3847-2951", "38472951"),
    *texts("phone", "99127-6603", "991276603"),
    *digits("CPF", CPF_1, CPF_2, CPF_3, CPF_4, BAD_CPF),
    *digits("phone", PHONE_1[0], "55" + PHONE_1[2], PHONE_2[0], "55" + PHONE_2[0]),
    *digits("phone", "".join(PHONE_4), "55" + "".join(PHONE_4), BAD_PHONE),
    *digits("phone", PHONE_5[0], "55" + PHONE_5[0], SHOP_PHONE, "55" + SHOP_PHONE),
]


def customer_1(**extra: Any) -> dict[str, Any]:
    return {
        "name": NAME_1.upper(),
        "email": EMAIL_1,
        "phone": PHONE_1[0],
        "document": CPF_1,
        "birth_date": BIRTH_1,
        "gender": "F",
        "address": {
            "street": STREET_1,
            "number": "1789",
            "district": DISTRICT_1,
            "city": "São Paulo",
            "state": "SP",
            "zip": CEP_1,
        },
        **extra,
    }


def order(external_id: str, total: str, customer: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "source": "site",
        "status": "paid",
        "placed_at": "2026-11-20T10:00:00-03:00",
        "total": total,
        "items": [{"sku": "CAFE-500G", "name": "Café 500 g", "quantity": 1, "unit_price": total}],
        "customer": customer,
        **extra,
    }


def event(event_id: str, customer: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "product_view",
        "customer": customer,
        "properties": {"sku": "CAFE-500G", "category": "alimentos"},
        "occurred_at": "2026-11-20T13:55:10-03:00",
        **extra,
    }


def mercadolivre_order(order_id: int) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(
        (FIXTURES / "mercadolivre" / "paid_delivered_full_buyer.json").read_text()
    )
    payload["id"] = order_id
    payload["buyer"].update(
        {
            "id": 778899001,
            "nickname": "LEOCADIAFB",
            "first_name": NAME_4[0],
            "last_name": NAME_4[1],
            "email": EMAIL_4,
            "phone": {"area_code": PHONE_4[0], "extension": "", "number": PHONE_4[1], "verified": True},
            "billing_info": {"doc_type": "CPF", "doc_number": CPF_4},
        }
    )
    return payload


# --- The services and the seller's side ---------------------------------------------------------------------


@pytest.fixture
def service_env_overrides(tmp_path: Path) -> dict[str, str]:
    return {
        "CLIENTELA_LOG_LEVEL": "DEBUG",
        "INGEST_IMPORT_DIR": str(tmp_path / "imports"),
        # The receiver is on 127.0.0.1: the development-only setting lets the service call it.
        "SEGMENTATION_WEBHOOK_ALLOW_PRIVATE": "true",
        "SEGMENTATION_WEBHOOK_POLL_INTERVAL_S": "0.05",
    }


@dataclass
class Receiver:
    """The seller's webhook receiver: answers 204 and counts (verifying signatures is another test's job)."""

    received: list[bytes] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.received.append(self.rfile.read(int(self.headers.get("content-length", "0"))))
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/clientela"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@dataclass
class Seller:
    """A seller's HTTP clients; every refused request's answer is kept, to be scanned like the logs."""

    tenant_id: str
    key: str
    ingest: httpx.Client
    profile: httpx.Client
    segmentation: httpx.Client
    refusals: dict[str, str] = field(default_factory=dict, repr=False)

    def expect(self, response: httpx.Response, status: int, label: str | None = None) -> httpx.Response:
        assert response.status_code == status, f"{label or response.request.url.path}: {response.text[:500]}"
        if label is not None:
            self.refusals[label] = response.text
        return response

    def post(self, client: httpx.Client, path: str, body: Any, status: int, label: str | None = None) -> Any:
        response = client.post(path, json=body, headers=auth(self.key))
        return self.expect(response, status, label).json()

    def lookup(self, **params: str) -> list[dict[str, Any]]:
        response = self.profile.get("/v1/profiles", params=params, headers=auth(self.key))
        items: list[dict[str, Any]] = self.expect(response, 200).json()["items"]
        return items

    def one(self, **params: str) -> dict[str, Any]:
        """The one profile found by a lookup (AssertionError until there is one, for `eventually`)."""
        found = self.lookup(**params)
        assert len(found) == 1, f"{len(found)} profiles"
        return found[0]


@pytest.fixture
def seller(services: ServiceStack) -> Iterator[Seller]:
    with (
        httpx.Client(base_url=services.ingest_url, timeout=15.0) as ingest,
        httpx.Client(base_url=services.profile_url, timeout=15.0) as profile,
        httpx.Client(base_url=services.segmentation_url, timeout=15.0) as segmentation,
    ):
        created = ingest.post("/v1/tenants", json={"name": "Loja Varejo LGPD"}, headers=auth(ADMIN_TOKEN))
        assert created.status_code == 201, created.text
        key = created.json()["api_key"]

        def accepted_everywhere() -> None:
            assert profile.get("/v1/profiles", headers=auth(key)).status_code == 200
            assert segmentation.get("/v1/segments", headers=auth(key)).status_code == 200

        eventually(accepted_everywhere, timeout=30)
        yield Seller(created.json()["id"], key, ingest, profile, segmentation)


def poison(topic_prefix: str, tenant_id: str) -> None:
    """Two order events the profile service cannot read (not JSON; not an order), both quoting personal data:
    they go to the dead-letter topic, and what is logged about them must not quote them."""
    envelope = {
        "event_id": str(uuid.uuid4()),
        "type": "order.ingested",
        "version": 1,
        "tenant_id": tenant_id,
        "occurred_at": "2026-11-20T13:00:00Z",
        "payload": {
            "order_id": str(uuid.uuid4()),
            "order_version": 1,
            "order": {"total": "not money", "customer": {"email": POISON_EMAIL, "name": POISON_NAME}},
        },
    }
    producer = KafkaProducer(bootstrap_servers=KAFKA)
    try:
        topic = ORDERS.full(topic_prefix)
        key = f"{tenant_id}:poison".encode()
        producer.send(topic, key=key, value=f"not json {POISON_EMAIL} {POISON_NAME}".encode()).get(30)
        producer.send(topic, key=key, value=orjson.dumps(envelope)).get(30)
    finally:
        producer.close(timeout=5)


def log_entries(text: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


# --- The flow -----------------------------------------------------------------------------------------------


def test_a_whole_flow_logs_no_personal_data(
    services: ServiceStack, seller: Seller, receiver: Receiver, topic_prefix: str, tmp_path: Path
) -> None:
    s = seller

    # A webhook endpoint and a segment of every buyer (with a purpose, so that the export filters by consent).
    endpoint = s.post(
        s.segmentation,
        "/v1/webhook-endpoints",
        {"url": receiver.url, "event_types": ["segment.entered", "profile.merged"]},
        201,
    )
    # Not personal data, but secrets all the same.
    credentials = [
        *texts("API key", s.key),
        *texts("webhook secret", endpoint["secret"].removeprefix("whsec_")),
    ]
    segment = s.post(
        s.segmentation,
        "/v1/segments",
        {
            "name": "Compradores",
            "rule": {"field": "orders_count", "op": "gte", "value": 1},
            "purpose": "marketing_email",
        },
        201,
    )

    # Orders: one at a time, and a batch with one refused order.
    s.post(s.ingest, "/v1/orders", order("LS-1", "259.90", customer_1()), 202)
    batch = s.post(
        s.ingest,
        "/v1/orders:batch",
        {
            "items": [
                order(
                    "LS-2",
                    "80.00",
                    {"email": EMAIL_2, "name": NAME_2, "phone": PHONE_2[0], "document": CPF_2},
                ),
                order(
                    "LS-3",
                    "19.90",
                    {"document": CPF_1.replace(".", "").replace("-", ""), "phone": PHONE_1[2]},
                ),
                order("LS-4", "10.00", {"email": BAD_EMAIL, "name": NAME_1, "phone": PHONE_1[1]}),
            ]
        },
        200,
        "orders:batch (one refused)",
    )
    assert [item["status"] for item in batch["results"]] == ["accepted", "accepted", "rejected"]

    # Customer records and behaviour events, alone and in batches.
    consents = [{"purpose": "marketing_email", "status": "granted", "source": "checkout"}]
    s.post(
        s.ingest,
        "/v1/customers",
        {"source": "crm", "external_id": "CRM-1", **customer_1(phone=PHONE_1[3]), "consents": consents},
        202,
    )
    customers = s.post(
        s.ingest,
        "/v1/customers:batch",
        {
            "items": [
                {"source": "crm", "external_id": "CRM-2", "email": EMAIL_2.upper(), "phone": PHONE_2[1]},
                {"source": "crm", "external_id": "CRM-3", "email": EMAIL_2, "document": BAD_CPF},
            ]
        },
        200,
        "customers:batch (one refused)",
    )
    assert [item["status"] for item in customers["results"]] == ["accepted", "rejected"]
    s.post(s.ingest, "/v1/events", event("EV-1", {"email": f"  {EMAIL_1.upper()} ", "document": CPF_1}), 202)
    events = s.post(
        s.ingest,
        "/v1/events:batch",
        {"items": [event("EV-2", {"phone": PHONE_1[1]}), event("EV-3", {"phone": BAD_PHONE})]},
        200,
        "events:batch (one refused)",
    )
    assert [item["status"] for item in events["results"]] == ["accepted", "rejected"]

    # Refused records: the answers may name the field, never repeat the value.
    s.post(s.ingest, "/v1/orders", order("LS-5", "1.00", {"email": BAD_EMAIL}), 422, "order: bad e-mail")
    s.post(
        s.ingest,
        "/v1/customers",
        {"source": "crm", "external_id": "CRM-4", "name": NAME_1, "document": BAD_CPF},
        422,
        "customer: bad CPF",
    )
    s.post(
        s.ingest,
        "/v1/customers",
        {"source": "crm", "email": EMAIL_1, "phone": BAD_PHONE, "address": {"street": STREET_1, "zip": "1"}},
        422,
        "customer: bad phone and CEP",
    )
    s.post(
        s.ingest,
        "/v1/customers",
        {"source": "crm", "email": EMAIL_1, "name": NAME_1.split(), "birth_date": "29/07/1983"},
        422,
        "customer: name as a list, birth date in another format",
    )
    s.post(
        s.ingest,
        "/v1/customers",
        {"source": "crm", "email": EMAIL_1, EMAIL_2: NAME_2},
        422,
        "customer: an unknown field named after an e-mail",
    )
    s.post(s.ingest, "/v1/events", event("EV-4", {"email": BAD_EMAIL}), 422, "event: bad e-mail")
    malformed = s.ingest.post(
        "/v1/orders",
        content=f'{{"customer": {{"email": "{EMAIL_1}", "document": "{CPF_1}"'.encode(),
        headers={**auth(s.key), "content-type": "application/json"},
    )
    s.expect(malformed, 400, "order: malformed JSON")

    # A marketplace's own payload: accepted, and refused (no total) with the buyer's data in it.
    s.post(s.ingest, "/v1/sources/mercadolivre/orders", mercadolivre_order(2000009900000001), 202)
    refused = mercadolivre_order(2000009900000002)
    del refused["total_amount"]
    s.post(s.ingest, "/v1/sources/mercadolivre/orders", refused, 422, "mercadolivre: no total")

    # A CSV import with a rejected row (a CPF whose check digits are wrong).
    header = (
        "external_id,source,status,placed_at,total,customer.email,customer.name,customer.document,items\n"
    )
    items = '"[{""sku"": ""A"", ""unit_price"": ""10.00""}]"'
    rows = [
        f"CSV-1,site,paid,2026-11-20T10:00:00-03:00,10.00,{EMAIL_3},{NAME_3},{CPF_3},{items}",
        f"CSV-2,site,paid,2026-11-20T10:00:00-03:00,10.00,{EMAIL_3},{NAME_3},{BAD_CPF},{items}",
    ]
    uploaded = s.ingest.post(
        "/v1/imports",
        data={"format": "csv"},
        files={"files": ("clientes.csv", (header + "\n".join(rows) + "\n").encode(), "text/csv")},
        headers=auth(s.key),
    )
    import_id = s.expect(uploaded, 202).json()["id"]

    def imported() -> dict[str, Any]:
        job: dict[str, Any] = s.ingest.get(f"/v1/imports/{import_id}", headers=auth(s.key)).json()
        assert job["status"] == "done", job
        return job

    job = eventually(imported, timeout=30, interval=0.2)
    assert (job["accepted"], job["rejected"]) == (1, 1)
    report = s.ingest.get(f"/v1/imports/{import_id}/rejected", headers=auth(s.key))
    s.expect(report, 200, "import: rejected rows report")

    # Lookups by e-mail, phone and CPF (personal data in the query string), and refused lookups.
    def wilhelmina() -> dict[str, Any]:
        found = s.one(email=f" {EMAIL_1.upper()}")
        assert found["orders_count"] == 2
        return found

    profile_1 = eventually(wilhelmina, timeout=30, interval=0.2)
    for phone in PHONE_1:
        assert [p["id"] for p in s.lookup(phone=phone)] == [profile_1["id"]]
    for document in (CPF_1, CPF_1.replace(".", "").replace("-", "")):
        assert [p["id"] for p in s.lookup(document=document)] == [profile_1["id"]]
    eventually(lambda: s.one(document=CPF_3), timeout=30, interval=0.2)
    eventually(lambda: s.one(document=CPF_4, phone=" ".join(PHONE_4)), timeout=30, interval=0.2)
    for params, label in (
        ({"document": BAD_CPF}, "lookup: bad CPF"),
        ({"phone": BAD_PHONE}, "lookup: bad phone"),
        ({"email": BAD_EMAIL}, "lookup: bad e-mail"),
        ({"email": EMAIL_1, "updated_since": "2026-11-20T00:00:00"}, "lookup: time without a zone"),
    ):
        s.expect(s.profile.get("/v1/profiles", params=params, headers=auth(s.key)), 422, label)
    s.expect(s.profile.get(f"/v1/profiles/{EMAIL_1}", headers=auth(s.key)), 422, "profile id: an e-mail")
    s.expect(s.profile.get(f"/v1/profiles/by-email/{EMAIL_1}", headers=auth(s.key)), 404, "no such route")

    # Identity rules: a shop's own e-mail blocked (personal data in a setting), and refused rules.
    blocked = [{"kind": "email", "value": SHOP_EMAIL}, {"kind": "phone", "value": SHOP_PHONE}]
    rules = s.profile.put("/v1/identity-rules", json={"blocked_values": blocked}, headers=auth(s.key))
    s.expect(rules, 200)
    for body, label in (
        ({"limits": {EMAIL_1: 3}}, "identity rules: an e-mail as a key"),
        ({"blocked_values": [{"kind": "email", "value": BAD_EMAIL}]}, "identity rules: bad e-mail"),
        ({"blocked_values": [{"kind": "phone", "value": BAD_PHONE}]}, "identity rules: bad phone"),
    ):
        s.expect(s.profile.put("/v1/identity-rules", json=body, headers=auth(s.key)), 422, label)

    # Refused segment rules that quote personal data.
    for rule, label in (
        ({"field": EMAIL_1, "op": "eq", "value": CPF_1}, "segment rule: an e-mail as the field"),
        ({"field": "zip", "op": "eq", "value": CPF_1}, "segment rule: a CPF as a CEP"),
        (
            {"field": "birth_date", "op": "eq", "value": "29/07/1983"},
            "segment rule: a date in another format",
        ),
        ({"all": [{"field": "city", "op": "eq", "value": {"street": STREET_1}}]}, "segment rule: an address"),
    ):
        s.post(s.segmentation, "/v1/segments:preview", {"rule": rule}, 422, label)

    # Consents, and the segment's export of those who consented.
    s.post(s.profile, f"/v1/profiles/{profile_1['id']}/consents", None, 405, "consents: wrong method")
    consents_put = s.profile.put(
        f"/v1/profiles/{profile_1['id']}/consents",
        json={"consents": [{"purpose": "marketing_email", "status": "granted", "source": "preferences"}]},
        headers=auth(s.key),
    )
    s.expect(consents_put, 200)
    bad_consent = s.profile.put(
        f"/v1/profiles/{profile_1['id']}/consents",
        json={"consents": [{"purpose": "marketing_email", "status": "yes", "source": EMAIL_1}]},
        headers=auth(s.key),
    )
    s.expect(bad_consent, 422, "consents: bad status")

    def exported() -> None:
        response = s.segmentation.get(
            f"/v1/segments/{segment['id']}/export", params={"format": "csv"}, headers=auth(s.key)
        )
        assert response.status_code == 200, response.text
        assert profile_1["id"] in response.text

    eventually(exported, timeout=30, interval=0.2)

    def webhook_arrived() -> None:
        assert receiver.received, "no webhook yet"

    eventually(webhook_arrived, timeout=30, interval=0.1)

    # A wrong merge (a Shopee account orders with Wilhelmina's e-mail), undone by the account's phone.
    # The second order only once the first made its own profile: otherwise there is nothing to merge.
    shopee_1 = order("SH-1", "40.00", {"external_id": SHOPEE_ID, "phone": PHONE_5[0]}, source="shopee")
    s.post(s.ingest, "/v1/orders", shopee_1, 202)
    eventually(lambda: s.one(source="shopee", external_id=SHOPEE_ID), timeout=30, interval=0.2)
    shopee_2 = order("SH-2", "60.00", {"external_id": SHOPEE_ID, "email": EMAIL_1}, source="shopee")
    s.post(s.ingest, "/v1/orders", shopee_2, 202)

    def merged() -> str:
        merges = s.profile.get(f"/v1/profiles/{profile_1['id']}/merges", headers=auth(s.key)).json()["items"]
        assert merges, "not merged yet"
        return str(merges[0]["id"])

    eventually(merged, timeout=30, interval=0.2)
    wrong_identifier = {"identifier": {"kind": "phone", "value": BAD_PHONE}}
    s.post(s.profile, f"/v1/profiles/{profile_1['id']}/unmerge", wrong_identifier, 422, "unmerge: bad phone")
    s.post(
        s.profile,
        f"/v1/profiles/{profile_1['id']}/unmerge",
        {"identifier": {"kind": "email", "value": EMAIL_3}},
        409,
        "unmerge: an identifier no merge brought",
    )
    undone = s.post(
        s.profile,
        f"/v1/profiles/{profile_1['id']}/unmerge",
        {"identifier": {"kind": "phone", "value": PHONE_5[1]}},
        200,
    )
    assert undone["restored"]["orders_count"] == 2  # both Shopee orders: its buyer id is their strongest

    def behaviour_recorded() -> None:
        timeline = s.profile.get(f"/v1/profiles/{profile_1['id']}/timeline", headers=auth(s.key)).json()
        assert sum(entry["type"] == "product_view" for entry in timeline["items"]) == 2

    eventually(behaviour_recorded, timeout=30, interval=0.2)

    # Messages the profile service cannot read end in its dead-letter topic.
    poison(topic_prefix, s.tenant_id)

    def dead_lettered() -> None:
        text = services.logs()["profile"]
        assert sum(e.get("msg") == "record dead-lettered" for e in log_entries(text)) == 2

    eventually(dead_lettered, timeout=30, interval=0.2)

    assert_no_leaks([*SECRETS, *credentials], s.refusals)

    services.stop_all()
    logs = services.logs()
    # Any other log file the services may have written.
    logs |= {str(p.relative_to(tmp_path)): p.read_text(errors="replace") for p in tmp_path.rglob("*.log")}

    assert_logs_cover_the_flow(logs)
    assert_no_leaks([*SECRETS, *credentials], logs)


# The routes the flow used, as each service's request log must name them (templates, never raw paths).
ROUTES = {
    "ingest": {
        ("POST", "/v1/tenants", 201),
        ("POST", "/v1/orders", 202),
        ("POST", "/v1/orders", 422),
        ("POST", "/v1/orders", 400),
        ("POST", "/v1/orders:batch", 200),
        ("POST", "/v1/customers", 202),
        ("POST", "/v1/customers", 422),
        ("POST", "/v1/customers:batch", 200),
        ("POST", "/v1/events", 202),
        ("POST", "/v1/events:batch", 200),
        ("POST", "/v1/sources/{source}/orders", 202),
        ("POST", "/v1/sources/{source}/orders", 422),
        ("POST", "/v1/imports", 202),
        ("GET", "/v1/imports/{import_id}", 200),
        ("GET", "/v1/imports/{import_id}/rejected", 200),
    },
    "profile": {
        ("GET", "/v1/profiles", 200),
        ("GET", "/v1/profiles", 422),
        ("GET", "/v1/profiles/{profile_id}", 422),
        ("GET", "unmatched", 404),
        ("PUT", "/v1/profiles/{profile_id}/consents", 200),
        ("PUT", "/v1/profiles/{profile_id}/consents", 422),
        ("GET", "/v1/profiles/{profile_id}/merges", 200),
        ("POST", "/v1/profiles/{profile_id}/unmerge", 200),
        ("POST", "/v1/profiles/{profile_id}/unmerge", 409),
        ("POST", "/v1/profiles/{profile_id}/unmerge", 422),
        ("GET", "/v1/profiles/{profile_id}/timeline", 200),
        ("PUT", "/v1/identity-rules", 200),
        ("PUT", "/v1/identity-rules", 422),
    },
    "segmentation": {
        ("POST", "/v1/webhook-endpoints", 201),
        ("POST", "/v1/segments", 201),
        ("POST", "/v1/segments:preview", 422),
        ("GET", "/v1/segments/{segment_id}/export", 200),
    },
}


def assert_logs_cover_the_flow(logs: Mapping[str, str]) -> None:
    """The scan is not vacuous: the services logged at DEBUG level, each a request line per route used; and
    every line is a JSON object (went through our formatter, which masks what slips through)."""
    debug = 0
    for service, wanted in ROUTES.items():
        text = logs[service]
        entries = log_entries(text)
        assert entries, f"{service} wrote no log at all"
        # Line numbers only: the line itself may be the leak.
        not_json = [n for n, line in enumerate(text.splitlines(), 1) if not line.startswith("{")]
        assert len(entries) == len(text.splitlines()), f"{service}.log lines {not_json[:20]} are not JSON"
        debug += sum(e.get("level") == "debug" for e in entries)
        requests = {
            (e.get("method"), e.get("route"), e.get("status")) for e in entries if e.get("msg") == "request"
        }
        missing = sorted(wanted - requests, key=str)
        assert not missing, f"{service}: no request line for {missing}"
        assert all("?" not in str(e.get("route")) for e in entries), f"{service} logged a raw URL"
    assert debug, "no debug line at all: CLIENTELA_LOG_LEVEL=DEBUG did not take"
