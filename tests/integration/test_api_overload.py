"""The profile API's hot reads on the real PostgreSQL: by id and by e-mail, each read in the audit trail
through the batched writer, another tenant's key refused, and load shedding (503 with `Retry-After`) when
the process is at its in-flight bound."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from services.profile.app import create_app
from services.profile.identity import blind
from services.profile.models import Profile, ProfileIdentifier
from shared.audit import AuditEvent
from shared.crypto import keyring
from shared.web import RequestContext
from tests.support import SettingsFactory, add_tenant, auth

EMAIL = "maria.api@example.com"


@pytest.fixture
def profile_api(make_settings: SettingsFactory) -> Iterator[tuple[TestClient, sa.Engine]]:
    """The profile API alone (no consumers), with a short in-flight bound."""
    settings = make_settings("profile", run_workers=False, max_in_flight=4)
    app = create_app(settings)
    with TestClient(app) as client:
        yield client, app.state.engine


def add_profile(engine: sa.Engine, tenant_id: UUID, email: str) -> UUID:
    keys = keyring()
    profile = Profile(tenant_id=tenant_id, email=keys.seal(tenant_id, email), orders_count=1)
    ((kind, value),) = blind(tenant_id, [("email", email)])
    with Session(engine) as session:
        session.add(profile)
        session.add(
            ProfileIdentifier(
                tenant_id=tenant_id,
                kind=kind,
                value=value,
                sealed=keys.seal(tenant_id, email),
                profile_id=profile.id,
            )
        )
        session.commit()
        return profile.id


def request_context(app: Any) -> RequestContext:
    layer = app.middleware_stack
    while not isinstance(layer, RequestContext):
        layer = layer.app
    return layer


def test_reads_by_id_and_by_email_are_answered_and_audited(
    profile_api: tuple[TestClient, sa.Engine],
) -> None:
    client, engine = profile_api
    tenant_id, key = add_tenant(engine)
    profile_id = add_profile(engine, tenant_id, EMAIL)

    by_id = client.get(f"/v1/profiles/{profile_id}", headers=auth(key))
    assert by_id.status_code == 200
    assert by_id.json()["email"] == EMAIL
    by_email = client.get("/v1/profiles", params={"email": "Maria.API@Example.com"}, headers=auth(key))
    assert [p["id"] for p in by_email.json()["items"]] == [str(profile_id)]

    # The audit trail lists both reads at once (the process writes what it queued before listing it).
    log = client.get("/v1/audit-log", params={"profile_id": str(profile_id)}, headers=auth(key)).json()
    assert sorted(e["action"] for e in log["items"]) == ["profile.read", "profile.search"]
    assert {e["route"] for e in log["items"]} == {"/v1/profiles/{profile_id}", "/v1/profiles"}


def test_another_tenants_key_gets_404_and_no_audit_event(profile_api: tuple[TestClient, sa.Engine]) -> None:
    client, engine = profile_api
    tenant_id, _ = add_tenant(engine)
    _, other_key = add_tenant(engine)
    profile_id = add_profile(engine, tenant_id, EMAIL)
    assert client.get(f"/v1/profiles/{profile_id}", headers=auth(other_key)).status_code == 404
    assert client.get("/v1/profiles", params={"email": EMAIL}, headers=auth(other_key)).json()["items"] == []
    assert client.get("/v1/profiles/not-a-uuid", headers=auth(other_key)).status_code == 422


def test_queued_audit_events_are_written_when_the_process_stops(make_settings: SettingsFactory) -> None:
    settings = make_settings("profile", run_workers=False, audit_flush_seconds=3600)
    app: FastAPI = create_app(settings)
    engine = app.state.engine
    tenant_id, key = add_tenant(engine)
    profile_id = add_profile(engine, tenant_id, EMAIL)
    with TestClient(app) as client:
        assert client.get(f"/v1/profiles/{profile_id}", headers=auth(key)).status_code == 200
        assert app.state.audit_writer.pending() == 1  # queued, not yet written
    url = settings.database_url
    check = sa.create_engine(url)
    try:
        with Session(check) as session:
            [event] = session.exec(select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)).all()
        assert event.profile_ids == [str(profile_id)]
        assert event.request_id
    finally:
        check.dispose()


def test_a_process_at_its_in_flight_bound_refuses_at_once_and_stays_observable(
    profile_api: tuple[TestClient, sa.Engine],
) -> None:
    client, engine = profile_api
    tenant_id, key = add_tenant(engine)
    profile_id = add_profile(engine, tenant_id, EMAIL)
    assert client.get(f"/v1/profiles/{profile_id}", headers=auth(key)).status_code == 200
    context = request_context(client.app)
    assert context.max_in_flight == 4

    context.in_flight = 4  # as if four requests were being handled
    try:
        refused = client.get(f"/v1/profiles/{profile_id}", headers=auth(key))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["title"] == "Service unavailable"
        assert refused.headers["x-request-id"]
        assert client.get("/healthz").status_code == 200
        assert 'clientela_http_requests_shed_total{service="profile"}' in client.get("/metrics").text
    finally:
        context.in_flight = 0
    assert client.get(f"/v1/profiles/{profile_id}", headers=auth(key)).status_code == 200


def test_unbounded_when_max_in_flight_is_zero(make_settings: SettingsFactory) -> None:
    settings = make_settings("profile", run_workers=False, max_in_flight=0)
    with TestClient(create_app(settings)) as client:
        context = request_context(client.app)
        context.in_flight = 10_000
        _, key = add_tenant(client.app.state.engine)  # type: ignore[attr-defined]
        assert client.get("/v1/profiles", headers=auth(key)).status_code == 200


def test_reads_are_audited_synchronously_when_batching_is_off(make_settings: SettingsFactory) -> None:
    settings = make_settings("profile", run_workers=False, audit_flush_seconds=0)
    app: FastAPI = create_app(settings)
    assert app.state.audit_writer is None
    engine = app.state.engine
    tenant_id, key = add_tenant(engine)
    profile_id = add_profile(engine, tenant_id, EMAIL)
    with TestClient(app) as client:
        assert client.get(f"/v1/profiles/{profile_id}", headers=auth(key)).status_code == 200
        with Session(engine) as session:  # committed before the answer
            events = session.exec(select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)).all()
        assert [e.action for e in events] == ["profile.read"]


def test_a_random_profile_id_is_404(profile_api: tuple[TestClient, sa.Engine]) -> None:
    client, engine = profile_api
    _, key = add_tenant(engine)
    missing = client.get(f"/v1/profiles/{uuid4()}", headers=auth(key))
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
