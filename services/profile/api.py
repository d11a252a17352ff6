"""The profile service's HTTP routes."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from services.profile import profiles
from services.profile.schemas import ProfilePage, ProfileRead
from shared.auth import TenantDep
from shared.db import SessionDep
from shared.errors import problem_responses

router = APIRouter(prefix="/v1", tags=["profiles"])

ERRORS = problem_responses(401, 404)


@router.get("/profiles/{profile_id}", responses=ERRORS)
def get_profile(profile_id: UUID, tenant_id: TenantDep, session: SessionDep) -> ProfileRead:
    """One profile by id."""
    return ProfileRead.of(profiles.get_profile(profile_id, tenant_id=tenant_id, session=session))


@router.get("/profiles", responses=ERRORS)
def list_profiles(
    tenant_id: TenantDep,
    session: SessionDep,
    email: Annotated[
        str | None, Query(description="Find the profile with this e-mail (normalised first).")
    ] = None,
    cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ProfilePage:
    """Profiles of the tenant, or the one matching `email`; e-mails are masked except in an e-mail lookup."""
    found = profiles.list_profiles(
        tenant_id=tenant_id, session=session, email=email, after=cursor, limit=limit
    )
    next_cursor = str(found[-1].id) if len(found) == limit else None
    return ProfilePage(
        items=[ProfileRead.of(p, masked=email is None) for p in found], next_cursor=next_cursor
    )
