"""The audit trail of reads of personal data: which API key read which profiles, through which route, when.

Every service that serves personal data keeps its own trail, in its own database (`audit_event`, created by
its migrations from `audit_registry`), and answers `GET /v1/audit-log` with it (`router`): the profile
service (profiles, lookups, timelines, consents, privacy reports) and segmentation (members, previews,
exports). A route handler records its read with `record_read`; a streamed response records each chunk it
sends with `audit` on the session that read it. An erasure keeps the events (a key read data) without the
erased profile ids (`forget_reads`).

`record_read` writes and commits the event before the data is sent, unless the app has an `AuditWriter`
(`app.state.audit_writer`, the profile service's default: `PROFILE_AUDIT_FLUSH_SECONDS`): then the event
is queued in memory and a background thread inserts what is queued in one statement every
`flush_seconds` (or sooner, past `FLUSH_ROWS` rows), and at shutdown. What that costs: a process killed
with SIGKILL (or that loses its power) loses the events of its last `flush_seconds` of reads (0.2 s by
default), and, while the database refuses the inserts, those it retries (at most `max_pending`: past that,
reads are refused with a 503 rather than served unrecorded). A clean stop (SIGTERM) loses nothing. Reading
the trail (`GET /v1/audit-log`) and an erasure (`forget_reads`) first write what this process queued.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from pydantic import Field as ApiField
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, col, select

from shared.auth import TenantDep
from shared.db import SessionDep, UTCDateTime, after_row, new_registry, table_of, utcnow
from shared.errors import DomainError, problem_responses
from shared.logs import request_id_var

log = logging.getLogger("clientela.audit")
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


class AuditUnavailable(DomainError):
    """The audit trail cannot be written: the read is refused rather than served unrecorded."""

    status = 503
    title = "Service unavailable"


class AuditWriter:
    """Audit events queued in memory and inserted by a thread, many rows per statement (see the module
    docstring for what a crash can lose). Thread-safe; `start` it, and `stop` it to write the rest."""

    FLUSH_ROWS = 500

    def __init__(self, engine: Engine, *, flush_seconds: float = 0.2, max_pending: int = 50_000) -> None:
        if flush_seconds <= 0 or max_pending < 1:
            raise ValueError("flush_seconds and max_pending must be positive")
        self.engine, self.flush_seconds, self.max_pending = engine, flush_seconds, max_pending
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # guards _pending
        self._writing = threading.Lock()  # one insert at a time, in queue order
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._accepting = False  # between start and stop
        _writers.add(self)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()
        self._accepting = True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is queued."""
        with self._lock:
            self._accepting = False
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.flush()
        except SQLAlchemyError as exc:
            log.error(
                "audit events lost at shutdown",
                extra={"error_type": type(exc).__name__, "events": self.pending()},
            )

    def add(self, row: dict[str, Any]) -> bool:
        """Queue an `audit_event` row; False when the writer is not running (the caller writes it)."""
        with self._lock:
            if not self._accepting:
                return False
            if len(self._pending) >= self.max_pending:
                raise AuditUnavailable(
                    "The audit trail cannot be written now; retry later.", headers={"Retry-After": "5"}
                )
            self._pending.append(row)
            full = len(self._pending) >= self.FLUSH_ROWS
        if full:
            self._wake.set()
        return True

    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Insert what is queued now, in one transaction; returns the rows written. On a database error the
        rows go back to the queue (in order) and the error is raised."""
        with self._writing:
            with self._lock:
                rows, self._pending = self._pending, []
            if not rows:
                return 0
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.insert(table_of(AuditEvent)), rows)
            except BaseException:
                with self._lock:
                    self._pending[:0] = rows
                raise
            return len(rows)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds * min(2**failures, 50))
            self._wake.clear()
            try:
                self.flush()
                failures = 0
            except SQLAlchemyError as exc:
                failures += 1
                # The type only: a driver's message can quote the rows.
                log.warning(
                    "audit events not written; retrying",
                    extra={"error_type": type(exc).__name__, "pending": self.pending()},
                )


_writers: weakref.WeakSet[AuditWriter] = weakref.WeakSet()


def flush_writers() -> None:
    """Write what every `AuditWriter` of this process queued (before reading or erasing the trail)."""
    for writer in list(_writers):
        writer.flush()


def record_read(
    request: Request, session: Session, tenant_id: UUID, action: str, profile_ids: Iterable[UUID]
) -> None:
    """Audit a read of personal data made by this request (nothing when no profile): queued with the app's
    running `AuditWriter`, else written and committed now."""
    ids = list(profile_ids)
    if not ids:
        return
    who = reader(request)
    writer: AuditWriter | None = getattr(request.app.state, "audit_writer", None)
    if writer is not None and writer.add(
        {
            "id": uuid4(),
            "tenant_id": tenant_id,
            "at": utcnow(),
            "api_key_id": UUID(who["api_key_id"]) if who["api_key_id"] else None,
            "action": action,
            "route": who["route"],
            "profile_ids": [str(p) for p in ids],
            "request_id": who["request_id"],
        }
    ):
        return
    audit(session, tenant_id=tenant_id, action=action, profile_ids=ids, **who)
    # What the request read is what it answers with: the commit must not expire it, or the response would
    # reload rows that a consumer may have deleted meanwhile (a member leaving its segment, a profile merged
    # away) and fail with ObjectDeletedError.
    expire, session.expire_on_commit = session.expire_on_commit, False
    try:
        session.commit()
    finally:
        session.expire_on_commit = expire


def forget_reads(session: Session, tenant_id: UUID, ids: list[UUID]) -> int:
    """For an erasure: audit events keep that a key read data, not whose; the erased ids leave them.
    Returns how many events changed (the caller commits)."""
    if not ids:
        return 0
    flush_writers()  # reads queued in this process, before they are looked for
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
    request: Request,
    tenant_id: TenantDep,
    session: SessionDep,
    profile_id: Annotated[UUID | None, Query(description="Only reads of this profile.")] = None,
    api_key_id: Annotated[UUID | None, Query(description="Only reads made with this key.")] = None,
    cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """The reads of personal data this service served: which key, which profiles, through which route,
    when. Newest first."""
    writer: AuditWriter | None = getattr(request.app.state, "audit_writer", None)
    if writer is not None:
        writer.flush()  # the reads this process queued are listed too
    found = list_audit(
        session, tenant_id, profile_id=profile_id, api_key_id=api_key_id, before=cursor, limit=limit
    )
    next_cursor = str(found[-1].id) if len(found) == limit else None
    return AuditPage(items=[AuditEventRead.of(e) for e in found], next_cursor=next_cursor)
