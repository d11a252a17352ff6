"""JSON-lines logging to stdout, configured once per process.

Context (request id, tenant id, event id) travels in contextvars and is added to every record.
Personal data must never be passed to a logger: log ids, counts and types only. `redact` is a safety net
for what slips through anyway (a client's request id, a third-party library's message), not the rule.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
tenant_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant_id", default=None)
event_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)
# Follows an order from the HTTP request that brought it (its request id) through every event it caused
# (their `correlation_id`) to the webhooks those sent.
correlation_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}

REDACTED = "[redacted]"
# Shapes of personal data that the ids, times, counts and durations we log never take. Bare digits only as
# a whole token of exactly 11 (a CPF, or a mobile with its area code) or 14 (a CNPJ) digits: UUID groups
# have 4, 8 or 12 characters.
_PERSONAL = re.compile(
    r"""
    [\w.+'-]+@[\w-]+(?:\.[\w-]+)+                                  # an e-mail address
    | (?<![\w./-])\d{3}\.\d{3}\.\d{3}-\d{2}(?![\w-])                  # a CPF with its mask
    | (?<![\w./-])\d{2}\.\d{3}\.\d{3}/\d{4}-\d{2}(?![\w-])             # a CNPJ with its mask
    | (?<![\w./-])(?:\d{11}|\d{14})(?![\w-]|\.\d)                    # a bare CPF, mobile or CNPJ
    | \+\d{1,3}[\s.-]?\(?\d{2}\)?[\s.-]?\d{4,5}[\s.-]?\d{4}(?!\d)       # a phone with its country code
    | \(\d{2}\)\s?\d{4,5}[\s.-]?\d{4}(?!\d)                         # a phone with its area code
    """,
    re.VERBOSE,
)
_CANDIDATE = re.compile(r"[@\d]")  # most log texts have neither: skip the pattern


def redact(text: str) -> str:
    """`text` with e-mail addresses, CPFs, CNPJs and phone numbers replaced by `[redacted]`."""
    if not _CANDIDATE.search(text):
        return text
    return _PERSONAL.sub(REDACTED, text)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value


def _scrub(message: str) -> str:
    """Tracebacks logged as text (uvicorn does) keep their frames but lose the exception's message,
    which can quote data (a row, a URL with credentials, an e-mail)."""
    if "Traceback (most recent call last)" not in message:
        return message
    lines = message.rstrip().splitlines()
    frames = [line.strip() for line in lines if line.lstrip().startswith("File ")]
    error_type = lines[-1].split(":", 1)[0].strip() if lines else "Error"
    return "Traceback (message removed): " + " | ".join([*frames, error_type])


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": redact(_scrub(record.getMessage())),
        }
        for key, var in (
            ("request_id", request_id_var),
            ("tenant_id", tenant_id_var),
            ("event_id", event_id_var),
            ("correlation_id", correlation_id_var),
        ):
            value = var.get()
            if value is not None:
                entry[key] = redact(value)  # a request id is the client's own text
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = _redacted(value)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type and location only: messages of driver errors can quote row data.
            entry["error_type"] = record.exc_info[0].__name__
        return orjson.dumps(entry, default=str).decode()


class RepeatFilter(logging.Filter):
    """Let a message (its first 60 characters, per logger) through once per `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:60])
        now = record.created
        if now - self.last.get(key, float("-inf")) < self.seconds:
            return False
        if len(self.last) > 1000:
            self.last.clear()
        self.last[key] = now
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log prints full URLs (query strings may hold e-mails): our middleware logs instead.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # kafka-python is chatty at INFO and can print record contents at DEBUG; while a broker is down it
    # logs every reconnection attempt, so repeats are dropped for a while.
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.setLevel(logging.WARNING)
    kafka_logger.filters[:] = [RepeatFilter(seconds=30)]
