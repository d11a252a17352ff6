"""Data-subject requests (LGPD Art. 18): the profile service receives them and coordinates the others.

- **confirmation**: answered at once (whether data is held, and in which categories).
- **access / portability**: a summary at once; the complete report is assembled from every service: this
  one adds its part, then asks ingest and segmentation on the privacy topic (`privacy.report_requested`,
  carrying only ids); each answers with its part sealed for the tenant (`privacy.report_part_compiled`).
  When all parts are in, the report (machine-readable JSON, origin and purpose of each section) is kept
  sealed and served by `GET /v1/privacy/requests/{id}/report`.
- **correction**: the corrected values become a record of their own that takes precedence; the profile is
  recomputed and announced (`profile.updated`), so segmentation and its webhooks follow.
- **consent_revocation**: a revocation per purpose in the consent history; segments that need it drop the
  person within seconds.
- **deletion / anonymisation**: this service erases what it holds in the request's transaction and asks
  the others (`privacy.erasure_requested`); each erases and confirms (`privacy.erasure_confirmed`); the
  request completes when all have. Anonymisation keeps the purchase aggregates on a new, unlinked profile
  (status `anonymised`: no identifiers, contact data, name, birth date or location below the state) so
  the seller's statistics stay right; deletion keeps nothing.

Later records carrying an erased person's identifiers (`suppress`, default on): the identifiers' keyed
hashes (`Keyring.suppression`, a key of their own) are kept and such records are dropped, here and at
ingest, so an erased person never comes back silently, whether from a resent old order or a marketplace
sync. With `suppress: false` a later record starts a new profile, unrelated to the erased one.

The request record stays, for accountability, without personal data: the subject only as the kind of
identifier given; profile and record ids are emptied when an erasure completes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import orjson
import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.profile import probabilistic, profiles
from services.profile.models import (
    MergeBlock,
    MergeRecord,
    MergeSuggestion,
    PrivacyRequest,
    PrivacySuppression,
    Profile,
    ProfileBlockKey,
    ProfileIdentifier,
    ProfileOrder,
    ProfileRecord,
)
from services.profile.privacy_schemas import PrivacyRequestCreate
from services.profile.schemas import ConsentDecision, ConsentsRead, MergeRead, ProfileRead
from shared.audit import forget_reads
from shared.crypto import keyring
from shared.db import utcnow
from shared.errors import NotFound
from shared.events import (
    Envelope,
    PrivacyErasureConfirmed,
    PrivacyErasureRequested,
    PrivacyReportPart,
    PrivacyReportRequested,
)
from shared.outbox import add_event, purge_published
from shared.records import Consent, ConsentPurpose, ConsentStatus, Customer

log = logging.getLogger("clientela.profile.privacy")

# The services that hold data about a person besides this one, and answer on the privacy topic.
OTHER_SERVICES = ("ingest", "segmentation")
DUE_IN = timedelta(days=15)  # LGPD Art. 19 II: the complete report within 15 days.
_CHUNK = 500

PURPOSES = {
    "profile": "Build one profile per person from the seller's orders and records (identity resolution), "
    "with purchase, behaviour and predicted traits used to segment and personalise.",
    "identifiers": "Recognise the same person across channels (stored as keyed hashes, values encrypted).",
    "merges": "Explain why records were joined into one profile, and allow undoing it.",
    "consents": "Prove consent per purpose and honour revocations.",
    "orders": "Purchase history behind the traits (totals, items, payments, status).",
    "records": "Customer records and behaviour events behind the profile's fields and interests.",
}


# --- Finding the person ---------------------------------------------------------------------------------


def find_owner(session: Session, tenant_id: UUID, request: PrivacyRequestCreate) -> Profile | None:
    """The active profile of the person named in the request, or None when nothing is held."""
    subject = request.subject
    if subject.profile_id is not None:
        profile = session.get(Profile, subject.profile_id)
        if profile is None or profile.tenant_id != tenant_id:
            return None
        if profile.merged_into is not None:
            profile = session.get(Profile, profile.merged_into)
        return profile if profile is not None and profile.status == "active" else None
    kind = subject.kind
    raw = getattr(subject, kind)
    try:
        found = profiles.list_profiles(
            tenant_id=tenant_id, session=session, lookup={kind: raw}, after=None, limit=1
        )
    except NotFound:
        return None
    return found[0] if found else None


def cluster(session: Session, owner: Profile) -> list[Profile]:
    """The owner and every profile ever merged into it (directly or through another)."""
    found = {owner.id: owner}
    frontier = [owner.id]
    while frontier:
        merged = session.exec(select(Profile).where(col(Profile.merged_into).in_(frontier))).all()
        frontier = [p.id for p in merged if p.id not in found]
        found.update({p.id: p for p in merged})
    return list(found.values())


def _record_ids(session: Session, profile_ids: list[UUID]) -> list[UUID]:
    """Ingest's ids of the orders and records that reached these profiles (what ingest keeps of them)."""
    ids: list[UUID] = []
    for start in range(0, len(profile_ids), _CHUNK):
        chunk = profile_ids[start : start + _CHUNK]
        ids += session.exec(
            select(ProfileOrder.order_id).where(col(ProfileOrder.profile_id).in_(chunk))
        ).all()
        ids += session.exec(
            select(ProfileRecord.id).where(
                col(ProfileRecord.profile_id).in_(chunk), col(ProfileRecord.source) != "api"
            )
        ).all()
    return ids


def _identifiers(session: Session, tenant_id: UUID, profile_ids: list[UUID]) -> list[tuple[str, str]]:
    """The readable (kind, normalised value) identifiers of these profiles."""
    keys = keyring()
    rows = session.exec(
        select(ProfileIdentifier.kind, ProfileIdentifier.sealed).where(
            ProfileIdentifier.tenant_id == tenant_id, col(ProfileIdentifier.profile_id).in_(profile_ids)
        )
    ).all()
    return [(kind, keys.open(tenant_id, sealed)) for kind, sealed in rows]


# --- Requests -------------------------------------------------------------------------------------------


def create_request(
    session: Session,
    tenant_id: UUID,
    body: PrivacyRequestCreate,
    *,
    api_key_id: UUID | None,
    correlation_id: str | None,
) -> PrivacyRequest:
    """Record the request and do this service's part; the caller commits."""
    now = utcnow()
    request = PrivacyRequest(
        id=uuid4(),
        tenant_id=tenant_id,
        type=body.type,
        subject_kind=body.subject.kind,
        api_key_id=api_key_id,
        created_at=now,
        due_at=now + DUE_IN,
    )
    owner = find_owner(session, tenant_id, body)
    request.found = owner is not None
    if owner is None:
        request.status, request.completed_at = "completed", now
        request.summary = {"holds_data": False}
        session.add(request)
        return request
    members = cluster(session, owner)
    ids = [p.id for p in members]
    request.profile_ids = [str(i) for i in ids]
    request.summary = summary(session, owner, members)
    if body.type in ("confirmation",):
        request.status, request.completed_at = "completed", now
    elif body.type in ("access", "portability"):
        record_ids = _record_ids(session, ids)
        request.record_ids = [str(r) for r in record_ids]
        part = _profile_part(session, owner, members)
        request.confirmations = {"profile": {"at": now.isoformat(), "part": _seal(tenant_id, part)}}
        request.awaiting = list(OTHER_SERVICES)
        add_event(
            session,
            PrivacyReportRequested(request_id=request.id, profile_ids=ids, record_ids=record_ids),
            tenant_id=tenant_id,
            key=str(tenant_id),
            correlation_id=correlation_id,
        )
    elif body.type == "correction":
        assert body.correction is not None
        _correct(session, owner, body, correlation_id=correlation_id)
        request.summary = {**request.summary, "corrected": sorted(body.correction.model_fields_set)}
        request.status, request.completed_at = "completed", now
    elif body.type == "consent_revocation":
        purposes = body.purposes or list(ConsentPurpose)
        revocations = [
            Consent(purpose=p, status=ConsentStatus.revoked, at=now, source="privacy_request")
            for p in purposes
        ]
        profiles.update_consents(session, owner, revocations, correlation_id=correlation_id)
        request.summary = {**request.summary, "revoked": sorted(str(p) for p in purposes)}
        request.status, request.completed_at = "completed", now
    else:  # deletion, anonymisation
        record_ids = _record_ids(session, ids)
        request.record_ids = [str(r) for r in record_ids]
        suppress = (
            sorted({keyring().suppression(tenant_id, k, v) for k, v in _identifiers(session, tenant_id, ids)})
            if body.suppress
            else []
        )
        for value in suppress:
            if session.get(PrivacySuppression, (tenant_id, value)) is None:
                session.add(PrivacySuppression(tenant_id=tenant_id, hash=value, request_id=request.id))
        mode = "anonymisation" if body.type == "anonymisation" else "deletion"
        erased = erase(session, tenant_id, members, mode=mode)
        request.confirmations = {"profile": {"at": now.isoformat(), "erased": erased}}
        request.awaiting = list(OTHER_SERVICES)
        add_event(
            session,
            PrivacyErasureRequested(
                request_id=request.id, mode=mode, profile_ids=ids, record_ids=record_ids, suppress=suppress
            ),
            tenant_id=tenant_id,
            key=str(tenant_id),
            correlation_id=correlation_id,
        )
    session.add(request)
    return request


def get_request(session: Session, request_id: UUID, tenant_id: UUID) -> PrivacyRequest:
    request = session.get(PrivacyRequest, request_id)
    if request is None or request.tenant_id != tenant_id:
        raise NotFound("No privacy request with this id.")
    return request


def list_requests(
    session: Session, tenant_id: UUID, *, after: UUID | None, limit: int
) -> list[PrivacyRequest]:
    query = select(PrivacyRequest).where(PrivacyRequest.tenant_id == tenant_id)
    if after is not None:
        query = query.where(col(PrivacyRequest.id) > after)
    return list(session.exec(query.order_by(col(PrivacyRequest.id)).limit(limit)).all())


def report(request: PrivacyRequest) -> dict[str, Any]:
    """The complete report (only once every service answered)."""
    if request.report is None or request.status != "completed":
        raise NotFound("This request has no report (yet): see its status.")
    data: dict[str, Any] = orjson.loads(keyring().open(request.tenant_id, request.report))
    return data


# --- Replies from the other services (consumer handlers) --------------------------------------------------


def _answer(
    session: Session, envelope: Envelope, request_id: UUID, service: str, answer: dict[str, Any]
) -> None:
    request = session.get(PrivacyRequest, request_id)
    if request is None or request.tenant_id != envelope.tenant_id or service not in request.awaiting:
        return  # unknown, another tenant's, or a redelivery: nothing to do
    request.confirmations = {**request.confirmations, service: answer}
    request.awaiting = [s for s in request.awaiting if s != service]
    if not request.awaiting:
        request.status, request.completed_at = "completed", utcnow()
        if request.type in ("access", "portability"):
            request.report = _seal(request.tenant_id, _assemble(request))
            request.confirmations = {
                s: {k: v for k, v in a.items() if k != "part"} for s, a in request.confirmations.items()
            }
        else:
            request.profile_ids, request.record_ids = [], []
    session.add(request)


def apply_report_part(session: Session, envelope: Envelope, event: PrivacyReportPart) -> None:
    answer = {"at": envelope.occurred_at.isoformat(), "part": event.sealed_part}
    _answer(session, envelope, event.request_id, event.service, answer)


def apply_erasure_confirmed(session: Session, envelope: Envelope, event: PrivacyErasureConfirmed) -> None:
    answer = {"at": envelope.occurred_at.isoformat(), "erased": event.erased}
    _answer(session, envelope, event.request_id, event.service, answer)


def _assemble(request: PrivacyRequest) -> dict[str, Any]:
    keys = keyring()
    services = {
        service: orjson.loads(keys.open(request.tenant_id, answer["part"]))
        for service, answer in request.confirmations.items()
        if "part" in answer
    }
    return {
        "request_id": str(request.id),
        "type": request.type,
        "generated_at": utcnow().isoformat(),
        "controller_note": "Data held by Clientela on behalf of the seller (the controller), per service.",
        "services": services,
    }


def _seal(tenant_id: UUID, data: dict[str, Any]) -> str:
    return keyring().seal(
        tenant_id, orjson.dumps(data, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS).decode()
    )


# --- This service's part --------------------------------------------------------------------------------


def summary(session: Session, owner: Profile, members: Sequence[Profile]) -> dict[str, Any]:
    """What is held about the person, in categories with counts: the simplified answer given at once."""
    ids = [p.id for p in members]
    identifiers = session.exec(
        select(ProfileIdentifier.kind, sa.func.count())
        .where(ProfileIdentifier.tenant_id == owner.tenant_id, col(ProfileIdentifier.profile_id).in_(ids))
        .group_by(ProfileIdentifier.kind)
    ).all()
    orders = session.exec(
        select(sa.func.count()).select_from(ProfileOrder).where(col(ProfileOrder.profile_id).in_(ids))
    ).one()
    records = session.exec(
        select(sa.func.count()).select_from(ProfileRecord).where(col(ProfileRecord.profile_id).in_(ids))
    ).one()
    shown = ProfileRead.of(owner)
    return {
        "holds_data": True,
        "profile_id": str(owner.id),
        "held_since": min(p.created_at for p in members).isoformat(),
        "categories": {
            "identifiers": dict(sorted((k, int(n)) for k, n in identifiers)),
            "contact": [k for k in ("email", "phone") if getattr(shown, k)],
            "demographics": [k for k in ("name", "birth_date", "gender") if getattr(shown, k) is not None],
            "location": sorted(k for k, v in shown.location.items() if v is not None),
            "orders": int(orders),
            "records": int(records),
            "consents": sorted(owner.consents),
            "merged_profiles": len(members) - 1,
        },
        "services": ["profile", *OTHER_SERVICES],
    }


def _profile_part(session: Session, owner: Profile, members: Sequence[Profile]) -> dict[str, Any]:
    """Everything this service holds about the person, readable, with the origin and purpose of each part."""
    ids = [p.id for p in members]
    history = profiles.load_history(session, ids)
    orders = [o for pid in ids for o in history[pid][0]]
    records = [r for pid in ids for r in history[pid][1]]
    merges = session.exec(
        select(MergeRecord).where(
            sa.or_(col(MergeRecord.survivor_id).in_(ids), col(MergeRecord.merged_id).in_(ids))
        )
    ).all()
    consents = ConsentsRead(
        profile_id=owner.id,
        consents=owner.consents,
        history=[ConsentDecision(**c) for c in profiles.consent_history(session, owner)],
    )
    return {
        "origin": "Computed by Clientela from the orders, customer records and events the seller sent.",
        "profile": {
            "purpose": PURPOSES["profile"],
            "data": ProfileRead.of(owner).model_dump(mode="json"),
            "merged_profile_ids": [str(p.id) for p in members if p.id != owner.id],
        },
        "identifiers": {
            "purpose": PURPOSES["identifiers"],
            "data": [{"kind": k, "value": v} for k, v in _identifiers(session, owner.tenant_id, ids)],
        },
        "merges": {
            "purpose": PURPOSES["merges"],
            "data": [MergeRead.of(m).model_dump(mode="json") for m in merges],
        },
        "consents": {"purpose": PURPOSES["consents"], "data": consents.model_dump(mode="json")},
        "orders": {
            "purpose": PURPOSES["orders"],
            "data": [
                {
                    "order_id": str(o.order_id),
                    "version": o.order_version,
                    "source": o.source,
                    "status": o.status,
                    "total_minor": o.total_minor,
                    "placed_at": o.placed_at.isoformat(),
                    "items": o.items,
                    "payments": o.payments,
                }
                for o in orders
            ],
        },
        "records": {
            "purpose": PURPOSES["records"],
            "data": [
                {
                    "record_id": str(r.id),
                    "kind": r.kind,
                    "type": r.type,
                    "source": r.source,
                    "occurred_at": r.occurred_at.isoformat(),
                    "properties": r.properties,
                }
                for r in records
            ],
        },
    }


# --- Correction -----------------------------------------------------------------------------------------


def _correct(
    session: Session, owner: Profile, body: PrivacyRequestCreate, *, correlation_id: str | None
) -> None:
    """The corrected values as a record of their own, newer than every other: the profile's fields come
    from the newest record that has them, so they win until the person gives newer data themselves."""
    assert body.correction is not None
    now = utcnow()
    corrected = Customer.model_construct(**body.correction.model_dump(exclude_unset=True))
    profiles.record_own(session, owner, "correction", profiles.snapshot(corrected, [], at=now), at=now)
    profiles.recompute(session, owner, correlation_id=correlation_id)


# --- Erasure --------------------------------------------------------------------------------------------


def _delete(session: Session, statement: Any) -> int:
    result = session.execute(statement.execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]


def erase(session: Session, tenant_id: UUID, members: Sequence[Profile], *, mode: str) -> dict[str, int]:
    """Delete everything this service holds about these profiles (the person's cluster); with
    `anonymisation`, first keep the purchase aggregates on a new, unlinked profile. Counts by table."""
    ids = [p.id for p in members]
    owner = next(p for p in members if p.merged_into is None)
    erased: dict[str, int] = {}
    if mode == "anonymisation":
        session.add(
            Profile(
                id=uuid4(),
                tenant_id=tenant_id,
                status="anonymised",
                state=owner.state,
                country=owner.country,
                purchases={k: v for k, v in owner.purchases.items() if k != "top_products"},
                orders_count=owner.orders_count,
                total_spent_minor=owner.total_spent_minor,
                first_order_at=owner.first_order_at,
                last_order_at=owner.last_order_at,
                created_at=owner.created_at,
            )
        )
    in_ids = col(ProfileIdentifier.profile_id).in_(ids)
    erased["profile_identifier"] = _delete(
        session, sa.delete(ProfileIdentifier).where(col(ProfileIdentifier.tenant_id) == tenant_id, in_ids)
    )
    erased["profile_order"] = _delete(
        session, sa.delete(ProfileOrder).where(col(ProfileOrder.profile_id).in_(ids))
    )
    erased["profile_record"] = _delete(
        session, sa.delete(ProfileRecord).where(col(ProfileRecord.profile_id).in_(ids))
    )
    erased["merge_record"] = _delete(
        session,
        sa.delete(MergeRecord).where(
            sa.or_(col(MergeRecord.survivor_id).in_(ids), col(MergeRecord.merged_id).in_(ids))
        ),
    )
    erased["merge_block"] = _delete(
        session,
        sa.delete(MergeBlock).where(
            sa.or_(col(MergeBlock.profile_a).in_(ids), col(MergeBlock.profile_b).in_(ids))
        ),
    )
    erased["merge_suggestion"] = _delete(
        session,
        sa.delete(MergeSuggestion).where(
            sa.or_(col(MergeSuggestion.profile_a).in_(ids), col(MergeSuggestion.profile_b).in_(ids))
        ),
    )
    erased["profile_block_key"] = _delete(
        session, sa.delete(ProfileBlockKey).where(col(ProfileBlockKey.profile_id).in_(ids))
    )
    erased["block_key_check"] = probabilistic.forget_checks(session, tenant_id, ids)
    erased["audit_event"] = forget_reads(session, tenant_id, ids)
    erased["profile"] = _delete(session, sa.delete(Profile).where(col(Profile.id).in_(ids)))
    erased["outbox_message"] = purge_published(session)
    _erase_reports(session, tenant_id, ids)
    return erased


def _erase_reports(session: Session, tenant_id: UUID, ids: list[UUID]) -> None:
    """Earlier access reports and pending requests about the person hold their data: emptied too."""
    wanted = {str(i) for i in ids}
    for other in session.exec(select(PrivacyRequest).where(PrivacyRequest.tenant_id == tenant_id)):
        if wanted & set(other.profile_ids):
            other.report, other.profile_ids, other.record_ids = None, [], []
            other.confirmations = {
                s: {k: v for k, v in a.items() if k != "part"} for s, a in other.confirmations.items()
            }
            other.summary = {"holds_data": other.summary.get("holds_data"), "erased": True}
            session.add(other)
