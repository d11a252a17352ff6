"""Normalisers for identifiers, shared by ingest (before storing) and lookups (before matching)."""

from __future__ import annotations

import re

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(value: str) -> str:
    """Trim and lower-case an e-mail address; raise ValueError (without echoing it) when malformed."""
    email = value.strip().lower()
    if not _EMAIL.match(email) or len(email) > 254:
        raise ValueError("not a valid e-mail address")
    return email
