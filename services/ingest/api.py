"""Ingest's HTTP routes: thin; validation and storage live in `intake`, tenants in `tenants`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import ValidationError
from sqlmodel import Session, col, select

from services.ingest import idempotency, imports, intake, quality, tenants
from services.ingest.adapters import ADAPTERS, AdapterError
from services.ingest.group_commit import GroupCommit
from services.ingest.intake import ItemResult, Kind, Outcome
from services.ingest.models import ImportJob
from services.ingest.schemas import (
    MAX_BATCH,
    Accepted,
    BatchResult,
    BehaviourBatch,
    CustomerBatch,
    ImportList,
    ImportRead,
    OrderBatch,
    QualityReport,
    TenantCreate,
    TenantWithKey,
    batch_response,
    json_response,
)
from shared.auth import AdminDep, TenantDep
from shared.db import SessionDep, utcnow
from shared.errors import Invalid, NotFound, problem, problem_responses
from shared.logs import request_id_var
from shared.records import BehaviourEvent, CustomerRecord, Order
from shared.web import json_body, parse_json, read_body, read_json

router = APIRouter(prefix="/v1")

# Printable ASCII without surrounding spaces (HTTP strips them), as `idempotency.run_idempotent` wants.
IDEMPOTENCY_KEY = r"^[!-~]([ -~]*[!-~])?$"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=IDEMPOTENCY_KEY,
        description="Makes the POST safe to retry: the same key and body within 48 h replay the 1st answer.",
    ),
]
SINGLE = {
    202: {"description": "Accepted (new) or updated (new version): durable", "model": Accepted},
    200: {"description": "Duplicate or stale resend: nothing changed", "model": Accepted},
    **problem_responses(400, 401, 409, 413, 415, 422),
}
BATCH = {
    200: {"description": "One result per item", "model": BatchResult},
    **problem_responses(400, 401, 409, 413, 415, 422),
}


async def _idempotent(
    request: Request,
    session: Session,
    scope: str,
    key: str | None,
    raw: bytes,
    handler: Callable[[], Response],
) -> Response:
    fingerprint = idempotency.request_hash(request.method, request.scope["path"], raw)
    return await run_in_threadpool(
        idempotency.run_idempotent, session, scope=scope, key=key, fingerprint=fingerprint, handler=handler
    )


async def _single(
    request: Request, tenant_id: UUID, session: Session, key: str | None, kind: Kind[Any]
) -> Response:
    raw, data = await read_json(request)
    group: GroupCommit | None = request.app.state.group_commit
    if key is None and group is not None:  # stored with the other records arriving meanwhile
        return _answer(await group.accept(kind, tenant_id, data, request_id_var.get()))

    def handle() -> Response:
        [result] = intake.accept(
            kind, [data], tenant_id=tenant_id, session=session, correlation_id=request_id_var.get()
        )
        return _answer(result)

    return await _idempotent(request, session, str(tenant_id), key, raw, handle)


def _answer(result: ItemResult) -> Response:
    if result.outcome == Outcome.rejected:
        return problem(422, "Invalid record", "The record does not pass validation.", errors=result.errors)
    code = 202 if result.outcome in (Outcome.accepted, Outcome.updated) else 200
    return json_response(Accepted.of(result), status_code=code, exclude_none=True)


# A batch whose items are all valid is validated straight from the request's JSON text, by pydantic's own
# parser, with no dicts built first: 73 against 86 µs an order. One invalid item fails that attempt, and
# the items are then parsed and validated one by one, as before, for a result per item. A sender whose
# batch failed the attempt sends its next RETRY_WHOLE_AFTER batches of that kind one by one straight away.
WHOLE_BATCHES: dict[str, type[OrderBatch | CustomerBatch | BehaviourBatch]] = {
    intake.ORDERS.name: OrderBatch,
    intake.CUSTOMERS.name: CustomerBatch,
    intake.BEHAVIOUR.name: BehaviourBatch,
}
RETRY_WHOLE_AFTER = 20
_one_by_one: dict[tuple[UUID, str], int] = {}  # (tenant, kind) -> batches left to take one by one


def whole_batch(kind: Kind[Any], tenant_id: UUID, raw: bytes) -> list[Any] | None:
    """Every item of the batch, validated, if they all are valid; else None (validate them one by one)."""
    key = (tenant_id, kind.name)
    left = _one_by_one.pop(key, 0)
    if left:
        if left > 1:
            _one_by_one[key] = left - 1
        return None
    try:
        return list(WHOLE_BATCHES[kind.name].model_validate_json(raw).items)
    except ValidationError:
        if len(_one_by_one) >= 10_000:  # bounded: senders that failed long ago are tried whole again
            _one_by_one.clear()
        _one_by_one[key] = RETRY_WHOLE_AFTER
        return None


# BALANCE: with several web workers, a batch's answer closes its connection. A kept-alive connection stays
# with the worker process that accepted it, and uvicorn's workers accept from one socket on a first-come
# basis: the benchmark's four clients' connections were split unevenly (py-spy: 1,813 against 878 samples
# for the two workers). The client's next batch opens a new connection, which whichever worker is free
# accepts first (1,241 against 1,156). On the 2-core machine throughput did not change (six pairs: 9,310
# against 9,265 orders/s; both cores are busy either way); where cores are left idle, a worker holding most
# connections is held to one core by its GIL. A connection costs about 0.1 ms on the same network; a batch
# of 1,000 takes some 100 ms.
async def _batch(
    request: Request, tenant_id: UUID, session: Session, key: str | None, kind: Kind[Any]
) -> Response:
    raw = await read_body(request)
    valid = await run_in_threadpool(whole_batch, kind, tenant_id, raw)
    data = parse_json(raw) if valid is None else None  # 400 if malformed, before the idempotency key

    def handle() -> Response:
        items = valid
        if items is None:
            items = data.get("items") if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise Invalid("The body must be an object with an `items` array.")
            if len(items) > MAX_BATCH:
                raise Invalid(f"At most {MAX_BATCH} items per batch; split it.", extra={"items": len(items)})
        results = intake.accept(
            kind, items, tenant_id=tenant_id, session=session, correlation_id=request_id_var.get()
        )
        return batch_response(results)

    response = await _idempotent(request, session, str(tenant_id), key, raw, handle)
    if request.app.state.settings.web_workers > 1:
        response.headers["Connection"] = "close"  # see BALANCE
    return response


@router.post(
    "/tenants",
    status_code=status.HTTP_201_CREATED,
    dependencies=[AdminDep],
    tags=["tenants"],
    responses=problem_responses(401, 409, 422),
)
async def create_tenant(
    body: TenantCreate, request: Request, session: SessionDep, key: IdempotencyKey = None
) -> Response:
    """Create a tenant (a seller) and its first API key; needs the admin token."""

    def handle() -> Response:
        tenant, api_key = tenants.create_tenant(body.name, session=session)
        out = TenantWithKey(id=tenant.id, name=tenant.name, created_at=tenant.created_at, api_key=api_key)
        return json_response(out, status_code=201)

    return await _idempotent(request, session, idempotency.ADMIN_SCOPE, key, await request.body(), handle)


@router.post(
    "/orders", tags=["orders"], responses=SINGLE, openapi_extra=json_body(Order), response_model=None
)
async def post_order(
    request: Request, tenant_id: TenantDep, session: SessionDep, key: IdempotencyKey = None
) -> Response:
    """Accept one canonical order (202); durable when this answers."""
    return await _single(request, tenant_id, session, key, intake.ORDERS)


@router.post(
    "/orders:batch",
    tags=["orders"],
    responses=BATCH,
    openapi_extra=json_body(OrderBatch),
    response_model=None,
)
async def post_orders(
    request: Request, tenant_id: TenantDep, session: SessionDep, key: IdempotencyKey = None
) -> Response:
    """Accept up to 1,000 orders; a result per item (one bad order never blocks the others)."""
    return await _batch(request, tenant_id, session, key, intake.ORDERS)


@router.post(
    "/customers",
    tags=["customers"],
    responses=SINGLE,
    openapi_extra=json_body(CustomerRecord),
    response_model=None,
)
async def post_customer(
    request: Request, tenant_id: TenantDep, session: SessionDep, key: IdempotencyKey = None
) -> Response:
    """Accept one customer record (registration form, CRM export)."""
    return await _single(request, tenant_id, session, key, intake.CUSTOMERS)


@router.post(
    "/customers:batch",
    tags=["customers"],
    responses=BATCH,
    openapi_extra=json_body(CustomerBatch),
    response_model=None,
)
async def post_customers(
    request: Request, tenant_id: TenantDep, session: SessionDep, key: IdempotencyKey = None
) -> Response:
    """Accept up to 1,000 customer records; a result per item."""
    return await _batch(request, tenant_id, session, key, intake.CUSTOMERS)


@router.post(
    "/events",
    tags=["events"],
    responses=SINGLE,
    openapi_extra=json_body(BehaviourEvent),
    response_model=None,
)
async def post_event(
    request: Request, tenant_id: TenantDep, session: SessionDep, key: IdempotencyKey = None
) -> Response:
    """Accept one behaviour event (page view, search, cart, ...)."""
    return await _single(request, tenant_id, session, key, intake.BEHAVIOUR)


@router.post(
    "/events:batch",
    tags=["events"],
    responses=BATCH,
    openapi_extra=json_body(BehaviourBatch),
    response_model=None,
)
async def post_events(
    request: Request, tenant_id: TenantDep, session: SessionDep, key: IdempotencyKey = None
) -> Response:
    """Accept up to 1,000 behaviour events; a result per item."""
    return await _batch(request, tenant_id, session, key, intake.BEHAVIOUR)


@router.post(
    "/sources/{source}/orders",
    tags=["orders"],
    responses={**SINGLE, **problem_responses(404)},
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "description": "The platform's order JSON."}
                }
            },
        }
    },
)
async def post_source_order(
    source: Annotated[str, PathParam(description=f"One of: {', '.join(sorted(ADAPTERS))}.")],
    request: Request,
    tenant_id: TenantDep,
    session: SessionDep,
    key: IdempotencyKey = None,
) -> Response:
    """Accept one order as the marketplace's own API returns it; mapped to the canonical order."""
    adapter = ADAPTERS.get(source)
    if adapter is None:
        raise NotFound(f"No adapter for this source; known: {', '.join(sorted(ADAPTERS))}.")
    raw, data = await read_json(request)

    def handle() -> Response:
        if not isinstance(data, dict):
            raise Invalid("The body must be the platform's order object.")
        try:
            order = adapter(data)
        except AdapterError as exc:
            quality.record_rejection(session, tenant_id, "order", f"adapter:{source}")
            return problem(422, "Invalid record", str(exc))
        [result] = intake.accept(
            intake.ORDERS, [order], tenant_id=tenant_id, session=session, correlation_id=request_id_var.get()
        )
        return _answer(result)

    return await _idempotent(request, session, str(tenant_id), key, raw, handle)


def _import_read(job: ImportJob) -> ImportRead:
    rate = eta = None
    if job.started_at is not None and job.rows_read:
        elapsed = ((job.finished_at or utcnow()) - job.started_at).total_seconds()
        rate = round(job.rows_read / elapsed, 1) if elapsed > 0 else None
        if rate and job.status == "running" and job.rows_total is not None:
            eta = round(max(job.rows_total - job.rows_read, 0) / rate, 1)
    return ImportRead(
        id=job.id,
        kind=job.kind,
        format=job.format,
        status=job.status,
        rows_total=job.rows_total,
        rows_read=job.rows_read,
        accepted=job.accepted,
        updated=job.updated,
        duplicates=job.duplicates,
        stale=job.stale,
        rejected=job.rejected,
        rate_per_s=rate,
        eta_seconds=eta,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        rejected_report=f"/v1/imports/{job.id}/rejected",
    )


@router.post(
    "/imports",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["imports"],
    responses=problem_responses(401, 409, 413, 422),
    response_model=ImportRead,
)
async def create_import(
    request: Request,
    tenant_id: TenantDep,
    session: SessionDep,
    files: Annotated[
        list[UploadFile], File(description="The file (csv, jsonl) or the Olist tables, .gz allowed.")
    ],
    format: Annotated[Literal["csv", "jsonl", "olist"], Form(description="csv, jsonl or olist")],
    kind: Annotated[
        Literal["orders", "customers", "events"],
        Form(description="orders, customers or events (olist: orders)"),
    ] = "orders",
    key: IdempotencyKey = None,
) -> Response:
    """Upload a file to import in the background (202); follow it with GET /v1/imports/{id}."""
    digest = hashlib.sha256(f"{format}\n{kind}\n".encode())
    for upload in files:
        digest.update((upload.filename or "").encode() + b"\n")
        while chunk := await upload.read(1 << 20):
            digest.update(chunk)
        await upload.seek(0)
    import_dir: Path = request.app.state.settings.import_dir

    def handle() -> Response:
        uploads = [(upload.filename or "", upload.file) for upload in files]
        job = imports.create_job(
            tenant_id=tenant_id,
            kind=kind,
            fmt=format,
            uploads=uploads,
            import_dir=import_dir,
            session=session,
        )
        return json_response(
            _import_read(job), status_code=202, headers={"Location": f"/v1/imports/{job.id}"}
        )

    fingerprint = idempotency.request_hash(request.method, request.url.path, digest.hexdigest().encode())
    return await run_in_threadpool(
        idempotency.run_idempotent,
        session,
        scope=str(tenant_id),
        key=key,
        fingerprint=fingerprint,
        handler=handle,
    )


@router.get("/imports", tags=["imports"], responses=problem_responses(401))
def list_imports(tenant_id: TenantDep, session: SessionDep) -> ImportList:
    """The tenant's last 100 imports, newest first."""
    jobs = session.exec(
        select(ImportJob)
        .where(ImportJob.tenant_id == tenant_id)
        .order_by(col(ImportJob.created_at).desc())
        .limit(100)
    ).all()
    return ImportList(items=[_import_read(job) for job in jobs])


@router.get("/imports/{import_id}", tags=["imports"], responses=problem_responses(401, 404))
def get_import(import_id: UUID, tenant_id: TenantDep, session: SessionDep) -> ImportRead:
    """An import's progress: rows read, accepted, rejected, rate and ETA."""
    return _import_read(imports.get_job(import_id, tenant_id=tenant_id, session=session))


@router.get(
    "/imports/{import_id}/rejected",
    tags=["imports"],
    responses={200: {"content": {"application/x-ndjson": {}}}, **problem_responses(401, 404)},
    response_class=FileResponse,
)
def get_import_rejections(
    import_id: UUID, request: Request, tenant_id: TenantDep, session: SessionDep
) -> Response:
    """The rejected rows of an import as JSON lines: row number and reasons (never the row's content)."""
    job = imports.get_job(import_id, tenant_id=tenant_id, session=session)
    path = imports.report_path(job, request.app.state.settings.import_dir)
    if not path.exists():
        return Response(b"", media_type="application/x-ndjson")
    return FileResponse(path, media_type="application/x-ndjson", filename=f"import-{job.id}-rejected.jsonl")


@router.get("/quality", tags=["quality"], responses=problem_responses(401, 422), response_model=QualityReport)
def get_quality(
    tenant_id: TenantDep,
    session: SessionDep,
    days: Annotated[int, Query(ge=1, le=366, description="Window: the last N days, today included.")] = 30,
) -> dict[str, Any]:
    """Data quality over a window: received, accepted, duplicates, rejections by reason, completeness."""
    return quality.report(session, tenant_id, days=days)
