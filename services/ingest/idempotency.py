"""`Idempotency-Key` on POST requests, scoped per tenant and kept 48 hours.

- same key + same request (method, path, body) → the stored first response, with `Idempotent-Replayed: true`
- same key + a different request → 422
- same key while the first request is still in flight → 409 (a request abandoned by a crash is taken over
  after 60 seconds)
Responses of every status are kept except server errors, so a client may retry after a 5xx. The admin
scope's responses (a new tenant with its first API key, shown once) are kept sealed (`shared.crypto`):
the plain key is never at rest in clear.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from datetime import timedelta
from uuid import UUID

import sqlalchemy as sa
from fastapi import Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from services.ingest.models import IdempotencyRecord
from shared.crypto import keyring
from shared.db import utcnow
from shared.errors import PROBLEM_JSON, Conflict, DomainError, Invalid, problem

RETENTION = timedelta(hours=48)
ADMIN_SCOPE = "admin"
_ADMIN_CONTEXT = UUID(int=0)  # the keyring's "tenant" for what belongs to no tenant
IN_FLIGHT_TIMEOUT = timedelta(seconds=60)


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


def _claim(session: Session, scope: str, key: str, fingerprint: str) -> Response | None:
    """Record the key as in flight; or the stored response to replay; or raise."""
    now = utcnow()
    session.add(IdempotencyRecord(scope=scope, key=key, request_hash=fingerprint, created_at=now))
    try:
        session.commit()
        return None
    except IntegrityError:
        session.rollback()
    existing = session.get(IdempotencyRecord, (scope, key))
    if existing is None:  # purged in between: claim again
        return _claim(session, scope, key, fingerprint)
    abandoned = existing.completed_at is None and existing.created_at < now - IN_FLIGHT_TIMEOUT
    if existing.created_at < now - RETENTION or abandoned:
        taken = session.execute(
            sa.update(IdempotencyRecord)
            .where(
                col(IdempotencyRecord.scope) == scope,
                col(IdempotencyRecord.key) == key,
                col(IdempotencyRecord.created_at) == existing.created_at,
            )
            .values(
                request_hash=fingerprint,
                created_at=now,
                completed_at=None,
                status_code=None,
                response_body=None,
            )
        )
        session.commit()
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            return None
        raise Conflict("A request with this Idempotency-Key is in progress.")
    if existing.completed_at is None or existing.status_code is None:
        raise Conflict("A request with this Idempotency-Key is in progress.")
    if existing.request_hash != fingerprint:
        raise Invalid("This Idempotency-Key was already used with a different request.")
    media_type = PROBLEM_JSON if existing.status_code >= 400 else "application/json"
    return Response(
        _opened(scope, existing.response_body),
        status_code=existing.status_code,
        media_type=media_type,
        headers={"Idempotent-Replayed": "true"},
    )


def run_idempotent(
    session: Session, *, scope: str, key: str | None, fingerprint: str, handler: Callable[[], Response]
) -> Response:
    """Run `handler` once per (scope, key); replay its response for the same request."""
    if key is None:
        return handler()
    if not (0 < len(key) <= 200) or not key.isprintable():
        raise Invalid("`Idempotency-Key` must be 1 to 200 printable characters.")
    replay = _claim(session, scope, key, fingerprint)
    if replay is not None:
        return replay
    try:
        response = handler()
    except DomainError as exc:
        response = problem(exc.status, exc.title, exc.detail, **exc.extra)
    except Exception:
        _release(session, scope, key)
        raise
    if response.status_code >= 500:
        _release(session, scope, key)
        return response
    session.execute(
        sa.update(IdempotencyRecord)
        .where(col(IdempotencyRecord.scope) == scope, col(IdempotencyRecord.key) == key)
        .values(
            status_code=response.status_code,
            response_body=_sealed(scope, bytes(response.body)),
            completed_at=utcnow(),
        )
    )
    if random.random() < 0.01:  # noqa: S311 - housekeeping now and then, not security
        session.execute(
            sa.delete(IdempotencyRecord).where(col(IdempotencyRecord.created_at) < utcnow() - RETENTION)
        )
    session.commit()
    return response


def _sealed(scope: str, body: bytes) -> bytes:
    return keyring().seal(_ADMIN_CONTEXT, body.decode()).encode() if scope == ADMIN_SCOPE else body


def _opened(scope: str, stored: bytes | None) -> bytes | None:
    if scope != ADMIN_SCOPE or stored is None:
        return stored
    return keyring().open(_ADMIN_CONTEXT, stored.decode()).encode()


def _release(session: Session, scope: str, key: str) -> None:
    session.rollback()
    session.execute(
        sa.delete(IdempotencyRecord).where(
            col(IdempotencyRecord.scope) == scope, col(IdempotencyRecord.key) == key
        )
    )
    session.commit()
