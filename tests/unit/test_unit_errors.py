"""shared.errors: domain exceptions and FastAPI errors rendered as problem+json, without echoing input."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from shared.errors import (
    PROBLEM_JSON,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
    install_problem_handlers,
    problem_responses,
)
from shared.records import Customer

EMAIL = "maria.silva@example.com"


class ByEmail(BaseModel):
    kind: Literal["email"]
    value: str


class ByPhone(BaseModel):
    kind: Literal["phone"]
    value: str


class Lookup(BaseModel):
    """A tagged union (pydantic quotes a wrong tag in its message), and mappings (their keys are the
    client's text)."""

    identifier: Annotated[ByEmail | ByPhone, Field(discriminator="kind")]
    limits: dict[Literal["email", "phone"], int] = {}
    counts: dict[str, int] = {}


def make_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/things/{thing_id}")
    def get_thing(thing_id: int) -> dict[str, int]:
        raise NotFound("No thing with this id.")

    @app.post("/invalid")
    def invalid() -> None:
        raise Invalid("The rule is not valid.", extra={"field": "rule"})

    @app.post("/conflict")
    def conflict() -> None:
        raise Conflict("Already exists.")

    @app.get("/forbidden")
    def forbidden() -> None:
        raise Forbidden("Not yours.")

    @app.get("/private")
    def private() -> None:
        raise Unauthorized("Send the tenant's API key as `Authorization: Bearer <key>`.")

    @app.post("/customers")
    def create_customer(customer: Customer) -> dict[str, str | None]:
        return {"email": customer.email}

    @app.post("/lookups")
    def lookup(body: Lookup) -> dict[str, str]:
        return {"kind": body.identifier.kind}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(f"database said: duplicate key {EMAIL}")

    return app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(make_app(), raise_server_exceptions=False)


def assert_problem(response: Any, status: int, title: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["type"] == "about:blank"
    assert body["title"] == title
    assert body["status"] == status
    return body


def test_not_found(client: TestClient) -> None:
    body = assert_problem(client.get("/things/7"), 404, "Not found")
    assert body["detail"] == "No thing with this id."
    assert "WWW-Authenticate" not in client.get("/things/7").headers


def test_invalid_with_extra_members(client: TestClient) -> None:
    body = assert_problem(client.post("/invalid"), 422, "Invalid request")
    assert body["detail"] == "The rule is not valid."
    assert body["field"] == "rule"


@pytest.mark.parametrize(
    ("method", "path", "status", "title"),
    [("POST", "/conflict", 409, "Conflict"), ("GET", "/forbidden", 403, "Forbidden")],
)
def test_other_domain_errors(client: TestClient, method: str, path: str, status: int, title: str) -> None:
    assert_problem(client.request(method, path), status, title)


def test_unauthorized_asks_for_a_bearer_token(client: TestClient) -> None:
    response = client.get("/private")
    assert_problem(response, 401, "Unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_unknown_route_is_a_problem(client: TestClient) -> None:
    assert_problem(client.get("/nowhere"), 404, "Not found")


def test_wrong_method_is_a_problem(client: TestClient) -> None:
    assert_problem(client.delete("/things/7"), 405, "Method not allowed")


def test_wrong_method_keeps_the_allow_header(client: TestClient) -> None:
    assert client.delete("/things/7").headers.get("allow") == "GET"


def test_path_parameter_validation_is_a_problem(client: TestClient) -> None:
    body = assert_problem(client.get("/things/not-a-number"), 422, "Invalid request")
    assert body["errors"][0]["loc"] == ["path", "thing_id"]
    assert "not-a-number" not in client.get("/things/not-a-number").text


def test_valid_body_passes(client: TestClient) -> None:
    response = client.post("/customers", json={"email": " Maria.Silva@Example.com "})
    assert response.status_code == 200
    assert response.json() == {"email": EMAIL}


@pytest.mark.parametrize(
    ("body", "loc", "error_type"),
    [
        ({"email": "maria.silva@example"}, ["body", "email"], "value_error"),
        ({"email": EMAIL, "name": ["Maria", "Silva"]}, ["body", "name"], "string_type"),
        # The unknown key is the client's own text (it could be personal data): it is not repeated.
        ({"email": EMAIL, "nickname": "Mari 1990"}, ["body", "(unknown field)"], "extra_forbidden"),
        ({"email": "maria.silva" + "a" * 300 + "@example.com"}, ["body", "email"], "string_too_long"),
    ],
)
def test_validation_error_does_not_echo_input(
    client: TestClient, body: dict[str, Any], loc: list[str], error_type: str
) -> None:
    response = client.post("/customers", json=body)
    problem = assert_problem(response, 422, "Invalid request")
    assert problem["detail"] == "The request does not match the schema."
    assert [(e["loc"], e["type"]) for e in problem["errors"]] == [(loc, error_type)]
    assert all(set(e) == {"loc", "msg", "type"} for e in problem["errors"])
    for value in ("maria.silva@example", "Silva", "91234"):
        assert value not in response.text


@pytest.mark.parametrize(
    ("body", "loc", "error_type"),
    [
        ({"identifier": {"kind": EMAIL, "value": "x"}}, ["body", "identifier"], "union_tag_invalid"),
        # A refused key is not repeated; another key is, unless it looks like personal data.
        (
            {"identifier": {"kind": "email", "value": "x"}, "limits": {EMAIL: 1}},
            ["body", "limits", "(key)", "[key]"],
            "literal_error",
        ),
        (
            {"identifier": {"kind": "email", "value": "x"}, "counts": {EMAIL: "many"}},
            ["body", "counts", "[redacted]"],
            "int_parsing",
        ),
        (
            {"identifier": {"kind": "email", "value": "x"}, "counts": {"orders": "many"}},
            ["body", "counts", "orders"],
            "int_parsing",
        ),
    ],
)
def test_validation_error_does_not_echo_tags_or_mapping_keys(
    client: TestClient, body: dict[str, Any], loc: list[str], error_type: str
) -> None:
    response = client.post("/lookups", json=body)
    problem = assert_problem(response, 422, "Invalid request")
    assert [(e["loc"], e["type"]) for e in problem["errors"]] == [(loc, error_type)]
    assert "maria" not in response.text


def test_a_wrong_tag_names_the_expected_ones(client: TestClient) -> None:
    response = client.post("/lookups", json={"identifier": {"kind": EMAIL, "value": "x"}})
    [error] = response.json()["errors"]
    assert error["msg"] == "Input tag does not match any of the expected tags: 'email', 'phone'"


def test_malformed_json_is_a_problem(client: TestClient) -> None:
    response = client.post(
        "/customers",
        content=b'{"email": "maria.silva@example.com", ',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 422, "Invalid request")
    assert "maria" not in response.text


def test_unexpected_error_is_a_generic_problem(client: TestClient) -> None:
    response = client.get("/boom")
    body = assert_problem(response, 500, "Internal error")
    assert body["detail"] == "The server could not complete the request."
    assert EMAIL not in response.text
    assert "duplicate key" not in response.text


def test_problem_responses_for_openapi() -> None:
    responses = problem_responses(401, 404)
    assert set(responses) == {401, 404}
    assert responses[404]["content"] == {PROBLEM_JSON: {}}
    assert responses[401]["description"]
