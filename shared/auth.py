"""Tenant authentication: API keys (shown once, stored as SHA-256) and the admin bootstrap token.

Every service authenticates against its own copy of the `api_key` table; ingest owns the keys and the
others replicate them from `TenantCreated` / `ApiKeyIssued` events (see `apply_tenant_event`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session, select

from shared.db import SessionDep
from shared.errors import Unauthorized
from shared.events import ApiKeyIssued, Envelope, Event, TenantCreated
from shared.infra import ApiKey, Tenant

KEY_PREFIX = "clt_"
bearer = HTTPBearer(
    auto_error=False, description="A tenant API key (`clt_...`) or, for /v1/tenants, the admin token."
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def new_api_key() -> tuple[str, str, str]:
    """A fresh key: (plain key, its hash, a short non-secret prefix for display)."""
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    return plain, hash_api_key(plain), plain[:12]


def hash_api_key(plain: str) -> str:
    # Keys carry 256 bits of entropy, so a fast unsalted hash is safe and allows indexed lookup.
    return hashlib.sha256(plain.encode()).hexdigest()


def require_tenant(request: Request, session: SessionDep, credentials: BearerDep) -> UUID:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("Send the tenant's API key as `Authorization: Bearer <key>`.")
    key = session.exec(select(ApiKey).where(ApiKey.key_hash == hash_api_key(credentials.credentials))).first()
    if key is None or key.revoked_at is not None:
        raise Unauthorized("The API key is not valid.")
    request.state.tenant_id = str(key.tenant_id)
    return key.tenant_id


TenantDep = Annotated[UUID, Depends(require_tenant)]


def require_admin(request: Request, credentials: BearerDep) -> None:
    expected = request.app.state.settings.admin_token
    if expected is None:
        raise Unauthorized("Tenant administration is disabled: CLIENTELA_ADMIN_TOKEN is not set.")
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthorized("The admin token is not valid.")


AdminDep = Depends(require_admin)


def apply_tenant_event(session: Session, envelope: Envelope, event: TenantCreated | ApiKeyIssued) -> None:
    """Keep this service's replica of tenants and keys (handler for the tenants topic)."""
    if isinstance(event, TenantCreated):
        if session.get(Tenant, envelope.tenant_id) is None:
            session.add(Tenant(id=envelope.tenant_id, name=event.name, created_at=event.created_at))
    elif session.get(ApiKey, event.key_id) is None:
        session.add(
            ApiKey(
                id=event.key_id,
                tenant_id=envelope.tenant_id,
                key_hash=event.key_hash,
                prefix=event.prefix,
                created_at=event.created_at,
            )
        )


# The handlers every service that replicates tenants registers on the tenants topic.
TENANT_HANDLERS: dict[type[Event], Callable[[Session, Envelope, Any], None]] = {
    TenantCreated: apply_tenant_event,
    ApiKeyIssued: apply_tenant_event,
}
