"""shared.outbox: event bodies are stored sealed as bytes, and bodies older releases stored (in clear, or
sealed as a text token) are still published as they were written."""

from __future__ import annotations

from uuid import UUID

from shared.crypto import BINARY, keyring
from shared.outbox import open_body, seal_body

BODY = b'{"event_id":"e","payload":{"order":{"customer":{"email":"ana@example.com"}}}}'


def test_a_body_is_stored_sealed_as_bytes_and_opens_to_what_was_sealed() -> None:
    stored = seal_body(BODY)
    assert stored[:1] == BINARY
    assert b"ana@example.com" not in stored
    assert open_body(stored) == BODY


def test_bodies_of_older_releases_open_too() -> None:
    as_text = keyring().seal(UUID(int=0), BODY.decode()).encode()  # sealed as a text token
    assert open_body(as_text) == BODY
    assert open_body(BODY) == BODY  # written in clear, before bodies were sealed
