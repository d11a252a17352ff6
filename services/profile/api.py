"""The profile service's HTTP routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal, TypeVar
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from services.profile import identity_rules, probabilistic, profiles, refresh, unmerge
from services.profile.identity_rules import IdentityRules
from services.profile.schemas import (
    ConsentDecision,
    ConsentsRead,
    ConsentsUpdate,
    MergeList,
    MergeRead,
    ProfilePage,
    ProfileRead,
    SuggestionPage,
    SuggestionRead,
    Timeline,
    TimelineEntry,
    TraitsRefreshRead,
    UnmergeRequest,
    UnmergeResult,
)
from shared.audit import record_read
from shared.auth import TenantDep
from shared.db import ReadSessionDep, SessionDep
from shared.errors import Invalid, problem_responses
from shared.logs import request_id_var
from shared.web import RequestTime

router = APIRouter(prefix="/v1", tags=["profiles"])

ERRORS = problem_responses(401, 404, 422)
T = TypeVar("T")


# The two lookups below are the API's hot path: they are `async` and run their blocking part in the thread
# pool in one go (`in_thread`), closing the session there. A plain `def` route costs two more trips to the
# pool (FastAPI validates its answer there) and one to close the session. They read the profile with
# SQLAlchemy Core (`profiles.read_profile`, `profiles.find_profiles`), not the ORM.


async def in_thread(session: Session, work: Callable[[], T]) -> T:
    """`work()` in the thread pool, then the session closed in the same thread (the read transaction
    ends there, not on the event loop)."""

    def run() -> T:
        try:
            return work()
        finally:
            session.close()

    return await run_in_threadpool(run)


@router.get("/profiles/{profile_id}", responses=ERRORS)
async def get_profile(
    profile_id: UUID, request: Request, tenant_id: TenantDep, session: ReadSessionDep
) -> ProfileRead:
    """One profile by id (the read is recorded in the audit trail)."""

    def read() -> ProfileRead:
        found = ProfileRead.of(profiles.read_profile(profile_id, tenant_id=tenant_id, session=session))
        record_read(request, session, tenant_id, "profile.read", [found.id])
        return found

    return await in_thread(session, read)


@router.get("/profiles", responses=ERRORS)
async def list_profiles(
    request: Request,
    tenant_id: TenantDep,
    session: ReadSessionDep,
    email: Annotated[str | None, Query(description="Profiles owning this e-mail (normalised first).")] = None,
    phone: Annotated[str | None, Query(description="... this phone (any format; Brazil by default).")] = None,
    document: Annotated[str | None, Query(description="... this CPF/CNPJ (with or without mask).")] = None,
    source: Annotated[str | None, Query(description="With `external_id`: the source's customer id.")] = None,
    external_id: Annotated[str | None, Query(description="The customer's id on `source`.")] = None,
    state: Annotated[
        str | None, Query(description="Filter: UF code (`SP`).", pattern="^[A-Za-z]{2}$")
    ] = None,
    city: Annotated[str | None, Query(description="Filter: city (as normalised: `São Paulo`).")] = None,
    min_orders: Annotated[int | None, Query(ge=0, description="Filter: at least this many orders.")] = None,
    updated_since: Annotated[
        RequestTime | None, Query(description="Filter: changed at or after this time (with a zone).")
    ] = None,
    cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ProfilePage:
    """Profiles of the tenant, or those owning the given identifiers, optionally filtered; contact data is
    masked in plain lists."""
    filters = profiles.ListFilters(
        state=state.upper() if state else None, city=city, min_orders=min_orders, updated_since=updated_since
    )
    lookup = {k: v for k, v in (("email", email), ("phone", phone), ("document", document)) if v is not None}
    if (source is None) != (external_id is None):
        raise Invalid("`source` and `external_id` go together.")
    if source is not None and external_id is not None:
        lookup["customer_id"] = f"{source.strip().lower()}:{external_id}"

    def read() -> ProfilePage:
        found = profiles.find_profiles(
            tenant_id=tenant_id, session=session, lookup=lookup, filters=filters, after=cursor, limit=limit
        )
        next_cursor = str(found[-1].id) if len(found) == limit else None
        page = ProfilePage(
            items=[ProfileRead.of(p, masked=not lookup) for p in found], next_cursor=next_cursor
        )
        action = "profile.search" if lookup else "profile.list"
        record_read(request, session, tenant_id, action, (p.id for p in found))
        return page

    return await in_thread(session, read)


@router.get("/profiles/{profile_id}/merges", responses=ERRORS)
def list_merges(profile_id: UUID, tenant_id: TenantDep, session: SessionDep) -> MergeList:
    """The merges this profile took part in, with the rule and the kinds of identifiers that linked them."""
    records = profiles.list_merges(profile_id, tenant_id=tenant_id, session=session)
    return MergeList(items=[MergeRead.of(r) for r in records])


@router.get("/profiles/{profile_id}/timeline", responses=ERRORS)
def get_timeline(
    profile_id: UUID,
    request: Request,
    tenant_id: TenantDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Timeline:
    """The person's orders, customer records, behaviour events and merges, newest first (a merged id
    shows its survivor's timeline)."""
    entries = profiles.timeline(profile_id, tenant_id=tenant_id, session=session, limit=limit)
    record_read(request, session, tenant_id, "profile.timeline", [profile_id])
    return Timeline(items=[TimelineEntry(**e) for e in entries])


@router.get("/profiles/{profile_id}/consents", responses=ERRORS, tags=["consents"])
def get_consents(
    profile_id: UUID, request: Request, tenant_id: TenantDep, session: SessionDep
) -> ConsentsRead:
    """The person's consent per purpose (the newest decision) and every decision received, newest first
    (a merged id answers for its survivor)."""
    profile = profiles.get_profile(profile_id, tenant_id=tenant_id, session=session)
    owner = profiles.get_profile(profile.merged_into or profile.id, tenant_id=tenant_id, session=session)
    history = [ConsentDecision(**c) for c in profiles.consent_history(session, owner)]
    record_read(request, session, tenant_id, "profile.consents", [owner.id])
    return ConsentsRead(profile_id=owner.id, consents=owner.consents, history=history)


@router.put("/profiles/{profile_id}/consents", responses=problem_responses(401, 404, 422), tags=["consents"])
def put_consents(
    profile_id: UUID, body: ConsentsUpdate, tenant_id: TenantDep, session: SessionDep
) -> ConsentsRead:
    """Record decisions the person made (e.g. in the seller's preference centre): each purpose's newest
    decision wins, and segments that need a revoked consent drop the person within seconds."""
    profile = profiles.get_profile(profile_id, tenant_id=tenant_id, session=session)
    owner = profiles.update_consents(session, profile, body.consents, correlation_id=request_id_var.get())
    session.commit()
    history = [ConsentDecision(**c) for c in profiles.consent_history(session, owner)]
    return ConsentsRead(profile_id=owner.id, consents=owner.consents, history=history)


@router.post("/profiles/{profile_id}/unmerge", responses=problem_responses(401, 404, 409, 422))
def unmerge_profile(
    profile_id: UUID, body: UnmergeRequest, request: Request, tenant_id: TenantDep, session: SessionDep
) -> UnmergeResult:
    """Undo a wrong merge: the merged profile comes back; both are recomputed and kept apart."""
    profile = profiles.get_profile(profile_id, tenant_id=tenant_id, session=session)
    owner = profiles.get_profile(profile.merged_into or profile.id, tenant_id=tenant_id, session=session)
    identifier = None
    if body.identifier is not None:
        identifier = profiles.normalised_identifier(body.identifier.kind, body.identifier.value)
    record = unmerge.find_merge(session, owner, merge_id=body.merge_id, identifier=identifier)
    done = unmerge.unmerge(
        session,
        record,
        correlation_id=request_id_var.get(),
        defaults=identity_rules.service_defaults(request.app.state.settings),
    )
    session.commit()
    return UnmergeResult(
        merge_id=done.record.id,
        survivor=ProfileRead.of(done.survivor),
        restored=ProfileRead.of(done.restored),
    )


@router.get("/merge-suggestions", responses=ERRORS, tags=["identity"])
def list_suggestions(
    tenant_id: TenantDep,
    session: SessionDep,
    status: Annotated[
        Literal["pending", "accepted", "rejected", "obsolete"], Query(description="Which suggestions.")
    ] = "pending",
    cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SuggestionPage:
    """Pairs of profiles that look like one person but not surely enough to merge by themselves."""
    found = probabilistic.list_suggestions(
        tenant_id=tenant_id, session=session, status=status, after=cursor, limit=limit
    )
    next_cursor = str(found[-1].id) if len(found) == limit else None
    return SuggestionPage(items=[SuggestionRead.of(s) for s in found], next_cursor=next_cursor)


@router.post(
    "/merge-suggestions/{suggestion_id}/accept", responses=problem_responses(401, 404, 409), tags=["identity"]
)
def accept_suggestion(
    suggestion_id: UUID, request: Request, tenant_id: TenantDep, session: SessionDep
) -> MergeRead:
    """They are one person: merge the two profiles (recorded as a manual merge with the score)."""
    suggestion = probabilistic.get_suggestion(suggestion_id, tenant_id=tenant_id, session=session)
    record = probabilistic.accept(session, suggestion)
    profiles.after_manual_merge(
        session,
        record,
        correlation_id=request_id_var.get(),
        defaults=identity_rules.service_defaults(request.app.state.settings),
    )
    session.commit()
    return MergeRead.of(record)


@router.post(
    "/merge-suggestions/{suggestion_id}/reject", responses=problem_responses(401, 404, 409), tags=["identity"]
)
def reject_suggestion(suggestion_id: UUID, tenant_id: TenantDep, session: SessionDep) -> SuggestionRead:
    """They are two people: the pair is never suggested or merged by the probabilistic stage again."""
    suggestion = probabilistic.get_suggestion(suggestion_id, tenant_id=tenant_id, session=session)
    probabilistic.reject(session, suggestion)
    session.commit()
    return SuggestionRead.of(suggestion)


@router.get("/identity-rules", responses=problem_responses(401), tags=["identity"])
def get_identity_rules(tenant_id: TenantDep, session: SessionDep) -> IdentityRules:
    """The tenant's identity resolution rules (the defaults until it sets its own)."""
    return identity_rules.rules_for(session, tenant_id)


@router.put("/identity-rules", responses=problem_responses(401, 422), tags=["identity"])
def put_identity_rules(body: IdentityRules, tenant_id: TenantDep, session: SessionDep) -> IdentityRules:
    """Replace the tenant's rules; they apply to records consumed from now on (no re-resolution)."""
    saved = identity_rules.save(session, tenant_id, body)
    session.commit()
    return saved


@router.post("/traits:refresh", status_code=202, responses=problem_responses(401), tags=["traits"])
def refresh_traits(tenant_id: TenantDep, session: SessionDep) -> TraitsRefreshRead:
    """Refresh RFM, CLV, churn and next-order predictions now (returns the refresh already queued, if any)."""
    return TraitsRefreshRead.of(refresh.request(session, tenant_id, reason="api"))


@router.get("/traits/refreshes/{refresh_id}", responses=ERRORS, tags=["traits"])
def get_refresh(refresh_id: UUID, tenant_id: TenantDep, session: SessionDep) -> TraitsRefreshRead:
    """A traits refresh's progress and, once done, the fitted model."""
    return TraitsRefreshRead.of(refresh.get(refresh_id, tenant_id=tenant_id, session=session))
