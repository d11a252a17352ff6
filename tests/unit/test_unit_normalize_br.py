"""Brazilian identifiers and addresses: phone, CPF/CNPJ, names, CEP, UF, country, time zones."""

from __future__ import annotations

from datetime import UTC, date, datetime

import idna
import pytest
from brutils import generate_cnpj, generate_cpf
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.normalize import (
    _brazilian,
    _parsed_phone,
    check_birth_date,
    normalize_country,
    normalize_document,
    normalize_email,
    normalize_name,
    normalize_phone,
    normalize_state,
    normalize_zip,
    to_utc,
)
from shared.records import Customer, CustomerRecord


@pytest.mark.parametrize(
    "raw",
    [
        "(11) 91234-5678",
        "+55 11 91234-5678",
        "5511912345678",
        "011 91234 5678",
        "11 9 1234-5678",
        "(11) 3123-4567",
    ],
)
def test_phones_become_e164(raw: str) -> None:
    expected = "+551131234567" if raw == "(11) 3123-4567" else "+5511912345678"
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize("raw", ["(11) 8123-4567", "+55 21 9876-5432", "1181234567"])
def test_old_eight_digit_mobiles_get_the_ninth_digit(raw: str) -> None:
    result = normalize_phone(raw)
    assert result.startswith("+55")
    assert len(result) == 14  # +55 + DDD + 9 digits
    assert result[5] == "9"


def test_foreign_numbers_keep_their_country() -> None:
    assert normalize_phone("+1 650-253-0000") == "+16502530000"


@pytest.mark.parametrize("raw", ["******5678", "123", "abc", "+55 11 0000", ""])
def test_masked_or_invalid_phones_are_refused_without_echo(raw: str) -> None:
    with pytest.raises(ValueError, match="phone") as caught:
        normalize_phone(raw)
    assert raw not in str(caught.value) or raw == ""


def test_cpf_masks_are_stripped_and_check_digits_verified() -> None:
    assert normalize_document("529.982.247-25") == ("cpf", "52998224725")
    with pytest.raises(ValueError, match="CPF"):
        normalize_document("529.982.247-26")
    with pytest.raises(ValueError, match="CPF"):
        normalize_document("000.000.000-00")


def test_numeric_and_alphanumeric_cnpj() -> None:
    assert normalize_document("11.222.333/0001-81") == ("cnpj", "11222333000181")
    # The alphanumeric CNPJ format in force from July 2026 (Receita Federal's example).
    assert normalize_document("12.ABC.345/01DE-35") == ("cnpj", "12ABC34501DE35")
    assert normalize_document("12abc34501de35") == ("cnpj", "12ABC34501DE35")
    with pytest.raises(ValueError, match="CNPJ"):
        normalize_document("12.ABC.345/01DE-36")


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_generated_documents_round_trip(seed: int) -> None:
    cpf, cnpj = generate_cpf(), generate_cnpj()
    assert normalize_document(cpf) == ("cpf", cpf)
    assert normalize_document(cnpj) == ("cnpj", cnpj)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  MARIA  DA   SILVA ", "Maria da Silva"),
        ("joão pereira dos santos", "João Pereira dos Santos"),
        ("ANA-LUÍSA DE SOUZA E SILVA", "Ana-Luísa de Souza e Silva"),
        ("McDonald Ferreira", "McDonald Ferreira"),  # mixed case is kept as written
    ],
)
def test_names(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


def test_zip_state_country() -> None:
    assert normalize_zip("01310-100") == "01310100"
    assert normalize_zip("01151") == "01151"
    with pytest.raises(ValueError, match="CEP"):
        normalize_zip("0131-10")
    assert normalize_state("São Paulo") == "SP"
    assert normalize_state(" rj ") == "RJ"
    assert normalize_state("RIO GRANDE DO SUL") == "RS"
    with pytest.raises(ValueError, match="UF"):
        normalize_state("XX")
    assert normalize_country("Brasil") == "BR"
    assert normalize_country("pt") == "PT"


def test_international_domains_are_idna_encoded() -> None:
    email = normalize_email(" José@Exemplo-Açaí.com.br ")
    local, _, domain = email.partition("@")
    assert local == "josé"
    assert domain.startswith("xn--")
    assert idna.decode(domain) == "exemplo-açaí.com.br"
    assert normalize_email(f"JOSÉ@{domain.upper()}") == email


def test_naive_times_are_brazil_time_and_birth_dates_are_bounded() -> None:
    assert to_utc(datetime(2026, 1, 10, 12, 0)) == datetime(2026, 1, 10, 15, 0, tzinfo=UTC)
    assert check_birth_date(date(1990, 5, 1)) == date(1990, 5, 1)
    with pytest.raises(ValueError, match="birth"):
        check_birth_date(date(2999, 1, 1))


def test_a_customer_needs_an_identifier() -> None:
    with pytest.raises(ValidationError, match="at least one of"):
        Customer.model_validate({"name": "Maria"})
    assert Customer.model_validate({"external_id": "ML-1"}).external_id == "ML-1"


def test_customer_record_normalises_every_field() -> None:
    record = CustomerRecord.model_validate(
        {
            "source": "Site",
            "name": "JOÃO PEREIRA",
            "email": "Joao@Example.com",
            "phone": "(31) 8765-4321",
            "document": "529.982.247-25",
            "gender": "M",
            "birth_date": "1988-04-12",
            "address": {
                "city": "belo horizonte",
                "state": "Minas Gerais",
                "zip": "30130-010",
                "country": "Brasil",
            },
        }
    )
    assert (record.source, record.name, record.email) == ("site", "João Pereira", "joao@example.com")
    assert (record.phone, record.document, record.document_type) == ("+5531987654321", "52998224725", "cpf")
    assert record.gender == "male"
    assert record.address is not None
    assert (record.address.city, record.address.state, record.address.zip, record.address.country) == (
        "Belo Horizonte",
        "MG",
        "30130010",
        "BR",
    )


def test_invalid_fields_are_pointed_at_without_their_values() -> None:
    with pytest.raises(ValidationError) as caught:
        Customer.model_validate({"email": "maria@example.com", "document": "111.111.111-12", "phone": "123"})
    locs = {".".join(map(str, e["loc"])) for e in caught.value.errors()}
    assert locs == {"document", "phone"}
    messages = " ".join(e["msg"] for e in caught.value.errors())
    assert "111" not in messages
    assert "123" not in messages


_DIGITS = st.text(alphabet="0123456789", min_size=8, max_size=11)
_SHAPES = st.sampled_from(
    ["{n}", "+55{n}", "+55 {n}", "55{n}", "0{n}", "0 {n}", "({d}) {r}", "+55 ({d}) {a}-{b}", "{d} {a} {b}",
     " {d}-{a}-{b} ", "0{d}{r}", "+55 0{d} {r}", "90{n}", "015{n}", "()({n}", "+{n}", "55 {d} {r}"]
)  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(digits=_DIGITS, shape=_SHAPES)
def test_the_fast_path_for_brazilian_numbers_agrees_with_the_full_parse(digits: str, shape: str) -> None:
    """`_brazilian` answers for the usual shapes of Brazilian numbers and leaves anything else to the full
    parse: whenever it answers, the full parse gives the same number."""
    raw = shape.format(n=digits, d=digits[:2], r=digits[2:], a=digits[2:-4], b=digits[-4:])
    fast = _brazilian(raw)
    if fast is not None:
        assert fast == _parsed_phone(raw, "BR")


@settings(max_examples=3000, deadline=None)
@given(raw=st.text(alphabet="0123456789 ()-+", min_size=8, max_size=20))
def test_the_fast_path_agrees_with_the_full_parse_on_any_digits_and_punctuation(raw: str) -> None:
    fast = _brazilian(raw)
    if fast is not None:
        assert fast == _parsed_phone(raw, "BR")


@pytest.mark.parametrize(
    "raw", ["(11) 91234-5678", "+55 11 91234-5678", "5511912345678", "011 91234 5678", "1181234567"]
)
def test_the_usual_shapes_take_the_fast_path(raw: str) -> None:
    assert _brazilian(raw) == normalize_phone(raw)
    assert _brazilian(raw) is not None
