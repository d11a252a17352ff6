"""A batch's answer is built without pydantic (`batch_response`): it must be exactly what `BatchResult`, the
model /docs shows, reads and writes."""

from uuid import uuid4

import orjson

from services.ingest.intake import ItemResult, Outcome
from services.ingest.schemas import BatchResult, batch_response


def test_batch_response_is_a_batch_result_as_its_model_writes_it() -> None:
    results = [
        ItemResult(0, Outcome.accepted, uuid4(), 1),
        ItemResult(1, Outcome.updated, uuid4(), 3),
        ItemResult(2, Outcome.duplicate, uuid4(), 1),
        ItemResult(3, Outcome.stale, uuid4(), 2),
        ItemResult(4, Outcome.rejected, errors=[{"loc": ["customer", "email"], "msg": "bad", "type": "x"}]),
        ItemResult(5, Outcome.suppressed),
        ItemResult(6, Outcome.accepted, uuid4(), 1),
    ]
    response = batch_response(results)
    body = bytes(response.body)

    model = BatchResult.model_validate_json(body)
    assert model.model_dump_json().encode() == body
    assert response.media_type == "application/json"
    counts = (model.accepted, model.updated, model.duplicates, model.stale, model.rejected, model.suppressed)
    assert counts == (2, 1, 1, 1, 1, 1)
    assert [r.index for r in model.results] == list(range(7))
    assert [r.status for r in model.results] == [r.outcome for r in results]
    assert [r.id for r in model.results] == [r.id for r in results]
    assert [r.version for r in model.results] == [r.version for r in results]
    parsed = orjson.loads(body)
    assert parsed["results"][4]["errors"] == [{"loc": ["customer", "email"], "msg": "bad", "type": "x"}]
    assert parsed["results"][5] == {
        "id": None,
        "status": "suppressed",
        "version": None,
        "errors": None,
        "index": 5,
    }


def test_an_empty_batch_answers_zero_counts() -> None:
    body = orjson.loads(batch_response([]).body)
    counts = {"accepted": 0, "updated": 0, "duplicates": 0, "stale": 0, "rejected": 0, "suppressed": 0}
    assert body == counts | {"results": []}
