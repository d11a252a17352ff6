"""shared.consumer.describe_error: error descriptions for logs and DLQ headers quote no record data."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from shared.consumer import describe_error
from shared.events import Envelope
from shared.records import Order

EMAIL = "maria.silva@example"


def validation_error(data: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Order.model_validate(data)
    return caught.value


def test_validation_error_lists_locations_and_types_only() -> None:
    error = validation_error(
        {
            "external_id": "ML-1",
            "source": "Mercado Livre",
            "status": "paid",
            "placed_at": "2026-11-20T14:03:00",
            "total": "12.345",
            "customer": {"email": EMAIL, "name": "Maria Silva"},
        }
    )
    description = describe_error(error)
    assert description == (
        "ValidationError: customer.email:value_error, "
        "source:string_pattern_mismatch, total:decimal_max_places"
    )
    for value in (EMAIL, "Maria", "Mercado Livre", "12.345", "2026-11-20"):
        assert value not in description
    assert EMAIL in str(error)  # pydantic's own text would have leaked it


def test_validation_error_description_is_bounded() -> None:
    items = [{"sku": f"SKU-{i}", "unit_price": "-1", "quantity": 0} for i in range(200)]
    error = validation_error({"items": items})
    description = describe_error(error)
    assert description.startswith("ValidationError: ")
    assert len(description) <= 1000


def test_other_errors_are_described_by_type_only() -> None:
    assert describe_error(RuntimeError(f"duplicate key ({EMAIL})")) == "RuntimeError"
    with pytest.raises(orjson.JSONDecodeError) as caught:
        Envelope.from_bytes(b'{"customer": "maria.silva@example", ')
    assert describe_error(caught.value) == "JSONDecodeError"
