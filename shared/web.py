"""The pieces every service's FastAPI app shares: lifespan (migrations, workers), health, logging, limits."""

from __future__ import annotations

import gc
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.telemetry import TelemetryConfig
from pydantic import AwareDatetime, BaseModel, BeforeValidator
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.audit import AuditWriter
from shared.auth import KeyCache
from shared.db import make_engine
from shared.doorbell import ring_every_bell
from shared.errors import (
    ContentTooLarge,
    MalformedRequest,
    UnsupportedMediaType,
    document_problems,
    install_problem_handlers,
    problem,
)
from shared.logs import configure_logging, correlation_id_var, request_id_var
from shared.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from shared.metrics import HTTP_LATENCY, HTTP_SHED, metrics_body, prepare_multiprocess, serve_worker_metrics
from shared.migrations import upgrade
from shared.settings import ServiceSettings

NO_OPENTELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
log = logging.getLogger("clientela.web")

MAX_BODY_BYTES = 1_048_576
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class Worker(Protocol):
    def run(self, stop: threading.Event) -> None: ...


class WorkerThreads:
    """Background workers (Kafka consumers, outbox relay) as daemon threads with one stop flag."""

    def __init__(self, workers: Sequence[tuple[str, Worker]]) -> None:
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=self._guard, args=(name, worker), name=name, daemon=True)
            for name, worker in workers
        ]

    def _guard(self, name: str, worker: Worker) -> None:
        while not self.stop_event.is_set():
            try:
                worker.run(self.stop_event)
            except Exception:
                log.exception("worker crashed; restarting", extra={"worker": name})
                self.stop_event.wait(1.0)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        ring_every_bell()  # workers waiting for work (the outbox relay, the webhook dispatcher)
        for thread in self.threads:
            thread.join(timeout)


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body of a JSON request; 415 unless JSON, 413 past `limit` (chunked bodies too)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType("Send the body as `application/json`.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ContentTooLarge(f"The body limit is {limit} bytes.")
    return bytes(body)


def parse_json(raw: bytes) -> Any:
    """The parsed JSON of a body; 400 if malformed."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedRequest("The body is not valid JSON.") from None


async def read_json(request: Request, limit: int = MAX_BODY_BYTES) -> tuple[bytes, Any]:
    """The raw body and its parsed JSON; 415 unless JSON, 413 past `limit` (chunked bodies too), 400 if
    malformed."""
    raw = await read_body(request, limit)
    return raw, parse_json(raw)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body read by hand (see `read_json`); list `model` in the app's
    `schemas` so that its schema is published."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: Any) -> Any:
    # pydantic also reads numbers (and numeric text) as Unix times and dates as midnight; the API takes
    # what its schema says (`format: date-time`), so that `0` is an error, not 1970.
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339.fullmatch(value)):
        return value
    raise ValueError("expected a date and time with its offset, e.g. 2026-11-20T10:00:00-03:00")


# A time in a request (body or query): RFC 3339 text with an offset.
RequestTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


def _json_integer(value: Any) -> Any:
    # pydantic would also read true/false and numeric text; a JSON Schema integer is a number (2.0 too).
    if isinstance(value, bool | str):
        raise ValueError("expected an integer")
    return value


# An integer in a JSON body (bounds go in its Field).
RequestInt = Annotated[int, BeforeValidator(_json_integer)]


class RequestContext:
    """Every request's context, as plain ASGI middleware (Starlette's `BaseHTTPMiddleware` costs a task and
    a stream per request): a request id (the caller's when it looks like one; logged and echoed in
    `x-request-id`), the body limit by `Content-Length`, load shedding, the latency metric and the request
    log line.

    Load shedding: past `max_in_flight` requests being handled at once (0: no bound), a request gets a 503
    problem+json with `Retry-After` at once instead of waiting behind the others: an overloaded process
    answers what it can promptly and refuses the rest in microseconds, rather than queueing everything
    until every request times out. Health, readiness and metrics are never shed."""

    NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics"})
    SHED_LOG_EVERY_S = 10.0

    def __init__(
        self, app: ASGIApp, *, service: str, body_limits: dict[str, int], max_in_flight: int = 0
    ) -> None:
        self.app, self.service, self.body_limits = app, service, body_limits
        self.max_in_flight = max_in_flight
        self.in_flight = 0  # only touched on the event loop
        self._shed_logged_at = float("-inf")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        correlation = correlation_id_var.set(request_id)  # what the request's events carry on
        started = time.perf_counter()
        status = 500  # unless the app answers: an exception it raised is answered outside (500)
        echoed = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        try:
            path: str = scope["path"]
            length = headers.get(b"content-length", b"")
            limit = next(
                (n for prefix, n in self.body_limits.items() if path.startswith(prefix)), MAX_BODY_BYTES
            )
            if length.isdigit() and int(length) > limit:
                await problem(413, "Content too large", f"The body limit is {limit} bytes.")(
                    scope, receive, send_with_id
                )
            elif 0 < self.max_in_flight <= self.in_flight and path not in self.NEVER_SHED:
                await self._shed(scope, receive, send_with_id)
            else:
                self.in_flight += 1
                try:
                    await self.app(scope, receive, send_with_id)
                finally:
                    self.in_flight -= 1
        finally:
            # The route template, never the raw URL: query strings and paths may carry personal data.
            template = getattr(scope.get("route"), "path", "unmatched")
            elapsed = time.perf_counter() - started
            HTTP_LATENCY.labels(self.service, scope["method"], template, status).observe(elapsed)
            if log.isEnabledFor(logging.INFO):
                extra: dict[str, Any] = {
                    "method": scope["method"],
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                }
                tenant_id = scope.get("state", {}).get("tenant_id")
                if tenant_id:
                    extra["tenant_id"] = tenant_id
                log.info("request", extra=extra)
            request_id_var.reset(token)
            correlation_id_var.reset(correlation)

    async def _shed(self, scope: Scope, receive: Receive, send: Send) -> None:
        HTTP_SHED.labels(self.service).inc()
        now = time.monotonic()
        if now - self._shed_logged_at >= self.SHED_LOG_EVERY_S:  # not a line per refused request
            self._shed_logged_at = now
            log.warning("over capacity: shedding requests", extra={"max_in_flight": self.max_in_flight})
        response = problem(
            503,
            "Service unavailable",
            "The service is over capacity; retry in a moment.",
            headers={"Retry-After": "1"},
        )
        await response(scope, receive, send)


def kafka_reachable(bootstrap_servers: str, timeout: float = 1.0) -> bool:
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port or 9092)), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def create_service_app(
    *,
    settings: ServiceSettings,
    service_dir: Path,
    title: str,
    description: str,
    routers: Sequence[APIRouter],
    workers: Callable[[Engine, ServiceSettings], Sequence[tuple[str, Worker]]],
    schemas: Sequence[type[BaseModel]] = (),
    body_limits: dict[str, int] | None = None,
    max_in_flight: int = 0,
    audit_flush_seconds: float = 0,
) -> FastAPI:
    """A service's app. `max_in_flight`: requests handled at once past which others get a 503 at once (0:
    no bound; see `RequestContext`); `audit_flush_seconds`: reads audited through an `AuditWriter` flushed
    this often (0: each written with its request). Verified API keys are kept
    `settings.api_key_cache_seconds` (0: read at every request; see `KeyCache`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.service_name, settings.log_level)
        if settings.run_migrations:
            await run_in_threadpool(upgrade, service_dir, settings.database_url)
        threads = WorkerThreads(workers(app.state.engine, settings) if settings.run_workers else [])
        app.state.workers = threads
        tune_gc(settings)
        threads.start()
        audit_writer: AuditWriter | None = app.state.audit_writer
        if audit_writer is not None:
            audit_writer.start()
        log.info("service started", extra={"workers": [t.name for t in threads.threads]})
        try:
            yield
        finally:
            if audit_writer is not None:
                await run_in_threadpool(audit_writer.stop)
            await run_in_threadpool(threads.stop)
            app.state.engine.dispose()

    app = FastAPI(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=lifespan,
        # Metrics are Prometheus' (`/metrics`, shared.metrics); FastAPI's own OpenTelemetry hooks would
        # look up the global providers (and the environment) on every request for nothing.
        telemetry=NO_OPENTELEMETRY,
    )
    app.state.settings = settings
    app.state.engine = make_engine(settings.database_url)
    app.state.audit_writer = (
        AuditWriter(app.state.engine, flush_seconds=audit_flush_seconds) if audit_flush_seconds > 0 else None
    )
    cache_s = settings.api_key_cache_seconds
    app.state.api_key_cache = KeyCache(cache_s) if cache_s > 0 else None
    install_problem_handlers(app)

    app.add_middleware(
        RequestContext,
        service=settings.service_name,
        body_limits=body_limits or {},
        max_in_flight=max_in_flight,
    )

    @app.get("/healthz", tags=["health"], summary="Liveness")
    def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        """Request latencies, events consumed and published, consumer lag, outbox backlog, dead letters,
        webhook deliveries (Prometheus text format; `shared.metrics` lists them)."""
        body = metrics_body(app.state.engine, settings.service_name)
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    @app.get("/readyz", tags=["health"], summary="Readiness", responses={503: {"description": "Not ready"}})
    def readyz() -> Response:
        """The service's database and the Kafka broker are reachable."""
        checks: dict[str, str] = {}
        try:
            with app.state.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            checks["database"] = "ok"
        except sa.exc.SQLAlchemyError:
            checks["database"] = "unreachable"
        checks["kafka"] = "ok" if kafka_reachable(settings.kafka_bootstrap_servers) else "unreachable"
        # An API-only process (CLIENTELA_RUN_WORKERS=false) never calls Kafka (routes write the outbox):
        # it reports the broker but is not taken out of service for it.
        ready = checks["database"] == "ok" and (checks["kafka"] == "ok" or not settings.run_workers)
        if ready:
            return JSONResponse({"status": "ready", "checks": checks})
        return problem(503, "Not ready", "A dependency is unreachable.", checks=checks)

    for router in routers:
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in schemas:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            document_problems(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def tune_gc(settings: ServiceSettings) -> None:
    """The garbage collector of a service process, once it has started: what exists now (modules, models,
    the app) is frozen out of its scans, and it runs at `settings.gc_thresholds` (see
    `shared.settings.GC_THRESHOLDS`: at Python's defaults it took a third of the profile consumer's CPU).
    Frozen once per process: what is frozen is never collected, and a process that starts apps again (the
    tests) would freeze their garbage too."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
    gc.set_threshold(*settings.gc_thresholds)


def serve(factory: str, settings: ServiceSettings) -> None:
    """Run a service's app factory under uvicorn (used by ``python -m services.<name>``)."""
    import uvicorn

    configure_logging(settings.service_name, settings.log_level)
    prepare_multiprocess(settings.web_workers)
    uvicorn.run(
        factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        workers=settings.web_workers,
        timeout_graceful_shutdown=10,
        # Longer than clients' and load balancers' idle timeouts (60 s is common), so the server is never the
        # one closing an idle connection while a request is on its way in (a reset for a sent POST; at
        # uvicorn's default of 5 s, vegeta saw four at 200 orders/s).
        timeout_keep_alive=75,
    )


def run_workers(
    settings: ServiceSettings, workers: Callable[[Engine, ServiceSettings], Sequence[tuple[str, Worker]]]
) -> None:
    """Run a service's Kafka workers without the HTTP API, until SIGINT/SIGTERM."""
    import signal

    configure_logging(settings.service_name, settings.log_level)
    engine = make_engine(settings.database_url)
    serve_worker_metrics(engine, settings.service_name, settings.metrics_port)
    threads = WorkerThreads(workers(engine, settings))
    tune_gc(settings)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    threads.start()
    log.info("workers started", extra={"workers": [t.name for t in threads.threads]})
    done.wait()
    threads.stop()
    engine.dispose()
