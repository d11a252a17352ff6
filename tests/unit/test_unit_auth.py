"""shared.auth: API key generation and hashing."""

from __future__ import annotations

import hashlib
import re

from shared.auth import KEY_PREFIX, hash_api_key, new_api_key


def test_new_api_key_format() -> None:
    plain, key_hash, prefix = new_api_key()
    assert KEY_PREFIX == "clt_"
    assert plain.startswith("clt_")
    assert re.fullmatch(r"clt_[A-Za-z0-9_\-]{43}", plain)  # 32 random bytes, URL-safe base64
    assert key_hash == hashlib.sha256(plain.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", key_hash)
    assert prefix == plain[:12]
    assert prefix.startswith("clt_")


def test_new_api_keys_differ() -> None:
    first, second = new_api_key(), new_api_key()
    assert first[0] != second[0]
    assert first[1] != second[1]


def test_hash_api_key_is_deterministic_sha256() -> None:
    assert hash_api_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_api_key("clt_example") == hash_api_key("clt_example")
    assert hash_api_key("clt_example") != hash_api_key("clt_examplE")


def test_hash_does_not_contain_the_key() -> None:
    plain, key_hash, _ = new_api_key()
    assert plain not in key_hash
    assert plain[len(KEY_PREFIX) :] not in key_hash
