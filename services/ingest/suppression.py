"""Records of people erased at their request (LGPD) are refused at the door: outcome `suppressed`.

The profile service sends, with each erasure, the keyed hashes of the person's identifiers
(`Keyring.suppression`); `services.ingest.privacy` keeps them. A record whose customer carries one of them
(a strong identifier, or only a phone; `shared.identifiers.suppressing_hashes`) is neither stored nor
published, so an erased person does not come back through a resent old order or a marketplace sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from pydantic import BaseModel
from sqlmodel import Session, col, select

from services.ingest.models import PrivacySuppression
from shared.identifiers import identifiers_of, suppressing_hashes
from shared.records import BehaviourEvent, CustomerRecord, Order


def _customer_identifiers(record: BaseModel) -> list[tuple[str, str]]:
    if isinstance(record, Order):
        return identifiers_of(record.customer, record.source)
    if isinstance(record, CustomerRecord):
        return identifiers_of(record, record.source)
    if isinstance(record, BehaviourEvent) and record.customer is not None:
        return identifiers_of(record.customer, record.source)
    return []


def suppressed(session: Session, tenant_id: UUID, records: Sequence[tuple[int, BaseModel]]) -> set[int]:
    """The indexes of the records that are of an erased person. One indexed probe when the tenant has no
    suppression (the common case), one more query for the batch otherwise."""
    if not records:
        return set()
    probe = select(PrivacySuppression.hash).where(PrivacySuppression.tenant_id == tenant_id).limit(1)
    if session.exec(probe).first() is None:
        return set()
    wanted = {index: suppressing_hashes(tenant_id, _customer_identifiers(r)) for index, r in records}
    every = sorted({h for hashes in wanted.values() for h in hashes})
    listed: set[str] = set()
    for start in range(0, len(every), 500):
        listed.update(
            session.exec(
                select(PrivacySuppression.hash).where(
                    PrivacySuppression.tenant_id == tenant_id,
                    col(PrivacySuppression.hash).in_(every[start : start + 500]),
                )
            )
        )
    return {index for index, hashes in wanted.items() if listed.intersection(hashes)}
