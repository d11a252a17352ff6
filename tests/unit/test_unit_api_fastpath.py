"""The API's fast path: verified keys kept briefly (`KeyCache`), audit events written in batches
(`AuditWriter`), connections pinged only after idling (`ping_when_idle`), and the request middleware
(`RequestContext`: request id, body limit, load shedding)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy.pool import QueuePool, StaticPool
from sqlmodel import Session, select
from starlette.types import Message, Receive, Scope, Send

from shared.audit import AuditEvent, AuditUnavailable, AuditWriter, audit_registry, forget_reads, record_read
from shared.auth import (
    ALL_SCOPES,
    KeyCache,
    KnownKey,
    TenantDep,
    apply_tenant_event,
    forget_key,
    hash_api_key,
    new_api_key,
)
from shared.db import ping_when_idle, utcnow
from shared.errors import install_problem_handlers
from shared.events import ApiKeyRevoked
from shared.infra import ApiKey, infra_registry
from shared.metrics import HTTP_SHED
from shared.settings import ServiceSettings
from shared.web import RequestContext


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def known(key_id: UUID | None = None, **fields: Any) -> KnownKey:
    values: dict[str, Any] = {
        "tenant_id": uuid4(),
        "key_id": key_id or uuid4(),
        "scopes": frozenset(ALL_SCOPES),
        "expires_at": None,
        "revoked_at": None,
    }
    return KnownKey(**(values | fields))


# -- KeyCache ----------------------------------------------------------------------------------------------


def test_a_verified_key_is_kept_for_its_ttl_only() -> None:
    clock = Clock()
    cache = KeyCache(5, clock=clock)
    key = known()
    cache.put("h", key)
    assert cache.get("h") == key
    clock.now += 4.9
    assert cache.get("h") == key
    clock.now += 0.1
    assert cache.get("h") is None
    assert cache.get("other") is None


def test_forgetting_a_key_drops_it_from_every_cache() -> None:
    first, second = KeyCache(60), KeyCache(60)
    revoked, kept = known(), known()
    for cache in (first, second):
        cache.put("revoked", revoked)
        cache.put("kept", kept)
    forget_key(revoked.key_id)
    assert first.get("revoked") is None
    assert second.get("revoked") is None
    assert first.get("kept") == kept
    assert second.get("kept") == kept


def test_concurrent_misses_of_one_key_share_one_read() -> None:
    cache = KeyCache(60)
    key = known()
    reads = 0

    async def read() -> KnownKey | None:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        return key

    async def fifty_requests() -> list[KnownKey | None]:
        return await asyncio.gather(*(cache.load("h", read) for _ in range(50)))

    assert asyncio.run(fifty_requests()) == [key] * 50
    assert reads == 1
    assert cache.get("h") == key
    asyncio.run(cache.load("other", read))  # another key is read on its own
    assert reads == 2


def test_a_key_read_while_it_is_being_forgotten_is_not_kept() -> None:
    cache = KeyCache(60)
    key = known()

    async def read() -> KnownKey | None:
        forget_key(key.key_id)  # the revocation is applied while the row is being read
        return key

    assert asyncio.run(cache.load("h", read)) == key
    assert cache.get("h") is None


def test_a_cache_needs_a_positive_ttl() -> None:
    with pytest.raises(ValueError, match="ttl"):
        KeyCache(0)


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    infra_registry.metadata.create_all(engine)
    audit_registry.metadata.create_all(engine)
    yield engine
    engine.dispose()


def add_key(engine: sa.Engine, tenant_id: UUID, **fields: Any) -> tuple[UUID, str]:
    plain, key_hash, prefix = new_api_key()
    key = ApiKey(
        id=uuid4(),
        tenant_id=tenant_id,
        key_hash=key_hash,
        prefix=prefix,
        name="k",
        scopes=list(ALL_SCOPES),
        **fields,
    )
    with Session(engine) as session:
        session.add(key)
        session.commit()
        return key.id, plain


def cached_app(engine: sa.Engine, cache: KeyCache | None) -> TestClient:
    app = FastAPI()
    install_problem_handlers(app)
    app.state.engine = engine
    app.state.settings = ServiceSettings(rate_limit_per_second=0)
    app.state.api_key_cache = cache

    @app.get("/v1/profiles")
    async def read(request: Request, tenant_id: TenantDep) -> dict[str, str]:
        return {"tenant_id": str(tenant_id)}

    return TestClient(app)


def revoke_in_database(engine: sa.Engine, key_id: UUID) -> None:
    with Session(engine) as session:
        key = session.get(ApiKey, key_id)
        assert key is not None
        key.revoked_at = utcnow()
        session.add(key)
        session.commit()


def test_a_cached_key_is_read_once_and_a_revocation_applies_once_forgotten(engine: sa.Engine) -> None:
    tenant_id = uuid4()
    key_id, plain = add_key(engine, tenant_id)
    cache = KeyCache(60)
    client = cached_app(engine, cache)
    headers = {"Authorization": f"Bearer {plain}"}
    assert client.get("/v1/profiles", headers=headers).json() == {"tenant_id": str(tenant_id)}
    assert cache.get(hash_api_key(plain)) is not None

    revoke_in_database(engine, key_id)
    # Within the cache's time the process goes on trusting what it read (the documented bound) ...
    assert client.get("/v1/profiles", headers=headers).status_code == 200
    forget_key(key_id)  # ... until the revocation is applied here (or the time is up)
    refused = client.get("/v1/profiles", headers=headers)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "The API key has been revoked."


def test_without_a_cache_a_revocation_applies_at_the_next_request(engine: sa.Engine) -> None:
    key_id, plain = add_key(engine, uuid4())
    client = cached_app(engine, None)
    headers = {"Authorization": f"Bearer {plain}"}
    assert client.get("/v1/profiles", headers=headers).status_code == 200
    revoke_in_database(engine, key_id)
    assert client.get("/v1/profiles", headers=headers).status_code == 401


def test_expiry_is_checked_at_every_request_even_for_a_cached_key(engine: sa.Engine) -> None:
    _, plain = add_key(engine, uuid4())
    cache = KeyCache(60)
    client = cached_app(engine, cache)
    cache.put(hash_api_key(plain), known(expires_at=utcnow() - timedelta(seconds=1)))
    refused = client.get("/v1/profiles", headers={"Authorization": f"Bearer {plain}"})
    assert refused.status_code == 401
    assert refused.json()["detail"] == "The API key has expired."


def test_unknown_keys_are_not_cached(engine: sa.Engine) -> None:
    cache = KeyCache(60)
    client = cached_app(engine, cache)
    assert client.get("/v1/profiles", headers={"Authorization": "Bearer clt_nope"}).status_code == 401
    assert cache.get(hash_api_key("clt_nope")) is None


def test_a_replicated_revocation_forgets_the_key_once_committed(engine: sa.Engine) -> None:
    tenant_id = uuid4()
    key_id, plain = add_key(engine, tenant_id)
    cache = KeyCache(60)
    cache.put(hash_api_key(plain), known(key_id, tenant_id=tenant_id))
    event = ApiKeyRevoked(key_id=key_id, revoked_at=utcnow())
    with Session(engine) as session:
        apply_tenant_event(session, event.envelope(tenant_id), event)
        # A request between the event and its commit reads the row as it still is, and caches it again.
        cache.put(hash_api_key(plain), known(key_id, tenant_id=tenant_id))
        session.commit()
    assert cache.get(hash_api_key(plain)) is None


# -- AuditWriter -------------------------------------------------------------------------------------------


def audit_row(tenant_id: UUID, profile_id: UUID) -> dict[str, Any]:
    return {
        "id": uuid4(),
        "tenant_id": tenant_id,
        "at": utcnow(),
        "api_key_id": None,
        "action": "profile.read",
        "route": "/v1/profiles/{profile_id}",
        "profile_ids": [str(profile_id)],
        "request_id": "r1",
    }


def stored(engine: sa.Engine) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.exec(select(AuditEvent)).all())


def test_a_writer_takes_events_only_while_running_and_writes_them_all_by_its_stop(engine: sa.Engine) -> None:
    writer = AuditWriter(engine, flush_seconds=3600)  # no timed flush within the test: stop writes them
    tenant_id = uuid4()
    assert writer.add(audit_row(tenant_id, uuid4())) is False  # not started: the caller writes it
    writer.start()
    ids = [uuid4() for _ in range(3)]
    for profile_id in ids:
        assert writer.add(audit_row(tenant_id, profile_id)) is True
    writer.stop()
    assert sorted(e.profile_ids[0] for e in stored(engine)) == sorted(str(i) for i in ids)
    assert writer.add(audit_row(tenant_id, uuid4())) is False  # stopped
    assert writer.pending() == 0


def test_a_flush_writes_many_events_in_one_go(engine: sa.Engine) -> None:
    writer = AuditWriter(engine, flush_seconds=3600)
    writer.start()
    try:
        tenant_id = uuid4()
        for _ in range(1200):
            writer.add(audit_row(tenant_id, uuid4()))
        writer.flush()
        assert len(stored(engine)) == 1200
        assert writer.pending() == 0
    finally:
        writer.stop()


def test_events_the_database_refused_are_kept_in_order_and_written_later(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    writer = AuditWriter(engine, flush_seconds=3600)
    writer.start()
    try:
        tenant_id = uuid4()
        first, second = uuid4(), uuid4()
        writer.add(audit_row(tenant_id, first))
        with pytest.raises(sa.exc.OperationalError):  # no table yet
            writer.flush()
        assert writer.pending() == 1
        writer.add(audit_row(tenant_id, second))
        audit_registry.metadata.create_all(engine)
        assert writer.flush() == 2
        with Session(engine) as session:
            order = [e.profile_ids[0] for e in session.exec(select(AuditEvent)).all()]
        assert order == [str(first), str(second)]
    finally:
        writer.stop()
        engine.dispose()


def test_past_its_bound_a_writer_refuses_the_read_rather_than_lose_its_event(engine: sa.Engine) -> None:
    writer = AuditWriter(engine, flush_seconds=3600, max_pending=2)
    writer.start()
    try:
        tenant_id = uuid4()
        writer.add(audit_row(tenant_id, uuid4()))
        writer.add(audit_row(tenant_id, uuid4()))
        with pytest.raises(AuditUnavailable) as refused:
            writer.add(audit_row(tenant_id, uuid4()))
        assert refused.value.status == 503
        assert refused.value.headers["Retry-After"]
    finally:
        writer.stop()
    assert len(stored(engine)) == 2


def test_an_erasure_finds_the_reads_still_queued(engine: sa.Engine) -> None:
    writer = AuditWriter(engine, flush_seconds=3600)
    writer.start()
    try:
        tenant_id, erased, other = uuid4(), uuid4(), uuid4()
        writer.add(audit_row(tenant_id, erased))
        writer.add(audit_row(tenant_id, other))
        with Session(engine) as session:
            assert forget_reads(session, tenant_id, [erased]) == 1
            session.commit()
        assert sorted(tuple(e.profile_ids) for e in stored(engine)) == [(), (str(other),)]
    finally:
        writer.stop()


def test_a_read_recorded_without_a_writer_answers_with_what_it_read(tmp_path: Path) -> None:
    """`record_read` commits its event at once without a writer: the rows the request read stay as read,
    even when a consumer deleted them in between (a member leaving its segment while its page is built)."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'read.db'}")
    infra_registry.metadata.create_all(engine)
    audit_registry.metadata.create_all(engine)
    tenant_id = uuid4()
    key_id, _ = add_key(engine, tenant_id)
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/read")
    def read(request: Request) -> dict[str, str]:
        with Session(engine) as session:
            found = session.exec(select(ApiKey).where(ApiKey.id == key_id)).all()
            with Session(engine) as consumer:  # deleted and committed by another connection
                consumer.execute(sa.delete(ApiKey).where(sa.column("id") == key_id))
                consumer.commit()
            record_read(request, session, tenant_id, "profile.read", [uuid4()])
            return {"name": found[0].name}

    try:
        answer = TestClient(app).get("/read")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"name": "k"}
        with Session(engine) as session:
            assert session.get(ApiKey, key_id) is None
            assert [e.action for e in session.exec(select(AuditEvent)).all()] == ["profile.read"]
    finally:
        engine.dispose()


# -- ping_when_idle ----------------------------------------------------------------------------------------


def test_only_a_connection_idle_past_the_bound_is_pinged_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    clock = Clock()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ping.db'}", poolclass=QueuePool, pool_size=1)
    ping_when_idle(engine, after_s=1.0, clock=clock)
    pings: list[object] = []
    real_ping = engine.dialect.do_ping

    def counting_ping(dbapi_conn: Any) -> bool:
        pings.append(dbapi_conn)
        return real_ping(dbapi_conn)

    engine.dialect.do_ping = counting_ping  # type: ignore[method-assign,assignment]
    try:
        with engine.connect() as conn:  # a new connection: not pinged
            first = conn.connection.dbapi_connection
        clock.now += 0.5
        with engine.connect() as conn:  # busy a moment ago: not pinged
            assert conn.connection.dbapi_connection is first
        assert pings == []

        clock.now += 1.5
        with engine.connect() as conn:  # idle for 1.5 s: pinged, alive, kept
            assert conn.connection.dbapi_connection is first
        assert pings == [first]

        assert isinstance(first, sqlite3.Connection)
        first.close()  # as a database restart would leave it
        clock.now += 1.5
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection is not first
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


# -- RequestContext ----------------------------------------------------------------------------------------


class Blocking:
    """An ASGI app whose /slow requests wait for `release`; anything else answers at once."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            self.entered.set()
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def http_scope(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": headers or [],
        "query_string": b"",
    }


async def call(app: Any, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def status_and_headers(sent: list[Message]) -> tuple[int, dict[bytes, bytes]]:
    start = sent[0]
    return start["status"], dict(start["headers"])


def test_past_max_in_flight_requests_are_refused_at_once_with_retry_after() -> None:
    async def scenario() -> None:
        inner = Blocking()
        app = RequestContext(inner, service="shedtest", body_limits={}, max_in_flight=1)
        before = HTTP_SHED.labels("shedtest")._value.get()
        slow = asyncio.create_task(call(app, http_scope("/slow")))
        await inner.entered.wait()
        assert app.in_flight == 1

        status, headers = status_and_headers(await call(app, http_scope("/v1/profiles")))
        assert status == 503
        assert headers[b"retry-after"] == b"1"
        assert headers[b"content-type"] == b"application/problem+json"
        assert HTTP_SHED.labels("shedtest")._value.get() == before + 1
        for path in ("/healthz", "/readyz", "/metrics"):  # never refused
            assert status_and_headers(await call(app, http_scope(path)))[0] == 200

        inner.release.set()
        assert status_and_headers(await slow)[0] == 200
        assert app.in_flight == 0
        assert status_and_headers(await call(app, http_scope("/v1/profiles")))[0] == 200

    asyncio.run(scenario())


def test_without_a_bound_nothing_is_shed() -> None:
    async def scenario() -> None:
        inner = Blocking()
        app = RequestContext(inner, service="shedtest", body_limits={}, max_in_flight=0)
        slow = [asyncio.create_task(call(app, http_scope("/slow"))) for _ in range(50)]
        await inner.entered.wait()
        assert status_and_headers(await call(app, http_scope("/v1/profiles")))[0] == 200
        inner.release.set()
        answered = await asyncio.gather(*slow)
        assert [status_and_headers(sent)[0] for sent in answered] == [200] * 50

    asyncio.run(scenario())


def test_the_request_id_is_echoed_when_it_looks_like_one_and_made_otherwise() -> None:
    async def scenario() -> None:
        app = RequestContext(Blocking(), service="t", body_limits={})
        _, given = status_and_headers(await call(app, http_scope("/x", [(b"x-request-id", b"abc-123")])))
        assert given[b"x-request-id"] == b"abc-123"
        _, made = status_and_headers(await call(app, http_scope("/x", [(b"x-request-id", b"a b@c")])))
        assert made[b"x-request-id"] != b"a b@c"
        assert len(made[b"x-request-id"]) == 32

    asyncio.run(scenario())


def test_a_body_over_the_limit_of_its_path_is_refused_before_the_app() -> None:
    async def scenario() -> None:
        app = RequestContext(Blocking(), service="t", body_limits={"/v1/imports": 10})
        big = [(b"content-length", b"11")]
        status, headers = status_and_headers(await call(app, http_scope("/v1/imports", big)))
        assert status == 413
        assert headers[b"content-type"] == b"application/problem+json"
        assert (
            status_and_headers(await call(app, http_scope("/v1/imports", [(b"content-length", b"10")])))[0]
            == 200
        )

    asyncio.run(scenario())
