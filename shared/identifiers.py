"""Which identifiers a customer's data carries, as (kind, normalised value): defined once for the services
that need them (profile resolves identities with them; ingest refuses records of erased people).

Kinds: `document` (CPF/CNPJ), `customer_id` (`<source>:<the customer's id there>`), `relay_email`
(`<source>:<address>`: a marketplace relay address identifies a buyer only there), `email`, `phone`
(E.164). The first four are *strong* (one person's); a phone may be shared (a family, a shop's landline).
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from shared.crypto import keyring
from shared.normalize import is_relay_email
from shared.records import Customer, CustomerRef

Identifier = tuple[str, str]
STRONG = frozenset({"document", "customer_id", "relay_email", "email"})


def identifiers_of(customer: Customer | CustomerRef, source: str) -> list[Identifier]:
    """The (kind, normalised value) pairs that identify a customer, strongest first."""
    found: list[Identifier] = []
    if customer.document:
        found.append(("document", customer.document))
    if customer.external_id:
        found.append(("customer_id", f"{source}:{customer.external_id}"))
    if customer.email and is_relay_email(customer.email):
        found.append(("relay_email", f"{source}:{customer.email}"))
    elif customer.email:
        found.append(("email", customer.email))
    if customer.phone:
        found.append(("phone", customer.phone))
    return found


def suppressing_hashes(tenant_id: UUID, identifiers: Iterable[Identifier]) -> list[str]:
    """The suppression hashes (`Keyring.suppression`) that, listed for an erased person, make a record
    carrying these identifiers theirs: its strong identifiers, or its phone when it has no strong one (a
    record that only shares a phone with an erased person, next to identifiers of its own, is someone
    else's)."""
    found = list(identifiers)
    strong = [i for i in found if i[0] in STRONG]
    keys = keyring()
    return [keys.suppression(tenant_id, kind, value) for kind, value in (strong or found)]
