"""The people behind the generated data: who they are (pt_BR names, valid CPFs, e-mails, mobiles, homes
at real Olist locations), which households share a phone, who moves, and how many orders each places."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import NamedTuple

from faker import Faker

from cli import noise
from cli.olist import Catalog, Location

# The others only sign up for the newsletter (leads) or only browse (visitors).
BUYER_SHARE = 0.85
# Area codes by state, the capital's first.
DDD = {
    "SP": (11, 12, 13, 14, 15, 16, 17, 18, 19), "RJ": (21, 22, 24), "ES": (27, 28),
    "MG": (31, 32, 33, 34, 35, 37, 38), "PR": (41, 42, 43, 44, 45, 46), "SC": (48, 47, 49),
    "RS": (51, 53, 54, 55), "DF": (61,), "GO": (62, 64), "TO": (63,), "MT": (65, 66), "MS": (67,),
    "AC": (68,), "RO": (69,), "BA": (71, 73, 74, 75, 77), "SE": (79,), "PE": (81, 87), "AL": (82,),
    "PB": (83,), "RN": (84,), "CE": (85, 88), "PI": (86, 89), "PA": (91, 93, 94), "AM": (92, 97),
    "RR": (95,), "AP": (96,), "MA": (98, 99),
}  # fmt: skip
_EMAIL_DOMAINS = (
    ("gmail.com", 55), ("hotmail.com", 16), ("outlook.com", 7), ("yahoo.com.br", 6), ("icloud.com", 4),
    ("uol.com.br", 3), ("bol.com.br", 3), ("hotmail.com.br", 2), ("live.com", 2), ("terra.com.br", 1),
    ("globo.com", 1),
)  # fmt: skip
_STREET_KINDS = (
    ("Rua", 66), ("Avenida", 18), ("Travessa", 5), ("Alameda", 4), ("Estrada", 3), ("Praça", 2),
    ("Rodovia", 2),
)  # fmt: skip


class Home(NamedTuple):
    street: str
    number: str
    complement: str | None
    district: str
    city: str  # Olist spelling (lower case, no accents)
    state: str
    zip: str  # 8 digits


@dataclass(slots=True)
class Person:
    pid: str
    kind: str  # buyer | lead | visitor
    gender: str
    first: str
    last: str
    birth: date
    cpf: str
    emails: list[str]  # a few people use two
    phone: str  # DDD + number; a household shares one
    homes: list[Home]  # the second from `moved_at`
    moved_at: int | None
    home_source: str  # the channel they prefer
    favourite: int  # a category index
    # Filled in as they act:
    devices: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # per-channel customer ids and relay addresses
    registered: dict[str, Home] = field(default_factory=dict)  # own store -> the address it has
    orders_on: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    def home_at(self, ts: int) -> Home:
        if self.moved_at is not None and ts >= self.moved_at:
            return self.homes[-1]
        return self.homes[0]


class Urn:
    """Draws indices without replacement, each as often as its count (a Fenwick tree: O(log n) a draw,
    so the order stream needs no list of all orders)."""

    def __init__(self, counts: list[int]) -> None:
        n = len(counts)
        tree = [0, *counts]
        for i in range(1, n + 1):
            parent = i + (i & -i)
            if parent <= n:
                tree[parent] += tree[i]
        self._tree = tree
        self._n = n
        self._top = 1 << (n.bit_length() - 1) if n else 0
        self.left = sum(counts)

    def draw(self, rng: random.Random) -> int:
        tree, n = self._tree, self._n
        rest = rng.randrange(self.left)
        pos, step = 0, self._top
        while step:
            nxt = pos + step
            if nxt <= n and tree[nxt] <= rest:
                pos = nxt
                rest -= tree[nxt]
            step >>= 1
        i = pos + 1
        while i <= n:
            tree[i] -= 1
            i += i & -i
        self.left -= 1
        return pos


class Population:
    """Makes the people, drawing from the generator's `rng` and `fake` (so the whole run stays one
    deterministic sequence). `reference` is the day the data ends; `start`, `end` (epoch seconds) the
    window in which people may move."""

    def __init__(
        self,
        rng: random.Random,
        fake: Faker,
        catalog: Catalog,
        locations: list[Location],
        *,
        reference: date,
        start: int,
        end: int,
        channels: dict[str, int],
    ) -> None:
        self.rng = rng
        self.fake = fake
        self.catalog = catalog
        self.locations = locations
        self.reference = reference
        self.start, self.end = start, end
        self.people: list[Person] = []
        self._channels = list(channels)
        self._channel_cum = list(itertools.accumulate(channels.values()))
        self._domain_cum = list(itertools.accumulate(w for _, w in _EMAIL_DOMAINS))
        self._street_cum = list(itertools.accumulate(w for _, w in _STREET_KINDS))
        self._used: set[str] = set()  # e-mails, phones and CPFs already given to someone

    def build(self, size: int, orders: int) -> list[int]:
        """Creates `size` people; returns how many orders each will place (0 for leads and visitors).

        Every buyer buys once; the other orders go to buyers in proportion to gamma(0.25) weights, so
        about 6 in 10 buy once and a few buy dozens of times."""
        rng = self.rng
        buyers = max(1, min(orders, round(size * BUYER_SHARE), size))
        leads = round((size - buyers) * 0.45)
        kinds = ["buyer"] * buyers + ["lead"] * leads + ["visitor"] * (size - buyers - leads)
        rng.shuffle(kinds)
        for i, kind in enumerate(kinds):
            self.people.append(self.person(i, kind))
        buyer_ids = [i for i, kind in enumerate(kinds) if kind == "buyer"]
        counts = [0] * size
        for i in buyer_ids:
            counts[i] = 1
        weights = list(itertools.accumulate(rng.gammavariate(0.25, 1.0) for _ in buyer_ids))
        extra = orders - len(buyer_ids)
        while extra > 0:
            chunk = min(extra, 10_000)
            for j in rng.choices(range(len(buyer_ids)), cum_weights=weights, k=chunk):
                counts[buyer_ids[j]] += 1
            extra -= chunk
        return counts

    def channel(self) -> str:
        return self.rng.choices(self._channels, cum_weights=self._channel_cum)[0]

    def person(self, index: int, kind: str) -> Person:
        rng, fake = self.rng, self.fake
        gender = "female" if rng.random() < 0.52 else "male"
        first = fake.first_name_female() if gender == "female" else fake.first_name_male()
        # Some live with someone made shortly before (a family): same surname, address and phone.
        family = None
        if index and rng.random() < 0.06:
            family = self.people[rng.randrange(max(0, index - 50), index)]
        if family is not None:
            last = family.last
        else:
            last = fake.last_name()
            if rng.random() < 0.6 and (second := fake.last_name()) != last:
                last = f"{last} {second}"
        birth = self.reference - timedelta(days=int(rng.triangular(18, 80, 31) * 365.25))
        homes = [family.homes[0] if family else self.home()]
        moved_at = None
        if family is None and rng.random() < 0.04:
            homes.append(self.home())
            moved_at = rng.randrange(self.start, self.end)
        emails = [self.email(first, last, birth)]
        if rng.random() < 0.12:
            emails.append(self.email(first, last, birth))
        categories = range(len(self.catalog.by_category))
        return Person(
            pid=f"P{index + 1:07d}",
            kind=kind,
            gender=gender,
            first=first,
            last=last,
            birth=birth,
            cpf=self.unique(lambda: noise.cpf(rng)),
            emails=emails,
            phone=family.phone if family else self.mobile(homes[0].state),
            homes=homes,
            moved_at=moved_at,
            home_source=self.channel(),
            favourite=rng.choices(categories, cum_weights=self.catalog.category_weights)[0],
        )

    def unique(self, make: Callable[[], str]) -> str:
        while (value := make()) in self._used:
            pass
        self._used.add(value)
        return value

    def mobile(self, state: str) -> str:
        rng = self.rng
        codes = DDD[state]
        ddd = codes[0] if rng.random() < 0.55 else rng.choice(codes)
        # 9 + 8 digits starting 6-9, so that the pre-2016 8-digit form is still recognisably a mobile.
        return self.unique(lambda: f"{ddd}9{rng.randint(6, 9)}{rng.randrange(10**7):07d}")

    def email(self, first: str, last: str, birth: date) -> str:
        rng = self.rng
        f = noise.ascii_word(first.split()[0])
        s = rng.choice([noise.ascii_word(w) for w in last.split() if len(w) > 3] or ["silva"])
        yy = f"{birth.year % 100:02d}"
        local = rng.choice(
            (
                f"{f}.{s}",
                f"{f}{s}",
                f"{f}_{s}",
                f"{f}.{s}{yy}",
                f"{f}{yy}",
                f"{f[0]}{s}",
                f"{f}{s}{birth.year}",
            )
        )
        domain = rng.choices(_EMAIL_DOMAINS, cum_weights=self._domain_cum)[0][0]
        return self.unique(
            lambda: f"{local}@{domain}" if rng.random() < 0.5 else f"{local}{rng.randrange(1000)}@{domain}"
        )

    def home(self) -> Home:
        rng, fake = self.rng, self.fake
        location = rng.choice(self.locations)
        kind = rng.choices(_STREET_KINDS, cum_weights=self._street_cum)[0][0]
        honoree = fake.last_name() if rng.random() < 0.5 else f"{fake.first_name()} {fake.last_name()}"
        r = rng.random()
        if r < 0.55:
            complement = None
        elif r < 0.85:
            complement = f"Apto {rng.randint(1, 25)}{rng.randint(1, 8):02d}"
        elif r < 0.93:
            complement = f"Casa {rng.randint(1, 4)}"
        else:
            complement = f"Bloco {rng.choice('ABCDE')} Apto {rng.randint(1, 15)}{rng.randint(1, 4):02d}"
        return Home(
            street=f"{kind} {honoree}",
            number="s/n" if rng.random() < 0.02 else str(min(9999, int(rng.paretovariate(1.1) * 15))),
            complement=complement,
            district="Centro" if rng.random() < 0.12 else fake.bairro(),
            city=location.city,
            state=location.state,
            zip=f"{location.zip_prefix}{rng.randrange(1000):03d}",
        )
