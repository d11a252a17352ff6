"""shared.logs: JSON lines with service, level, message, extras and context ids; no exception text, and
personal data that reaches a logger anyway is masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.logs import REDACTED, JsonFormatter, event_id_var, redact, request_id_var, tenant_id_var


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("profile"))
    logger = logging.getLogger("clientela.test.logs")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.handlers[:] = []
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_record(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    logger.info("order %s accepted", "ML-1", extra={"order_version": 2, "outcome": "updated"})
    logger.warning("second")
    first, second = lines(stream)
    assert first["level"] == "info"
    assert first["service"] == "profile"
    assert first["logger"] == "clientela.test.logs"
    assert first["msg"] == "order ML-1 accepted"
    assert first["order_version"] == 2
    assert first["outcome"] == "updated"
    assert datetime.fromisoformat(first["ts"]).utcoffset() == timedelta(0)
    assert second["level"] == "warning"
    assert second["msg"] == "second"
    # Only our fields: none of LogRecord's internals (args, pathname, ...).
    assert set(second) == {"ts", "level", "service", "logger", "msg"}


def test_non_json_extras_are_rendered(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    profile_id = UUID("5d2c7e1a-8b0f-4f4e-a8c6-1e9b2d3f4a50")
    logger.info("traits", extra={"profile_id": profile_id, "total": Decimal("10.50"), "ids": [1, 2]})
    (entry,) = lines(stream)
    assert entry["profile_id"] == str(profile_id)
    assert entry["total"] == "10.50"
    assert entry["ids"] == [1, 2]


def test_context_ids_appear_when_set(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    logger.info("without context")
    tokens = (
        request_id_var.set("req-5f0c2a"),
        tenant_id_var.set("0b6f3a52-6a43-4c83-9f57-0f1d3c9a7e01"),
        event_id_var.set("9a1e4c3b-2d5f-4e6a-8b7c-0d1e2f3a4b5c"),
    )
    try:
        logger.info("with context")
    finally:
        event_id_var.reset(tokens[2])
        tenant_id_var.reset(tokens[1])
        request_id_var.reset(tokens[0])
    logger.info("after reset")
    before, during, after = lines(stream)
    for entry in (before, after):
        assert not {"request_id", "tenant_id", "event_id"} & set(entry)
    assert during["request_id"] == "req-5f0c2a"
    assert during["tenant_id"] == "0b6f3a52-6a43-4c83-9f57-0f1d3c9a7e01"
    assert during["event_id"] == "9a1e4c3b-2d5f-4e6a-8b7c-0d1e2f3a4b5c"


def test_only_the_set_context_ids_appear(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    token = event_id_var.set("9a1e4c3b-2d5f-4e6a-8b7c-0d1e2f3a4b5c")
    try:
        logger.info("consuming")
    finally:
        event_id_var.reset(token)
    (entry,) = lines(stream)
    assert entry["event_id"] == "9a1e4c3b-2d5f-4e6a-8b7c-0d1e2f3a4b5c"
    assert "request_id" not in entry
    assert "tenant_id" not in entry


def test_exceptions_are_logged_by_type_only(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    try:
        raise ValueError("duplicate key value (email)=(maria.silva@example.com)")
    except ValueError:
        logger.exception("insert failed")
    (entry,) = lines(stream)
    assert entry["level"] == "error"
    assert entry["msg"] == "insert failed"
    assert entry["error_type"] == "ValueError"
    assert "maria" not in stream.getvalue()
    assert "Traceback" not in stream.getvalue()


def test_tracebacks_logged_as_text_lose_the_exception_message() -> None:
    # uvicorn logs start-up failures as a formatted traceback in the message itself.
    traceback_text = (
        "Traceback (most recent call last):\n"
        '  File "/app/shared/db.py", line 10, in connect\n'
        "    engine.connect()\n"
        'psycopg.OperationalError: connection failed for "maria@example.com"'
    )
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, traceback_text, None, None)
    line = json.loads(JsonFormatter("ingest").format(record))
    assert "maria@example.com" not in line["msg"]
    assert 'File "/app/shared/db.py", line 10, in connect' in line["msg"]
    assert line["msg"].endswith("psycopg.OperationalError")


def test_repeat_filter_lets_a_message_through_once_per_period() -> None:
    from shared.logs import RepeatFilter

    repeat = RepeatFilter(seconds=30)

    def record(msg: str, at: float) -> logging.LogRecord:
        made = logging.LogRecord("kafka.net.manager", logging.ERROR, __file__, 1, msg, None, None)
        made.created = at
        return made

    assert repeat.filter(record("Connection failed: ECONNREFUSED", 100.0))
    assert not repeat.filter(record("Connection failed: ECONNREFUSED", 110.0))
    assert repeat.filter(record("Metadata refresh failed", 110.0))
    assert repeat.filter(record("Connection failed: ECONNREFUSED", 131.0))


# -- the safety net: personal data that reaches a logger anyway is masked -----------------------------------

PERSONAL = [
    "Wilhelmina.Quixabeira+lgpd@Example.com",
    "o'neil@exemplo.com.br",
    "739.146.285-37",
    "73914628537",
    "11.222.333/0001-81",
    "11222333000181",
    "(21) 97351-8264",
    "(11) 3847-2951",
    "+55 21 97351-8264",
    "+5521973518264",
    "+55.21.97351.8264",
    "+55 (11) 3847-2951",
]


@pytest.mark.parametrize("value", PERSONAL)
def test_redact_masks_personal_data_in_any_common_format(value: str) -> None:
    assert redact(f"lookup {value}, done") == f"lookup {REDACTED}, done"
    assert redact(value) == REDACTED


@pytest.mark.parametrize(
    "text",
    [
        "request",
        "5d2c7e1a-8b0f-4f4e-a8c6-123456789012",  # a UUID whose last group is all digits
        "9a1e4c3b2d5f4e6a8b7c0d1e2f3a4b5c",
        "2026-11-20T10:00:00.123+00:00",
        "order 2000009900000001 (16 digits), offset 123456789012",
        "took 73914628537.25 ms",
        "Running upgrade 0004 -> 0005",
        "listening on 127.0.0.1:8001",
        "/v1/profiles/{profile_id}/consents",
    ],
)
def test_redact_keeps_ids_times_and_numbers(text: str) -> None:
    assert redact(text) == text


@given(st.uuids(), st.datetimes(timezones=st.just(UTC)), st.floats(allow_nan=False, allow_infinity=False))
def test_redact_never_touches_uuids_timestamps_or_floats(uuid: UUID, at: datetime, number: float) -> None:
    for text in (str(uuid), uuid.hex, at.isoformat(), at.isoformat(timespec="milliseconds"), repr(number)):
        assert redact(text) == text


def test_the_formatter_masks_personal_data_in_the_message_extras_and_request_id(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    token = request_id_var.set("maria.silva@example.com")
    try:
        logger.warning(
            "lookup by %s failed",
            "maria.silva@example.com",
            extra={"document": "529.982.247-25", "phones": ["(11) 91234-5678"], "route": "/v1/profiles"},
        )
    finally:
        request_id_var.reset(token)
    (entry,) = lines(stream)
    assert entry["msg"] == "lookup by [redacted] failed"
    assert entry["document"] == "[redacted]"
    assert entry["phones"] == ["[redacted]"]
    assert entry["request_id"] == "[redacted]"
    assert entry["route"] == "/v1/profiles"
    for value in ("maria", "529", "91234"):
        assert value not in stream.getvalue()
