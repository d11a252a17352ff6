"""shared.normalize: e-mail normalisation (trim, lower case, reject malformed without echoing it)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.normalize import normalize_email

_PADDING = st.text(alphabet=" \t\n\r", max_size=3)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("maria@example.com", "maria@example.com"),
        ("  Maria.Silva@Example.COM.br \n", "maria.silva@example.com.br"),
        ("\tJOAO+promo@Loja.Example.org", "joao+promo@loja.example.org"),
        ("a@b.c", "a@b.c"),
    ],
)
def test_trims_and_lowercases(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "maria",
        "maria@",
        "@example.com",
        "maria@example",
        "maria@@example.com",
        "maria@ex@ample.com",
        "maria silva@example.com",
        "maria@exa mple.com",
        "maria@example.com\nbcc@example.com",
        "maria@example.",
        "maria@.com.",
    ],
)
def test_rejects_malformed(raw: str) -> None:
    with pytest.raises(ValueError, match="not a valid e-mail address"):
        normalize_email(raw)


def test_length_limit_is_254_characters() -> None:
    domain = "@example.com"
    longest = "a" * (254 - len(domain)) + domain
    assert normalize_email(longest) == longest
    with pytest.raises(ValueError, match="not a valid e-mail address"):
        normalize_email("a" + longest)


def test_error_message_does_not_echo_the_input() -> None:
    with pytest.raises(ValueError, match="not a valid e-mail address") as caught:
        normalize_email("maria.silva@example")
    assert "maria" not in str(caught.value)
    assert "example" not in str(caught.value)


@given(email=st.emails(), before=_PADDING, after=_PADDING, upper=st.booleans())
def test_idempotent_on_valid_emails(email: str, before: str, after: str, upper: bool) -> None:
    assume(len(email) <= 254)
    raw = before + (email.upper() if upper else email) + after
    once = normalize_email(raw)
    assert normalize_email(once) == once
    assert once == once.strip().lower()
    assert once == email.lower()


@given(raw=st.text(max_size=80))
def test_idempotent_or_rejected_on_any_text(raw: str) -> None:
    try:
        once = normalize_email(raw)
    except ValueError:
        return
    assert normalize_email(once) == once
    assert once.count("@") == 1
