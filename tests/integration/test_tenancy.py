"""Tenants and API keys across the three services, and tenant isolation on every route.

The route lists come from each service's OpenAPI document, so a new route cannot escape these checks.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from tests.support import ADMIN_TOKEN, Stack, auth, eventually, order_body

pytestmark = pytest.mark.integration

# Open to the orchestrator and the metrics scraper: they say nothing of any tenant (no tenant or personal
# data in any label; routes are templates) and are kept inside the cluster (deploy/README.md).
PUBLIC = {"/healthz", "/readyz", "/metrics"}
# Path parameters that name no tenant-owned resource (routes with only these are not isolation cases).
NOT_RESOURCES = {"source": "mercadolivre"}
# Routes that take a body: a valid one (else validation answers 422 before the tenant check), and what the
# owner may get (a decided suggestion cannot be decided again: 409).
BODIES: dict[str, tuple[dict[str, Any] | None, set[int]]] = {
    "/v1/profiles/{profile_id}/unmerge": ({"identifier": {"kind": "email", "value": "a@example.com"}}, {409}),
    "/v1/profiles/{profile_id}/consents": (
        {"consents": [{"purpose": "profiling", "status": "granted"}]},
        {200},
    ),
    "/v1/merge-suggestions/{suggestion_id}/accept": (None, {200, 409}),
    "/v1/merge-suggestions/{suggestion_id}/reject": (None, {200, 409}),
    # GET, PATCH and DELETE (the last route walked: the endpoint is gone afterwards).
    "/v1/webhook-endpoints/{endpoint_id}": ({"description": "x"}, {200, 204}),
    # GET, PATCH and DELETE of a segment, after its sub-resources (export, stats, history, evaluations).
    "/v1/segments/{segment_id}": ({"name": "A's, renamed"}, {200, 204}),
    # GET lists the evaluations, POST queues one (202).
    "/v1/segments/{segment_id}/evaluations": (None, {200, 202}),
    "/v1/webhook-endpoints/{endpoint_id}/test": (None, {202}),
    # The test delivery is still pending (its receiver is down): 409 until it has failed for good.
    "/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver": (None, {202, 409}),
    "/v1/webhook-endpoints/{endpoint_id}/redeliver": ({"since": "2026-01-01T00:00:00Z"}, {202}),
    # GET and DELETE (revoke) of a key the owner created for the matrix; revoking again is 204 too.
    "/v1/api-keys/{key_id}": (None, {200, 204}),
    # A new key (201); 409 once the key is revoked (its DELETE may be walked first).
    "/v1/api-keys/{key_id}/rotate": ({"grace_seconds": 0}, {201, 409}),
}


@pytest.fixture(autouse=True)
def local_webhook_receivers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Webhook endpoints on 127.0.0.1 (nothing listens there): never an address outside the machine."""
    monkeypatch.setenv("SEGMENTATION_WEBHOOK_ALLOW_PRIVATE", "true")


def operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    spec = client.get("/openapi.json").json()
    return [
        (method.upper(), path, op)
        for path, item in spec["paths"].items()
        if path not in PUBLIC
        for method, op in item.items()
    ]


def fill(path: str, ids: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in NOT_RESOURCES:
            return NOT_RESOURCES[name]
        assert name in ids, f"no id for path parameter {name!r}: add it to the isolation matrix"
        return ids[name]

    return re.sub(r"\{([^}]+)\}", value, path)


def call(client: TestClient, method: str, url: str, key: str | None, body: Any = None) -> Any:
    headers = auth(key) if key else {}
    if body is None and method in {"POST", "PUT", "PATCH"}:
        body = {"name": "x"}
    return client.request(method, url, headers=headers, json=body)


def test_every_route_refuses_requests_without_a_valid_key(stack: Stack) -> None:
    random_ids = {
        "profile_id": str(uuid4()),
        "segment_id": str(uuid4()),
        "import_id": str(uuid4()),
        "suggestion_id": str(uuid4()),
        "refresh_id": str(uuid4()),
        "endpoint_id": str(uuid4()),
        "delivery_id": str(uuid4()),
        "evaluation_id": str(uuid4()),
        "key_id": str(uuid4()),
        "request_id": str(uuid4()),
    }
    checked = 0
    for name, client in stack.clients.items():
        for method, path, _ in operations(client):
            url = fill(path, random_ids)
            for key in (None, "clt_not-a-real-key", ADMIN_TOKEN if path != "/v1/tenants" else "clt_x"):
                response = call(client, method, url, key)
                assert response.status_code == 401, (name, method, path, key, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert response.headers["www-authenticate"] == "Bearer"
                checked += 1
    assert checked >= 3 * 7  # every route of the three services


def test_a_new_key_works_on_every_service(stack: Stack) -> None:
    # create_tenant returns only once profile and segmentation accept the key (propagated via Kafka).
    key = stack.create_tenant("Loja Nova")
    for client, path in ((stack.profile, "/v1/profiles"), (stack.segmentation, "/v1/segments")):
        assert client.get(path, headers=auth(key)).status_code == 200
    assert (
        stack.ingest.post(
            "/v1/orders", json=order_body("K-1", "k@example.com", "1.00"), headers=auth(key)
        ).status_code
        == 202
    )


def test_a_tenant_never_sees_another_tenants_data(stack: Stack) -> None:
    key_a = stack.create_tenant("A")
    key_b = stack.create_tenant("B")
    assert (
        stack.ingest.post(
            "/v1/orders", json=order_body("A-1", "a@example.com", "500.00"), headers=auth(key_a)
        ).status_code
        == 202
    )

    def a_profile() -> str:
        items = stack.profile.get(
            "/v1/profiles", params={"email": "a@example.com"}, headers=auth(key_a)
        ).json()["items"]
        assert len(items) == 1
        return str(items[0]["id"])

    profile_id = eventually(a_profile)
    segment = stack.segmentation.post(
        "/v1/segments",
        json={"name": "A's", "rule": {"field": "orders_count", "op": "gte", "value": 0}},
        headers=auth(key_a),
    )
    assert segment.status_code == 201
    upload = stack.ingest.post(
        "/v1/imports",
        data={"format": "jsonl", "kind": "events"},
        files={
            "files": (
                "e.jsonl",
                b'{"type": "search", "anonymous_id": "d", "occurred_at": "2026-11-20T10:00:00Z"}\n',
            )
        },
        headers=auth(key_a),
    )
    assert upload.status_code == 202
    # Two buyers with one name in one city: a merge suggestion (see test_probabilistic).
    for number, birth_date in (("A-2", {"birth_date": "1985-03-02"}), ("A-3", {})):
        lookalike = order_body(number, "unused@example.com", "1.00", source="amazon")
        lookalike["customer"] = {"external_id": number, "name": "Maria Aparecida Souza", **birth_date}
        lookalike["customer"]["address"] = {"city": "São Paulo", "state": "SP"}
        assert stack.ingest.post("/v1/orders", json=lookalike, headers=auth(key_a)).status_code == 202

    def a_suggestion() -> str:
        items = stack.profile.get("/v1/merge-suggestions", headers=auth(key_a)).json()["items"]
        assert len(items) == 1
        return str(items[0]["id"])

    refresh = stack.profile.post("/v1/traits:refresh", headers=auth(key_a))
    assert refresh.status_code == 202
    endpoint = stack.segmentation.post(
        "/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["segment.entered"]},
        headers=auth(key_a),
    )
    assert endpoint.status_code == 201, endpoint.text
    delivery = stack.segmentation.post(
        f"/v1/webhook-endpoints/{endpoint.json()['id']}/test", headers=auth(key_a)
    )
    assert delivery.status_code == 202, delivery.text
    owned_key = stack.ingest.post(
        "/v1/api-keys", json={"name": "matrix", "scopes": ["ingest:read"]}, headers=auth(key_a)
    )
    assert owned_key.status_code == 201, owned_key.text
    privacy_request = stack.profile.post(
        "/v1/privacy/requests",
        json={"type": "access", "subject": {"email": "a@example.com"}},
        headers=auth(key_a),
    )
    assert privacy_request.status_code == 202, privacy_request.text
    request_url = f"/v1/privacy/requests/{privacy_request.json()['id']}"

    def report_ready() -> None:  # the report exists once every service answered
        assert stack.profile.get(request_url, headers=auth(key_a)).json()["status"] == "completed"

    eventually(report_ready)
    ids = {
        "request_id": privacy_request.json()["id"],
        "key_id": owned_key.json()["id"],
        "refresh_id": refresh.json()["id"],
        "profile_id": profile_id,
        "segment_id": segment.json()["id"],
        "evaluation_id": segment.json()["evaluation"]["id"],
        "import_id": upload.json()["id"],
        "suggestion_id": eventually(a_suggestion),
        "endpoint_id": endpoint.json()["id"],
        "delivery_id": delivery.json()["id"],
    }

    # Every route with an id: A sees its resource, B gets 404 for the very same URL.
    with_ids = 0
    for name, client in stack.clients.items():
        for method, path, _ in operations(client):
            if not set(re.findall(r"\{([^}]+)\}", path)) - set(NOT_RESOURCES):
                continue
            url = fill(path, ids)
            body, expected = BODIES.get(path, (None, {200}))
            assert call(client, method, url, key_a, body).status_code in expected, (name, path)
            response = call(client, method, url, key_b, body)
            assert response.status_code == 404, (name, method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            with_ids += 1
    assert with_ids >= 3

    # Lists and lookups: B sees nothing of A's.
    assert stack.profile.get("/v1/profiles", headers=auth(key_b)).json()["items"] == []
    assert (
        stack.profile.get("/v1/profiles", params={"email": "a@example.com"}, headers=auth(key_b)).json()[
            "items"
        ]
        == []
    )
    assert stack.segmentation.get("/v1/segments", headers=auth(key_b)).json()["items"] == []
    assert stack.profile.get("/v1/merge-suggestions", headers=auth(key_b)).json()["items"] == []


def test_tenant_creation_needs_the_admin_token(stack: Stack) -> None:
    key = stack.create_tenant()
    for headers in ({}, auth(key), auth("wrong")):
        response = stack.ingest.post("/v1/tenants", json={"name": "x"}, headers=headers)
        assert response.status_code == 401
    response = stack.ingest.post("/v1/tenants", json={"name": ""}, headers=auth(ADMIN_TOKEN))
    assert response.status_code == 422
