"""Tenants (sellers) and their API keys. Ingest owns them and announces them to the other services.

Key rules:
- a key may issue (or rotate) only keys whose scopes it holds itself: no key can widen its own access;
- rotation issues a new key with the same name and scopes; the old one keeps working for a grace period;
- revoking the tenant's last key that can manage keys (`keys:manage`) is refused (409): no key could ever
  issue another one, and the tenant would be locked out. "Last" counts lifetimes too: a revocation must not
  end the tenant's `keys:manage` access sooner than the revoked key's own expiry would have.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from sqlmodel import Session, col, select

from shared.auth import ALL_SCOPES, Scope, forget_on_commit, new_api_key
from shared.db import after_row, utcnow
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.events import ApiKeyChanged, ApiKeyIssuedV2, ApiKeyRevoked, TenantCreated
from shared.infra import ApiKey, Tenant
from shared.outbox import add_event

FIRST_KEY_NAME = "default"
MAX_GRACE = timedelta(days=30)


def create_tenant(name: str, *, session: Session) -> tuple[Tenant, str]:
    """Create a tenant with its first API key (every scope); return the tenant and the plain key (shown
    once)."""
    tenant = Tenant(id=uuid4(), name=name)
    session.add(tenant)
    add_event(
        session,
        TenantCreated(name=tenant.name, created_at=tenant.created_at),
        tenant_id=tenant.id,
        key=str(tenant.id),
    )
    _, plain = _issue(tenant.id, name=FIRST_KEY_NAME, scopes=ALL_SCOPES, expires_at=None, session=session)
    session.commit()
    session.refresh(tenant)
    return tenant, plain


def key_status(key: ApiKey, now: datetime | None = None) -> str:
    """`active`, `expired` or `revoked`."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


def issue_key(
    tenant_id: UUID,
    *,
    name: str,
    scopes: Collection[Scope],
    expires_at: datetime | None,
    caller_scopes: Collection[str],
    session: Session,
) -> tuple[ApiKey, str]:
    """A new key of the tenant; returns it and the plain key (shown once). 403 for scopes the caller lacks."""
    _lock_tenant(tenant_id, session=session)
    _check_grantable(scopes, caller_scopes)
    if expires_at is not None and expires_at <= utcnow():
        raise Invalid("`expires_at` must be in the future.")
    key, plain = _issue(tenant_id, name=name, scopes=scopes, expires_at=expires_at, session=session)
    session.commit()
    session.refresh(key)
    return key, plain


def list_keys(*, tenant_id: UUID, session: Session, after: UUID | None, limit: int) -> Sequence[ApiKey]:
    """The tenant's keys, oldest first (keyset pagination on created_at, id), revoked and expired included."""
    query = select(ApiKey).where(ApiKey.tenant_id == tenant_id)
    if after is not None:
        cursor = session.get(ApiKey, after)
        if cursor is None or cursor.tenant_id != tenant_id:
            raise Invalid("`cursor` is not a key of this tenant.")
        query = query.where(after_row(col(ApiKey.created_at), col(ApiKey.id), cursor.created_at, cursor.id))
    return session.exec(query.order_by(col(ApiKey.created_at), col(ApiKey.id)).limit(limit)).all()


def get_key(key_id: UUID, *, tenant_id: UUID, session: Session) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or key.tenant_id != tenant_id:
        raise NotFound("No API key with this id.")
    return key


def rotate_key(
    key_id: UUID,
    *,
    tenant_id: UUID,
    grace: timedelta,
    caller_scopes: Collection[str],
    session: Session,
) -> tuple[ApiKey, ApiKey, str]:
    """Replace a key: a new one with the same name and scopes (and, if the old one had an expiry, the same
    lifetime from now); the old one expires after `grace` (or earlier, if it already did). Returns the old
    key, the new one and its plain form."""
    if not timedelta(0) <= grace <= MAX_GRACE:
        raise Invalid(f"The grace period is 0 to {MAX_GRACE.days} days.")
    _lock_tenant(tenant_id, session=session)
    old = get_key(key_id, tenant_id=tenant_id, session=session)
    now = utcnow()
    if key_status(old, now) != "active":
        raise Conflict(f"This key is {key_status(old, now)}: only an active key can be rotated.")
    scopes: list[Scope] = [s for s in ALL_SCOPES if s in old.scopes]
    _check_grantable(old.scopes, caller_scopes)
    lifetime = None if old.expires_at is None else old.expires_at - old.created_at
    new, plain = _issue(
        tenant_id,
        name=old.name,
        scopes=scopes,
        expires_at=None if lifetime is None else now + lifetime,
        session=session,
    )
    ends = now + grace
    if old.expires_at is None or ends < old.expires_at:
        old.expires_at = ends
        session.add(old)
        add_event(
            session,
            ApiKeyChanged(key_id=old.id, name=old.name, scopes=old.scopes, expires_at=old.expires_at),
            tenant_id=tenant_id,
            key=str(tenant_id),
        )
        forget_on_commit(session, old.id)
    session.commit()
    session.refresh(old)
    session.refresh(new)
    return old, new, plain


def revoke_key(key_id: UUID, *, tenant_id: UUID, session: Session) -> ApiKey:
    """Revoke a key on every service (idempotent: revoking a revoked key changes nothing). 409 if it is the
    tenant's last way to manage keys (see the module docstring)."""
    _lock_tenant(tenant_id, session=session)
    key = get_key(key_id, tenant_id=tenant_id, session=session)
    if key.revoked_at is not None:
        return key
    now = utcnow()
    if key_status(key, now) == "active" and "keys:manage" in key.scopes:
        _refuse_lockout(key, now=now, session=session)
    key.revoked_at = now
    session.add(key)
    add_event(session, ApiKeyRevoked(key_id=key.id, revoked_at=now), tenant_id=tenant_id, key=str(tenant_id))
    forget_on_commit(session, key.id)
    session.commit()
    session.refresh(key)
    return key


def _issue(
    tenant_id: UUID,
    *,
    name: str,
    scopes: Collection[Scope],
    expires_at: datetime | None,
    session: Session,
) -> tuple[ApiKey, str]:
    plain, key_hash, prefix = new_api_key()
    key = ApiKey(
        id=uuid4(),
        tenant_id=tenant_id,
        key_hash=key_hash,
        prefix=prefix,
        name=name,
        scopes=[s for s in ALL_SCOPES if s in scopes],  # canonical order, no duplicates
        expires_at=expires_at,
    )
    session.add(key)
    add_event(
        session,
        ApiKeyIssuedV2(
            key_id=key.id,
            key_hash=key_hash,
            prefix=prefix,
            name=name,
            scopes=key.scopes,
            created_at=key.created_at,
            expires_at=expires_at,
        ),
        tenant_id=tenant_id,
        key=str(tenant_id),
    )
    return key, plain


def _check_grantable(scopes: Collection[str], caller_scopes: Collection[str]) -> None:
    missing = [s for s in ALL_SCOPES if s in scopes and s not in caller_scopes]
    if missing:
        raise Forbidden(
            "A key cannot grant scopes it does not hold itself.", extra={"missing_scopes": missing}
        )


def _refuse_lockout(key: ApiKey, *, now: datetime, session: Session) -> None:
    others = session.exec(
        select(ApiKey).where(
            ApiKey.tenant_id == key.tenant_id,
            ApiKey.id != key.id,
            col(ApiKey.revoked_at).is_(None),
        )
    ).all()
    managers = [k for k in others if "keys:manage" in k.scopes and key_status(k, now) == "active"]
    if any(k.expires_at is None for k in managers):
        return
    if key.expires_at is not None and any(k.expires_at >= key.expires_at for k in managers if k.expires_at):
        return
    raise Conflict(
        "This is the tenant's last key that can manage keys (`keys:manage`), or the one that lasts longest: "
        "issue another key with `keys:manage` first, then revoke this one."
    )


def _lock_tenant(tenant_id: UUID, *, session: Session) -> None:
    """Serialise key changes per tenant (PostgreSQL row lock; SQLite has one writer anyway), so that two
    concurrent revocations cannot both pass the lock-out check."""
    session.exec(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update()).first()
