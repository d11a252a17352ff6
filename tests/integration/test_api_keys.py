"""API keys across the three services: scopes (403), revocation, rotation and expiry (401 everywhere within
seconds, through the tenants topic), the lock-out guard, and per-key rate limits (429)."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from services.ingest.app import create_app as create_ingest
from shared.auth import ALL_SCOPES, required_scope
from shared.db import utcnow
from tests.support import ADMIN_TOKEN, SettingsFactory, Stack, auth, eventually, order_body

pytestmark = pytest.mark.integration

# A GET each service answers for any tenant, and the scope it needs.
PROBES = {
    "ingest": ("/v1/imports", "ingest:read"),
    "profile": ("/v1/profiles", "profiles:read"),
    "segmentation": ("/v1/segments", "segments:read"),
}


def create_key(stack: Stack, owner: str, scopes: list[str], **fields: Any) -> dict[str, Any]:
    response = stack.ingest.post(
        "/v1/api-keys", json={"name": "test key", "scopes": scopes, **fields}, headers=auth(owner)
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/v1/api-keys/{response.json()['id']}"
    created: dict[str, Any] = response.json()
    return created


def answers(stack: Stack, key: str) -> dict[str, int]:
    """Each service's status code for its probe GET with `key`."""
    return {
        name: client.get(PROBES[name][0], headers=auth(key)).status_code
        for name, client in stack.clients.items()
    }


def known_everywhere(stack: Stack, key: str) -> dict[str, int]:
    """Wait until every service knows the key (answers anything but 401); return the answers."""

    def check() -> dict[str, int]:
        found = answers(stack, key)
        assert 401 not in found.values(), found
        return found

    return eventually(check)


def refused_everywhere(stack: Stack, key: str, timeout: float = 10.0) -> None:
    def check() -> None:
        found = answers(stack, key)
        assert set(found.values()) == {401}, found

    eventually(check, timeout=timeout)


def test_the_first_key_has_every_scope_and_keys_are_listed_without_secrets(stack: Stack) -> None:
    owner = stack.create_tenant()
    listed = stack.ingest.get("/v1/api-keys", headers=auth(owner))
    assert listed.status_code == 200
    [first] = listed.json()["items"]
    assert (first["name"], first["scopes"], first["status"]) == ("default", list(ALL_SCOPES), "active")
    assert owner.startswith(first["prefix"])
    assert first["expires_at"] is None
    assert first["revoked_at"] is None

    created = create_key(stack, owner, ["segments:read", "ingest:read", "segments:read"])
    assert created["scopes"] == ["ingest:read", "segments:read"]  # canonical order, once each
    assert created["api_key"].startswith(created["prefix"])
    page = stack.ingest.get("/v1/api-keys", params={"limit": 1}, headers=auth(owner)).json()
    assert [k["id"] for k in page["items"]] == [first["id"]]
    rest = stack.ingest.get(
        "/v1/api-keys", params={"cursor": page["next_cursor"]}, headers=auth(owner)
    ).json()
    assert [k["id"] for k in rest["items"]] == [created["id"]]
    assert rest["next_cursor"] is None
    text = (
        listed.text
        + str(page)
        + str(rest)
        + stack.ingest.get(f"/v1/api-keys/{created['id']}", headers=auth(owner)).text
    )
    for secret in (owner, created["api_key"]):
        assert secret not in text
    assert "key_hash" not in text
    assert stack.ingest.get("/v1/api-keys", params={"limit": 1001}, headers=auth(owner)).status_code == 422
    assert stack.ingest.get(f"/v1/api-keys/{uuid4()}", headers=auth(owner)).status_code == 404


def test_a_key_with_one_scope_gets_403_everywhere_else(stack: Stack) -> None:
    owner = stack.create_tenant()
    reader = create_key(stack, owner, ["profiles:read"])["api_key"]
    assert known_everywhere(stack, reader) == {"ingest": 403, "profile": 200, "segmentation": 403}

    order = stack.ingest.post(
        "/v1/orders", json=order_body("S-1", "s@example.com", "1.00"), headers=auth(reader)
    )
    assert order.status_code == 403
    assert order.headers["content-type"] == "application/problem+json"
    assert order.json()["required_scope"] == "ingest:write"
    assert (
        stack.segmentation.get("/v1/segments", headers=auth(reader)).json()["required_scope"]
        == "segments:read"
    )

    # Every route of every service (from the OpenAPI documents): 403 unless it needs profiles:read.
    checked = 0
    for name, client in stack.clients.items():
        spec = client.get("/openapi.json").json()
        for path, item in spec["paths"].items():
            if path in {"/healthz", "/readyz", "/metrics", "/v1/tenants"}:
                continue
            url = re.sub(
                r"\{[^}]+\}", lambda m: "mercadolivre" if m.group(0) == "{source}" else str(uuid4()), path
            )
            for method in item:
                response = client.request(method.upper(), url, headers=auth(reader), json={"name": "x"})
                if required_scope(method.upper(), path) == "profiles:read":
                    assert response.status_code != 403, (name, method, path, response.text)
                else:
                    assert response.status_code == 403, (name, method, path, response.text)
                checked += 1
    assert checked >= 40


def test_a_key_cannot_grant_scopes_it_does_not_hold(stack: Stack) -> None:
    owner = stack.create_tenant()
    manager = create_key(stack, owner, ["keys:manage", "profiles:read"])["api_key"]
    refused = stack.ingest.post(
        "/v1/api-keys",
        json={"name": "more", "scopes": ["profiles:read", "profiles:write"]},
        headers=auth(manager),
    )
    assert refused.status_code == 403
    assert refused.json()["missing_scopes"] == ["profiles:write"]
    assert create_key(stack, manager, ["profiles:read"])["scopes"] == ["profiles:read"]

    # Nor by rotating a key that has more than itself.
    first_id = stack.ingest.get("/v1/api-keys", headers=auth(owner)).json()["items"][0]["id"]
    assert stack.ingest.post(f"/v1/api-keys/{first_id}/rotate", headers=auth(manager)).status_code == 403
    for body in (
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["admin"]},
        {"name": "", "scopes": ["ingest:read"]},
    ):
        assert stack.ingest.post("/v1/api-keys", json=body, headers=auth(owner)).status_code == 422
    past = {"name": "x", "scopes": ["ingest:read"], "expires_at": "2020-01-01T00:00:00Z"}
    assert stack.ingest.post("/v1/api-keys", json=past, headers=auth(owner)).status_code == 422
    # Keys without keys:manage cannot manage keys at all.
    reader = create_key(stack, owner, ["ingest:read"])["api_key"]
    assert stack.ingest.get("/v1/api-keys", headers=auth(reader)).status_code == 403


def test_a_revoked_key_is_refused_by_every_service_within_seconds(stack: Stack) -> None:
    owner = stack.create_tenant()
    created = create_key(stack, owner, ["ingest:read", "profiles:read", "segments:read"])
    key = created["api_key"]
    assert known_everywhere(stack, key) == {"ingest": 200, "profile": 200, "segmentation": 200}

    assert stack.ingest.delete(f"/v1/api-keys/{created['id']}", headers=auth(owner)).status_code == 204
    assert stack.ingest.get("/v1/imports", headers=auth(key)).status_code == 401  # ingest owns the keys
    started = time.monotonic()
    refused_everywhere(stack, key)
    assert time.monotonic() - started < 10
    shown = stack.ingest.get(f"/v1/api-keys/{created['id']}", headers=auth(owner)).json()
    assert shown["status"] == "revoked"
    assert shown["revoked_at"] is not None
    # Revoking again changes nothing; a revoked key cannot be rotated.
    assert stack.ingest.delete(f"/v1/api-keys/{created['id']}", headers=auth(owner)).status_code == 204
    assert stack.ingest.get(f"/v1/api-keys/{created['id']}", headers=auth(owner)).json() == shown
    rotate = stack.ingest.post(f"/v1/api-keys/{created['id']}/rotate", headers=auth(owner))
    assert rotate.status_code == 409
    assert answers(stack, owner) == {"ingest": 200, "profile": 200, "segmentation": 200}


def test_rotation_keeps_the_old_key_for_the_grace_period(stack: Stack) -> None:
    owner = stack.create_tenant()
    old = create_key(stack, owner, ["ingest:read", "profiles:read", "segments:read"])
    known_everywhere(stack, old["api_key"])
    response = stack.ingest.post(
        f"/v1/api-keys/{old['id']}/rotate", json={"grace_seconds": 1}, headers=auth(owner)
    )
    assert response.status_code == 201, response.text
    rotated = response.json()
    new, previous = rotated["key"], rotated["previous"]
    assert (new["name"], new["scopes"], new["expires_at"]) == (old["name"], old["scopes"], None)
    assert new["id"] != old["id"]
    assert previous["id"] == old["id"]
    expires = datetime.fromisoformat(previous["expires_at"])
    assert timedelta(0) < expires - utcnow() <= timedelta(seconds=1)

    # Both work (the old one until it expires); then only the new one.
    assert stack.ingest.get("/v1/imports", headers=auth(old["api_key"])).status_code == 200
    assert known_everywhere(stack, new["api_key"]) == {"ingest": 200, "profile": 200, "segmentation": 200}
    refused_everywhere(stack, old["api_key"])
    assert answers(stack, new["api_key"]) == {"ingest": 200, "profile": 200, "segmentation": 200}
    assert stack.ingest.get(f"/v1/api-keys/{old['id']}", headers=auth(owner)).json()["status"] == "expired"

    for grace in (-1, 30 * 86400 + 1):
        body = {"grace_seconds": grace}
        assert (
            stack.ingest.post(f"/v1/api-keys/{new['id']}/rotate", json=body, headers=auth(owner)).status_code
            == 422
        )
    # The default grace period is a day.
    again = stack.ingest.post(f"/v1/api-keys/{new['id']}/rotate", headers=auth(owner)).json()
    left = datetime.fromisoformat(again["previous"]["expires_at"]) - utcnow()
    assert timedelta(hours=23) < left <= timedelta(days=1)


def test_an_expired_key_is_refused_everywhere(stack: Stack) -> None:
    owner = stack.create_tenant()
    expires_at = utcnow() + timedelta(seconds=5)
    created = create_key(
        stack, owner, ["ingest:read", "profiles:read", "segments:read"], expires_at=expires_at.isoformat()
    )
    assert datetime.fromisoformat(created["expires_at"]) == expires_at
    known_everywhere(stack, created["api_key"])
    time.sleep(max((expires_at - utcnow()).total_seconds(), 0))
    assert answers(stack, created["api_key"]) == {"ingest": 401, "profile": 401, "segmentation": 401}
    assert (
        stack.ingest.get(f"/v1/api-keys/{created['id']}", headers=auth(owner)).json()["status"] == "expired"
    )


def test_the_last_key_that_can_manage_keys_cannot_be_revoked(stack: Stack) -> None:
    owner = stack.create_tenant()
    owner_id = stack.ingest.get("/v1/api-keys", headers=auth(owner)).json()["items"][0]["id"]
    refused = stack.ingest.delete(f"/v1/api-keys/{owner_id}", headers=auth(owner))
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"

    # A manager that expires does not replace one that does not.
    expiring = create_key(
        stack, owner, ["keys:manage"], expires_at=(utcnow() + timedelta(days=1)).isoformat()
    )
    assert stack.ingest.delete(f"/v1/api-keys/{owner_id}", headers=auth(owner)).status_code == 409
    # Another lasting manager does; then that one is the last.
    successor = create_key(stack, owner, ["keys:manage"])
    assert (
        stack.ingest.delete(f"/v1/api-keys/{owner_id}", headers=auth(successor["api_key"])).status_code == 204
    )
    assert (
        stack.ingest.delete(f"/v1/api-keys/{successor['id']}", headers=auth(successor["api_key"])).status_code
        == 409
    )
    # The expiring one may go: the successor outlives it.
    assert (
        stack.ingest.delete(f"/v1/api-keys/{expiring['id']}", headers=auth(successor["api_key"])).status_code
        == 204
    )


def test_another_tenants_keys_are_not_found(stack: Stack) -> None:
    owner, other = stack.create_tenant("A"), stack.create_tenant("B")
    created = create_key(stack, owner, ["ingest:read"])
    for method, path in (("GET", ""), ("POST", "/rotate"), ("DELETE", "")):
        response = stack.ingest.request(method, f"/v1/api-keys/{created['id']}{path}", headers=auth(other))
        assert response.status_code == 404, (method, path)
    assert stack.ingest.get("/v1/imports", headers=auth(created["api_key"])).status_code == 200
    listed = stack.ingest.get("/v1/api-keys", headers=auth(other)).json()["items"]
    assert created["id"] not in {k["id"] for k in listed}


def test_over_the_rate_limit_answers_429_with_retry_after(make_settings: SettingsFactory) -> None:
    settings = make_settings("ingest", rate_limit_per_second=0.5, rate_limit_burst=3, run_workers=False)
    with TestClient(create_ingest(settings)) as ingest:
        tenant = ingest.post("/v1/tenants", json={"name": "Loja"}, headers=auth(ADMIN_TOKEN))
        key = tenant.json()["api_key"]
        other = ingest.post(
            "/v1/api-keys", json={"name": "other", "scopes": ["ingest:read"]}, headers=auth(key)
        ).json()["api_key"]
        codes = [ingest.get("/v1/imports", headers=auth(key)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]  # the key creation took the first token
        limited = ingest.get("/v1/imports", headers=auth(key))
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        retry = int(limited.headers["retry-after"])
        assert retry >= 1
        assert ingest.get("/v1/imports", headers=auth(other)).status_code == 200  # per key
        time.sleep(retry)
        assert ingest.get("/v1/imports", headers=auth(key)).status_code == 200
        # The admin token and unknown keys are not counted against anyone.
        assert ingest.get("/v1/imports", headers=auth("clt_unknown")).status_code == 401
