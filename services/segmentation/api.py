"""The segmentation service's HTTP routes."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from services.segmentation import evaluations, export, history, segments
from services.segmentation.models import Segment, SegmentEvaluation
from services.segmentation.rules import parse_rule
from services.segmentation.schemas import (
    EvaluationList,
    EvaluationRead,
    HistoryEntry,
    HistoryPage,
    Member,
    MemberPage,
    SegmentCreate,
    SegmentList,
    SegmentPreview,
    SegmentPreviewRequest,
    SegmentRead,
    SegmentStats,
    SegmentTemplate,
    SegmentTemplateList,
    SegmentUpdate,
    StatsDay,
    StatsWindow,
)
from services.segmentation.settings import SegmentationSettings
from services.segmentation.templates import TEMPLATES
from shared.audit import reader, record_read
from shared.auth import TenantDep
from shared.db import SessionDep, utcnow
from shared.errors import Invalid, problem_responses

router = APIRouter(prefix="/v1", tags=["segments"])

ERRORS = problem_responses(401, 404)
BODY_ERRORS = problem_responses(401, 422)
CHANGE_ERRORS = problem_responses(401, 404, 422)


def inline_max(request: Request) -> int:
    """Up to how many profiles a tenant's segments are evaluated within the request."""
    settings = request.app.state.settings
    if isinstance(settings, SegmentationSettings):
        return settings.evaluate_inline_max_profiles
    default: int = SegmentationSettings.model_fields["evaluate_inline_max_profiles"].default
    return default


InlineMaxDep = Annotated[int, Depends(inline_max)]


def _evaluation(job: SegmentEvaluation | None) -> EvaluationRead | None:
    if job is None:
        return None
    return EvaluationRead(
        id=job.id,
        segment_id=job.segment_id,
        reason=job.reason,
        status=job.status,
        profiles_total=job.profiles_total,
        processed=job.processed,
        progress=evaluations.progress(job),
        entered=job.entered,
        exited=job.exited,
        evaluated_at=job.evaluated_at,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        duration_s=evaluations.duration_s(job),
        error=job.error,
    )


def _read(segment: Segment, session: Session) -> SegmentRead:
    return SegmentRead(
        id=segment.id,
        name=segment.name,
        rule=segment.rule,
        purpose=segment.purpose,
        time_relative=segment.time_relative,
        size=segments.segment_size(segment.id, session=session),
        evaluation=_evaluation(evaluations.latest(session, segment.id)),
        created_at=segment.created_at,
        updated_at=segment.updated_at,
    )


@router.post("/segments", status_code=status.HTTP_201_CREATED, responses=BODY_ERRORS)
def create_segment(
    body: SegmentCreate, tenant_id: TenantDep, session: SessionDep, inline: InlineMaxDep
) -> SegmentRead:
    """Create a segment, evaluated over every profile (at once, or in the background) and kept current."""
    rule = parse_rule(body.rule)
    segment = segments.create_segment(
        body.name,
        rule,
        purpose=body.purpose,
        tenant_id=tenant_id,
        session=session,
        inline_max=inline,
    )
    return _read(segment, session)


@router.post("/segments:preview", responses=BODY_ERRORS)
def preview_segment(
    body: SegmentPreviewRequest, tenant_id: TenantDep, session: SessionDep, request: Request
) -> SegmentPreview:
    """How many profiles a rule selects now, with a sample of their ids; nothing is saved (but the read of
    the sample, in the audit trail)."""
    rule, now = parse_rule(body.rule), utcnow()
    count, sample = segments.preview_segment(
        rule, tenant_id=tenant_id, session=session, now=now, sample_size=body.sample_size
    )
    record_read(request, session, tenant_id, "segment.preview", sample)
    return SegmentPreview(count=count, sample=sample, evaluated_at=now)


@router.get("/segment-templates", responses=problem_responses(401))
def list_templates(tenant_id: TenantDep) -> SegmentTemplateList:
    """Ready-made rules: RFM groups, one-time buyers, abandoned carts, birthdays, ..."""
    return SegmentTemplateList(
        items=[
            SegmentTemplate(id=t.id, name=t.name, description=t.description, rule=t.rule) for t in TEMPLATES
        ]
    )


@router.get("/segments", responses=ERRORS)
def list_segments(
    tenant_id: TenantDep,
    session: SessionDep,
    cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SegmentList:
    """The tenant's segments, oldest first."""
    found = segments.list_segments(tenant_id=tenant_id, session=session, after=cursor, limit=limit)
    next_cursor = str(found[-1].id) if len(found) == limit else None
    return SegmentList(items=[_read(s, session) for s in found], next_cursor=next_cursor)


# The routes below a segment's id come before GET/PATCH/DELETE of the segment itself, so that the OpenAPI
# document (and whoever walks it in order, like the tenancy tests) lists DELETE last.


@router.get("/segments/{segment_id}/members", responses=ERRORS)
def list_members(
    segment_id: UUID,
    tenant_id: TenantDep,
    session: SessionDep,
    request: Request,
    cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MemberPage:
    """Current members of a segment, by profile id (cursor pagination)."""
    found = segments.list_members(segment_id, tenant_id=tenant_id, session=session, after=cursor, limit=limit)
    record_read(request, session, tenant_id, "segment.members", (m.profile_id for m in found))
    next_cursor = str(found[-1].profile_id) if len(found) == limit else None
    return MemberPage(
        items=[Member(profile_id=m.profile_id, entered_at=m.entered_at) for m in found],
        next_cursor=next_cursor,
    )


EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The members, streamed: CSV with a header row, or one JSON object per line. "
        "`X-Consent-Filter` names the purpose whose consent was required (`none`: every member).",
        "content": {"text/csv": {}, "application/x-ndjson": {}},
    },
    **problem_responses(401, 404, 422),
}


@router.get("/segments/{segment_id}/export", response_class=StreamingResponse, responses=EXPORT_RESPONSES)
def export_members(
    segment_id: UUID,
    tenant_id: TenantDep,
    session: SessionDep,
    request: Request,
    fmt: Annotated[export.Format, Query(alias="format", description="`csv` or `jsonl`.")] = "csv",
    consent: Annotated[
        export.ConsentFilter,
        Query(
            description="`granted` (default): only members whose latest decision for the segment's purpose "
            "is granted (every member when it has no purpose). `all`: every member; you must not contact "
            "them for that purpose without another legal basis."
        ),
    ] = "granted",
) -> StreamingResponse:
    """The members with their segmentable traits as a file (no contact data: join on `profile_id`). Each
    chunk sent is recorded in the audit trail."""
    segment = segments.get_segment(segment_id, tenant_id=tenant_id, session=session)
    purpose = segment.purpose if consent == "granted" else None
    body = export.stream(request.app.state.engine, segment, fmt=fmt, purpose=purpose, reader=reader(request))
    headers = {
        "content-disposition": f'attachment; filename="segment-{segment.id}.{fmt}"',
        "x-consent-filter": purpose or "none",
    }
    return StreamingResponse(body, media_type=export.MEDIA_TYPES[fmt], headers=headers)


@router.get("/segments/{segment_id}/stats", responses=problem_responses(401, 404, 422))
def segment_stats(
    segment_id: UUID,
    tenant_id: TenantDep,
    session: SessionDep,
    days: Annotated[int, Query(ge=1, le=history.MAX_DAYS, description="Days of `daily`.")] = 30,
) -> SegmentStats:
    """Size now and per day, entries and exits over the last 1/7/30 days, the last full evaluation."""
    found = history.stats(segment_id, tenant_id=tenant_id, session=session, days=days, now=utcnow())
    return SegmentStats(
        size=found.size,
        purpose=found.purpose,
        reachable=found.reachable,
        windows=[StatsWindow(days=w.days, entered=w.entered, exited=w.exited) for w in found.windows],
        daily=[StatsDay(day=d.day, size=d.size, entered=d.entered, exited=d.exited) for d in found.daily],
        history_since=found.history_since,
        last_evaluation=_evaluation(found.last_evaluation),
    )


@router.get("/segments/{segment_id}/history", responses=problem_responses(401, 404, 422))
def segment_history(
    segment_id: UUID,
    tenant_id: TenantDep,
    session: SessionDep,
    request: Request,
    profile_id: Annotated[UUID | None, Query(description="Only this profile's entries and exits.")] = None,
    cursor: Annotated[
        str | None, Query(pattern=r"^[0-9]{1,18}$", description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> HistoryPage:
    """Entries and exits, newest first, with why (cursor pagination)."""
    if cursor is not None and not cursor.isdigit():
        raise Invalid("`cursor` is not a cursor of this list.")
    found = history.list_history(
        segment_id,
        tenant_id=tenant_id,
        session=session,
        profile_id=profile_id,
        after=int(cursor) if cursor is not None else None,
        limit=limit,
    )
    record_read(request, session, tenant_id, "segment.history", {e.profile_id for e in found})
    return HistoryPage(
        items=[HistoryEntry.model_validate(e, from_attributes=True) for e in found],
        next_cursor=str(found[-1].id) if len(found) == limit else None,
    )


@router.get("/segments/{segment_id}/evaluations", responses=ERRORS)
def list_evaluations(
    segment_id: UUID,
    tenant_id: TenantDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> EvaluationList:
    """The segment's full evaluations, newest first, with their progress."""
    found = evaluations.list_evaluations(segment_id, tenant_id=tenant_id, session=session, limit=limit)
    return EvaluationList(items=[e for e in map(_evaluation, found) if e is not None])


@router.post("/segments/{segment_id}/evaluations", status_code=status.HTTP_202_ACCEPTED, responses=ERRORS)
def request_evaluation(segment_id: UUID, tenant_id: TenantDep, session: SessionDep) -> EvaluationRead:
    """Evaluate the segment over every profile again, in the background (or the one already pending)."""
    job = evaluations.request_evaluation(segment_id, tenant_id=tenant_id, session=session)
    found = _evaluation(job)
    assert found is not None
    return found


@router.get("/segments/{segment_id}/evaluations/{evaluation_id}", responses=ERRORS)
def get_evaluation(
    segment_id: UUID, evaluation_id: UUID, tenant_id: TenantDep, session: SessionDep
) -> EvaluationRead:
    """One full evaluation: status and progress."""
    found = _evaluation(
        evaluations.get_evaluation(segment_id, evaluation_id, tenant_id=tenant_id, session=session)
    )
    assert found is not None
    return found


@router.get("/segments/{segment_id}", responses=ERRORS)
def get_segment(segment_id: UUID, tenant_id: TenantDep, session: SessionDep) -> SegmentRead:
    """One segment with its current size and latest evaluation."""
    return _read(segments.get_segment(segment_id, tenant_id=tenant_id, session=session), session)


@router.patch("/segments/{segment_id}", responses=CHANGE_ERRORS)
def update_segment(
    segment_id: UUID, body: SegmentUpdate, tenant_id: TenantDep, session: SessionDep, inline: InlineMaxDep
) -> SegmentRead:
    """Change the name, rule or purpose; a new rule is evaluated over every profile again."""
    changes = body.model_dump(exclude_unset=True)
    for name in ("name", "rule"):
        if name in changes and changes[name] is None:
            raise Invalid(
                f"`{name}` cannot be null.",
                extra={"errors": [{"loc": ["body", name], "msg": "May not be null.", "type": "null"}]},
            )
    if "rule" in changes:
        changes["rule"] = parse_rule(changes["rule"])
    segment = segments.update_segment(
        segment_id, changes, tenant_id=tenant_id, session=session, inline_max=inline
    )
    return _read(segment, session)


@router.delete("/segments/{segment_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
def delete_segment(segment_id: UUID, tenant_id: TenantDep, session: SessionDep) -> Response:
    """Delete a segment with its members and history; its webhooks stop (exits are still on Kafka)."""
    segments.delete_segment(segment_id, tenant_id=tenant_id, session=session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
