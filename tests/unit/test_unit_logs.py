"""shared.logs: JSON lines with service, level, message, extras and context ids; no exception text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from shared.logs import JsonFormatter, event_id_var, request_id_var, tenant_id_var


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
