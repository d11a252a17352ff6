"""Identifiers of people erased at their request (LGPD): records that carry one are dropped.

A deletion or anonymisation (`services.profile.privacy`) keeps the keyed hashes of the person's
identifiers (`Keyring.suppression`, a key of its own: the list cannot be joined to the identity graph);
the record handlers ask `suppressed` before resolving an identity, so an erased person never comes back
silently, whether from an order still in flight, a resent old one or a marketplace sync.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from sqlmodel import Session, col, select

from services.profile.models import PrivacySuppression
from shared.identifiers import suppressing_hashes

_CACHE = "privacy_tenants_with_suppressions"


def suppressed(session: Session, tenant_id: UUID, identifiers: Iterable[tuple[str, str]]) -> bool:
    """Whether a record carrying these (kind, normalised value) identifiers is of an erased person.

    Cheap in the common case: whether the tenant has any suppression at all is asked once per
    transaction (a consumer poll) and kept in the session's `info`."""
    found = list(identifiers)
    if not found:
        return False
    cache: dict[UUID, bool] = session.info.setdefault(_CACHE, {})
    if tenant_id not in cache:
        any_row = select(PrivacySuppression.hash).where(PrivacySuppression.tenant_id == tenant_id).limit(1)
        cache[tenant_id] = session.exec(any_row).first() is not None
    if not cache[tenant_id]:
        return False
    hashes = suppressing_hashes(tenant_id, found)
    hit = select(PrivacySuppression.hash).where(
        PrivacySuppression.tenant_id == tenant_id, col(PrivacySuppression.hash).in_(hashes)
    )
    return session.exec(hit).first() is not None
