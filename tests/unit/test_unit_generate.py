"""cli.generate: realistic, deterministic marketplace data whose ground truth covers every record."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from brutils import is_valid_cpf
from typer.testing import CliRunner

from cli import noise
from cli.generate import (
    CUSTOMERS_FILE,
    EVENTS_FILE,
    ORDERS_FILE,
    RELAY_DOMAINS,
    TRUTH_FILE,
    GenerationStats,
    generate,
)
from cli.main import app
from cli.olist import DEFAULT_OLIST_DIR, pretty_city
from cli.population import Urn
from shared.normalize import normalize_phone
from shared.records import BehaviourEvent, CustomerRecord, Order

OLIST = Path(os.environ.get("CLIENTELA_OLIST_DIR", DEFAULT_OLIST_DIR))
ROOT = Path(__file__).resolve().parents[2]
FILES = (ORDERS_FILE, CUSTOMERS_FILE, EVENTS_FILE, TRUTH_FILE, "manifest.json")
N = 300

needs_olist = pytest.mark.skipif(
    not (OLIST / "olist_products_dataset.csv.gz").exists(),
    reason="the Olist data is not at CLIENTELA_OLIST_DIR",
)


class Data:
    def __init__(
        self, folder: Path, stats: GenerationStats, twin: subprocess.Popen[bytes], twin_folder: Path
    ) -> None:
        self.folder = folder
        self.stats = stats
        self.twin = twin  # the same generation in another process, running meanwhile on another core
        self.twin_folder = twin_folder
        self.orders = [Order.model_validate_json(line) for line in self.lines(ORDERS_FILE)]
        self.customers = [CustomerRecord.model_validate_json(line) for line in self.lines(CUSTOMERS_FILE)]
        self.events = [BehaviourEvent.model_validate_json(line) for line in self.lines(EVENTS_FILE)]
        self.truth: dict[str, str] = {}
        for line in self.lines(TRUTH_FILE):
            row = json.loads(line)
            assert row["record"] not in self.truth, "one truth line per record"
            self.truth[row["record"]] = row["person"]

    def lines(self, name: str) -> list[str]:
        return (self.folder / name).read_text(encoding="utf-8").splitlines()

    def raw(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines(name)]

    def person_of_order(self, order: Order) -> str:
        return self.truth[f"order:{order.source}:{order.external_id}"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Data]:
    if not (OLIST / "olist_products_dataset.csv.gz").exists():
        pytest.skip("the Olist data is not at CLIENTELA_OLIST_DIR")
    folder, twin_folder = tmp_path_factory.mktemp("generated"), tmp_path_factory.mktemp("twin")
    # Another string hash seed: nothing may depend on set iteration order (nor on the clock).
    script = (
        "import sys; from pathlib import Path; from cli.generate import generate; "
        f"generate({N}, 7, Path(sys.argv[1]), olist_dir=Path(sys.argv[2]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    twin = subprocess.Popen([sys.executable, "-c", script, str(twin_folder), str(OLIST)], cwd=ROOT, env=env)
    try:
        yield Data(folder, generate(N, 7, folder, olist_dir=OLIST), twin, twin_folder)
    finally:
        if twin.poll() is None:
            twin.kill()
        twin.wait()


def test_every_line_is_a_canonical_record(data: Data) -> None:
    # Data() validates every line; here: something of every kind is there, and the counts agree.
    assert len({(o.source, o.external_id) for o in data.orders}) == data.stats.orders == N
    assert len(data.orders) == data.stats.order_lines > N  # some orders come again, updated
    assert len(data.customers) == data.stats.customer_lines > 0
    assert len(data.events) == data.stats.events > 0
    assert {o.source for o in data.orders} >= {"mercadolivre", "shopee", "amazon", "site"}
    assert {e.type.value for e in data.events} >= {
        "page_view",
        "product_view",
        "add_to_cart",
        "checkout_started",
    }


def test_money_adds_up(data: Data) -> None:
    """total = sum(quantity x unit_price) + shipping - discount; payments add up to the total."""
    for order in data.orders:
        subtotal = sum((item.unit_price * item.quantity for item in order.items), Decimal(0))
        assert order.total == subtotal + order.shipping - order.discount
        assert sum((p.amount for p in order.payments), Decimal(0)) == order.total
        assert order.total > 0
    for raw in data.raw(ORDERS_FILE):
        amounts = [raw["total"], raw["shipping"], raw["discount"], *(p["amount"] for p in raw["payments"])]
        assert all(isinstance(a, str) and len(a.rpartition(".")[2]) == 2 for a in amounts)


def test_truth_covers_every_record_exactly(data: Data) -> None:
    keys = (
        {f"order:{o.source}:{o.external_id}" for o in data.orders}
        | {f"customer:{c.source}:{c.external_id}" for c in data.customers}
        | {f"event:{e.source}:{e.event_id}" for e in data.events}
    )
    assert keys == set(data.truth)
    assert len(data.truth) == data.stats.truth_records
    assert len({e.event_id for e in data.events}) == len(data.events)


def test_some_people_buy_again_most_once(data: Data) -> None:
    per_person = Counter(
        data.person_of_order(o) for o in {(o.source, o.external_id): o for o in data.orders}.values()
    )
    once = sum(1 for n in per_person.values() if n == 1)
    assert sum(per_person.values()) == N
    assert once > len(per_person) / 2
    assert max(per_person.values()) >= 5
    assert data.stats.repeat_buyers == len(per_person) - once
    assert len({data.person_of_order(o) for o in data.orders if o.source in ("site", "shopify", "vtex")}) > 1


def test_updates_come_later_as_complete_orders(data: Data) -> None:
    versions: defaultdict[tuple[str, str], list[Order]] = defaultdict(list)
    for order in data.orders:
        versions[(order.source, order.external_id)].append(order)
    updated = [v for v in versions.values() if len(v) > 1]
    assert updated
    for history in updated:
        stamps = [o.updated_at for o in history]
        assert all(s is not None for s in stamps)
        assert stamps == sorted(stamps)  # type: ignore[type-var]
        assert len(set(stamps)) == len(stamps)
        assert {o.total for o in history} == {history[0].total}
    statuses = Counter(v[-1].status.value for v in versions.values())
    assert statuses.most_common(1)[0][0] == "delivered"


def test_relay_emails_only_on_their_marketplace(data: Data) -> None:
    relays = 0
    for order in data.orders:
        email = order.customer.email or ""
        for source, domain in RELAY_DOMAINS.items():
            if email.endswith("@" + domain):
                assert order.source == source
                relays += 1
        if order.source in RELAY_DOMAINS:
            assert email.endswith("@" + RELAY_DOMAINS[order.source])
    assert relays > 0
    others = [c.email for c in data.customers] + [e.customer.email for e in data.events if e.customer]
    assert not any(e and e.endswith(tuple(RELAY_DOMAINS.values())) for e in others)


def test_identifier_noise_is_there_and_the_truth_sees_through_it(data: Data) -> None:
    phones: defaultdict[str, set[str]] = defaultdict(set)  # E.164 -> people
    spellings: defaultdict[str, set[str]] = defaultdict(set)  # E.164 -> raw spellings
    emails: defaultdict[str, set[str]] = defaultdict(set)  # person -> own (non-relay) e-mails
    for raw, order in zip(data.raw(ORDERS_FILE), data.orders, strict=True):
        person = data.person_of_order(order)
        if order.customer.phone:
            phones[order.customer.phone].add(person)
            spellings[order.customer.phone].add(raw["customer"]["phone"])
        if order.customer.email and order.source not in RELAY_DOMAINS:
            emails[person].add(order.customer.email)
    assert any(len(people) > 1 for people in phones.values()), "a household shares a phone"
    assert any(len(s) > 1 for s in spellings.values()), "one phone, several spellings"
    assert any(len(e) > 1 for e in emails.values()), "one person, two e-mails"
    assert sum(o.customer.document is None for o in data.orders) > len(data.orders) / 4
    names = [raw["customer"]["name"] for raw in data.raw(ORDERS_FILE)]
    assert any(n.isupper() for n in names)


def test_anonymous_visits_later_tied_to_a_person(data: Data) -> None:
    anonymous = {e.anonymous_id for e in data.events if e.customer is None and e.anonymous_id}
    identified = {e.anonymous_id for e in data.events if e.customer is not None and e.anonymous_id}
    assert anonymous - identified, "some devices never identify"
    assert anonymous & identified, "some devices browse anonymously and later say who they are"
    people_per_device: defaultdict[str, set[str]] = defaultdict(set)
    for event in data.events:
        if event.anonymous_id:
            people_per_device[event.anonymous_id].add(data.truth[f"event:{event.source}:{event.event_id}"])
    assert all(len(people) == 1 for people in people_per_device.values())


def test_lines_are_in_arrival_order(data: Data) -> None:
    occurred = [e.occurred_at for e in data.events]
    assert occurred == sorted(occurred)
    assert max(occurred) < datetime(2026, 11, 1, 3, tzinfo=UTC)  # nothing after the reference date


def test_same_seed_same_bytes_even_in_another_process(data: Data) -> None:
    assert data.twin.wait(timeout=60) == 0
    for name in FILES:
        assert (data.twin_folder / name).read_bytes() == (data.folder / name).read_bytes(), name


def test_another_seed_other_data(data: Data, tmp_path: Path) -> None:
    generate(N, 8, tmp_path, olist_dir=OLIST)
    for name in FILES:
        assert (tmp_path / name).read_bytes() != (data.folder / name).read_bytes(), name


@needs_olist
def test_cli_writes_the_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["generate", "--orders", "20", "--seed", "3", "--out", str(tmp_path), "--olist-dir", str(OLIST)]
    )
    assert result.exit_code == 0, result.output
    assert all((tmp_path / name).stat().st_size > 0 for name in FILES)
    assert json.loads((tmp_path / "manifest.json").read_text())["stats"]["orders"] == 20


def test_phone_spellings_normalise_to_one_number() -> None:
    rng = random.Random(1)
    for _ in range(300):
        ddd = rng.choice((11, 21, 31, 47, 61, 71, 85, 92, 99))
        national = f"{ddd}9{rng.randint(6, 9)}{rng.randrange(10**7):07d}"
        assert {normalize_phone(noise.phone_variant(national, rng)) for _ in range(12)} == {f"+55{national}"}


def test_cpfs_are_valid_and_spelt_both_ways() -> None:
    rng = random.Random(2)
    for _ in range(500):
        document = noise.cpf(rng)
        assert is_valid_cpf(document)
        assert noise.cpf_variant(document, rng).replace(".", "").replace("-", "") == document


def test_name_variants_stay_recognisable() -> None:
    rng = random.Random(3)
    name = "João Conceição da Silva"
    variants = {noise.name_variant(name, rng) for _ in range(300)}
    assert {name, name.upper(), "Joao Conceicao da Silva", "João Silva"} <= variants
    assert all(len(v) >= len("João Silva") for v in variants)


def test_pretty_city() -> None:
    assert pretty_city("sao jose do rio preto") == "São José do Rio Preto"
    assert pretty_city("conceicao das alagoas") == "Conceição das Alagoas"
    assert pretty_city("campinas") == "Campinas"


def test_urn_draws_each_as_often_as_its_count() -> None:
    counts = [0, 3, 1, 0, 5, 2, 0, 1]
    urn = Urn(counts)
    rng = random.Random(4)
    drawn = Counter(urn.draw(rng) for _ in range(sum(counts)))
    assert [drawn[i] for i in range(len(counts))] == counts
    assert urn.left == 0
