"""The tenant's API keys over HTTP: issue, list, rotate, revoke (logic in `tenants`). Every route needs
`keys:manage` (`shared.auth.ROUTE_SCOPES`).

No `Idempotency-Key` here: a replayed answer would have to store the plain key, which is shown once and
never kept."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.ingest import tenants
from shared.auth import CallerDep, Scope
from shared.db import SessionDep, utcnow
from shared.errors import problem_responses
from shared.infra import ApiKey
from shared.web import RequestInt

router = APIRouter(prefix="/v1", tags=["api keys"])

KEY_EXAMPLE: dict[str, Any] = {
    "name": "ERP integration",
    "scopes": ["ingest:write", "profiles:read"],
    "expires_at": "2027-06-30T23:59:59Z",
}


class ApiKeyCreate(BaseModel):
    """A new key: a name for people, what it may do, and optionally until when."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [KEY_EXAMPLE]})

    name: str = Field(min_length=1, max_length=100, description="What the key is for (not secret).")
    scopes: list[Scope] = Field(
        min_length=1,
        description="What the key may do; only scopes the calling key holds itself (else 403).",
    )
    expires_at: AwareDatetime | None = Field(None, description="When it stops working (null: never).")


class ApiKeyRotate(BaseModel):
    """How long the old key keeps working next to the new one."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"grace_seconds": 86400}]})

    grace_seconds: RequestInt = Field(
        86400,
        ge=0,
        le=int(tenants.MAX_GRACE.total_seconds()),
        description="Seconds until the old key expires (0: now; at most 30 days).",
    )


class ApiKeyRead(BaseModel):
    """A key as listed: never the key itself nor its hash, only its first characters (`prefix`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0b7e4c4e-7f6a-4a53-9d84-3c1f5a0e2b91",
                    "prefix": "clt_Xk2pQ9aB",
                    **KEY_EXAMPLE,
                    "status": "active",
                    "created_at": "2026-12-01T10:00:00Z",
                    "revoked_at": None,
                }
            ]
        }
    )

    id: UUID
    prefix: str = Field(description="The key's first 12 characters, to recognise it.")
    name: str
    scopes: list[str]
    status: str = Field(description="`active`, `expired` or `revoked`.")
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey, now: datetime | None = None) -> ApiKeyRead:
        return cls(
            id=key.id,
            prefix=key.prefix,
            name=key.name,
            scopes=key.scopes,
            status=tenants.key_status(key, now),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
        )


class ApiKeyCreated(ApiKeyRead):
    """A new key. The key itself is shown only here, once."""

    api_key: str = Field(
        description="Send as `Authorization: Bearer <api_key>` to every service. Shown once."
    )


class ApiKeyRotated(BaseModel):
    """The new key (shown once) and the old one, now with its expiry."""

    key: ApiKeyCreated
    previous: ApiKeyRead


class ApiKeyPage(BaseModel):
    items: list[ApiKeyRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


def _created(key: ApiKey, plain: str) -> ApiKeyCreated:
    return ApiKeyCreated(**ApiKeyRead.of(key).model_dump(), api_key=plain)


@router.post(
    "/api-keys",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 422, 429),
    response_model=ApiKeyCreated,
)
def create_key(body: ApiKeyCreate, caller: CallerDep, session: SessionDep) -> Response:
    """Issue a key with some scopes (and an expiry); the key is in this answer only."""
    key, plain = tenants.issue_key(
        caller.tenant_id,
        name=body.name,
        scopes=body.scopes,
        expires_at=body.expires_at,
        caller_scopes=caller.scopes,
        session=session,
    )
    return JSONResponse(
        _created(key, plain).model_dump(mode="json"),
        status_code=201,
        headers={"Location": f"/v1/api-keys/{key.id}", "Cache-Control": "no-store"},
    )


@router.get("/api-keys", responses=problem_responses(401, 403, 422, 429))
def list_keys(
    caller: CallerDep,
    session: SessionDep,
    cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ApiKeyPage:
    """The tenant's keys, oldest first, revoked and expired ones included (never the keys themselves)."""
    found = tenants.list_keys(tenant_id=caller.tenant_id, session=session, after=cursor, limit=limit)
    now = utcnow()
    return ApiKeyPage(
        items=[ApiKeyRead.of(key, now) for key in found],
        next_cursor=str(found[-1].id) if len(found) == limit else None,
    )


@router.get("/api-keys/{key_id}", responses=problem_responses(401, 403, 404, 429))
def get_key(key_id: UUID, caller: CallerDep, session: SessionDep) -> ApiKeyRead:
    """One key: name, scopes, status, expiry."""
    return ApiKeyRead.of(tenants.get_key(key_id, tenant_id=caller.tenant_id, session=session))


@router.post(
    "/api-keys/{key_id}/rotate",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 404, 409, 422, 429),
    response_model=ApiKeyRotated,
)
def rotate_key(
    key_id: UUID, caller: CallerDep, session: SessionDep, body: ApiKeyRotate | None = None
) -> Response:
    """A new key with the same name and scopes; the old one keeps working for `grace_seconds` (24 h)."""
    old, new, plain = tenants.rotate_key(
        key_id,
        tenant_id=caller.tenant_id,
        grace=timedelta(seconds=(body or ApiKeyRotate()).grace_seconds),
        caller_scopes=caller.scopes,
        session=session,
    )
    rotated = ApiKeyRotated(key=_created(new, plain), previous=ApiKeyRead.of(old))
    return JSONResponse(
        rotated.model_dump(mode="json"),
        status_code=201,
        headers={"Location": f"/v1/api-keys/{new.id}", "Cache-Control": "no-store"},
    )


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 404, 409, 429),
)
def revoke_key(key_id: UUID, caller: CallerDep, session: SessionDep) -> Response:
    """Revoke a key on every service within seconds; 409 for the tenant's last key with `keys:manage`."""
    tenants.revoke_key(key_id, tenant_id=caller.tenant_id, session=session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
