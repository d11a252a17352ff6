"""The audit trail of reads of personal data: which API key read which profiles, through which route, when.

Every service that serves personal data keeps its own trail, in its own database (`audit_event`, created by
its migrations from `audit_registry`), and answers `GET /v1/audit-log` with it (`router`): the profile
service (profiles, lookups, timelines, consents, privacy reports) and segmentation (members, previews,
exports). A route handler records its read with `record_read`; a streamed response records each chunk it
sends with `audit` on the session that read it. An erasure keeps the events (a key read data) without the
erased profile ids (`forget_reads`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from pydantic import Field as ApiField
from sqlmodel import Field, Session, SQLModel, col, select

from shared.auth import TenantDep
from shared.db import SessionDep, UTCDateTime, after_row, new_registry, utcnow
from shared.errors import problem_responses
from shared.logs import request_id_var

audit_registry = new_registry()


class AuditTable(SQLModel, registry=audit_registry):
    pass


class AuditEvent(AuditTable, table=True):
    """A read of personal data: which API key read which profiles, through which route, when."""

    __tablename__ = "audit_event"
    __table_args__ = (sa.Index("ix_audit_event_tenant_id_at", "tenant_id", "at"),)

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    api_key_id: UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid(), nullable=True))
    action: str = Field(max_length=40, description="profile.read, segment.export, privacy.report, ...")
    route: str = Field(max_length=200, description="The route template (never the URL: it may hold data).")
    profile_ids: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON(), nullable=False))
    request_id: str | None = Field(default=None, max_length=64)


# -- recording -------------------------------------------------------------------------------------------


def audit(
    session: Session,
    *,
    tenant_id: UUID,
    api_key_id: str | None,
    action: str,
    route: str,
    profile_ids: Iterable[UUID],
    request_id: str | None,
) -> None:
    """Record a read of personal data (the caller commits)."""
    session.add(
        AuditEvent(
            tenant_id=tenant_id,
            api_key_id=UUID(api_key_id) if api_key_id else None,
            action=action,
            route=route,
            profile_ids=[str(p) for p in profile_ids],
            request_id=request_id,
        )
    )


def reader(request: Request) -> dict[str, Any]:
    """Who reads, as `audit` takes it: the request's key, route template and request id. Taken while the
    request is handled (a streamed response's generator runs later)."""
    route = request.scope.get("route")
    return {
        "api_key_id": getattr(request.state, "api_key_id", None),
        "route": getattr(route, "path", "unmatched"),
        "request_id": request_id_var.get(),
    }


def record_read(
    request: Request, session: Session, tenant_id: UUID, action: str, profile_ids: Iterable[UUID]
) -> None:
    """Audit a read of personal data made by this request, and commit it (nothing when no profile)."""
    ids = list(profile_ids)
    if not ids:
        return
    audit(session, tenant_id=tenant_id, action=action, profile_ids=ids, **reader(request))
    session.commit()


def forget_reads(session: Session, tenant_id: UUID, ids: list[UUID]) -> int:
    """For an erasure: audit events keep that a key read data, not whose; the erased ids leave them.
    Returns how many events changed (the caller commits)."""
    if not ids:
        return 0
    wanted = {str(i) for i in ids}
    changed = 0
    for event in session.exec(select(AuditEvent).where(AuditEvent.tenant_id == tenant_id, _naming(ids))):
        event.profile_ids = [p for p in event.profile_ids if p not in wanted]
        session.add(event)
        changed += 1
    return changed


def _naming(ids: Iterable[UUID]) -> sa.ColumnElement[bool]:
    """The events whose profile ids hold one of these (a text match on the JSON list, then checked)."""
    return sa.or_(*(sa.cast(AuditEvent.profile_ids, sa.Text).contains(str(i)) for i in ids))


def list_audit(
    session: Session,
    tenant_id: UUID,
    *,
    profile_id: UUID | None,
    api_key_id: UUID | None,
    before: UUID | None,
    limit: int,
) -> list[AuditEvent]:
    """Newest first; `before` is the last id of the previous page."""
    query = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if profile_id is not None:
        query = query.where(_naming([profile_id]))
    if api_key_id is not None:
        query = query.where(AuditEvent.api_key_id == api_key_id)
    if before is not None:
        last = session.get(AuditEvent, before)
        if last is not None:
            query = query.where(
                after_row(col(AuditEvent.at), col(AuditEvent.id), last.at, last.id, newest_first=True)
            )
    return list(
        session.exec(query.order_by(col(AuditEvent.at).desc(), col(AuditEvent.id).desc()).limit(limit)).all()
    )


# -- the API ---------------------------------------------------------------------------------------------


class AuditEventRead(BaseModel):
    id: UUID
    at: datetime
    api_key_id: UUID | None = ApiField(description="The key that read (null: the service itself).")
    action: str = ApiField(description="What was read: profile.read, segment.members, segment.export, ...")
    route: str
    profile_ids: list[UUID]
    request_id: str | None

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventRead:
        return cls(
            id=event.id,
            at=event.at,
            api_key_id=event.api_key_id,
            action=event.action,
            route=event.route,
            profile_ids=[UUID(p) for p in event.profile_ids],
            request_id=event.request_id,
        )


class AuditPage(BaseModel):
    items: list[AuditEventRead]
    next_cursor: str | None = ApiField(description="Pass as `cursor` for older events.")


router = APIRouter(prefix="/v1", tags=["privacy"])


@router.get("/audit-log", responses=problem_responses(401, 403, 422))
def audit_log(
    tenant_id: TenantDep,
    session: SessionDep,
    profile_id: Annotated[UUID | None, Query(description="Only reads of this profile.")] = None,
    api_key_id: Annotated[UUID | None, Query(description="Only reads made with this key.")] = None,
    cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """The reads of personal data this service served: which key, which profiles, through which route,
    when. Newest first."""
    found = list_audit(
        session, tenant_id, profile_id=profile_id, api_key_id=api_key_id, before=cursor, limit=limit
    )
    next_cursor = str(found[-1].id) if len(found) == limit else None
    return AuditPage(items=[AuditEventRead.of(e) for e in found], next_cursor=next_cursor)
