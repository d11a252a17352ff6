"""services.profile.schemas.mask_email: e-mails in profile lists show one character of the local part."""

from __future__ import annotations

import pytest

from services.profile.schemas import mask_email


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        ("maria.silva@example.com", "m***@example.com"),
        ("a@example.com", "a***@example.com"),
        ("joao+promo@loja.example.org", "j***@loja.example.org"),
    ],
)
def test_mask_email(email: str, masked: str) -> None:
    assert mask_email(email) == masked


def test_mask_hides_the_local_part_and_its_length() -> None:
    short, long = mask_email("mo@example.com"), mask_email("maria.silva.souza@example.com")
    assert short is not None
    assert long is not None
    assert "maria" not in long
    assert short.split("@")[0] == long.split("@")[0] == "m***"
