"""The real Olist data the generator draws from: products (with English categories and estimated
prices) and buyer locations. Read from the shared data folder at run time, never copied into the repo."""

from __future__ import annotations

import csv
import gzip
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from shared.normalize import UF

# ../shared/data/olist next to the checkout (read-only, never copied in).
DEFAULT_OLIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "olist"
SUBSET = "subset_8135_orders"
# Olist prices are from 2016-2018; consumer prices (IPCA) rose by about 60% from then to 2026.
PRICE_INFLATION = 1.6
# Two Olist categories are missing from its own translation table.
_TRANSLATION_GAPS = {
    "pc_gamer": "pc_gamer",
    "portateis_cozinha_e_preparadores_de_alimentos": "kitchen_portables_and_food_preparers",
}
# Olist city names are lower case without accents; these words get their accents back.
_ACCENTED = {
    "sao": "são", "joao": "joão", "jose": "josé", "goiania": "goiânia", "brasilia": "brasília",
    "niteroi": "niterói", "vitoria": "vitória", "florianopolis": "florianópolis", "maringa": "maringá",
    "jundiai": "jundiaí", "belem": "belém", "maceio": "maceió", "cuiaba": "cuiabá", "macae": "macaé",
    "uberlandia": "uberlândia", "maua": "mauá", "taubate": "taubaté", "guaruja": "guarujá",
    "jacarei": "jacareí", "marilia": "marília", "petropolis": "petrópolis", "iguacu": "iguaçu",
    "carapicuiba": "carapicuíba", "luis": "luís", "goncalo": "gonçalo", "andre": "andré",
    "camacari": "camaçari", "itajai": "itajaí", "criciuma": "criciúma", "chapeco": "chapecó",
    "paranagua": "paranaguá", "braganca": "bragança", "hortolandia": "hortolândia", "sumare": "sumaré",
    "guacu": "guaçu", "ilheus": "ilhéus", "aracatuba": "araçatuba", "parana": "paraná", "piaui": "piauí",
    "teresopolis": "teresópolis", "anapolis": "anápolis", "pocos": "poços", "goias": "goiás",
}  # fmt: skip
_PARTICLES = frozenset({"da", "das", "de", "do", "dos", "e"})


class Product(NamedTuple):
    sku: str  # Olist's product id
    name: str
    category: str | None  # English, from Olist's translation table; None for uncategorised products
    label: str  # the category in Portuguese words, for searches
    price: int  # cents
    weight_g: int


@dataclass(frozen=True, slots=True)
class Catalog:
    by_category: list[list[Product]]  # best sellers first within each category
    category_weights: list[float]  # cumulative, for `random.choices`


class Location(NamedTuple):
    zip_prefix: str  # the first 5 digits of the CEP
    city: str  # as Olist writes it: lower case, no accents
    state: str  # UF code


def read_csv(path: Path) -> Iterator[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8-sig", newline="") as fh:
        yield from csv.DictReader(fh)


def read_columns(path: Path, *names: str) -> Iterator[tuple[str, ...]]:
    """Only the named columns, as tuples (several times faster than dicts on the 33k products)."""
    with gzip.open(path, "rt", encoding="utf-8-sig", newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows)
        picks = [header.index(name) for name in names]
        for row in rows:
            yield tuple(row[i] for i in picks)


def _lognormal_fit(prices: list[float]) -> tuple[float, float]:
    logs = [math.log(p) for p in prices]
    mu = sum(logs) / len(logs)
    sigma = math.sqrt(sum((x - mu) ** 2 for x in logs) / len(logs))
    return mu, min(max(sigma, 0.25), 1.2)


def _shelf_price(reais: float, rng: random.Random) -> int:
    """In cents; most prices end in ,90 or ,99."""
    r = rng.random()
    cents = 90 if r < 0.5 else 99 if r < 0.8 else 0 if r < 0.9 else rng.randrange(100)
    return max(4, int(reais)) * 100 + cents


def load_catalog(olist_dir: Path, rng: random.Random) -> Catalog:
    """Every Olist product. The products file has no prices: a product sold in the real order-items
    extract gets its median price there; any other one a lognormal price fitted to its category's real
    prices. Both are brought to 2026 money (`PRICE_INFLATION`). Categories are weighted by real sales."""
    translation = {
        row["product_category_name"]: row["product_category_name_english"]
        for row in read_csv(olist_dir / "product_category_name_translation.csv.gz")
    }
    columns = ("product_id", "product_category_name", "product_weight_g")
    rows = list(read_columns(olist_dir / "olist_products_dataset.csv.gz", *columns))
    category_of = {product_id: pt for product_id, pt, _ in rows}

    observed: dict[str, list[float]] = {}
    sold: dict[str, int] = {}
    items = olist_dir / SUBSET / "olist_order_items_dataset.csv.gz"
    for product_id, price in read_columns(items, "product_id", "price") if items.exists() else ():
        observed.setdefault(product_id, []).append(float(price))
        category = category_of.get(product_id, "")
        sold[category] = sold.get(category, 0) + 1
    category_prices: dict[str, list[float]] = {}
    for product_id, prices in observed.items():
        category_prices.setdefault(category_of.get(product_id, ""), []).extend(prices)
    overall = _lognormal_fit([p for prices in observed.values() for p in prices] or [45.0, 80.0, 120.0])
    fits = {c: _lognormal_fit(p) if len(p) >= 8 else overall for c, p in category_prices.items()}

    groups: dict[str, list[Product]] = {}
    for product_id, pt, weight in rows:
        prices = sorted(observed.get(product_id, ()))
        if prices:
            base = prices[len(prices) // 2]
        else:
            mu, sigma = fits.get(pt, overall)
            base = math.exp(rng.gauss(mu, sigma))
        label = pt.replace("_", " ").capitalize() if pt else "Produto"
        product = Product(
            sku=product_id,
            name=f"{label} {product_id[:6].upper()}",
            category=(translation.get(pt) or _TRANSLATION_GAPS.get(pt) or pt) if pt else None,
            label=label.lower(),
            price=_shelf_price(base * PRICE_INFLATION, rng),
            weight_g=int(weight) if weight.isdigit() else 500,
        )
        groups.setdefault(pt, []).append(product)
    for group in groups.values():
        rng.shuffle(group)  # which products of a category sell most
    weights = itertools.accumulate(sold.get(pt, 0) + 1.0 for pt in groups)
    return Catalog(list(groups.values()), list(weights))


def load_locations(olist_dir: Path) -> list[Location]:
    """Real (CEP prefix, city, state) triples, as often as buyers live there (Olist's customers; its
    sellers when the customers file is absent)."""
    customers = olist_dir / SUBSET / "olist_customers_dataset.csv.gz"
    path, who = (
        (customers, "customer")
        if customers.exists()
        else (olist_dir / "olist_sellers_dataset.csv.gz", "seller")
    )
    columns = (f"{who}_zip_code_prefix", f"{who}_city", f"{who}_state")
    return [
        Location(zip_prefix.zfill(5), city.strip(), state.strip().upper())
        for zip_prefix, city, state in read_columns(path, *columns)
        if state.strip().upper() in UF
    ]


def pretty_city(raw: str) -> str:
    """`sao jose do rio preto` → `São José do Rio Preto`."""
    words = []
    for i, word in enumerate(raw.lower().split()):
        if word in _ACCENTED:
            word = _ACCENTED[word]
        elif word.endswith("cao") and len(word) > 4 and word[-4] in "aeioun":
            word = word[:-3] + "ção"
        elif word.endswith("ao") and len(word) > 3:
            word = word[:-2] + "ão"
        words.append(word if i and word in _PARTICLES else word[:1].upper() + word[1:])
    return " ".join(words)
