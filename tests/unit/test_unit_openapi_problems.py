"""What the API contract says of errors (shared.errors.document_problems), `Allow` on a 405, and request
times (shared.web.RequestTime): the pieces found wanting by the schemathesis run."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.security import HTTPBearer
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

from shared.errors import PROBLEM_JSON, document_problems, install_problem_handlers, problem_responses
from shared.web import RequestTime


class Body(BaseModel):
    name: str


class Window(BaseModel):
    since: RequestTime


def make_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    secured = [Depends(HTTPBearer(auto_error=False))]

    @app.get("/things", dependencies=secured)
    def list_things() -> list[str]:
        return []

    @app.post("/things", dependencies=secured, responses=problem_responses(409))
    def create_thing(body: Body) -> Body:
        return body

    @app.get("/things/{thing_id}", dependencies=secured)
    def get_thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def documented() -> dict[str, Any]:
    spec = make_app().openapi()
    document_problems(spec)
    return spec


def test_every_error_the_shared_code_may_answer_is_declared() -> None:
    paths = documented()["paths"]
    assert set(paths["/things"]["get"]["responses"]) == {"200", "401", "403", "429"}
    assert set(paths["/things"]["post"]["responses"]) == {
        "200",
        "400",
        "401",
        "403",
        "409",
        "413",
        "422",
        "429",
    }
    assert set(paths["/things/{thing_id}"]["get"]["responses"]) == {"200", "401", "403", "422", "429"}
    assert set(paths["/health"]["get"]["responses"]) == {"200"}


def test_errors_are_problem_json_with_their_headers() -> None:
    spec = documented()
    problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for item in spec["paths"].values():
        for operation in item.values():
            for code, response in operation["responses"].items():
                if code.startswith("4"):
                    assert response["content"] == problem, code
    responses = spec["paths"]["/things"]["post"]["responses"]
    assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert responses["429"]["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
    assert responses["422"]["description"] == "Invalid request"
    schemas = spec["components"]["schemas"]
    assert schemas["Problem"]["required"] == ["type", "title", "status"]
    assert "HTTPValidationError" not in schemas
    assert "HTTPValidationError" not in str(spec)


def test_a_405_allows_every_method_of_the_path() -> None:
    client = TestClient(make_app())
    response = client.delete("/things")
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["allow"] == "GET, POST"


@pytest.mark.parametrize(
    "given", ["2026-11-20T10:00:00-03:00", "2026-11-20T13:00:00Z", "2026-11-20 13:00:00+00:00"]
)
def test_request_times_are_rfc3339_with_an_offset(given: str) -> None:
    assert Window(since=given).since == Window(since="2026-11-20T13:00:00Z").since


@pytest.mark.parametrize(
    "given", [0, 1.5, "0.5", "1700000000", True, "2026-11-20", "2026-11-20T10:00:00", ""]
)
def test_request_times_refuse_numbers_dates_and_naive_times(given: Any) -> None:
    with pytest.raises(ValidationError):
        Window(since=given)
