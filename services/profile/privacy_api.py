"""The profile service's privacy routes: data-subject requests (LGPD Art. 18). The logic is in
`services.profile.privacy`; the audit trail of reads (`GET /v1/audit-log`) is `shared.audit`'s."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from services.profile import privacy
from services.profile.privacy_schemas import (
    PrivacyRequestCreate,
    PrivacyRequestPage,
    PrivacyRequestRead,
)
from shared.audit import record_read
from shared.auth import TenantDep
from shared.db import SessionDep
from shared.errors import problem_responses
from shared.logs import request_id_var

router = APIRouter(prefix="/v1", tags=["privacy"])


@router.post(
    "/privacy/requests",
    status_code=202,
    responses=problem_responses(401, 403, 422),
    summary="Receive a data-subject request",
)
def create_request(
    body: PrivacyRequestCreate, request: Request, tenant_id: TenantDep, session: SessionDep
) -> PrivacyRequestRead:
    """A request the person made (LGPD Art. 18), forwarded by the seller. Confirmation, correction and
    consent revocation complete at once; access and portability give a summary at once and the complete
    report once every service answered (seconds); deletion and anonymisation complete once every service
    confirmed the erasure. Poll `GET /v1/privacy/requests/{id}`."""
    key = getattr(request.state, "api_key_id", None)
    created = privacy.create_request(
        session,
        tenant_id,
        body,
        api_key_id=UUID(key) if key else None,
        correlation_id=request_id_var.get(),
    )
    session.commit()
    return PrivacyRequestRead.of(created)


@router.get("/privacy/requests", responses=problem_responses(401, 403, 422))
def list_requests(
    tenant_id: TenantDep,
    session: SessionDep,
    cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PrivacyRequestPage:
    """The tenant's data-subject requests (kept without personal data, for accountability)."""
    found = privacy.list_requests(session, tenant_id, after=cursor, limit=limit)
    next_cursor = str(found[-1].id) if len(found) == limit else None
    return PrivacyRequestPage(items=[PrivacyRequestRead.of(r) for r in found], next_cursor=next_cursor)


@router.get("/privacy/requests/{request_id}", responses=problem_responses(401, 403, 404, 422))
def get_request(request_id: UUID, tenant_id: TenantDep, session: SessionDep) -> PrivacyRequestRead:
    """A request and where it stands: which services answered or confirmed, and when."""
    return PrivacyRequestRead.of(privacy.get_request(session, request_id, tenant_id))


@router.get(
    "/privacy/requests/{request_id}/report",
    responses={
        **problem_responses(401, 403, 404, 422),
        200: {"description": "The complete report: per service, each section's origin, purpose and data."},
    },
)
def get_report(request_id: UUID, request: Request, tenant_id: TenantDep, session: SessionDep) -> JSONResponse:
    """The complete, machine-readable report of an access or portability request (all the data about the
    person across the three services), once every service answered."""
    found = privacy.get_request(session, request_id, tenant_id)
    data = privacy.report(found)
    record_read(request, session, tenant_id, "privacy.report", (UUID(p) for p in found.profile_ids))
    return JSONResponse(
        data,
        headers={"content-disposition": f'attachment; filename="privacy-report-{request_id}.json"'},
    )
