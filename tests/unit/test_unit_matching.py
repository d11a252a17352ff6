"""services.profile.matching: blocking keys, Fellegi-Sunter scores and merge decisions for the
probabilistic stage of identity resolution. All values below are made up."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli import noise
from services.profile.matching import (
    DEFAULT_WEIGHTS,
    HOUSEHOLD_CAP,
    LEVELS,
    MU,
    Match,
    MatchFields,
    Weights,
    blocking_keys,
    compare,
    compare_birth_dates,
    compare_emails,
    compare_names,
    compare_phones,
    compare_streets,
    compare_zips,
    decide,
    estimate_u,
    phonetic,
    probability_of,
    score,
)

MARIA = MatchFields(
    name="Maria Aparecida Conceição",
    birth_date=date(1986, 4, 23),
    zip="01310100",
    city="São Paulo",
    state="SP",
    street="Avenida Paulista",
    number="1578",
    phones=("+5511987654321",),
    emails=("maria.conceicao@example.com",),
)
# Maria again, from a marketplace: misspelt, without the 9th digit, behind a relay address, no birth date.
MARIA_NOISY = MatchFields(
    name="MARIA APARECDA CONCEICAO",
    zip="01310100",
    city="Sao Paulo",
    state="SP",
    phones=("+551187654321",),
    emails=("mariaapa.x1y2z3+2-abcdefghijkl@mail.mercadolivre.com",),
)
# Her son: same phone, address and surname; another first name and birth date.
SON = replace(
    MARIA,
    name="Pedro Henrique Conceição",
    birth_date=date(2008, 11, 2),
    emails=("pedrinho2008@example.com",),
)


def test_typo_old_phone_and_same_cep_merge() -> None:
    match = score(MARIA, MARIA_NOISY)
    levels = {c.comparison: c.level for c in match.contributions}
    assert levels["name"] == "close"
    assert levels["phone"] == "exact"
    assert levels["zip"] == "exact"
    assert levels["email"] == "missing"  # a relay address says nothing about an own address
    assert decide(match) == "merge"


def test_family_members_sharing_phone_and_address_do_not_merge() -> None:
    match = score(MARIA, SON)
    assert decide(match) is None
    levels = {c.comparison: c.level for c in match.contributions}
    assert levels["phone"] == levels["zip"] == levels["street"] == "exact"
    assert levels["name"] == levels["birth_date"] == "disagree"
    # Everything a household shares counts once.
    assert any(c.comparison == HOUSEHOLD_CAP and c.weight < 0 for c in match.contributions)


def test_family_members_without_birth_dates_do_not_merge() -> None:
    match = score(replace(MARIA, birth_date=None), replace(SON, birth_date=None))
    assert decide(match) != "merge"


def test_father_and_son_named_alike_are_only_a_suggestion() -> None:
    father = replace(SON, name="José Carlos Conceição", birth_date=None, emails=())
    son = replace(father, name="José Carlos Conceição Filho")
    assert compare_names(father.name, son.name) == "generation"
    assert decide(score(father, son)) == "suggest"
    born = score(replace(father, birth_date=date(1960, 1, 5)), replace(son, birth_date=date(1991, 8, 30)))
    assert decide(born) is None


def test_different_documents_never_match() -> None:
    match = score(replace(MARIA, document="52998224725"), replace(MARIA, document="11144477735"))
    assert match.probability == 0.0
    assert match.weight == -math.inf
    assert match.veto == "different documents"
    assert decide(match, merge_threshold=0.0, suggest_threshold=0.0) is None


def test_same_document_is_strong_evidence() -> None:
    a = MatchFields(name="Maria Conceição", document="52998224725")
    b = MatchFields(name="Mariazinha", document="52998224725")
    assert decide(score(a, b)) == "merge"


def test_one_document_missing_is_neutral() -> None:
    with_document = score(replace(MARIA, document="52998224725"), MARIA_NOISY)
    assert with_document == score(MARIA, MARIA_NOISY)


def test_missing_fields_contribute_nothing() -> None:
    a = MatchFields(name="Maria Conceição")
    b = MatchFields(
        name="Maria Conceição", birth_date=date(1986, 4, 23), zip="01310100", phones=("+5511987654321",)
    )
    match = score(a, b)
    assert {c.comparison: c.weight for c in match.contributions if c.level == "missing"} == {
        "document": 0.0,
        "birth_date": 0.0,
        "email": 0.0,
        "phone": 0.0,
        "zip": 0.0,
        "city": 0.0,
        "street": 0.0,
    }
    assert match == score(a, MatchFields(name="Maria Conceição"))
    assert match.weight == pytest.approx(match.prior_weight + DEFAULT_WEIGHTS.name["exact"].weight)


def test_nothing_to_compare_is_the_prior() -> None:
    match = score(MatchFields(), MatchFields())
    assert match.probability == pytest.approx(DEFAULT_WEIGHTS.prior)
    assert decide(match) is None


def test_same_name_alone_is_not_enough() -> None:
    assert decide(score(MatchFields(name="Maria da Silva"), MatchFields(name="MARIA SILVA"))) is None


def test_blocking_keys_of_the_noisy_pair_intersect() -> None:
    keys, noisy = blocking_keys(MARIA), blocking_keys(MARIA_NOISY)
    assert keys & noisy
    assert "phone:87654321" in keys & noisy  # with and without the 9th digit
    assert "zip:01310:mc" in keys & noisy
    assert len(keys) <= 5


def test_blocking_keys_are_folded() -> None:
    keys = blocking_keys(MatchFields(name="Érica Conceição", city="São João del-Rei", state="mg"))
    assert keys == {"place:MG:sao joao del-rei:erk:c"}


def test_blocking_keys_without_values() -> None:
    assert blocking_keys(MatchFields()) == set()
    assert blocking_keys(MatchFields(phones=("+5511987654321", "+5511912345678", "+5521998877665"))) == {
        "phone:12345678",
        "phone:87654321",
    }


def test_generated_noise_is_seen_through() -> None:
    """The generator's name and phone noise (`cli.noise`) on the same person: the keys meet and, with the
    same CEP, the pair merges."""
    rng = random.Random(20261101)
    firsts = ("Maria", "José", "Ana", "João", "Francisca", "Antônio", "Catarina", "Luiz", "Thiago", "Raíssa")
    lasts = ("Silva", "Santos", "Oliveira", "Souza", "Conceição", "Araújo", "Fogaça", "Pereira", "Dias")
    for _ in range(300):
        name = f"{rng.choice(firsts)} {rng.choice(lasts)} {rng.choice(lasts)}"
        local = f"9{rng.randint(6, 9)}{rng.randrange(10**7):07d}"
        a = MatchFields(name=name, zip="04567000", city="São Paulo", state="SP", phones=(f"+5511{local}",))
        b = MatchFields(
            name=noise.name_variant(name, rng),
            zip="04567000",
            city=noise.city_variant("sao paulo", rng),
            state="SP",
            phones=(f"+5511{local[1:] if rng.random() < 0.5 else local}",),
        )
        assert blocking_keys(a) & blocking_keys(b)
        assert decide(score(a, b)) == "merge"


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        ("Maria da Silva", "MARIA SILVA", "exact"),
        ("José Antônio", "jose antonio", "exact"),
        ("Catarina Machado", "Ctarina Machado", "close"),
        ("Ana Souza", "Ana Sousa", "close"),
        ("Ana Clara Souza Lima", "Ana Lima", "tokens"),
        ("João Silva", "João Silva Júnior", "generation"),
        ("João Silva Jr", "João Silva Júnior", "exact"),
        ("Ana Souza Lima", "Pedro Souza Lima", "disagree"),
        ("Ana Souza", "Ane Souza Lima", "disagree"),
        (None, "Ana", None),
        ("da", "Ana", None),
    ],
)
def test_name_levels(a: str | None, b: str | None, level: str | None) -> None:
    assert compare_names(a, b) == level
    assert compare_names(b, a) == level


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        (date(1986, 4, 23), date(1986, 4, 23), "exact"),
        (date(1986, 4, 3), date(1986, 3, 4), "near"),
        (date(1986, 4, 23), date(1968, 4, 23), "near"),
        (date(1986, 4, 23), date(1986, 4, 24), "near"),
        (date(1986, 4, 23), date(1990, 7, 2), "disagree"),
        (date(1986, 4, 23), None, None),
    ],
)
def test_birth_date_levels(a: date | None, b: date | None, level: str | None) -> None:
    assert compare_birth_dates(a, b) == level


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        (("maria.silva@example.com",), ("maria.silva+loja@example.com",), "exact"),
        (("maria.silva85@example.com",), ("mariasilva@example.org",), "similar"),
        (("maria.silva@example.com",), ("pedro.henrique@example.com",), "disagree"),
        (("maria.silva@example.com",), ("mariasilv.abc123@mail.mercadolivre.com",), None),
        (("x7f3k2@marketplace.amazon.com.br",), ("mariasilv.abc123@mail.mercadolivre.com",), None),
        (
            ("mariasilv.abc123+2-qwerty@mail.mercadolivre.com",),
            ("mariasilv.abc123@mail.mercadolivre.com",),
            "exact",
        ),
        (
            ("mariasilv.abc123@mail.mercadolivre.com",),
            ("mariasilv.zzz999@mail.mercadolivre.com",),
            "disagree",
        ),
        ((), ("maria.silva@example.com",), None),
    ],
)
def test_email_levels(a: tuple[str, ...], b: tuple[str, ...], level: str | None) -> None:
    assert compare_emails(a, b) == level
    assert compare_emails(b, a) == level


def test_phone_zip_and_street_levels() -> None:
    assert compare_phones(("+5511987654321",), ("+551187654321",)) == "exact"
    assert compare_phones(("+5511987654321",), ("+5511912345678",)) == "disagree"
    assert compare_phones((), ("+5511987654321",)) is None
    assert compare_zips("01310100", "01310100") == "exact"
    assert compare_zips("01310100", "01310200") == "prefix"
    assert compare_zips("01310", "01310100") == "prefix"
    assert compare_zips("01310100", "20040002") == "disagree"
    assert compare_zips(None, "01310100") is None
    paulista = MatchFields(street="Av. Paulista", number="1578")
    assert compare_streets(paulista, MatchFields(street="Avenida Paulista", number="1578")) == "exact"
    assert compare_streets(paulista, MatchFields(street="AVENIDA PAULISTA", number="s/n")) == "same_street"
    assert compare_streets(paulista, MatchFields(street="Rua Augusta", number="1578")) == "disagree"
    assert compare_streets(paulista, MatchFields()) is None


def test_city_counts_only_without_a_cep() -> None:
    assert compare(MARIA, MARIA_NOISY)["city"] is None
    without_zip = replace(MARIA_NOISY, zip=None)
    assert compare(MARIA, without_zip)["city"] == "exact"
    assert compare(MARIA, replace(without_zip, state="RJ"))["city"] == "disagree"


@pytest.mark.parametrize(
    ("word", "key"), [("Thiago", "tg"), ("Tiago", "tg"), ("Luiz", "ls"), ("Luís", "ls"), ("Raphael", "rfl")]
)
def test_phonetic(word: str, key: str) -> None:
    assert phonetic(word) == key


def _match(probability: float, veto: str | None = None) -> Match:
    weight = math.log2(probability / (1 - probability)) if 0 < probability < 1 else 0.0
    return Match(weight, probability, 0.0, (), veto)


@pytest.mark.parametrize(
    ("probability", "decision"),
    [(0.999, "merge"), (0.95, "merge"), (0.9499, "suggest"), (0.6, "suggest"), (0.5999, None), (0.01, None)],
)
def test_decide_default_thresholds(probability: float, decision: str | None) -> None:
    assert decide(_match(probability)) == decision


def test_decide_configurable_thresholds() -> None:
    assert decide(_match(0.9), merge_threshold=0.85) == "merge"
    assert decide(_match(0.5), suggest_threshold=0.4) == "suggest"
    assert decide(_match(0.99), merge_threshold=0.995, suggest_threshold=0.99) == "suggest"
    assert decide(_match(0.99, veto="different documents")) is None


@pytest.mark.parametrize(("merge", "suggest"), [(0.5, 0.6), (1.1, 0.6), (0.95, -0.1)])
def test_decide_rejects_inconsistent_thresholds(merge: float, suggest: float) -> None:
    with pytest.raises(ValueError, match="thresholds"):
        decide(_match(0.9), merge_threshold=merge, suggest_threshold=suggest)


def test_weights_are_configurable() -> None:
    cautious = replace(DEFAULT_WEIGHTS, prior=1e-7)
    assert decide(score(MARIA, MARIA_NOISY, cautious)) != "merge"
    loose_phone = replace(DEFAULT_WEIGHTS, phone={"exact": MU(0.5, 0.1), "disagree": MU(0.5, 0.9)})
    assert score(MARIA, MARIA_NOISY, loose_phone).weight < score(MARIA, MARIA_NOISY).weight


@pytest.mark.parametrize(
    "change",
    [
        {"prior": 0.0},
        {"prior": 1.0},
        {"phone": {"exact": MU(0.5, 0.1)}},
        {"phone": {"exact": MU(0.0, 0.1), "disagree": MU(0.5, 0.9)}},
        {"phone": {"exact": MU(0.9, 0.1), "disagree": MU(0.5, 0.9)}},
        {"household": MU(0.5, 0.0)},
    ],
)
def test_weights_are_validated(change: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"prior|phone|household") as raised:
        replace(DEFAULT_WEIGHTS, **change)  # type: ignore[arg-type]
    assert "0." not in str(raised.value)  # the message names the setting, not the values


def test_default_levels_are_probabilities() -> None:
    for comparison, names in LEVELS.items():
        levels = DEFAULT_WEIGHTS.levels(comparison)
        assert tuple(levels) == names
        if comparison != "document":
            assert math.fsum(mu.m for mu in levels.values()) == pytest.approx(1.0)
            assert math.fsum(mu.u for mu in levels.values()) == pytest.approx(1.0)


def test_probability_of_extremes() -> None:
    assert probability_of(-math.inf) == 0.0
    assert probability_of(0.0) == 0.5
    assert probability_of(5000.0) == 1.0
    assert probability_of(-5000.0) == 0.0


def test_estimate_u_from_a_population() -> None:
    rng = random.Random(3)
    population = [
        MatchFields(
            name=f"Pessoa{i} Sobrenome{i % 7}",
            birth_date=date(1950 + i % 50, 1 + i % 12, 1 + i % 28),
            city="São Paulo",
            state="SP",
            phones=(f"+55119{rng.randrange(10**8):08d}",),
        )
        for i in range(60)
    ]
    estimated = estimate_u(population, pairs=2000, seed=1)
    assert estimated == estimate_u(population, pairs=2000, seed=1)
    assert estimated.city["exact"].u > 0.9  # everyone lives in the same city
    assert estimated.phone["exact"].u < 0.01
    assert estimated.zip == DEFAULT_WEIGHTS.zip  # no CEPs: nothing measured, defaults kept
    for comparison in LEVELS:
        for level, mu in estimated.levels(comparison).items():
            assert mu.m == DEFAULT_WEIGHTS.levels(comparison)[level].m
    with pytest.raises(ValueError, match="two profiles"):
        estimate_u(population[:1])


# Small pools, so that generated pairs often agree.
_WORDS = ("Maria", "Mario", "Ana", "José", "da", "Silva", "Sousa", "Souza", "Filho", "Júnior", "Conceição")
_names = st.one_of(
    st.none(),
    st.lists(st.sampled_from(_WORDS), min_size=1, max_size=4).map(" ".join),
    st.text(max_size=12),
)
_dates = st.one_of(st.none(), st.sampled_from((date(1986, 4, 3), date(1986, 3, 4))), st.dates())
_zips = st.sampled_from((None, "01310100", "01310200", "01310", "20040002"))
_phones = st.lists(st.sampled_from(("+5511987654321", "+551187654321", "+5521912345678")), max_size=2)
_emails = st.lists(
    st.sampled_from(
        (
            "maria.silva@example.com",
            "mariasilva85@example.org",
            "ana+x@example.com",
            "mariasilv.abc123+2-qq@mail.mercadolivre.com",
            "mariasilv.abc123@mail.mercadolivre.com",
            "x7f3k2@marketplace.amazon.com.br",
        )
    ),
    max_size=2,
)
_fields = st.builds(
    MatchFields,
    name=_names,
    birth_date=_dates,
    zip=_zips,
    city=st.sampled_from((None, "São Paulo", "sao paulo", "Rio de Janeiro")),
    state=st.sampled_from((None, "SP", "RJ")),
    street=st.sampled_from((None, "Av. Paulista", "Avenida Paulista", "Rua Augusta")),
    number=st.sampled_from((None, "1578", "s/n", "12")),
    phones=_phones.map(tuple),
    emails=_emails.map(tuple),
    document=st.sampled_from((None, "52998224725", "11144477735")),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_fields, _fields)
def test_score_is_symmetric(a: MatchFields, b: MatchFields) -> None:
    assert score(a, b) == score(b, a)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_fields, _fields)
def test_score_is_consistent(a: MatchFields, b: MatchFields) -> None:
    match = score(a, b)
    assert 0.0 <= match.probability <= 1.0
    assert len(blocking_keys(a)) <= 5
    if a.document and b.document and a.document != b.document:
        assert match.probability == 0.0
        assert decide(match) is None
    else:
        assert match.veto is None
        total = match.prior_weight + math.fsum(c.weight for c in match.contributions)
        assert match.weight == pytest.approx(total)
        household = sum(
            c.weight for c in match.contributions if c.comparison in {"phone", "zip", "city", "street"}
        )
        capped = sum(c.weight for c in match.contributions if c.comparison == HOUSEHOLD_CAP)
        assert household + capped <= DEFAULT_WEIGHTS.household.weight + 1e-9


@settings(max_examples=200, deadline=None, derandomize=True)
@given(_fields, _fields)
def test_a_missing_value_is_neutral(a: MatchFields, b: MatchFields) -> None:
    """Blanking a value on one side scores as if it were missing on both."""
    assert score(replace(a, birth_date=None), b) == score(
        replace(a, birth_date=None), replace(b, birth_date=None)
    )
    assert score(replace(a, emails=()), b) == score(replace(a, emails=()), replace(b, emails=()))
    assert score(replace(a, name=None), b) == score(replace(a, name=None), replace(b, name=None))


def test_default_weights_are_shared() -> None:
    assert isinstance(DEFAULT_WEIGHTS, Weights)
    assert score(MARIA, SON) == score(MARIA, SON, Weights())
