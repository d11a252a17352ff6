"""Tenants (sellers) and their API keys. Ingest owns them and announces them to the other services."""

from __future__ import annotations

from uuid import uuid4

from sqlmodel import Session

from shared.auth import new_api_key
from shared.events import ApiKeyIssued, TenantCreated
from shared.infra import ApiKey, Tenant
from shared.outbox import add_event


def create_tenant(name: str, *, session: Session) -> tuple[Tenant, str]:
    """Create a tenant with its first API key; return the tenant and the plain key (shown once)."""
    tenant = Tenant(id=uuid4(), name=name)
    plain, key_hash, prefix = new_api_key()
    key = ApiKey(id=uuid4(), tenant_id=tenant.id, key_hash=key_hash, prefix=prefix)
    session.add(tenant)
    session.add(key)
    add_event(
        session,
        TenantCreated(name=tenant.name, created_at=tenant.created_at),
        tenant_id=tenant.id,
        key=str(tenant.id),
    )
    add_event(
        session,
        ApiKeyIssued(key_id=key.id, key_hash=key_hash, prefix=prefix, created_at=key.created_at),
        tenant_id=tenant.id,
        key=str(tenant.id),
    )
    session.commit()
    session.refresh(tenant)
    return tenant, plain
