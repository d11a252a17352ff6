"""Probabilistic identity resolution (second stage): are two profiles one person, although no identifier
links them?

The deterministic rules in `services.profile.identity` merge profiles that share a document, a customer
id or an e-mail. What they cannot see is the same buyer arriving as `MARIA SILVA` with an old phone on
one channel and as `Maria Slva` with the 9th digit on another. For those, the profile service fetches
candidate profiles that share a blocking key (`blocking_keys`), scores each pair here (`score`) and acts
on the result (`decide`): a merge above one threshold, a suggestion for a person to accept or reject in
a grey zone.

The score is Fellegi-Sunter. Each comparison (name, birth date, CEP, ...) lands on an agreement level;
each level has an m-probability (of that outcome when the two profiles are the same person) and a
u-probability (when they are not). The partial weight of a level is log2(m / u) bits; a comparison with
a value missing on either side says nothing (0 bits). The total weight is the prior's log2 odds plus the
partial weights, and the match probability is 2^w / (1 + 2^w).

Two deliberate departures from textbook independence:
- Members of a household share the phone, the CEP and the street: those agreements come together, and
  among different people they come from the same cause. Together they count at most as much as "same
  household" (`Weights.household`), so a family is told apart by names and birth dates.
- Two different documents (CPF or CNPJ) are a veto: a person has one CPF, and the deterministic stage
  never merges two documents either (`identity.LIMITS`).

Everything here is pure: no database, no I/O, no clock. Values are personal data: nothing here logs
them, and `Match` explains a score with comparison and level names only.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from functools import lru_cache
from typing import Literal, NamedTuple

from rapidfuzz import fuzz
from rapidfuzz.distance import OSA, JaroWinkler

from shared.normalize import fold, is_relay_email

Decision = Literal["merge", "suggest"]

# Comparison names, in the order contributions are reported.
DOCUMENT, NAME, BIRTH_DATE, EMAIL, PHONE, ZIP, CITY, STREET = (
    "document",
    "name",
    "birth_date",
    "email",
    "phone",
    "zip",
    "city",
    "street",
)
COMPARISONS = (DOCUMENT, NAME, BIRTH_DATE, EMAIL, PHONE, ZIP, CITY, STREET)
# Agreements that everyone in a household shares (see the module docstring).
HOUSEHOLD = frozenset({PHONE, ZIP, CITY, STREET})
MISSING = "missing"
HOUSEHOLD_CAP = "household"  # the contribution that holds the household comparisons to their cap

NAME_CLOSE = 0.92  # Jaro-Winkler: most single slips in a full name stay above it (see `_close`)
NAME_TOKENS = 90.0  # rapidfuzz token-set ratio: a name shortened to first and last word scores 100
EMAIL_CLOSE = 0.92  # Jaro-Winkler of e-mail local parts without digits, dots, dashes and underscores
STREET_TOKENS = 90.0  # token-set ratio of folded street names with abbreviations expanded


@dataclass(frozen=True, slots=True)
class MatchFields:
    """What is compared of a profile, already normalised (`shared.normalize`): a name, a birth date, a CEP
    of 8 digits (or a 5-digit prefix), a city and UF, a street and number, E.164 phones, e-mails and a
    CPF/CNPJ. Placeholder phones and e-mails are expected to be gone (`identity.identifiers_of` drops
    them before they are stored)."""

    name: str | None = None
    birth_date: date | None = None
    zip: str | None = None
    city: str | None = None
    state: str | None = None
    street: str | None = None
    number: str | None = None
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    document: str | None = None


class MU(NamedTuple):
    """The probability of an agreement level among pairs that are one person (m) and pairs that are
    not (u)."""

    m: float
    u: float

    @property
    def weight(self) -> float:
        """The partial match weight in bits."""
        return math.log2(self.m / self.u)


Levels = Mapping[str, MU]

# The levels of each comparison, strongest first. A document has no "disagree" level: it is a veto.
LEVELS: dict[str, tuple[str, ...]] = {
    DOCUMENT: ("exact",),
    NAME: ("exact", "close", "tokens", "generation", "disagree"),
    BIRTH_DATE: ("exact", "near", "disagree"),
    EMAIL: ("exact", "similar", "disagree"),
    PHONE: ("exact", "disagree"),
    ZIP: ("exact", "prefix", "disagree"),
    CITY: ("exact", "disagree"),
    STREET: ("exact", "same_street", "disagree"),
}


def _levels(**values: MU) -> dict[str, MU]:
    return dict(values)


@dataclass(frozen=True, slots=True)
class Weights:
    """m and u per agreement level, the household cap and the prior.

    The defaults are reasoned estimates for Brazilian marketplace data, not fitted values: m from how
    often the same buyer's details differ between channels (name typos, ALL CAPS and shortened names,
    mobiles written without the 9th digit, people who move or keep two e-mails, as `cli.noise` and
    `cli.generate` reproduce them); u from how often two different customers agree by chance in a
    national customer base (very common names such as Maria/José da Silva, a CEP shared by a street or a
    building, São Paulo holding a large share of buyers). Fit them to a tenant's data (`estimate_u` for
    the u side, EM or labelled merges for m) before trusting the thresholds.

    `prior` is the probability that two profiles of a tenant are one person before looking at them; about
    one in 10,000 for a tenant of tens of thousands of profiles after the deterministic stage. Larger
    tenants have smaller priors (the same evidence then says less).
    """

    name: Levels = field(
        default_factory=lambda: _levels(
            # Folded (accents, case, particles) names agree for most; typos and shortened names are
            # common; a different name on the same person's profile (nickname, spouse) is rare. A
            # random pair shares a full name about 1 in 2,000 (Brazilian names concentrate).
            exact=MU(0.75, 0.0005),
            close=MU(0.10, 0.001),
            tokens=MU(0.10, 0.002),
            # Names equal but for Júnior/Filho/Neto/Sobrinho: as often father and son as one man
            # dropping his suffix, so no evidence either way.
            generation=MU(0.01, 0.01),
            disagree=MU(0.04, 0.9865),
        )
    )
    birth_date: Levels = field(
        default_factory=lambda: _levels(
            # About 1 in 20,000 random pairs share a birth date (ages 18-80, with clustering).
            exact=MU(0.94, 0.0001),
            # Day and month swapped, or one of day, month or year mistyped.
            near=MU(0.03, 0.004),
            disagree=MU(0.03, 0.9959),
        )
    )
    email: Levels = field(
        default_factory=lambda: _levels(
            # Exact addresses usually merged in the first stage; people keep two addresses, and
            # marketplaces hide them behind relays, so a disagreement is weak evidence.
            exact=MU(0.55, 0.000001),
            similar=MU(0.15, 0.002),
            disagree=MU(0.30, 0.997999),
        )
    )
    phone: Levels = field(
        default_factory=lambda: _levels(
            # Among different people, a shared number is mostly a shared household (see `household`).
            exact=MU(0.55, 0.00001),
            disagree=MU(0.45, 0.99999),
        )
    )
    zip: Levels = field(
        default_factory=lambda: _levels(
            # People move, and ship to work; a CEP can be a single street or building.
            exact=MU(0.85, 0.0002),
            prefix=MU(0.05, 0.005),
            disagree=MU(0.10, 0.9948),
        )
    )
    city: Levels = field(
        default_factory=lambda: _levels(
            # Only when a CEP is missing. The largest cities hold a large share of buyers.
            exact=MU(0.90, 0.05),
            disagree=MU(0.10, 0.95),
        )
    )
    street: Levels = field(
        default_factory=lambda: _levels(
            exact=MU(0.75, 0.00005),
            same_street=MU(0.05, 0.002),
            disagree=MU(0.20, 0.99795),
        )
    )
    # Phone, CEP, city and street together count at most this: P(same household | one person) against
    # P(same household | two people) ≈ 16 bits.
    household: MU = field(default_factory=lambda: MU(0.6, 0.00001))
    prior: float = 0.0001
    document: Levels = field(default_factory=lambda: _levels(exact=MU(0.99, 0.0000001)))

    def __post_init__(self) -> None:
        if not 0.0 < self.prior < 1.0:
            raise ValueError("prior must be strictly between 0 and 1")
        _check_mu("household", self.household)
        for comparison in COMPARISONS:
            levels = self.levels(comparison)
            if set(levels) != set(LEVELS[comparison]):
                raise ValueError(f"{comparison} needs exactly the levels {', '.join(LEVELS[comparison])}")
            for level, mu in levels.items():
                _check_mu(f"{comparison}.{level}", mu)
            for side in ("m", "u"):
                if sum(getattr(mu, side) for mu in levels.values()) > 1.0 + 1e-9:
                    raise ValueError(f"the {side}-probabilities of {comparison} add up to more than 1")

    def levels(self, comparison: str) -> Levels:
        levels: Levels = getattr(self, comparison)
        return levels

    def weight(self, comparison: str, level: str | None) -> float:
        """The partial weight in bits of a level; 0 for a missing value."""
        return 0.0 if level is None else self.levels(comparison)[level].weight


def _check_mu(where: str, mu: MU) -> None:
    if not (0.0 < mu.m <= 1.0 and 0.0 < mu.u <= 1.0):
        raise ValueError(f"{where}: m and u must be in (0, 1]")


DEFAULT_WEIGHTS = Weights()


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one comparison added to the weight, in bits. Never the compared values (personal data)."""

    comparison: str
    level: str
    weight: float


@dataclass(frozen=True, slots=True)
class Match:
    """A scored pair: the total weight (log2 odds, prior included), the match probability and the
    contributions that explain it (they add up to `weight - prior_weight`). `veto` says why the pair can
    never be one person (the probability is then 0)."""

    weight: float
    probability: float
    prior_weight: float
    contributions: tuple[Contribution, ...]
    veto: str | None = None


# ---------------------------------------------------------------------------------------------- names

_PARTICLES = frozenset({"da", "das", "de", "do", "dos", "e", "di", "du", "del", "van", "von"})
# Generational agnomens: "João Silva Filho" is often the son of "João Silva" at the same address.
_SUFFIXES = {"junior": "junior", "jr": "junior", "filho": "filho", "neto": "neto", "sobrinho": "sobrinho"}
_NOT_LETTERS = re.compile(r"[^a-z]+")


class _Name(NamedTuple):
    core: str  # folded words without particles and agnomens
    first: str
    last: str
    suffixes: frozenset[str]


@lru_cache(maxsize=65536)
def _name(value: str | None) -> _Name | None:
    if value is None:
        return None
    words = [w for w in _NOT_LETTERS.split(fold(value)) if w and w not in _PARTICLES]
    core = [w for i, w in enumerate(words) if i == 0 or w not in _SUFFIXES]
    if not core:
        return None
    suffixes = frozenset(_SUFFIXES[w] for w in words[1:] if w in _SUFFIXES)
    return _Name(" ".join(core), core[0], core[-1], suffixes)


def _jaro_winkler(a: str, b: str) -> float:
    # Ordered arguments: the result, and so the score, cannot depend on which profile came first.
    low, high = sorted((a, b))
    return float(JaroWinkler.similarity(low, high))


def _token_set(a: str, b: str) -> float:
    low, high = sorted((a, b))
    return float(fuzz.token_set_ratio(low, high))


def _close(a: str, b: str) -> bool:
    """Jaro-Winkler at least `NAME_CLOSE`, or one letter swapped, dropped, added or changed in a word of
    four letters or more (Jaro-Winkler punishes an early slip such as `Ctarina` for `Catarina`)."""
    low, high = sorted((a, b))
    if _jaro_winkler(low, high) >= NAME_CLOSE:
        return True
    return min(len(low), len(high)) >= 4 and OSA.distance(low, high, score_cutoff=1) <= 1


def _compare_core(a: _Name, b: _Name) -> str:
    if a.core == b.core:
        return "exact"
    if _close(a.core, b.core):
        return "close"
    # A shortened name keeps the first name; relatives share surnames and differ in the first name.
    if _token_set(a.core, b.core) >= NAME_TOKENS and _close(a.first, b.first):
        return "tokens"
    return "disagree"


def compare_names(a: str | None, b: str | None) -> str | None:
    """exact | close (Jaro-Winkler, or one edit) | tokens (token set, same first name) | generation
    (equal but for an agnomen such as Filho) | disagree; None when a name is missing. Names are compared
    folded (no accents, lower case) and without particles (`da`, `dos`, ...)."""
    left, right = _name(a), _name(b)
    if left is None or right is None:
        return None
    level = _compare_core(left, right)
    if left.suffixes != right.suffixes and level != "disagree":
        return "generation"
    return level


# -------------------------------------------------------------------------------------- birth dates


def compare_birth_dates(a: date | None, b: date | None) -> str | None:
    """exact | near (day and month swapped, or one of day, month and year different) | disagree."""
    if a is None or b is None:
        return None
    if a == b:
        return "exact"
    same = (a.year == b.year) + (a.month == b.month) + (a.day == b.day)
    swapped = a.year == b.year and a.day == b.month and a.month == b.day
    return "near" if same == 2 or swapped else "disagree"


# ------------------------------------------------------------------------------------------- e-mails

_LOCAL_NOISE = re.compile(r"[\d._\-]+")


def _mailbox(email: str) -> tuple[str, str]:
    """(local part without a +tag, domain): `maria+loja@x` and `maria@x` are one mailbox, and Mercado
    Livre tags its relay addresses per conversation (`nick.abc123+2-xyz@...`)."""
    local, _, domain = email.lower().rpartition("@")
    return local.partition("+")[0], domain


def compare_emails(a: Sequence[str], b: Sequence[str]) -> str | None:
    """exact (one mailbox in common) | similar (own addresses with close local parts, digits and
    separators aside) | disagree; None when no pair is comparable. A relay address identifies a buyer
    only within its marketplace: it is compared with relay addresses of the same marketplace, exactly."""
    comparable: list[tuple[tuple[str, str], tuple[str, str], bool]] = []
    for x in a:
        for y in b:
            relay_x, relay_y = is_relay_email(x), is_relay_email(y)
            mx, my = _mailbox(x), _mailbox(y)
            if relay_x != relay_y or (relay_x and mx[1] != my[1]):
                continue
            comparable.append((mx, my, relay_x))
    if not comparable:
        return None
    if any(mx == my for mx, my, _ in comparable):
        return "exact"
    for (lx, _), (ly, _), relay in comparable:
        cx, cy = _LOCAL_NOISE.sub("", lx), _LOCAL_NOISE.sub("", ly)
        if not relay and min(len(cx), len(cy)) >= 3 and _jaro_winkler(cx, cy) >= EMAIL_CLOSE:
            return "similar"
    return "disagree"


# -------------------------------------------------------------------------------------------- phones


def _last8(phone: str) -> str | None:
    digits = re.sub(r"\D", "", phone)
    return digits[-8:] if len(digits) >= 8 else None


def compare_phones(a: Sequence[str], b: Sequence[str]) -> str | None:
    """exact (the same last 8 digits: a mobile with and without its 9th digit agree) | disagree."""
    left = {d for p in a if (d := _last8(p))}
    right = {d for p in b if (d := _last8(p))}
    if not left or not right:
        return None
    return "exact" if left & right else "disagree"


# ------------------------------------------------------------------------------------------ addresses


def compare_zips(a: str | None, b: str | None) -> str | None:
    """exact (8 digits) | prefix (same first 5 digits: the same sector, or a 5-digit CEP) | disagree."""
    if not a or not b:
        return None
    if a == b and len(a) == 8:
        return "exact"
    return "prefix" if a[:5] == b[:5] else "disagree"


def compare_cities(a: MatchFields, b: MatchFields) -> str | None:
    """exact | disagree, only when a CEP is missing: a CEP already says the city, and counting both
    would count one fact twice."""
    if (a.zip and b.zip) or not a.city or not b.city:
        return None
    if a.state and b.state and a.state.upper() != b.state.upper():
        return "disagree"
    return "exact" if fold(a.city) == fold(b.city) else "disagree"


_STREET_WORDS = {
    "r": "rua",
    "av": "avenida",
    "avda": "avenida",
    "al": "alameda",
    "tv": "travessa",
    "trav": "travessa",
    "pc": "praca",
    "pca": "praca",
    "pq": "parque",
    "rod": "rodovia",
    "estr": "estrada",
    "est": "estrada",
    "lgo": "largo",
    "lg": "largo",
    "dr": "doutor",
    "prof": "professor",
    "profa": "professora",
    "gen": "general",
    "cel": "coronel",
    "pres": "presidente",
    "sen": "senador",
    "dep": "deputado",
    "eng": "engenheiro",
    "sta": "santa",
    "sto": "santo",
    "n": "nossa",
    "sra": "senhora",
}
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_NO_NUMBER = frozenset({"", "sn", "0", "snr", "semnumero"})


@lru_cache(maxsize=65536)
def _street(value: str) -> str:
    words = [w for w in _NOT_ALNUM.split(fold(value)) if w and w not in _PARTICLES]
    return " ".join(_STREET_WORDS.get(w, w) for w in words)


def _number(value: str | None) -> str | None:
    number = _NOT_ALNUM.sub("", fold(value)) if value else ""
    return None if number in _NO_NUMBER else number.lstrip("0") or None


def compare_streets(a: MatchFields, b: MatchFields) -> str | None:
    """exact (same street and number) | same_street (number different or unknown) | disagree."""
    if not a.street or not b.street:
        return None
    left, right = _street(a.street), _street(b.street)
    if not left or not right:
        return None
    if left != right and _token_set(left, right) < STREET_TOKENS:
        return "disagree"
    na, nb = _number(a.number), _number(b.number)
    return "exact" if na is not None and na == nb else "same_street"


# ------------------------------------------------------------------------------------------ documents


def compare_documents(a: str | None, b: str | None) -> str | None:
    """exact | disagree (a veto, not a level); None when a document is missing."""
    if not a or not b:
        return None
    return "exact" if a == b else "disagree"


# ---------------------------------------------------------------------------------------------- score


def compare(a: MatchFields, b: MatchFields) -> dict[str, str | None]:
    """The agreement level of every comparison (None: a value is missing), in `COMPARISONS` order."""
    return {
        DOCUMENT: compare_documents(a.document, b.document),
        NAME: compare_names(a.name, b.name),
        BIRTH_DATE: compare_birth_dates(a.birth_date, b.birth_date),
        EMAIL: compare_emails(a.emails, b.emails),
        PHONE: compare_phones(a.phones, b.phones),
        ZIP: compare_zips(a.zip, b.zip),
        CITY: compare_cities(a, b),
        STREET: compare_streets(a, b),
    }


def log2_odds(probability: float) -> float:
    return math.log2(probability) - math.log2(1.0 - probability)


def probability_of(weight: float) -> float:
    """2^w / (1 + 2^w), without overflow."""
    if weight == -math.inf:
        return 0.0
    if weight >= 0:
        return 1.0 / (1.0 + math.pow(2.0, -weight))
    odds = math.pow(2.0, weight)
    return odds / (1.0 + odds)


def score(a: MatchFields, b: MatchFields, weights: Weights = DEFAULT_WEIGHTS) -> Match:
    """The Fellegi-Sunter score of a pair of profiles; symmetric in `a` and `b`."""
    levels = compare(a, b)
    prior = log2_odds(weights.prior)
    contributions: list[Contribution] = []
    veto = "different documents" if levels[DOCUMENT] == "disagree" else None
    for comparison, level in levels.items():
        if comparison == DOCUMENT and veto is not None:
            contributions.append(Contribution(comparison, "disagree", 0.0))
            continue
        contributions.append(Contribution(comparison, level or MISSING, weights.weight(comparison, level)))
    household = sum(c.weight for c in contributions if c.comparison in HOUSEHOLD)
    if household > weights.household.weight:
        contributions.append(Contribution(HOUSEHOLD_CAP, "capped", weights.household.weight - household))
    if veto is not None:
        return Match(-math.inf, 0.0, prior, tuple(contributions), veto)
    total = prior + math.fsum(c.weight for c in contributions)
    return Match(total, probability_of(total), prior, tuple(contributions))


def decide(match: Match, merge_threshold: float = 0.95, suggest_threshold: float = 0.6) -> Decision | None:
    """merge at or above `merge_threshold`, suggest (for a person to accept or reject) at or above
    `suggest_threshold`, else nothing. A vetoed pair is never merged nor suggested."""
    if not 0.0 <= suggest_threshold <= merge_threshold <= 1.0:
        raise ValueError("thresholds must satisfy 0 <= suggest_threshold <= merge_threshold <= 1")
    if match.veto is not None:
        return None
    if match.probability >= merge_threshold:
        return "merge"
    if match.probability >= suggest_threshold:
        return "suggest"
    return None


# ------------------------------------------------------------------------------------------- blocking

_PHONETIC_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"ph", "f"),
        (r"th", "t"),
        (r"[cs]h", "x"),
        (r"lh", "l"),
        (r"nh", "n"),
        (r"g(?=[ei])", "j"),
        (r"gu(?=[ei])", "g"),
        (r"qu", "k"),
        (r"c(?=[ei])", "s"),
        (r"[cq]", "k"),
        (r"z", "s"),
        (r"y", "i"),
        (r"w", "v"),
        (r"h", ""),
        (r"(.)\1+", r"\1"),
    )
)
_VOWELS = re.compile(r"[aeiou]")


def phonetic(word: str) -> str:
    """A rough Portuguese sound key of a word: its first letter and up to three consonant sounds
    (`Thiago`/`Tiago` → `tg`, `Luiz`/`Luis` → `ls`, `Raphael`/`Rafael` → `rfl`)."""
    key = fold(word)
    for pattern, replacement in _PHONETIC_RULES:
        key = pattern.sub(replacement, key)
    return (key[:1] + _VOWELS.sub("", key[1:]))[:4] if key else ""


MAX_PHONE_KEYS = 2


def blocking_keys(fields: MatchFields) -> set[str]:
    """At most five keys; two records of one person very likely share one, two random records very
    likely share none. The profile service stores them with the profile and scores the profiles that
    share a key. They hold personal data (digits of a phone, a birth date): store them like identifiers,
    never log them.

    - `zip:<CEP prefix>:<initials>`: the CEP's first 5 digits and the initials of the first name and the
      last surname. Typos keep first letters, shortened names keep the first and last word, and the
      prefix survives a mistyped CEP suffix.
    - `dob:<birth date>:<initial>`: the birth date and the first name's initial (people who moved).
    - `phone:<last 8 digits>`, for at most two phones (the smallest): a mobile with and without its 9th
      digit share it (a household too: the score tells them apart).
    - `place:<UF>:<city>:<sound of first name>:<surname initial>`: for records without a CEP or that
      moved within a city.
    """
    keys: set[str] = set()
    name = _name(fields.name)
    initials = f"{name.first[0]}{name.last[0]}" if name else None
    if fields.zip and len(fields.zip) >= 5 and initials:
        keys.add(f"zip:{fields.zip[:5]}:{initials}")
    if fields.birth_date and name:
        keys.add(f"dob:{fields.birth_date.isoformat()}:{name.first[0]}")
    for last8 in sorted({d for p in fields.phones if (d := _last8(p))})[:MAX_PHONE_KEYS]:
        keys.add(f"phone:{last8}")
    if fields.city and name:
        state = fields.state.upper() if fields.state else ""
        keys.add(f"place:{state}:{fold(fields.city)}:{phonetic(name.first)}:{name.last[0]}")
    return keys


# --------------------------------------------------------------------------------------- u estimation


def estimate_u(
    population: Sequence[MatchFields],
    weights: Weights = DEFAULT_WEIGHTS,
    *,
    pairs: int = 100_000,
    seed: int = 0,
) -> Weights:
    """`weights` with u-probabilities measured on random pairs of `population` (a tenant's profiles).

    Random pairs are nearly all different people, so how often they land on a level estimates its u.
    Counts get half a pseudo-count per level: a level never seen in the sample gets a small u rather
    than zero (and so a finite weight; with few pairs this errs toward less evidence, the safe side).
    m, the household cap, the prior and the document levels are kept; so is a comparison that no
    sampled pair could make (values missing). Deterministic for a given `seed`.
    """
    if len(population) < 2:
        raise ValueError("estimate_u needs at least two profiles")
    rng = random.Random(seed)  # noqa: S311 - sampling pairs, nothing secret
    counts: dict[str, Counter[str]] = {comparison: Counter() for comparison in COMPARISONS}
    for _ in range(pairs):
        i, j = rng.sample(range(len(population)), 2)
        for comparison, level in compare(population[i], population[j]).items():
            if level is not None:
                counts[comparison][level] += 1

    def measured(comparison: str) -> Levels:
        seen, levels = counts[comparison], weights.levels(comparison)
        if not seen:
            return levels
        total = sum(seen.values()) + 0.5 * len(levels)
        return {level: MU(mu.m, (seen[level] + 0.5) / total) for level, mu in levels.items()}

    return replace(
        weights,
        name=measured(NAME),
        birth_date=measured(BIRTH_DATE),
        email=measured(EMAIL),
        phone=measured(PHONE),
        zip=measured(ZIP),
        city=measured(CITY),
        street=measured(STREET),
    )
