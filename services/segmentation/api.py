"""The segmentation service's HTTP routes."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, status
from sqlmodel import Session

from services.segmentation import segments
from services.segmentation.models import Segment
from services.segmentation.rules import parse_rule
from services.segmentation.schemas import (
    Member,
    MemberPage,
    SegmentCreate,
    SegmentList,
    SegmentPreview,
    SegmentPreviewRequest,
    SegmentRead,
    SegmentTemplate,
    SegmentTemplateList,
)
from services.segmentation.templates import TEMPLATES
from shared.auth import TenantDep
from shared.db import SessionDep, utcnow
from shared.errors import problem_responses

router = APIRouter(prefix="/v1", tags=["segments"])

ERRORS = problem_responses(401, 404)
BODY_ERRORS = problem_responses(401, 422)


def _read(segment: Segment, session: Session) -> SegmentRead:
    return SegmentRead(
        id=segment.id,
        name=segment.name,
        rule=segment.rule,
        size=segments.segment_size(segment.id, session=session),
        created_at=segment.created_at,
        updated_at=segment.updated_at,
    )


@router.post("/segments", status_code=status.HTTP_201_CREATED, responses=BODY_ERRORS)
def create_segment(body: SegmentCreate, tenant_id: TenantDep, session: SessionDep) -> SegmentRead:
    """Create a segment; its members are evaluated at once and kept current."""
    rule = parse_rule(body.rule)
    segment = segments.create_segment(body.name, rule, tenant_id=tenant_id, session=session)
    return _read(segment, session)


@router.post("/segments:preview", responses=BODY_ERRORS)
def preview_segment(body: SegmentPreviewRequest, tenant_id: TenantDep, session: SessionDep) -> SegmentPreview:
    """How many profiles a rule selects now, with a sample of their ids; nothing is saved."""
    rule, now = parse_rule(body.rule), utcnow()
    count, sample = segments.preview_segment(
        rule, tenant_id=tenant_id, session=session, now=now, sample_size=body.sample_size
    )
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
def list_segments(tenant_id: TenantDep, session: SessionDep) -> SegmentList:
    """The tenant's segments."""
    return SegmentList(
        items=[_read(s, session) for s in segments.list_segments(tenant_id=tenant_id, session=session)]
    )


@router.get("/segments/{segment_id}", responses=ERRORS)
def get_segment(segment_id: UUID, tenant_id: TenantDep, session: SessionDep) -> SegmentRead:
    """One segment with its current size."""
    return _read(segments.get_segment(segment_id, tenant_id=tenant_id, session=session), session)


@router.get("/segments/{segment_id}/members", responses=ERRORS)
def list_members(
    segment_id: UUID,
    tenant_id: TenantDep,
    session: SessionDep,
    cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MemberPage:
    """Current members of a segment, by profile id (cursor pagination)."""
    found = segments.list_members(segment_id, tenant_id=tenant_id, session=session, after=cursor, limit=limit)
    next_cursor = str(found[-1].profile_id) if len(found) == limit else None
    return MemberPage(
        items=[Member(profile_id=m.profile_id, entered_at=m.entered_at) for m in found],
        next_cursor=next_cursor,
    )
