"""shared.auth: API key generation and hashing, the scope every route needs, the per-key token bucket,
require_tenant's answers (401, 403, 429) and the replication of keys from the tenants topic."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.profile.app import create_app as create_profile
from services.profile.settings import ProfileSettings
from services.segmentation.app import create_app as create_segmentation
from services.segmentation.settings import SegmentationSettings
from shared.auth import (
    ALL_SCOPES,
    KEY_PREFIX,
    ROUTE_SCOPES,
    TENANT_HANDLERS,
    RateLimiter,
    TenantDep,
    apply_tenant_event,
    hash_api_key,
    new_api_key,
    require_admin,
    required_scope,
    retry_after,
)
from shared.db import utcnow
from shared.errors import Unauthorized, install_problem_handlers
from shared.events import (
    ApiKeyChanged,
    ApiKeyIssued,
    ApiKeyIssuedV2,
    ApiKeyRevoked,
    Envelope,
    Event,
    TenantCreated,
)
from shared.infra import ApiKey, infra_registry
from shared.settings import ServiceSettings

MEMORY = "sqlite:///:memory:"


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


# -- scopes ------------------------------------------------------------------------------------------------

# Routes open without an API key: health, docs, and tenant creation (admin token).
WITHOUT_KEY = {"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/v1/tenants"}


def service_operations() -> list[tuple[str, str, str, dict[str, Any]]]:
    """(service, method, route template, operation) of every route in the three services' OpenAPI."""
    apps = {
        "ingest": create_ingest(IngestSettings(database_url=MEMORY, run_workers=False)),
        "profile": create_profile(ProfileSettings(database_url=MEMORY, run_workers=False)),
        "segmentation": create_segmentation(SegmentationSettings(database_url=MEMORY, run_workers=False)),
    }
    return [
        (name, method.upper(), path, op)
        for name, app in apps.items()
        for path, item in app.openapi()["paths"].items()
        for method, op in item.items()
    ]


def test_every_route_of_every_service_needs_a_key_with_a_scope() -> None:
    checked = 0
    for service, method, path, op in service_operations():
        if path in WITHOUT_KEY:
            continue
        assert required_scope(method, path) in ALL_SCOPES, f"{service}: map {method} {path} in ROUTE_SCOPES"
        assert {"HTTPBearer": []} in op.get("security", []), f"{service}: {method} {path} takes no key"
        checked += 1
    assert checked >= 40


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("POST", "/v1/orders", "ingest:write"),
        ("POST", "/v1/orders:batch", "ingest:write"),
        ("POST", "/v1/events:batch", "ingest:write"),
        ("POST", "/v1/sources/{source}/orders", "ingest:write"),
        ("POST", "/v1/imports", "ingest:write"),
        ("GET", "/v1/imports/{import_id}/rejected", "ingest:read"),
        ("GET", "/v1/quality", "ingest:read"),
        ("GET", "/v1/profiles", "profiles:read"),
        ("GET", "/v1/profiles/{profile_id}/consents", "profiles:read"),
        ("PUT", "/v1/profiles/{profile_id}/consents", "profiles:write"),
        ("POST", "/v1/profiles/{profile_id}/unmerge", "profiles:write"),
        ("GET", "/v1/merge-suggestions", "profiles:read"),
        ("POST", "/v1/merge-suggestions/{suggestion_id}/accept", "profiles:write"),
        ("PUT", "/v1/identity-rules", "profiles:write"),
        ("POST", "/v1/traits:refresh", "profiles:write"),
        ("GET", "/v1/traits/refreshes/{refresh_id}", "profiles:read"),
        ("POST", "/v1/privacy/requests", "privacy:manage"),
        ("GET", "/v1/privacy/requests/{request_id}", "privacy:manage"),
        ("GET", "/v1/audit-log", "privacy:manage"),
        ("GET", "/v1/segments", "segments:read"),
        ("GET", "/v1/segments/{segment_id}/export", "segments:read"),
        ("POST", "/v1/segments:preview", "segments:read"),
        ("POST", "/v1/segments", "segments:write"),
        ("PATCH", "/v1/segments/{segment_id}", "segments:write"),
        ("DELETE", "/v1/segments/{segment_id}", "segments:write"),
        ("POST", "/v1/segments/{segment_id}/evaluations", "segments:write"),
        ("GET", "/v1/segment-templates", "segments:read"),
        ("GET", "/v1/webhook-endpoints", "webhooks:manage"),
        ("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret", "webhooks:manage"),
        ("GET", "/v1/api-keys", "keys:manage"),
        ("POST", "/v1/api-keys/{key_id}/rotate", "keys:manage"),
        ("DELETE", "/v1/api-keys/{key_id}", "keys:manage"),
    ],
)
def test_the_scope_a_route_needs(method: str, path: str, scope: str) -> None:
    assert required_scope(method, path) == scope


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/unknown"),
        ("GET", "/v1/orders"),  # orders are written, never read, through ingest
        ("OPTIONS", "/v1/profiles"),
        ("GET", "/v1/profilesx"),  # a prefix covers whole path segments only
        ("POST", "/v1/segment-templates"),
        ("GET", "/v1/tenants"),
        ("GET", "/"),
    ],
)
def test_an_unmapped_route_needs_a_scope_no_key_has(method: str, path: str) -> None:
    assert required_scope(method, path) is None


def test_every_scope_is_used_by_some_route() -> None:
    assert {scope for _, _, scope in ROUTE_SCOPES} == set(ALL_SCOPES)


# -- the token bucket --------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == pytest.approx(0.5)  # one token comes every half second
    clock.now += 0.25
    assert limiter.take("k") == pytest.approx(0.25)
    clock.now += 0.25
    assert limiter.take("k") == 0.0
    assert limiter.take("k") > 0
    clock.now += 100  # refills up to the burst, never beyond
    assert [limiter.take("k") for _ in range(4)][-1] > 0


def test_token_bucket_is_per_key() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=Clock())
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    assert limiter.take("b") == 0.0


def test_token_bucket_forgets_full_buckets() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=1, clock=clock)
    limiter.MAX_BUCKETS = 2
    for key in ("a", "b", "c"):
        limiter.take(key)
    clock.now += 5
    limiter.take("d")  # over the bound: the refilled buckets go
    assert set(limiter._buckets) == {"d"}
    assert limiter.take("a") == 0.0  # a forgotten key starts with a full bucket


def test_token_bucket_across_threads_never_lets_more_than_the_burst_through() -> None:
    limiter = RateLimiter(rate=0.001, burst=50)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: limiter.take("k"), range(400)))
    assert sum(1 for r in results if r == 0.0) == 50


def test_token_bucket_needs_positive_settings() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(rate=0, burst=1)
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(rate=1, burst=0)


@pytest.mark.parametrize(("wait", "header"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.01, 2), (59.2, 60)])
def test_retry_after_is_whole_seconds_at_least_one(wait: float, header: int) -> None:
    assert retry_after(wait) == header


# -- require_tenant on a small app -------------------------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    infra_registry.metadata.create_all(engine)
    yield engine
    engine.dispose()


def add_key(engine: sa.Engine, tenant_id: UUID, scopes: list[str], **fields: Any) -> tuple[UUID, str]:
    plain, key_hash, prefix = new_api_key()
    key = ApiKey(
        id=uuid4(), tenant_id=tenant_id, key_hash=key_hash, prefix=prefix, name="k", scopes=scopes, **fields
    )
    with Session(engine) as session:
        session.add(key)
        session.commit()
        return key.id, plain


def make_app(engine: sa.Engine, **settings: Any) -> TestClient:
    app = FastAPI()
    install_problem_handlers(app)
    app.state.engine = engine
    app.state.settings = ServiceSettings(**settings)

    @app.get("/v1/profiles")
    def read(request: Request, tenant_id: TenantDep) -> dict[str, str]:
        return {"tenant_id": str(tenant_id), "api_key_id": request.state.api_key_id}

    @app.post("/v1/profiles/{profile_id}/unmerge")
    def write(profile_id: str, tenant_id: TenantDep) -> dict[str, str]:
        return {}

    @app.get("/v1/not-mapped")
    def unmapped(tenant_id: TenantDep) -> dict[str, str]:
        return {}

    return TestClient(app)


def bearer_of(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_require_tenant_checks_the_key_then_the_scope(engine: sa.Engine) -> None:
    tenant_id = uuid4()
    key_id, key = add_key(engine, tenant_id, ["profiles:read"])
    client = make_app(engine)
    ok = client.get("/v1/profiles", headers=bearer_of(key))
    assert ok.status_code == 200
    assert ok.json() == {"tenant_id": str(tenant_id), "api_key_id": str(key_id)}

    forbidden = client.post(f"/v1/profiles/{uuid4()}/unmerge", headers=bearer_of(key))
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"] == "application/problem+json"
    assert forbidden.json()["required_scope"] == "profiles:write"
    unmapped = client.get("/v1/not-mapped", headers=bearer_of(key))
    assert unmapped.status_code == 403

    everything = add_key(engine, tenant_id, list(ALL_SCOPES))[1]
    assert client.get("/v1/not-mapped", headers=bearer_of(everything)).status_code == 403  # deny by default
    assert client.post(f"/v1/profiles/{uuid4()}/unmerge", headers=bearer_of(everything)).status_code == 200


def test_expired_revoked_and_unknown_keys_get_401(engine: sa.Engine) -> None:
    tenant_id = uuid4()
    past, future = utcnow() - timedelta(seconds=1), utcnow() + timedelta(hours=1)
    _, expired = add_key(engine, tenant_id, list(ALL_SCOPES), expires_at=past)
    _, revoked = add_key(engine, tenant_id, list(ALL_SCOPES), revoked_at=past)
    _, expiring = add_key(engine, tenant_id, list(ALL_SCOPES), expires_at=future)
    client = make_app(engine)
    for key in (expired, revoked, "clt_unknown", ""):
        response = client.get("/v1/profiles", headers=bearer_of(key))
        assert response.status_code == 401, key
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/profiles", headers=bearer_of(expiring)).status_code == 200


def test_over_the_rate_limit_gets_429_with_retry_after(engine: sa.Engine) -> None:
    tenant_id = uuid4()
    _, key = add_key(engine, tenant_id, ["profiles:read"])
    _, other = add_key(engine, tenant_id, ["profiles:read"])
    client = make_app(engine, rate_limit_per_second=0.01, rate_limit_burst=2)
    assert [client.get("/v1/profiles", headers=bearer_of(key)).status_code for _ in range(2)] == [200, 200]
    limited = client.get("/v1/profiles", headers=bearer_of(key))
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert 1 <= int(limited.headers["retry-after"]) <= 100
    assert client.get("/v1/profiles", headers=bearer_of(other)).status_code == 200  # per key

    unlimited = make_app(engine, rate_limit_per_second=0)
    assert {unlimited.get("/v1/profiles", headers=bearer_of(key)).status_code for _ in range(20)} == {200}


# -- replication -------------------------------------------------------------------------------------------


def envelope_of(event: Event, tenant_id: UUID) -> Envelope:
    return event.envelope(tenant_id)


def test_replicas_follow_issue_change_and_revocation(engine: sa.Engine) -> None:
    tenant_id, v1_id, v2_id = uuid4(), uuid4(), uuid4()
    now = utcnow()
    events: list[Event] = [
        TenantCreated(name="Loja", created_at=now),
        ApiKeyIssued(key_id=v1_id, key_hash="a" * 64, prefix="clt_a", created_at=now),
        ApiKeyIssuedV2(
            key_id=v2_id,
            key_hash="b" * 64,
            prefix="clt_b",
            name="ERP",
            scopes=["ingest:write"],
            created_at=now,
            expires_at=None,
        ),
    ]
    with Session(engine) as session:
        for event in events:
            TENANT_HANDLERS[type(event)](session, envelope_of(event, tenant_id), event)
        session.commit()
    with Session(engine) as session:
        old, new = session.get(ApiKey, v1_id), session.get(ApiKey, v2_id)
        assert old is not None
        assert new is not None
        assert old.scopes == list(ALL_SCOPES)  # a v1 key predates scopes: it has them all
        assert (new.name, new.scopes, new.expires_at) == ("ERP", ["ingest:write"], None)

    later = now + timedelta(days=1)
    updates: list[tuple[Event, UUID]] = [
        (ApiKeyChanged(key_id=v2_id, name="ERP", scopes=["ingest:write"], expires_at=later), tenant_id),
        (ApiKeyRevoked(key_id=v1_id, revoked_at=now), tenant_id),
        (ApiKeyRevoked(key_id=v2_id, revoked_at=now), uuid4()),  # another tenant's: ignored
        (ApiKeyRevoked(key_id=uuid4(), revoked_at=now), tenant_id),  # unknown: ignored
    ]
    with Session(engine) as session:
        for event, tenant in updates:
            apply_tenant_event(session, envelope_of(event, tenant), event)  # type: ignore[arg-type]
        session.commit()
    with Session(engine) as session:
        old, new = session.get(ApiKey, v1_id), session.get(ApiKey, v2_id)
        assert old is not None
        assert new is not None
        assert old.revoked_at == now
        assert (new.expires_at, new.revoked_at) == (later, None)


@pytest.mark.parametrize("configured", [None, "", "s3cret-admin-token"])
@pytest.mark.parametrize("given", [None, "", "wrong"])
def test_tenant_administration_needs_a_configured_non_empty_admin_token(
    configured: str | None, given: str | None
) -> None:
    """An unset or empty CLIENTELA_ADMIN_TOKEN disables tenant creation: no header (or an empty one) is
    never the token."""
    settings = SimpleNamespace(admin_token=None if configured is None else SecretStr(configured))
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(settings=settings)))
    credentials = None if given is None else HTTPAuthorizationCredentials(scheme="Bearer", credentials=given)
    with pytest.raises(Unauthorized):
        require_admin(request, credentials)  # type: ignore[arg-type]


def test_the_admin_token_itself_is_accepted() -> None:
    settings = SimpleNamespace(admin_token=SecretStr("s3cret-admin-token"))
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(settings=settings)))
    token = HTTPAuthorizationCredentials(scheme="Bearer", credentials="s3cret-admin-token")
    assert require_admin(request, token) is None  # type: ignore[arg-type,func-returns-value]
