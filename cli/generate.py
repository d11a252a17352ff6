"""`clientela generate`: realistic Brazilian marketplace data at any scale, with its ground truth.

A population of people (pt_BR names, valid CPFs, e-mails, mobiles, addresses at real Olist locations)
buys real Olist products on several channels during the two years before `REFERENCE` (2026-11-01,
Brasília time). Each channel reveals a buyer differently, as in real life, and that noise is the point:
the same person arrives behind relay e-mails, with phones in every format, misspelt names, no document,
a second e-mail or a new address, while two people of one household share a phone. `truth.jsonl` says
who is who, to measure identity resolution (pairwise precision and recall).

Files (JSON lines in arrival order: each line when its source would have sent it):

- `orders.jsonl`: canonical `shared.records.Order`s. An order that changed later appears again, complete,
  with a later `updated_at`.
- `customers.jsonl`: canonical `CustomerRecord`s: own-store registrations (again when the person moves),
  newsletter leads, and a CRM export taken the day before the reference date.
- `events.jsonl`: canonical `BehaviourEvent`s: anonymous browsing, visits that end in an order (their
  `checkout_started` carries identifiers), sign-ups and post-delivery surveys.
- `truth.jsonl`: `{"record": key, "person": id}`, once per record (not per version), with keys
  `order:<source>:<external_id>`, `customer:<source>:<external_id>`, `event:<source>:<event_id>`.
- `manifest.json`: the parameters and counts.

Every order line holds `total == sum(quantity * unit_price) + shipping - discount` and
`sum(payments.amount) == total`; amounts are strings with exactly two decimals.

Everything comes from `random.Random(seed)` and a `Faker("pt_BR")` seeded with the same seed, nothing
from the clock, so the same orders, seed, people and Olist files give byte-identical files.

The people are made in `cli.population`, identifiers are misspelt in `cli.noise`, and the real products
and places come from `cli.olist`; this module holds the channels, the timeline and the output.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Annotated, Any, NamedTuple

import orjson
import typer
from faker import Faker
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cli import noise
from cli.olist import DEFAULT_OLIST_DIR, Catalog, Location, Product, load_catalog, load_locations
from cli.population import Home, Person, Population, Urn
from shared.records import from_minor

# Brazil has had no daylight saving time since 2019: a fixed offset is exact for the whole window.
BRT = timezone(timedelta(hours=-3))
REFERENCE = datetime(2026, 11, 1, tzinfo=BRT)
WINDOW_DAYS = 730
HOUR = 3600
DAY = 86_400
END = int(REFERENCE.timestamp())
START = END - WINDOW_DAYS * DAY
ORDERS_PER_PERSON = 2.5
_FLUSH_LAG = 7 * DAY  # nothing is dated more than this before the activity that produces it

SOURCES = ("mercadolivre", "shopee", "amazon", "magalu", "site", "shopify", "vtex")
OWN_STORES = frozenset({"site", "shopify", "vtex"})
RELAY_DOMAINS = {"mercadolivre": "mail.mercadolivre.com", "amazon": "marketplace.amazon.com.br"}


class Channel(NamedTuple):
    weight: int  # share of buyers who prefer it
    document: float  # share of its orders that carry the buyer's CPF
    phone: float
    email: float  # share carrying the person's own e-mail (relayed and hidden e-mails aside)
    free_shipping_from: int | None  # cents
    time_style: str  # how it writes timestamps (see `iso`)


CHANNELS = {
    "mercadolivre": Channel(34, 0.55, 0.45, 0.0, 7_900, "offset_ms"),
    "shopee": Channel(22, 0.15, 0.35, 0.0, None, "offset"),
    "amazon": Channel(12, 0.35, 0.25, 0.0, 10_000, "utc"),
    "magalu": Channel(8, 0.80, 0.70, 0.60, 9_900, "local"),
    "site": Channel(10, 0.60, 0.80, 1.0, 19_900, "offset"),
    "shopify": Channel(8, 0.40, 0.85, 1.0, 19_900, "offset"),
    "vtex": Channel(6, 0.75, 0.90, 1.0, 19_900, "offset"),
}
STATE_NAMES = {
    "AC": "Acre", "AL": "Alagoas", "AP": "Amapá", "AM": "Amazonas", "BA": "Bahia", "CE": "Ceará",
    "DF": "Distrito Federal", "ES": "Espírito Santo", "GO": "Goiás", "MA": "Maranhão", "MT": "Mato Grosso",
    "MS": "Mato Grosso do Sul", "MG": "Minas Gerais", "PA": "Pará", "PB": "Paraíba", "PR": "Paraná",
    "PE": "Pernambuco", "PI": "Piauí", "RJ": "Rio de Janeiro", "RN": "Rio Grande do Norte",
    "RS": "Rio Grande do Sul", "RO": "Rondônia", "RR": "Roraima", "SC": "Santa Catarina",
    "SP": "São Paulo", "SE": "Sergipe", "TO": "Tocantins",
}  # fmt: skip
# North and Northeast: slower and dearer deliveries.
_FAR_STATES = frozenset(
    {"AC", "AL", "AP", "AM", "BA", "CE", "MA", "PA", "PB", "PE", "PI", "RN", "RR", "RO", "SE", "TO"}
)
# Orders by hour of the day (Brasília time): late-morning and evening peaks.
_HOUR_WEIGHTS = (
    0.6, 0.35, 0.2, 0.12, 0.1, 0.15, 0.3, 0.6, 1.0, 1.4, 1.6, 1.7,
    1.7, 1.6, 1.6, 1.6, 1.6, 1.6, 1.7, 1.9, 2.1, 2.2, 1.9, 1.2,
)  # fmt: skip
_MONTH_WEIGHTS = (0.85, 0.85, 0.95, 0.95, 1.05, 1.0, 1.0, 0.95, 0.95, 1.0, 1.2, 1.3)
_WEEKDAY_WEIGHTS = (1.05, 1.05, 1.0, 1.0, 0.95, 0.9, 0.95)
_REFERRERS = ("google", "instagram", "direct", "email", "facebook", "tiktok", "whatsapp")

ORDERS_FILE, CUSTOMERS_FILE, EVENTS_FILE, TRUTH_FILE = (
    "orders.jsonl",
    "customers.jsonl",
    "events.jsonl",
    "truth.jsonl",
)
_STREAMS = (ORDERS_FILE, CUSTOMERS_FILE, EVENTS_FILE)
_ORDERS, _CUSTOMERS, _EVENTS = range(3)

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class GenerationStats:
    people: int
    buyers: int
    repeat_buyers: int
    orders: int
    order_lines: int
    customer_records: int
    customer_lines: int
    events: int
    truth_records: int


def money(cents: int) -> str:
    """Cents as the canonical amount string (`25990` → `"259.90"`)."""
    return str(from_minor(cents))


def iso(ts: int, style: str = "offset") -> str:
    """A timestamp as a channel writes it: `offset` (-03:00), `offset_ms`, `utc` (Z) or `local` (no zone,
    which the canonical models read as Brazil's time)."""
    if style == "utc":
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    moment = datetime.fromtimestamp(ts, BRT)
    if style == "local":
        return moment.strftime("%Y-%m-%dT%H:%M:%S")
    if style == "offset_ms":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.000-03:00")
    return moment.strftime("%Y-%m-%dT%H:%M:%S-03:00")


def _base36(n: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = digits[n % 36]
    while n >= 36:
        n //= 36
        out = digits[n % 36] + out
    return out


# --- output --------------------------------------------------------------------------------------


class Sink:
    """Writes each line when its time comes, so that every file is in arrival order: pending lines wait
    in a heap holding at most `_FLUSH_LAG` of activity. Nothing dated at or after `REFERENCE` is written."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self._files: list[IO[bytes]] = [(out_dir / name).open("wb", buffering=1 << 20) for name in _STREAMS]
        self._truth = (out_dir / TRUTH_FILE).open("wb", buffering=1 << 20)
        self._pending: list[tuple[int, int, int, bytes]] = []
        self._seq = 0
        self.lines = [0, 0, 0]
        self.truth_records = 0

    def later(self, ts: int, stream: int, record: Record) -> bool:
        """Queues the record as it is now; False when it falls after the reference date."""
        if ts >= END:
            return False
        self._seq += 1
        heapq.heappush(self._pending, (ts, self._seq, stream, orjson.dumps(record) + b"\n"))
        return True

    def truth(self, key: str, person: Person) -> None:
        self._truth.write(orjson.dumps({"record": key, "person": person.pid}) + b"\n")
        self.truth_records += 1

    def flush_until(self, ts: int) -> None:
        pending, files, lines = self._pending, self._files, self.lines
        while pending and pending[0][0] <= ts:
            _, _, stream, line = heapq.heappop(pending)
            files[stream].write(line)
            lines[stream] += 1

    def close(self) -> None:
        self.flush_until(END)
        for fh in (*self._files, self._truth):
            fh.close()


# --- the timeline --------------------------------------------------------------------------------


def day_weights() -> list[float]:
    """Relative activity per day: growth over the window, weekday and month seasonality, Black Friday
    and Mother's Day."""
    first = REFERENCE.date() - timedelta(days=WINDOW_DAYS)
    weights = []
    for i in range(WINDOW_DAYS):
        day = first + timedelta(days=i)
        w = (1.0 + 0.6 * i / WINDOW_DAYS) * _WEEKDAY_WEIGHTS[day.weekday()] * _MONTH_WEIGHTS[day.month - 1]
        if day.month == 11:
            black_friday = 22 + (4 - date(day.year, 11, 1).weekday()) % 7  # the fourth Friday
            if day.day == black_friday:
                w *= 3.5
            elif -4 <= day.day - black_friday <= 3:
                w *= 1.6
        elif day.month == 5:
            mothers_day = 8 + (6 - date(day.year, 5, 1).weekday()) % 7  # the second Sunday
            if 0 <= mothers_day - day.day <= 7:
                w *= 1.4
        elif day.month == 12 and day.day >= 24:
            w *= 0.8
        weights.append(w)
    return weights


def spread(total: int, cumulative: list[float]) -> list[int]:
    """`total` split over the days in proportion to their weights, exactly."""
    scale = total / cumulative[-1]
    marks = [0, *(round(c * scale) for c in cumulative)]
    return [b - a for a, b in itertools.pairwise(marks)]


# --- the generator -------------------------------------------------------------------------------


class Generator:
    def __init__(
        self, seed: int, catalog: Catalog, locations: list[Location], sink: Sink, store: str
    ) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
        fake = Faker("pt_BR")
        fake.seed_instance(seed)
        self.catalog = catalog
        self.sink = sink
        self.store_url = f"https://www.{noise.ascii_word(store) or 'loja'}.com.br/"
        self.population = Population(
            self.rng,
            fake,
            catalog,
            locations,
            reference=REFERENCE.date(),
            start=START,
            end=END,
            channels={source: channel.weight for source, channel in CHANNELS.items()},
        )
        self.people = self.population.people
        self.orders = 0
        self.customer_records = 0
        self._seq = 0
        self._hour_cum = list(itertools.accumulate(_HOUR_WEIGHTS))

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    # identifiers as each channel shows them

    def device(self, person: Person) -> str:
        rng = self.rng
        if rng.random() < 0.1:  # cookies cleared, a borrowed phone: never seen again
            return f"anon-{rng.getrandbits(64):016x}"
        if not person.devices or (len(person.devices) < 3 and rng.random() < 0.1):
            person.devices.append(f"anon-{rng.getrandbits(64):016x}")
        return person.devices[0] if rng.random() < 0.75 else rng.choice(person.devices)

    def customer_id(self, person: Person, source: str) -> str:
        """The person's customer id on a channel, the same every time."""
        if (known := person.ids.get(source)) is not None:
            return known
        seq, rng = self.next_seq(), self.rng
        if source == "mercadolivre":
            value = str(104_000_000 + seq * 37 + rng.randrange(37))
        elif source == "shopee":  # a user name
            value = (
                f"{noise.ascii_word(person.first.split()[0])}{noise.ascii_word(person.last.split()[-1])}{seq}"
            )
        elif source == "magalu":
            value = str(3_100_000_000 + seq * 17 + rng.randrange(17))
        elif source == "shopify":
            value = str(7_300_000_000_000 + seq * 11 + rng.randrange(11))
        elif source == "vtex":
            value = self.uuid()
        else:
            value = f"C-{100_000 + seq}"
        person.ids[source] = value
        return value

    def relay_email(self, person: Person, source: str) -> str:
        """Mercado Livre and Amazon hide the buyer's address behind a relay of their own; Mercado Livre
        also tags some with the conversation."""
        rng, key = self.rng, f"relay:{source}"
        if (base := person.ids.get(key)) is None:
            token = "".join(
                rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=14 if source == "amazon" else 6)
            )
            nick = noise.ascii_word(person.first.split()[0])[:8] + noise.ascii_word(person.last)[:1]
            base = person.ids[key] = token if source == "amazon" else f"{nick}.{token}"
        if source == "mercadolivre" and rng.random() < 0.4:
            return (
                f"{base}+2-{''.join(rng.choices('abcdefghijklmnopqrstuvwxyz', k=12))}@{RELAY_DOMAINS[source]}"
            )
        return f"{base}@{RELAY_DOMAINS[source]}"

    def email_for(self, person: Person) -> str:
        emails = person.emails
        return emails[1] if len(emails) > 1 and self.rng.random() < 0.4 else emails[0]

    def address(self, home: Home, *, full: bool = True) -> Record:
        rng = self.rng
        address: Record = {}
        if full:
            address = {"street": home.street, "number": home.number}
            if home.complement:
                address["complement"] = home.complement
            address["district"] = home.district
        address["city"] = noise.city_variant(home.city, rng)
        address["state"] = STATE_NAMES[home.state] if rng.random() < 0.15 else home.state
        address["zip"] = home.zip if rng.random() < 0.5 else f"{home.zip[:5]}-{home.zip[5:]}"
        if rng.random() < 0.1:
            address["country"] = "Brasil"
        return address

    def order_customer(self, person: Person, source: str, ts: int, registered: bool) -> Record:
        rng, channel = self.rng, CHANNELS[source]
        customer: Record = {}
        if (source not in OWN_STORES and source != "amazon") or registered:
            customer["external_id"] = self.customer_id(person, source)
        customer["name"] = noise.name_variant(person.name, rng)
        if source in RELAY_DOMAINS:
            customer["email"] = self.relay_email(person, source)
        elif rng.random() < channel.email:
            customer["email"] = noise.email_variant(self.email_for(person), rng)
        if rng.random() < channel.phone:
            customer["phone"] = noise.phone_variant(person.phone, rng)
        if rng.random() < channel.document:
            customer["document"] = noise.cpf_variant(person.cpf, rng)
        if source in ("shopify", "vtex") and rng.random() < 0.2:
            customer["birth_date"] = person.birth.isoformat()
        # Amazon shares no street, only where the parcel goes.
        customer["address"] = self.address(person.home_at(ts), full=source != "amazon")
        return customer

    # orders

    def pick_product(self, person: Person, skew: float) -> Product:
        rng, catalog = self.rng, self.catalog
        if rng.random() < 0.45:
            group = catalog.by_category[person.favourite]
        else:
            group = rng.choices(catalog.by_category, cum_weights=catalog.category_weights)[0]
        return group[int(len(group) * rng.random() ** skew)]

    def items(self, person: Person) -> list[tuple[Product, int]]:
        rng = self.rng
        r = rng.random()
        count = 1 if r < 0.78 else 2 if r < 0.93 else 3 if r < 0.98 else rng.randint(4, 6)
        chosen: dict[str, tuple[Product, int]] = {}
        for _ in range(count):
            product = self.pick_product(person, 2.5)
            q = rng.random()
            chosen.setdefault(product.sku, (product, 1 if q < 0.86 else 2 if q < 0.96 else rng.randint(3, 5)))
        return list(chosen.values())

    def shipping(self, source: str, subtotal: int, weight_g: int, state: str) -> int:
        rng = self.rng
        threshold = CHANNELS[source].free_shipping_from
        if (threshold is not None and subtotal >= threshold) or (source == "shopee" and rng.random() < 0.5):
            return 0
        freight = 1190 + weight_g * 45 // 100 + rng.randrange(900)
        return min(freight * 14 // 10 if state in _FAR_STATES else freight, 19_990)

    def discount(
        self, source: str, ts: int, subtotal: int, shipping: int, first: bool
    ) -> tuple[int, str | None]:
        """A coupon on own stores, a promotion on marketplaces; never more than leaves R$ 1 to pay."""
        rng = self.rng
        r = rng.random()
        if source in OWN_STORES:
            if r >= 0.16:
                return 0, None
            day = datetime.fromtimestamp(ts, BRT)
            if day.month == 11 and day.day >= 20:
                code, amount = "BLACKFRIDAY20", subtotal * 20 // 100
            elif first:
                code, amount = "BEMVINDO10", subtotal * 10 // 100
            elif shipping and rng.random() < 0.4:
                code, amount = "FRETEGRATIS", shipping
            else:
                code, amount = "VOLTA15", subtotal * 15 // 100
            return min(amount, subtotal + shipping - 100), code
        if r < 0.08:
            coupon = "SHOPEE10" if source == "shopee" and rng.random() < 0.5 else None
            return min(subtotal * rng.randint(5, 20) // 100, subtotal + shipping - 100), coupon
        return 0, None

    def payments(self, source: str, total: int) -> list[Record]:
        """Adding up to `total`: card (in instalments), Pix, boleto, debit, Mercado Pago's wallet, a
        voucher with the rest on card or Pix, or two cards."""
        rng = self.rng

        def pay(method: str, cents: int) -> Record:
            installments = self.installments(cents) if method == "credit_card" else 1
            return {"method": method, "installments": installments, "amount": money(cents)}

        if source == "mercadolivre" and rng.random() < 0.12:
            return [pay("wallet", total)]
        r = rng.random()
        if r < 0.30:
            return [pay("pix", total)]
        if r < 0.39:
            return [pay("boleto", total)]
        if r < 0.42:
            return [pay("debit_card", total)]
        if r < 0.46 and total >= 4_000:
            voucher = min(rng.choice((1_000, 2_000, 3_000, 5_000, 10_000)), total // 2)
            return [
                pay("voucher", voucher),
                pay("credit_card" if rng.random() < 0.6 else "pix", total - voucher),
            ]
        if r < 0.48 and total >= 10_000:
            part = total * rng.randint(30, 70) // 100
            return [pay("credit_card", part), pay("credit_card", total - part)]
        return [pay("credit_card", total)]

    def installments(self, cents: int) -> int:
        most = min(12, cents // 3_000)  # instalments of at least R$ 30
        if most < 2 or self.rng.random() < 0.4:
            return 1
        return self.rng.choice([n for n in (2, 3, 4, 5, 6, 8, 10, 12) if n <= most])

    def lifecycle(self, ts: int, method: str, state: str) -> list[tuple[str, int]]:
        """The statuses the order goes through and when, up to the reference date."""
        rng = self.rng
        if method == "boleto":
            steps = [("created", ts)]
            if rng.random() < 0.12:  # never paid
                return [*steps, ("cancelled", ts + 3 * DAY + rng.randrange(DAY))]
            paid = ts + rng.randrange(2 * HOUR, 3 * DAY)
            steps.append(("paid", paid))
        else:
            paid = ts
            steps = [("paid", ts)]
        if rng.random() < 0.035:
            steps.append(("cancelled", paid + rng.randrange(HOUR, 2 * DAY)))
        else:
            shipped = paid + rng.randrange(4 * HOUR, 3 * DAY)
            delivered = shipped + rng.randrange(DAY, (14 if state in _FAR_STATES else 8) * DAY)
            steps += [("shipped", shipped), ("delivered", delivered)]
            if rng.random() < 0.025:
                steps.append(("returned", delivered + rng.randrange(2 * DAY, 25 * DAY)))
        return [step for step in steps if step[1] < END]

    def order_id(self, source: str, ts: int) -> str:
        """In each channel's own style; unique because each embeds a new sequence number."""
        seq, rng = self.next_seq(), self.rng
        if source == "mercadolivre":
            return str(2_000_000_000_000 + seq * 13 + rng.randrange(13))
        if source == "shopee":
            day = datetime.fromtimestamp(ts, BRT).strftime("%y%m%d")
            return f"{day}{_base36(seq):0>6}{_base36(rng.randrange(36**2)):0>2}"
        if source == "amazon":
            return f"70{rng.randint(1, 2)}-{seq:07d}-{rng.randrange(10**7):07d}"
        if source == "magalu":
            return f"LU-{1_400_000_000 + seq * 7 + rng.randrange(7)}"
        if source == "shopify":
            return str(5_600_000_000_000 + seq * 11 + rng.randrange(11))
        if source == "vtex":
            return f"{1_300_000_000_000 + seq * 17 + rng.randrange(17)}-01"
        return str(100_000 + seq)

    def place_order(self, person: Person, ts: int) -> None:
        rng = self.rng
        source = person.home_source if rng.random() < 0.65 else self.population.channel()
        first_here = source not in person.orders_on
        person.orders_on[source] = person.orders_on.get(source, 0) + 1
        home = person.home_at(ts)
        registered = source in person.registered
        signs_up = source in OWN_STORES and not registered and rng.random() < (0.65 if first_here else 0.3)

        lines = self.items(person)
        subtotal = sum(p.price * q for p, q in lines)
        shipping = self.shipping(source, subtotal, sum(p.weight_g * q for p, q in lines), home.state)
        discount, coupon = self.discount(source, ts, subtotal, shipping, first_here)
        total = subtotal + shipping - discount
        payments = self.payments(source, total)
        steps = self.lifecycle(ts, payments[-1]["method"], home.state)
        external_id = self.order_id(source, ts)
        style = CHANNELS[source].time_style
        order: Record = {
            "external_id": external_id,
            "source": source,
            "status": steps[0][0],
            "placed_at": iso(ts, style),
            "updated_at": None,
            "currency": "BRL",
            "total": money(total),
            "discount": money(discount),
            "shipping": money(shipping),
        }
        if coupon:
            order["coupon"] = coupon
        order["items"] = [self.item(p, q) for p, q in lines]
        order["payments"] = payments
        order["customer"] = self.order_customer(person, source, ts, registered or signs_up)
        if source in OWN_STORES and rng.random() < 0.6:
            status = "granted" if rng.random() < 0.45 else "denied"
            at = iso(ts, style)
            order["consents"] = [
                {
                    "purpose": "marketing_email",
                    "status": status,
                    "at": at,
                    "source": "checkout",
                    "text_version": "v2",
                }
            ]
        self.emit_versions(order, steps, style)
        self.sink.truth(f"order:{source}:{external_id}", person)
        self.orders += 1

        if source in OWN_STORES:
            self.shopping_visit(person, source, ts, lines, subtotal, order["customer"], signs_up)
            if signs_up or (registered and person.registered[source] != home):
                self.registration(person, source, ts + 60)
        delivered = next((at for status, at in steps if status == "delivered"), None)
        if delivered is not None and rng.random() < 0.04:
            self.survey(person, source, external_id, delivered + rng.randrange(DAY, 5 * DAY))

    @staticmethod
    def item(product: Product, quantity: int) -> Record:
        item: Record = {"sku": product.sku, "name": product.name}
        if product.category:
            item["category"] = product.category
        item |= {"quantity": quantity, "unit_price": money(product.price)}
        return item

    def emit_versions(self, order: Record, steps: list[tuple[str, int]], style: str) -> None:
        """Most orders arrive once, as they stand now (a quarter of those without `updated_at`); about a
        third arrive when placed and again as they change, each line complete with a later `updated_at`."""
        rng = self.rng
        if len(steps) > 1 and rng.random() < 0.35:
            emitted = [steps[0], *(s for s in steps[1:-1] if rng.random() < 0.3), steps[-1]]
            stamped = True
        else:
            emitted = [steps[-1]]
            stamped = rng.random() >= 0.25
        if not stamped:
            del order["updated_at"]
        for status, at in emitted:
            order["status"] = status
            if stamped:
                order["updated_at"] = iso(at, style)
            self.sink.later(at, _ORDERS, order)

    # behaviour and customer records

    def event(
        self,
        person: Person,
        source: str,
        kind: str,
        ts: int,
        anonymous_id: str | None,
        customer: Record | None,
        properties: Record,
    ) -> None:
        event_id = self.uuid()
        record: Record = {"event_id": event_id, "type": kind, "source": source}
        if anonymous_id:
            record["anonymous_id"] = anonymous_id
        if customer:
            record["customer"] = customer
        record["properties"] = properties
        record["occurred_at"] = iso(ts, "utc")
        if self.sink.later(ts, _EVENTS, record):
            self.sink.truth(f"event:{source}:{event_id}", person)

    def visit(self, person: Person, source: str, ts: int, device: str | None = None) -> Visit:
        logged_in = source in person.registered and self.rng.random() < 0.5
        customer = {"external_id": person.ids[source]} if logged_in else None
        return Visit(self, person, source, device or self.device(person), ts, customer)

    def shopping_visit(
        self,
        person: Person,
        source: str,
        ts: int,
        lines: list[tuple[Product, int]],
        subtotal: int,
        order_customer: Record,
        signs_up: bool,
    ) -> None:
        """The visit that ended in the order, and now and then an earlier anonymous one from the same
        device that this one ties to the person."""
        rng = self.rng
        if rng.random() < 0.25:
            return  # straight to checkout: an app, a saved cart
        if rng.random() < 0.3:
            self.browse(person, source, ts - rng.randrange(HOUR, 5 * DAY))
        visit = self.visit(person, source, ts - rng.randrange(5 * 60, 40 * 60))
        visit.emit("page_view", {"url": self.store_url, "referrer": rng.choice(_REFERRERS)}, gap=0)
        if rng.random() < 0.4:
            visit.emit("search", {"query": " ".join(lines[0][0].label.split()[:2])})
        for product, quantity in lines:
            visit.emit("product_view", self.product_properties(product), gap=240)
            visit.emit("add_to_cart", self.product_properties(product) | {"quantity": quantity})
        identified: Record = {k: order_customer[k] for k in ("external_id", "email") if k in order_customer}
        if "phone" in order_customer and rng.random() < 0.3:
            identified["phone"] = order_customer["phone"]
        visit.customer = identified
        if signs_up:
            visit.emit("signup", {"form": "checkout"})
        visit.emit("checkout_started", {"cart_value": money(subtotal), "items": len(lines)})

    def browse(self, person: Person, source: str, ts: int, device: str | None = None) -> None:
        """A visit that buys nothing: anonymous unless logged in; a few give their e-mail at checkout and
        leave."""
        rng = self.rng
        visit = self.visit(person, source, ts, device)
        visit.emit("page_view", {"url": self.store_url, "referrer": rng.choice(_REFERRERS)}, gap=0)
        if rng.random() < 0.4:
            visit.emit("search", {"query": " ".join(self.pick_product(person, 2).label.split()[:2])})
        product = self.pick_product(person, 2)
        for _ in range(rng.randint(1, 4)):
            product = self.pick_product(person, 2)
            visit.emit("product_view", self.product_properties(product), gap=300)
        if rng.random() < 0.2:
            visit.emit("add_to_cart", self.product_properties(product) | {"quantity": 1})
            if rng.random() < 0.25:
                visit.customer = {"email": noise.email_variant(self.email_for(person), rng)}
                visit.emit("checkout_started", {"cart_value": money(product.price), "items": 1}, gap=300)

    @staticmethod
    def product_properties(product: Product) -> Record:
        properties: Record = {"sku": product.sku, "price": money(product.price)}
        if product.category:
            properties["category"] = product.category
        return properties

    def registration(self, person: Person, source: str, ts: int, *, lead: bool = False) -> None:
        """The store's customer record: when the person signs up, and again when the address changes."""
        rng = self.rng
        first = source not in person.registered
        person.registered[source] = home = person.home_at(ts)
        external_id = self.customer_id(person, source)
        record: Record = {"source": source, "external_id": external_id}
        if not lead or rng.random() < 0.5:
            record["name"] = noise.name_variant(person.name, rng)
        record["email"] = noise.email_variant(person.emails[0] if lead else self.email_for(person), rng)
        if rng.random() < (0.3 if lead else 0.8):
            record["phone"] = noise.phone_variant(person.phone, rng)
        if not lead:
            if rng.random() < 0.6:
                record["document"] = noise.cpf_variant(person.cpf, rng)
            if rng.random() < 0.4:
                record["birth_date"] = person.birth.isoformat()
            if rng.random() < 0.4:
                record["gender"] = noise.gender_variant(person.gender, rng)
            record["address"] = self.address(home)
        record["updated_at"] = iso(ts)
        status = "granted" if lead or rng.random() < 0.5 else "denied"
        record["consents"] = [
            {
                "purpose": "marketing_email",
                "status": status,
                "at": iso(ts),
                "source": "newsletter" if lead else "signup",
            }
        ]
        if "phone" in record and rng.random() < 0.5:
            record["consents"].append({"purpose": "marketing_whatsapp", "status": "granted", "at": iso(ts)})
        if self.sink.later(ts, _CUSTOMERS, record) and first:
            self.sink.truth(f"customer:{source}:{external_id}", person)
            self.customer_records += 1

    def lead_signup(self, person: Person, ts: int) -> None:
        """A newsletter sign-up on the site, often after some anonymous browsing from the same device."""
        rng = self.rng
        device = self.device(person)
        if rng.random() < 0.6:
            self.browse(person, "site", ts - rng.randrange(60, 3 * DAY), device)
        self.registration(person, "site", ts, lead=True)
        customer = {"email": person.emails[0]}
        self.event(person, "site", "signup", ts - 5, device, customer, {"form": "newsletter"})

    def survey(self, person: Person, source: str, order_id: str, ts: int) -> None:
        rng = self.rng
        score = min(10, max(0, round(rng.gauss(8.3, 2.0))))
        if rng.random() < 0.7:
            customer = {"email": self.email_for(person)}
        else:
            customer = {"phone": noise.phone_variant(person.phone, rng)}  # answered on WhatsApp
        properties = {"survey": "nps", "score": score, "order_source": source, "order_id": order_id}
        self.event(person, "site", "survey_answered", ts, None, customer, properties)

    def crm_export(self) -> None:
        """The seller's CRM, exported the day before the reference date: a fifth of the people its own
        stores know, retyped by hand (capitals, masks, state names, the other e-mail)."""
        rng = self.rng
        at = END - DAY + 9 * HOUR
        for person in self.people:
            if not person.registered or rng.random() >= 0.2:
                continue
            external_id = f"CRM-{self.next_seq()}"
            record: Record = {
                "source": "crm",
                "external_id": external_id,
                "name": person.name.upper() if rng.random() < 0.5 else noise.name_variant(person.name, rng),
                "email": noise.email_variant(person.emails[-1], rng),
            }
            if rng.random() < 0.8:
                record["phone"] = noise.phone_variant(person.phone, rng)
            if rng.random() < 0.7:
                record["document"] = noise.cpf_variant(person.cpf, rng)
            if rng.random() < 0.5:
                record["birth_date"] = person.birth.isoformat()
            if rng.random() < 0.6:
                record["gender"] = noise.gender_variant(person.gender, rng)
            record["address"] = self.address(person.home_at(at))
            record["updated_at"] = iso(at - rng.randrange(30 * DAY))
            self.sink.later(at, _CUSTOMERS, record)
            self.sink.truth(f"customer:crm:{external_id}", person)
            self.customer_records += 1

    # the timeline

    def day_times(self, count: int) -> list[int]:
        rng = self.rng
        return [
            h * HOUR + rng.randrange(HOUR)
            for h in rng.choices(range(24), cum_weights=self._hour_cum, k=count)
        ]

    def run(self, counts: list[int], progress: Callable[[int], None] | None) -> None:
        """Day by day through the window: orders (buyers drawn from an urn holding each as many times as
        they buy), anonymous visits (half as many as orders) and newsletter sign-ups, then the CRM export."""
        rng, sink = self.rng, self.sink
        cumulative = list(itertools.accumulate(day_weights()))
        leads = [p for p in self.people if p.kind == "lead"]
        visitors = [p for p in self.people if p.kind == "visitor"] or self.people
        buyers = [p for p, c in zip(self.people, counts, strict=True) if c]
        daily = zip(
            spread(sum(counts), cumulative),
            spread(sum(counts) // 2, cumulative),
            spread(len(leads), cumulative),
            strict=True,
        )
        next_lead = iter(leads)
        urn = Urn(counts)
        for day, (orders, visits, signups) in enumerate(daily):
            start = START + day * DAY
            activities = sorted(
                [(s, 0) for s in self.day_times(orders)]
                + [(s, 1) for s in self.day_times(visits)]
                + [(s, 2) for s in self.day_times(signups)]
            )
            for second, kind in activities:
                ts = start + second
                sink.flush_until(ts - _FLUSH_LAG)
                if kind == 0:
                    self.place_order(self.people[urn.draw(rng)], ts)
                    if progress is not None and self.orders % 2_000 == 0:
                        progress(self.orders)
                elif kind == 1:
                    r = rng.random()
                    person = rng.choice(visitors if r < 0.45 else leads if r < 0.65 and leads else buyers)
                    self.browse(
                        person, person.home_source if person.home_source in OWN_STORES else "site", ts
                    )
                else:
                    self.lead_signup(next(next_lead), ts)
        self.crm_export()
        if progress is not None:
            progress(self.orders)


@dataclass(slots=True)
class Visit:
    """One visit to a store from one device: its events, a little apart, in order."""

    generator: Generator
    person: Person
    source: str
    device: str
    t: int
    customer: Record | None

    def emit(self, kind: str, properties: Record, *, gap: int = 120) -> None:
        if gap:
            self.t += self.generator.rng.randrange(5, gap)
        g = self.generator
        g.event(self.person, self.source, kind, self.t, self.device, self.customer, properties)


def generate(
    orders: int,
    seed: int,
    out_dir: Path,
    *,
    people: int | None = None,
    olist_dir: Path | None = None,
    tenant_name: str = "Loja Exemplo",
    progress: Callable[[int], None] | None = None,
) -> GenerationStats:
    """Writes `orders` orders, with their customers, events and ground truth, to `out_dir` (see the
    module docstring). `people` defaults to `orders / ORDERS_PER_PERSON`; `progress` is called now and
    then with the number of orders written so far."""
    if orders < 1:
        raise ValueError("orders must be at least 1")
    olist = olist_dir or DEFAULT_OLIST_DIR
    size = max(1, people if people is not None else round(orders / ORDERS_PER_PERSON))
    catalog = load_catalog(olist, random.Random(seed))  # noqa: S311 - reproducible test data
    sink = Sink(out_dir)
    try:
        generator = Generator(seed, catalog, load_locations(olist), sink, tenant_name)
        counts = generator.population.build(size, orders)
        generator.run(counts, progress)
    finally:
        sink.close()
    stats = GenerationStats(
        people=size,
        buyers=sum(1 for c in counts if c),
        repeat_buyers=sum(1 for c in counts if c > 1),
        orders=generator.orders,
        order_lines=sink.lines[_ORDERS],
        customer_records=generator.customer_records,
        customer_lines=sink.lines[_CUSTOMERS],
        events=sink.lines[_EVENTS],
        truth_records=sink.truth_records,
    )
    manifest = {
        "generator": "clientela generate",
        "orders": orders,
        "seed": seed,
        "people": size,
        "tenant_name": tenant_name,
        "reference": REFERENCE.isoformat(),
        "window_days": WINDOW_DAYS,
        "files": [*_STREAMS, TRUTH_FILE],
        "invariants": [
            "total == sum(item.quantity * item.unit_price) + shipping - discount",
            "sum(payment.amount) == total",
        ],
        "stats": asdict(stats),
    }
    (out_dir / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return stats


def generate_command(
    orders: Annotated[int, typer.Option(min=1, help="How many orders to write.")],
    out: Annotated[Path, typer.Option(file_okay=False, help="The folder to write to (created).")],
    seed: Annotated[int, typer.Option(help="The same seed gives the same files, byte for byte.")] = 0,
    tenant_name: Annotated[str, typer.Option(help="The seller; names its store's URLs.")] = "Loja Exemplo",
    people: Annotated[
        int | None, typer.Option(min=1, help="Population size [default: orders / 2.5].")
    ] = None,
    olist_dir: Annotated[
        Path, typer.Option(envvar="CLIENTELA_OLIST_DIR", exists=True, file_okay=False, help="The Olist data.")
    ] = DEFAULT_OLIST_DIR,
) -> None:
    """Write realistic marketplace orders, customers and events, and the truth of who is who."""
    console = Console(stderr=True)
    started = time.perf_counter()
    columns = (TextColumn("orders"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=orders < 10_000) as bar:
        task = bar.add_task("generate", total=orders)
        stats = generate(
            orders,
            seed,
            out,
            people=people,
            olist_dir=olist_dir,
            tenant_name=tenant_name,
            progress=lambda done: bar.update(task, completed=done),
        )
    elapsed = time.perf_counter() - started
    table = Table(title=f"{out} ({elapsed:.1f} s)", show_header=False)
    for key, value in asdict(stats).items():
        table.add_row(key.replace("_", " "), f"{value:,}")
    for name in (*_STREAMS, TRUTH_FILE):
        table.add_row(name, f"{(out / name).stat().st_size / 1e6:,.1f} MB")
    Console().print(table)
