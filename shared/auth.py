"""Tenant authentication and authorisation: API keys with scopes, expiry and revocation; per-key rate limits.

API keys are shown once and stored as SHA-256. Every service authenticates against its own copy of the
`api_key` table; ingest owns the keys and the others replicate them from the tenants topic (see
`apply_tenant_event`), so a revocation reaches every service within seconds. A service may keep the keys it
verified in memory for a few seconds (`KeyCache`, `<SERVICE>_API_KEY_CACHE_SECONDS`): there a revocation
applies at once in the process that made it (ingest) or consumed it from the tenants topic, else within the
cache's time.

What a route needs is decided here, in one place (`ROUTE_SCOPES`), from the HTTP method and the route
template; a route no entry maps is refused to every key, so a new route cannot escape the check.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import math
import secrets
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from shared.db import utcnow
from shared.errors import Forbidden, TooManyRequests, Unauthorized
from shared.events import (
    ApiKeyChanged,
    ApiKeyIssued,
    ApiKeyIssuedV2,
    ApiKeyRevoked,
    Envelope,
    Event,
    TenantCreated,
)
from shared.infra import ApiKey, Tenant

KEY_PREFIX = "clt_"
bearer = HTTPBearer(
    auto_error=False,
    description="A tenant API key (`clt_...`) or, for /v1/tenants, the admin token. A key lacking the "
    "route's scope gets 403; over the key's rate limit, 429 with `Retry-After`.",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

# -- scopes ------------------------------------------------------------------------------------------------

Scope = Literal[
    "ingest:write",
    "ingest:read",
    "profiles:read",
    "profiles:write",
    "segments:read",
    "segments:write",
    "webhooks:manage",
    "privacy:manage",
    "keys:manage",
]
ALL_SCOPES: tuple[Scope, ...] = get_args(Scope)

READ = frozenset({"GET", "HEAD"})
WRITE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANY = READ | WRITE

# (methods, route template prefix, scope). A prefix covers the template itself and what follows it after
# `/` or `:` (`/v1/segments` covers `/v1/segments/{segment_id}` and `/v1/segments:preview`); of the entries
# that match a request, the longest prefix decides. No match: refused (403), whatever the key's scopes.
ROUTE_SCOPES: tuple[tuple[frozenset[str], str, Scope], ...] = (
    # ingest
    (WRITE, "/v1/orders", "ingest:write"),
    (WRITE, "/v1/customers", "ingest:write"),
    (WRITE, "/v1/events", "ingest:write"),
    (WRITE, "/v1/sources", "ingest:write"),
    (WRITE, "/v1/imports", "ingest:write"),
    (READ, "/v1/imports", "ingest:read"),
    (READ, "/v1/quality", "ingest:read"),
    (ANY, "/v1/api-keys", "keys:manage"),
    # profile
    (READ, "/v1/profiles", "profiles:read"),
    (WRITE, "/v1/profiles", "profiles:write"),
    (READ, "/v1/merge-suggestions", "profiles:read"),
    (WRITE, "/v1/merge-suggestions", "profiles:write"),
    (READ, "/v1/identity-rules", "profiles:read"),
    (WRITE, "/v1/identity-rules", "profiles:write"),
    (READ, "/v1/traits", "profiles:read"),
    (WRITE, "/v1/traits", "profiles:write"),
    (ANY, "/v1/privacy/requests", "privacy:manage"),
    (ANY, "/v1/audit-log", "privacy:manage"),
    # segmentation
    (READ, "/v1/segments", "segments:read"),
    (WRITE, "/v1/segments", "segments:write"),
    (ANY, "/v1/segments:preview", "segments:read"),  # evaluates a rule, saves nothing
    (READ, "/v1/segment-templates", "segments:read"),
    (ANY, "/v1/webhook-endpoints", "webhooks:manage"),
)


def _covers(prefix: str, path: str) -> bool:
    return path == prefix or (path.startswith(prefix) and path[len(prefix)] in "/:")


@functools.lru_cache(maxsize=1024)
def required_scope(method: str, route_path: str) -> Scope | None:
    """The scope a request to this route template needs; None: the route is open to no API key."""
    best: tuple[int, Scope] | None = None
    for methods, prefix, scope in ROUTE_SCOPES:
        if method in methods and _covers(prefix, route_path) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), scope)
    return None if best is None else best[1]


# -- keys --------------------------------------------------------------------------------------------------


def new_api_key() -> tuple[str, str, str]:
    """A fresh key: (plain key, its hash, a short non-secret prefix for display)."""
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    return plain, hash_api_key(plain), plain[:12]


def hash_api_key(plain: str) -> str:
    # Keys carry 256 bits of entropy, so a fast unsalted hash is safe and allows indexed lookup.
    return hashlib.sha256(plain.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the tenant and the API key (with its scopes) the request was authenticated with."""

    tenant_id: UUID
    key_id: UUID
    scopes: frozenset[str]


# -- rate limits -------------------------------------------------------------------------------------------


class RateLimiter:
    """Token buckets in this process's memory: each key gets `rate` requests a second, bursts up to `burst`.

    Thread-safe (sync routes and dependencies run in a thread pool). Per process: with N uvicorn workers or
    N replicas a key gets up to N times the limit."""

    MAX_BUCKETS = 100_000

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, when counted)
        self._lock = threading.Lock()
        self._pruned_at = clock()

    def take(self, key: Hashable) -> float:
        """Take a token for `key`: 0.0 if the request may go ahead, else the seconds until it may."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + max(now - at, 0.0) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > self.MAX_BUCKETS and now - self._pruned_at >= 1.0:
                    self._prune(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        # A bucket that has filled up again is the same as no bucket.
        refill = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}
        self._pruned_at = now


_limiter_lock = threading.Lock()


def rate_limiter(app: FastAPI) -> RateLimiter | None:
    """The app's limiter, built once from its settings; None when limits are off (either setting 0)."""
    try:
        limiter: RateLimiter | None = app.state.rate_limiter
        return limiter
    except AttributeError:
        pass
    with _limiter_lock:
        if not hasattr(app.state, "rate_limiter"):
            settings = app.state.settings
            rate, burst = settings.rate_limit_per_second, settings.rate_limit_burst
            app.state.rate_limiter = RateLimiter(rate, burst) if rate > 0 and burst > 0 else None
        return app.state.rate_limiter  # type: ignore[no-any-return]


def retry_after(wait_s: float) -> int:
    """`Retry-After` in whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))


# -- verified keys -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KnownKey:
    """An API key's row as read from this service's replica (a revoked or expired key too)."""

    tenant_id: UUID
    key_id: UUID
    scopes: frozenset[str]
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KnownKey:
        return cls(key.tenant_id, key.id, frozenset(key.scopes), key.expires_at, key.revoked_at)


class KeyCache:
    """API keys this process read from its database, by hash, for `ttl` seconds: a busy API reads the key
    row once per key every few seconds instead of at every request. Expiry is still checked at every
    request; a revocation or a change of scopes takes effect at once where the tenants topic is consumed in
    this process (`apply_tenant_event` forgets the key), else within `ttl`. Unknown keys are not kept (a
    key issued a moment ago works as soon as it is replicated). Concurrent misses of one key share one
    read (`load`): when a busy API's entry expires, the requests waiting in its event loop would otherwise
    each read the same row. Thread-safe."""

    MAX_KEYS = 10_000

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ttl, self.clock = ttl, clock
        self._keys: dict[str, tuple[float, KnownKey]] = {}
        self._lock = threading.Lock()
        self._generation = 0  # bumped by `forget`: a read started before a forget is not kept
        self._loading: dict[tuple[int, str], asyncio.Future[KnownKey | None]] = {}
        _caches.add(self)

    def get(self, key_hash: str) -> KnownKey | None:
        found = self._keys.get(key_hash)
        if found is None or self.clock() - found[0] >= self.ttl:
            return None
        return found[1]

    def put(self, key_hash: str, key: KnownKey) -> None:
        with self._lock:
            if len(self._keys) >= self.MAX_KEYS:
                self._keys.clear()
            self._keys[key_hash] = (self.clock(), key)

    def forget(self, key_id: UUID) -> None:
        with self._lock:
            self._generation += 1
            self._keys = {h: v for h, v in self._keys.items() if v[1].key_id != key_id}

    async def load(self, key_hash: str, read: Callable[[], Awaitable[KnownKey | None]]) -> KnownKey | None:
        """Read a key missing from the cache with `read` and keep it; a miss while the same key is being
        read in this event loop waits for that read instead of starting another."""
        slot = (id(asyncio.get_running_loop()), key_hash)
        pending = self._loading.get(slot)
        if pending is None:
            pending = asyncio.ensure_future(self._read(slot, read))
            self._loading[slot] = pending
        return await asyncio.shield(pending)

    async def _read(
        self, slot: tuple[int, str], read: Callable[[], Awaitable[KnownKey | None]]
    ) -> KnownKey | None:
        generation = self._generation
        try:
            key = await read()
        finally:
            self._loading.pop(slot, None)
        if key is not None and generation == self._generation:
            self.put(slot[1], key)
        return key


_caches: weakref.WeakSet[KeyCache] = weakref.WeakSet()


def forget_key(key_id: UUID) -> None:
    """Drop a key from every cache of this process (it was revoked or changed)."""
    for cache in list(_caches):
        cache.forget(key_id)


def forget_on_commit(session: Session, key_id: UUID) -> None:
    """A key this transaction changes: forgotten by this process's caches now and once committed (a
    request in between may have cached the row as it was)."""
    forget_key(key_id)
    sa.event.listen(session, "after_commit", lambda _: forget_key(key_id), once=True)


def _load_key(engine: Engine, key_hash: str) -> KnownKey | None:
    with Session(engine) as session:
        key = session.exec(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()
        return None if key is None else KnownKey.of(key)


async def known_key(request: Request, key_hash: str) -> KnownKey | None:
    """The key's row: from the app's `KeyCache` (`app.state.api_key_cache`, when it has one), else read in
    the thread pool."""
    cache: KeyCache | None = getattr(request.app.state, "api_key_cache", None)
    engine = request.app.state.engine
    if cache is None:
        return await run_in_threadpool(_load_key, engine, key_hash)
    key = cache.get(key_hash)
    if key is None:
        key = await cache.load(key_hash, lambda: run_in_threadpool(_load_key, engine, key_hash))
    return key


# -- dependencies ------------------------------------------------------------------------------------------


async def require_caller(request: Request, credentials: BearerDep) -> Caller:
    """Authenticate the API key (401), apply its rate limit (429), then check the route's scope (403).
    Async: a key found in the cache costs no trip to the thread pool."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized("Send the tenant's API key as `Authorization: Bearer <key>`.")
    key = await known_key(request, hash_api_key(credentials.credentials))
    if key is None:
        raise Unauthorized("The API key is not valid.")
    if key.revoked_at is not None:
        raise Unauthorized("The API key has been revoked.")
    if key.expires_at is not None and key.expires_at <= utcnow():
        raise Unauthorized("The API key has expired.")
    request.state.tenant_id = str(key.tenant_id)
    request.state.api_key_id = str(key.key_id)

    limiter = rate_limiter(request.app)
    if limiter is not None and (wait := limiter.take(key.key_id)) > 0:
        seconds = retry_after(wait)
        raise TooManyRequests(
            f"Over this API key's rate limit; retry in {seconds} s.", headers={"Retry-After": str(seconds)}
        )

    route_path = getattr(request.scope.get("route"), "path", None)
    needed = required_scope(request.method, route_path) if isinstance(route_path, str) else None
    if needed is None:
        raise Forbidden("This route is not open to API keys.")
    if needed not in key.scopes:
        raise Forbidden(f"The API key lacks the `{needed}` scope.", extra={"required_scope": needed})
    return Caller(tenant_id=key.tenant_id, key_id=key.key_id, scopes=key.scopes)


CallerDep = Annotated[Caller, Depends(require_caller)]


async def require_tenant(caller: CallerDep) -> UUID:
    """The calling tenant's id (see `require_caller`: the key is authenticated, limited and scoped)."""
    return caller.tenant_id


TenantDep = Annotated[UUID, Depends(require_tenant)]


def require_admin(request: Request, credentials: BearerDep) -> None:
    expected = request.app.state.settings.admin_token
    if expected is None or not expected.get_secret_value():  # an empty token must not let anyone in
        raise Unauthorized("Tenant administration is disabled: CLIENTELA_ADMIN_TOKEN is not set.")
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthorized("The admin token is not valid.")


AdminDep = Depends(require_admin)

# -- replication -------------------------------------------------------------------------------------------

TenantEvent = TenantCreated | ApiKeyIssued | ApiKeyIssuedV2 | ApiKeyChanged | ApiKeyRevoked


def apply_tenant_event(session: Session, envelope: Envelope, event: TenantEvent) -> None:
    """Keep this service's replica of tenants and keys (handler for the tenants topic)."""
    if isinstance(event, TenantCreated):
        if session.get(Tenant, envelope.tenant_id) is None:
            session.add(Tenant(id=envelope.tenant_id, name=event.name, created_at=event.created_at))
    elif isinstance(event, ApiKeyIssued | ApiKeyIssuedV2):
        if session.get(ApiKey, event.key_id) is None:
            session.add(
                ApiKey(
                    id=event.key_id,
                    tenant_id=envelope.tenant_id,
                    key_hash=event.key_hash,
                    prefix=event.prefix,
                    created_at=event.created_at,
                    # A v1 key predates scopes: it has every scope, as keys migrated from then do.
                    name=event.name if isinstance(event, ApiKeyIssuedV2) else "default",
                    scopes=list(event.scopes if isinstance(event, ApiKeyIssuedV2) else ALL_SCOPES),
                    expires_at=event.expires_at if isinstance(event, ApiKeyIssuedV2) else None,
                )
            )
    else:
        key = session.get(ApiKey, event.key_id)
        if key is None or key.tenant_id != envelope.tenant_id:
            return
        forget_on_commit(session, key.id)
        if isinstance(event, ApiKeyChanged):
            key.name, key.scopes, key.expires_at = event.name, list(event.scopes), event.expires_at
        elif key.revoked_at is None:
            key.revoked_at = event.revoked_at
        session.add(key)


# The handlers every service that replicates tenants registers on the tenants topic.
TENANT_HANDLERS: dict[type[Event], Callable[[Session, Envelope, Any], None]] = {
    TenantCreated: apply_tenant_event,
    ApiKeyIssued: apply_tenant_event,
    ApiKeyIssuedV2: apply_tenant_event,
    ApiKeyChanged: apply_tenant_event,
    ApiKeyRevoked: apply_tenant_event,
}
