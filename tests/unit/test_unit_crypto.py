"""shared.crypto: blind indexes and sealed values, per tenant, across a key rotation."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from uuid import uuid4

import pytest

from shared.crypto import Keyring, SecretError, SecretSettings, keyring_from

OLD = "an-old-secret-of-at-least-32-characters!"
NEW = "a-new-secret-of-at-least-32-characters!!"


def test_a_blind_index_is_stable_within_a_tenant_and_unrelated_across_tenants() -> None:
    keys, a, b = Keyring(NEW), uuid4(), uuid4()
    index = keys.index(a, "email", "ana@example.com")
    assert index == keys.index(a, "email", "ana@example.com")
    assert index != keys.index(b, "email", "ana@example.com")
    assert index != keys.index(a, "phone", "ana@example.com")  # the kind is part of what is hashed
    assert index != keys.index(a, "email", "ana@example.org")
    assert "ana@example.com" not in index
    assert len(index) == 43
    assert Keyring(OLD).index(a, "email", "ana@example.com") != index  # keyed: no secret, no match


def test_sealed_values_open_only_for_their_tenant() -> None:
    keys, a, b = Keyring(NEW), uuid4(), uuid4()
    token = keys.seal(a, "Ana Souza <ana@example.com>")
    assert "Ana Souza" not in token
    assert "ana@example.com" not in token  # (random base64 may hold any short string: test whole values)
    assert token != keys.seal(a, "Ana Souza <ana@example.com>")  # a fresh nonce every time
    assert keys.open(a, token) == "Ana Souza <ana@example.com>"
    with pytest.raises(SecretError) as refused:
        keys.open(b, token)
    assert "ana" not in str(refused.value).lower()
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(SecretError):
        keys.open(a, tampered)


def test_rotation_keeps_old_tokens_and_indexes_working() -> None:
    tenant = uuid4()
    before = Keyring(OLD)
    token, index = before.seal(tenant, "+5511987654321"), before.index(tenant, "phone", "+5511987654321")
    after = Keyring(NEW, [OLD])
    assert after.open(tenant, token) == "+5511987654321"
    assert after.index(tenant, "phone", "+5511987654321") == index  # indexes use the oldest secret
    moved = after.reseal(tenant, token)
    assert moved.split(".")[0] == after.current_id != token.split(".")[0]
    assert Keyring(NEW).open(tenant, moved) == "+5511987654321"
    assert after.reseal(tenant, moved) == moved
    with pytest.raises(SecretError, match="unknown key"):
        Keyring(NEW).open(tenant, token)  # the old secret dropped too early


def test_weak_secrets_are_refused() -> None:
    with pytest.raises(SecretError, match="32"):
        Keyring("short")


def test_without_a_configured_secret_one_is_created_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLIENTELA_SECRET_KEY", raising=False)
    path = tmp_path / "data" / "secret.key"
    settings = SecretSettings.model_validate({"CLIENTELA_SECRET_KEY_FILE": str(path)})
    tenant = uuid4()
    first = keyring_from(settings)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second = keyring_from(settings)
    assert second.open(tenant, first.seal(tenant, "x")) == "x"


def test_bytes_sealed_as_bytes_open_only_for_their_tenant_and_across_a_rotation() -> None:
    before, tenant, other = Keyring(OLD), uuid4(), uuid4()
    body = b'{"email":"ana@example.com"}'
    token = before.seal_bytes(tenant, body)
    assert b"ana@example.com" not in token
    assert token != before.seal_bytes(tenant, body)  # a fresh nonce every time
    assert len(token) == 1 + 8 + 12 + len(body) + 16  # marker, key id, nonce, ciphertext, tag: no encoding
    assert before.open_bytes(tenant, token) == body
    assert Keyring(NEW, [OLD]).open_bytes(tenant, token) == body
    with pytest.raises(SecretError, match="wrong key or tenant"):
        before.open_bytes(other, token)
    with pytest.raises(SecretError, match="wrong key or tenant"):
        before.open_bytes(tenant, token[:-1] + bytes([token[-1] ^ 1]))  # tampered
    with pytest.raises(SecretError, match="unknown key"):
        Keyring(NEW).open_bytes(tenant, token)
    with pytest.raises(SecretError, match="not a binary"):
        before.open_bytes(tenant, before.seal(tenant, "x").encode())
