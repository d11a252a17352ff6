"""Webhooks to sellers' systems: endpoints, their signing secrets, and what goes into the delivery queue.

An endpoint subscribes to event types (`segment.entered`, `segment.exited`, `profile.merged`,
`customer.erased`), optionally only for some segments (the filter applies to the segment events). When
segmentation changes a membership, applies a merge or erases a person, one `webhook_delivery` row per
matching enabled endpoint of the tenant is added **in the same transaction** as the change
(`enqueue_membership`, `enqueue_profile_merged`, `enqueue_customer_erased`), so a delivery exists exactly
when the change committed. `delivery.WebhookDispatcher` sends them.

Payloads follow Standard Webhooks: ``{"type", "timestamp", "data"}``. Segment events carry the segment,
the profile id and version, and a few segmentable traits from the projection; never contact data
(e-mail, phone, name, document, address). The `webhook-id` is ``msg_<event id>``: the same for every
attempt, every endpoint and every redelivery of one event.

Secrets are ``whsec_`` + base64 of 32 random bytes, shown once, stored sealed (`shared.crypto`), never
logged. A rotation keeps the previous secret for `ROTATION_OVERLAP`; meanwhile deliveries carry both
signatures.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid4

import orjson
import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.segmentation.models import (
    DeliveryStatus,
    ProfileProjection,
    ProfileTag,
    Segment,
    TagKind,
    WebhookDelivery,
    WebhookEndpoint,
)
from services.segmentation.ssrf import Guard, UnsafeURL, check_url
from shared.crypto import keyring
from shared.db import after_row, stage_insert, utcnow
from shared.doorbell import Doorbell
from shared.errors import Conflict, Invalid, NotFound
from shared.events import ProfilesMerged
from shared.logs import correlation_id_var
from shared.records import from_minor

# A commit that queued deliveries wakes this process's dispatcher (`delivery.WebhookDispatcher.run`).
DELIVERIES_QUEUED = Doorbell("webhook-deliveries")

SEGMENT_ENTERED = "segment.entered"
SEGMENT_EXITED = "segment.exited"
PROFILE_MERGED = "profile.merged"
CUSTOMER_ERASED = "customer.erased"
WEBHOOK_TEST = "webhook.test"
EVENT_TYPES = (SEGMENT_ENTERED, SEGMENT_EXITED, PROFILE_MERGED, CUSTOMER_ERASED)
SEGMENT_EVENTS = frozenset({SEGMENT_ENTERED, SEGMENT_EXITED})

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32
ROTATION_OVERLAP = timedelta(hours=24)
MAX_REDELIVER = 10_000


class DisabledReason(StrEnum):
    manual = "manual"  # PATCH enabled=false
    gone = "gone"  # the endpoint answered 410 Gone
    failing = "failing"  # every attempt failed for SEGMENTATION_WEBHOOK_DISABLE_AFTER_HOURS


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def message_id(event_id: UUID) -> str:
    """The `webhook-id` of an event: no `.` in it (the signed content is `id.timestamp.body`)."""
    return f"msg_{event_id.hex}"


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous one during a rotation's
    overlap. Opened from their sealed form here, only to sign."""
    found = [keyring().open(endpoint.tenant_id, endpoint.secret)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret is not None and expires is not None and expires > now:
        found.append(keyring().open(endpoint.tenant_id, endpoint.previous_secret))
    return found


# -- what is enqueued --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscriber:
    endpoint_id: UUID
    event_types: frozenset[str]
    segment_ids: frozenset[str] | None  # None: every segment

    def wants(self, event_type: str, segment_id: UUID | None = None) -> bool:
        if event_type not in self.event_types:
            return False
        if event_type in SEGMENT_EVENTS and self.segment_ids is not None:
            return str(segment_id) in self.segment_ids
        return True


_CACHE_KEY = "clientela.webhook_subscribers"


def subscribers(session: Session, tenant_id: UUID) -> list[Subscriber]:
    """The tenant's enabled endpoints, read once per transaction (a consumer batch may announce thousands
    of membership changes)."""
    transaction = session.get_transaction()
    if transaction is None:
        return _load_subscribers(session, tenant_id)
    cached = session.info.get(_CACHE_KEY)
    if cached is None or cached[0] is not transaction:
        cached = (transaction, {})
        session.info[_CACHE_KEY] = cached
    by_tenant: dict[UUID, list[Subscriber]] = cached[1]
    if tenant_id not in by_tenant:
        by_tenant[tenant_id] = _load_subscribers(session, tenant_id)
    return by_tenant[tenant_id]


def _load_subscribers(session: Session, tenant_id: UUID) -> list[Subscriber]:
    rows = session.exec(
        select(WebhookEndpoint).where(
            WebhookEndpoint.tenant_id == tenant_id, col(WebhookEndpoint.enabled).is_(True)
        )
    ).all()
    return [
        Subscriber(
            endpoint_id=row.id,
            event_types=frozenset(row.event_types),
            segment_ids=None if row.segment_ids is None else frozenset(row.segment_ids),
        )
        for row in rows
    ]


def _forget_subscribers(session: Session) -> None:
    session.info.pop(_CACHE_KEY, None)


def wanted(session: Session, tenant_id: UUID, event_type: str, segment_id: UUID | None = None) -> bool:
    """Whether any enabled endpoint of the tenant wants this event (callers skip building payloads)."""
    return any(s.wants(event_type, segment_id) for s in subscribers(session, tenant_id))


def body(event_type: str, occurred_at: datetime, data: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and sent (kept as they are for every attempt)."""
    return orjson.dumps(
        {"type": event_type, "timestamp": occurred_at, "data": data},
        option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS,
    )


def traits(projection: ProfileProjection) -> dict[str, Any]:
    """The profile's key segmentable traits; no contact data (the projection has none) and, of its
    location, the state only."""

    def money(minor: int | None) -> str | None:
        return None if minor is None else str(from_minor(minor))

    return {
        "orders_count": projection.orders_count,
        "total_spent": money(projection.total_spent_minor),
        "average_order_value": money(projection.average_order_value_minor),
        "first_order_at": projection.first_order_at,
        "last_order_at": projection.last_order_at,
        "rfm_group": projection.rfm_group,
        "clv_12m": money(projection.clv_12m_minor),
        "churn_probability": projection.churn_probability,
        "next_order_at": projection.next_order_at,
        "state": projection.state,
    }


def _enqueue(
    session: Session,
    *,
    tenant_id: UUID,
    endpoint_ids: Iterable[UUID],
    message: str,
    event_type: str,
    payload: bytes,
    now: datetime,
    segment_id: UUID | None = None,
    ordering_key: str | None = None,
    staged: bool = False,
) -> list[WebhookDelivery]:
    """Queue a delivery of the message to each endpoint, in the caller's transaction; `staged` (the
    consumers' hot path): the rows are written in bulk (`shared.db.stage_insert`) and none is returned."""
    correlation_id = correlation_id_var.get()
    rows: list[dict[str, Any]] = [
        {
            "id": uuid4(),
            "tenant_id": tenant_id,
            "endpoint_id": endpoint_id,
            "message_id": message,
            "event_type": event_type,
            "payload": payload,
            "status": DeliveryStatus.pending.value,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "segment_id": segment_id,
            "correlation_id": correlation_id,
            "ordering_key": ordering_key,
        }
        for endpoint_id in endpoint_ids
    ]
    DELIVERIES_QUEUED.ring_after_commit(session)
    if staged:
        for row in rows:
            stage_insert(session, WebhookDelivery, row)
        return []
    deliveries = [WebhookDelivery(**row) for row in rows]
    session.add_all(deliveries)
    return deliveries


def enqueue_membership(
    session: Session,
    segment: Segment,
    *,
    profile_id: UUID,
    profile_version: int,
    change: str,
    projection: ProfileProjection | None,
    event_id: UUID,
    occurred_at: datetime,
    reason: str | None = None,
    granted: bool | None = None,
) -> None:
    """Queue `segment.entered` / `segment.exited` for the endpoints that want it (caller's transaction).
    `reason` is set when only consent changed (`consent_granted`, `consent_revoked`). An entry into a
    segment with a `purpose` is sent only when the person granted it: `granted` says so, else the stored
    consent tag (read only when some endpoint wants the event)."""
    event_type = SEGMENT_ENTERED if change == "entered" else SEGMENT_EXITED
    targets = [
        s.endpoint_id for s in subscribers(session, segment.tenant_id) if s.wants(event_type, segment.id)
    ]
    if not targets:
        return
    if event_type == SEGMENT_ENTERED and segment.purpose is not None and reason is None:
        if granted is None:
            tag = (profile_id, TagKind.consent_granted.value, segment.purpose)
            granted = session.get(ProfileTag, tag) is not None
        if not granted:
            return  # webhooks follow consent like exports do (`segments.consent_changed`)
    if projection is None:
        projection = session.get(ProfileProjection, profile_id)
    data = {
        "segment_id": segment.id,
        "segment_name": segment.name,
        "profile_id": profile_id,
        "profile_version": profile_version,
        "traits": traits(projection) if projection is not None else None,
    }
    if reason is not None:
        data["reason"] = reason
    _enqueue(
        session,
        tenant_id=segment.tenant_id,
        endpoint_ids=targets,
        message=message_id(event_id),
        event_type=event_type,
        payload=body(event_type, occurred_at, data),
        now=utcnow(),
        segment_id=segment.id,
        ordering_key=f"profile:{profile_id}",
        staged=True,
    )


def forget_segment(session: Session, segment: Segment) -> int:
    """A segment is being deleted: its pending deliveries fail (`segment_deleted`) and endpoints that
    listed it stop listing it (one that listed only it then gets no segment events). Returns how many
    deliveries were stopped. The caller commits."""
    endpoints = session.exec(
        select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == segment.tenant_id)
    ).all()
    for endpoint in endpoints:
        if endpoint.segment_ids is not None and str(segment.id) in endpoint.segment_ids:
            endpoint.segment_ids = [s for s in endpoint.segment_ids if s != str(segment.id)]
            endpoint.updated_at = utcnow()
            session.add(endpoint)
    _forget_subscribers(session)
    if not endpoints:
        return 0
    stopped = session.execute(
        sa.update(WebhookDelivery)
        .where(
            # Through the (endpoint, status) index: an endpoint has few pending deliveries.
            col(WebhookDelivery.endpoint_id).in_([e.id for e in endpoints]),
            col(WebhookDelivery.status) == DeliveryStatus.pending,
            col(WebhookDelivery.segment_id) == segment.id,
        )
        .values(status=DeliveryStatus.failed, next_attempt_at=None, error="segment_deleted")
        .execution_options(synchronize_session=False)
    )
    return int(stopped.rowcount)  # type: ignore[attr-defined]


def enqueue_profile_merged(
    session: Session, tenant_id: UUID, event: ProfilesMerged, *, event_id: UUID, occurred_at: datetime
) -> None:
    """Queue `profile.merged` (whatever the endpoints' segment filters) in the caller's transaction."""
    targets = [s.endpoint_id for s in subscribers(session, tenant_id) if s.wants(PROFILE_MERGED)]
    if not targets:
        return
    data = {
        "survivor_id": event.survivor_id,
        "merged_id": event.merged_id,
        "merge_id": event.merge_id,
        "rule": event.rule,
    }
    _enqueue(
        session,
        tenant_id=tenant_id,
        endpoint_ids=targets,
        message=message_id(event_id),
        event_type=PROFILE_MERGED,
        payload=body(PROFILE_MERGED, occurred_at, data),
        now=utcnow(),
        # After the survivor's earlier news, before its later news.
        ordering_key=f"profile:{event.survivor_id}",
    )


def enqueue_customer_erased(
    session: Session,
    tenant_id: UUID,
    *,
    request_id: UUID,
    profile_ids: Sequence[UUID],
    mode: str,
    event_id: UUID,
    occurred_at: datetime,
) -> None:
    """Queue `customer.erased` (LGPD Art. 18 §6: whoever received the person's data is told to erase it
    too) in the caller's transaction. It carries the profile ids only."""
    targets = [s.endpoint_id for s in subscribers(session, tenant_id) if s.wants(CUSTOMER_ERASED)]
    if not targets:
        return
    data = {"request_id": request_id, "profile_ids": list(profile_ids), "mode": mode}
    _enqueue(
        session,
        tenant_id=tenant_id,
        endpoint_ids=targets,
        message=message_id(event_id),
        event_type=CUSTOMER_ERASED,
        payload=body(CUSTOMER_ERASED, occurred_at, data),
        now=utcnow(),
    )


# -- endpoints ---------------------------------------------------------------------------------------------


def _check_url(url: str, guard: Guard) -> None:
    try:
        check_url(url, guard)
    except UnsafeURL as exc:
        raise Invalid(
            exc.message,
            extra={"errors": [{"loc": ["body", "url"], "msg": exc.message, "type": f"url.{exc.reason}"}]},
        ) from None


def _check_segments(segment_ids: Sequence[UUID] | None, *, tenant_id: UUID, session: Session) -> None:
    if not segment_ids:
        return
    found = set(
        session.exec(
            select(Segment.id).where(Segment.tenant_id == tenant_id, col(Segment.id).in_(segment_ids))
        ).all()
    )
    missing = [i for i, segment_id in enumerate(segment_ids) if segment_id not in found]
    if missing:
        raise Invalid(
            f"`segment_ids[{missing[0]}]` is not a segment of this tenant.",
            extra={
                "errors": [
                    {
                        "loc": ["body", "segment_ids", i],
                        "msg": "No segment with this id.",
                        "type": "not_found",
                    }
                    for i in missing
                ]
            },
        )


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def create_endpoint(
    *,
    url: str,
    event_types: Sequence[str],
    segment_ids: Sequence[UUID] | None,
    description: str | None,
    tenant_id: UUID,
    guard: Guard,
    session: Session,
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it and its secret (the only time the secret is given out)."""
    _check_url(url, guard)
    _check_segments(segment_ids, tenant_id=tenant_id, session=session)
    secret = new_secret()
    endpoint = WebhookEndpoint(
        tenant_id=tenant_id,
        url=url,
        description=description,
        event_types=_unique(event_types),
        segment_ids=None if segment_ids is None else _unique(str(s) for s in segment_ids),
        secret=keyring().seal(tenant_id, secret),
    )
    session.add(endpoint)
    session.commit()
    session.refresh(endpoint)
    return endpoint, secret


def get_endpoint(endpoint_id: UUID, *, tenant_id: UUID, session: Session) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.tenant_id != tenant_id:
        raise NotFound("No webhook endpoint with this id.")
    return endpoint


def list_endpoints(
    *, tenant_id: UUID, session: Session, after: UUID | None = None, limit: int = 1000
) -> list[WebhookEndpoint]:
    """Oldest first; `after` is the last id of the previous page."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)
    order = (col(WebhookEndpoint.created_at), col(WebhookEndpoint.id))
    last = session.get(WebhookEndpoint, after) if after is not None else None
    if last is not None and last.tenant_id == tenant_id:
        query = query.where(after_row(*order, last.created_at, last.id))
    return list(session.exec(query.order_by(*order).limit(limit)).all())


def update_endpoint(
    endpoint_id: UUID,
    changes: dict[str, Any],
    *,
    tenant_id: UUID,
    guard: Guard,
    session: Session,
) -> WebhookEndpoint:
    """Apply the given fields (url, event_types, segment_ids, description, enabled)."""
    endpoint = get_endpoint(endpoint_id, tenant_id=tenant_id, session=session)
    now = utcnow()
    if "url" in changes and changes["url"] != endpoint.url:
        _check_url(changes["url"], guard)
        endpoint.url = changes["url"]
        endpoint.failing_since = None
    if "event_types" in changes:
        endpoint.event_types = _unique(changes["event_types"])
    if "segment_ids" in changes:
        segment_ids = changes["segment_ids"]
        _check_segments(segment_ids, tenant_id=tenant_id, session=session)
        endpoint.segment_ids = None if segment_ids is None else _unique(str(s) for s in segment_ids)
    if "description" in changes:
        endpoint.description = changes["description"]
    if changes.get("enabled") is True and not endpoint.enabled:
        endpoint.enabled = True
        endpoint.disabled_reason = endpoint.disabled_at = None
        endpoint.failing_since = endpoint.paused_until = None
    elif changes.get("enabled") is False and endpoint.enabled:
        disable(session, endpoint, DisabledReason.manual, now)
    endpoint.updated_at = now
    session.add(endpoint)
    session.commit()
    session.refresh(endpoint)
    return endpoint


def disable(session: Session, endpoint: WebhookEndpoint, reason: str, now: datetime) -> None:
    """Stop deliveries to an endpoint: its pending ones fail (they can be redelivered once it is enabled
    again), and no new ones are queued while it is disabled. The caller commits."""
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.disabled_at = now
    session.add(endpoint)
    session.flush()
    session.execute(
        sa.update(WebhookDelivery)
        .where(
            col(WebhookDelivery.endpoint_id) == endpoint.id,
            col(WebhookDelivery.status) == DeliveryStatus.pending,
        )
        .values(status=DeliveryStatus.failed, next_attempt_at=None, error="endpoint_disabled")
        .execution_options(synchronize_session=False)
    )
    _forget_subscribers(session)


def delete_endpoint(endpoint_id: UUID, *, tenant_id: UUID, session: Session) -> None:
    """Delete an endpoint with its deliveries (pending ones are never sent)."""
    endpoint = get_endpoint(endpoint_id, tenant_id=tenant_id, session=session)
    session.execute(
        sa.delete(WebhookDelivery)
        .where(col(WebhookDelivery.endpoint_id) == endpoint.id)
        .execution_options(synchronize_session=False)
    )
    session.delete(endpoint)
    session.commit()


def rotate_secret(endpoint_id: UUID, *, tenant_id: UUID, session: Session) -> tuple[WebhookEndpoint, str]:
    """A new secret (returned once); the current one keeps signing too for `ROTATION_OVERLAP`. A second
    rotation within the overlap drops the oldest secret."""
    endpoint = get_endpoint(endpoint_id, tenant_id=tenant_id, session=session)
    now = utcnow()
    secret = new_secret()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + ROTATION_OVERLAP
    endpoint.secret = keyring().seal(tenant_id, secret)
    endpoint.updated_at = now
    session.add(endpoint)
    session.commit()
    session.refresh(endpoint)
    return endpoint, secret


def _require_enabled(endpoint: WebhookEndpoint) -> None:
    if not endpoint.enabled:
        raise Conflict("The endpoint is disabled; enable it first (PATCH with `enabled: true`).")


def send_test(endpoint_id: UUID, *, tenant_id: UUID, session: Session) -> WebhookDelivery:
    """Queue a `webhook.test` delivery to the endpoint (whatever it subscribes to)."""
    endpoint = get_endpoint(endpoint_id, tenant_id=tenant_id, session=session)
    _require_enabled(endpoint)
    now = utcnow()
    data = {"endpoint_id": endpoint.id, "message": "A test delivery from Clientela."}
    [delivery] = _enqueue(
        session,
        tenant_id=tenant_id,
        endpoint_ids=[endpoint.id],
        message=message_id(uuid4()),
        event_type=WEBHOOK_TEST,
        payload=body(WEBHOOK_TEST, now, data),
        now=now,
    )
    session.commit()
    session.refresh(delivery)
    return delivery


# -- deliveries --------------------------------------------------------------------------------------------


def list_deliveries(
    endpoint_id: UUID,
    *,
    tenant_id: UUID,
    session: Session,
    status: str | None,
    after: UUID | None,
    limit: int,
) -> list[WebhookDelivery]:
    """The endpoint's deliveries, newest first (keyset pagination on created_at, id)."""
    get_endpoint(endpoint_id, tenant_id=tenant_id, session=session)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if after is not None:
        cursor = session.get(WebhookDelivery, after)
        if cursor is None or cursor.endpoint_id != endpoint_id:
            raise Invalid("`cursor` is not a delivery of this endpoint.")
        keys = (col(WebhookDelivery.created_at), col(WebhookDelivery.id))
        query = query.where(after_row(*keys, cursor.created_at, cursor.id, newest_first=True))
    query = query.order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id).desc())
    return list(session.exec(query.limit(limit)).all())


def _again(session: Session, original: WebhookDelivery, now: datetime) -> WebhookDelivery:
    """A new delivery of the same message (same webhook-id and body) to the same endpoint."""
    delivery = WebhookDelivery(
        tenant_id=original.tenant_id,
        endpoint_id=original.endpoint_id,
        message_id=original.message_id,
        event_type=original.event_type,
        payload=original.payload,
        next_attempt_at=now,
        created_at=now,
        redelivery_of=original.id,
        correlation_id=original.correlation_id,
        ordering_key=original.ordering_key,
    )
    session.add(delivery)
    DELIVERIES_QUEUED.ring_after_commit(session)
    return delivery


def redeliver(endpoint_id: UUID, delivery_id: UUID, *, tenant_id: UUID, session: Session) -> WebhookDelivery:
    """Send one delivery's message again (a new delivery with the same webhook-id); 409 while it is still
    pending."""
    endpoint = get_endpoint(endpoint_id, tenant_id=tenant_id, session=session)
    original = session.get(WebhookDelivery, delivery_id)
    if original is None or original.endpoint_id != endpoint.id:
        raise NotFound("No delivery with this id for this endpoint.")
    _require_enabled(endpoint)
    still_pending = session.exec(
        select(WebhookDelivery.id).where(
            WebhookDelivery.endpoint_id == endpoint.id,
            WebhookDelivery.message_id == original.message_id,
            WebhookDelivery.status == DeliveryStatus.pending,
        )
    ).first()
    if still_pending is not None:
        raise Conflict("This message has a pending delivery: it will be attempted on its schedule.")
    delivery = _again(session, original, utcnow())
    session.commit()
    session.refresh(delivery)
    return delivery


def redeliver_range(
    endpoint_id: UUID,
    *,
    since: datetime,
    until: datetime,
    only_failed: bool,
    tenant_id: UUID,
    session: Session,
) -> int:
    """Send again every message of the endpoint created in [since, until) whose latest delivery failed
    (or, with `only_failed` false, finished either way); a message with a pending delivery is skipped.
    Returns how many were queued."""
    endpoint = get_endpoint(endpoint_id, tenant_id=tenant_id, session=session)
    _require_enabled(endpoint)
    if until <= since:
        raise Invalid("`until` must be after `since`.")
    rows = session.exec(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint.id,
            col(WebhookDelivery.created_at) >= since,
            col(WebhookDelivery.created_at) < until,
        )
        .order_by(col(WebhookDelivery.created_at), col(WebhookDelivery.id))
    ).all()
    latest: dict[str, WebhookDelivery] = {}
    for row in rows:  # in creation order: the last one seen of a message is its latest delivery
        latest[row.message_id] = row
    pending = set(
        session.exec(
            select(WebhookDelivery.message_id).where(
                WebhookDelivery.endpoint_id == endpoint.id,
                WebhookDelivery.status == DeliveryStatus.pending,
                col(WebhookDelivery.message_id).in_(list(latest)),
            )
        ).all()
    )
    wanted_status = (
        {DeliveryStatus.failed} if only_failed else {DeliveryStatus.failed, DeliveryStatus.delivered}
    )
    chosen = [d for m, d in latest.items() if m not in pending and d.status in wanted_status]
    if len(chosen) > MAX_REDELIVER:
        raise Invalid(f"More than {MAX_REDELIVER} messages in this range; narrow it.")
    now = utcnow()
    for original in chosen:
        _again(session, original, now)
    session.commit()
    return len(chosen)


def next_due(session: Session, endpoint_id: UUID, now: datetime) -> WebhookDelivery | None:
    """The endpoint's oldest delivery due for an attempt."""
    return session.exec(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.status == DeliveryStatus.pending,
            col(WebhookDelivery.next_attempt_at) <= now,
        )
        .order_by(col(WebhookDelivery.created_at), col(WebhookDelivery.id))
        .limit(1)
    ).first()


def expires_previous(endpoint: WebhookEndpoint, now: datetime) -> datetime | None:
    """When the previous secret stops signing, if a rotation's overlap is running."""
    expires = endpoint.previous_secret_expires_at
    return expires if endpoint.previous_secret is not None and expires is not None and expires > now else None
