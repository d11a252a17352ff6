"""The event envelope and every event, each defined once as a frozen, versioned pydantic model.

Wire format (JSON, orjson)::

    {"event_id": "...", "type": "order.ingested", "version": 1, "tenant_id": "...",
     "occurred_at": "2026-11-23T12:00:00Z", "correlation_id": "...", "payload": {...}}

Within a version only optional fields are added; consumers ignore unknown fields and unknown types;
a breaking change is a new version (a new class with the same TYPE and VERSION + 1).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal
from uuid import UUID, uuid4

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.db import utcnow
from shared.records import BehaviourEvent, ConsentStatus, CustomerRecord, Order
from shared.topics import (
    BEHAVIOUR,
    CUSTOMERS,
    MEMBERSHIPS,
    ORDERS,
    PRIVACY_REPLIES,
    PRIVACY_REQUESTS,
    PROFILES,
    TENANTS,
    Topic,
)


class TenantMismatch(ValueError):
    """An event names something (an order, a profile) that belongs to another tenant than the envelope's:
    refused, never applied. Consumers retry it (bounded) and then dead-letter it like any poison message."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} belongs to another tenant than the event")


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: UUID
    type: str
    version: int
    tenant_id: UUID
    occurred_at: AwareDatetime
    correlation_id: str | None = None
    payload: dict[str, Any]

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        return cls.model_validate(orjson.loads(raw))


class Event(BaseModel):
    """Base of every event payload. Subclasses set TYPE, VERSION and TOPIC."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    TYPE: ClassVar[str]
    VERSION: ClassVar[int]
    TOPIC: ClassVar[Topic]

    @classmethod
    def envelope_bytes(
        cls, payload: dict[str, Any], tenant_id: UUID, *, correlation_id: str | None = None
    ) -> tuple[UUID, datetime, bytes]:
        """The wire form of an event whose payload is already in JSON form (the bulk path: no model
        round trip). Byte-compatible with `Envelope.to_bytes`; the contract tests check both."""
        event_id, occurred_at = uuid4(), utcnow()
        body = {
            "event_id": str(event_id),
            "type": cls.TYPE,
            "version": cls.VERSION,
            "tenant_id": str(tenant_id),
            "occurred_at": occurred_at,
            "correlation_id": correlation_id,
            "payload": payload,
        }
        return event_id, occurred_at, orjson.dumps(body, option=orjson.OPT_UTC_Z)

    def envelope(self, tenant_id: UUID, *, correlation_id: str | None = None) -> Envelope:
        return Envelope(
            event_id=uuid4(),
            type=self.TYPE,
            version=self.VERSION,
            tenant_id=tenant_id,
            occurred_at=utcnow(),
            correlation_id=correlation_id,
            payload=self.model_dump(mode="json"),
        )


class TenantCreated(Event):
    TYPE = "tenant.created"
    VERSION = 1
    TOPIC = TENANTS

    name: str
    created_at: AwareDatetime


class ApiKeyIssued(Event):
    """A key was issued. Only its SHA-256 hash travels; the key itself is shown once to its owner.
    Superseded by `ApiKeyIssuedV2`; still applied, as a key with every scope."""

    TYPE = "api_key.issued"
    VERSION = 1
    TOPIC = TENANTS

    key_id: UUID
    key_hash: str
    prefix: str
    created_at: AwareDatetime


class ApiKeyIssuedV2(Event):
    """A key was issued, with its name, scopes and expiry. Only its SHA-256 hash travels.

    A new version rather than optional fields on v1: a v1 key has every scope, so a consumer that ignored
    `scopes` would give a restricted key everything; a consumer that does not know v2 ignores the key
    instead (it works there once that consumer is upgraded). Consumers keep applying v1."""

    TYPE = "api_key.issued"
    VERSION = 2
    TOPIC = TENANTS

    key_id: UUID
    key_hash: str
    prefix: str
    name: str
    scopes: list[str] = Field(description="What the key may do (`ingest:write`, `profiles:read`, ...).")
    created_at: AwareDatetime
    expires_at: AwareDatetime | None = Field(description="Null: never expires.")


class ApiKeyChanged(Event):
    """A key's name, scopes or expiry changed (a rotated key gets an expiry): its state after the change."""

    TYPE = "api_key.changed"
    VERSION = 1
    TOPIC = TENANTS

    key_id: UUID
    name: str
    scopes: list[str]
    expires_at: AwareDatetime | None = Field(description="Null: never expires.")


class ApiKeyRevoked(Event):
    """A key was revoked: every service refuses it from now on."""

    TYPE = "api_key.revoked"
    VERSION = 1
    TOPIC = TENANTS

    key_id: UUID
    revoked_at: AwareDatetime


class OrderIngested(Event):
    """An order, or a new version of one, was accepted by ingest."""

    TYPE = "order.ingested"
    VERSION = 1
    TOPIC = ORDERS

    order_id: UUID
    order_version: int = Field(ge=1)
    order: Order


class CustomerRecorded(Event):
    """A customer record (registration form, CRM export), or a new version of one, was accepted."""

    TYPE = "customer.recorded"
    VERSION = 1
    TOPIC = CUSTOMERS

    record_id: UUID
    record_version: int = Field(ge=1)
    customer: CustomerRecord


class BehaviourRecorded(Event):
    """A behaviour event (page view, search, cart, ...) was accepted."""

    TYPE = "behaviour.recorded"
    VERSION = 1
    TOPIC = BEHAVIOUR

    record_id: UUID
    event: BehaviourEvent


class ProfileUpdated(Event):
    """A profile's segmentable traits changed. Carries no contact data. Superseded by `ProfileUpdatedV2`
    (consumers keep applying this version: producers of it may still be running)."""

    TYPE = "profile.updated"
    VERSION = 1
    TOPIC = PROFILES

    profile_id: UUID
    profile_version: int = Field(ge=1, description="Grows with every change; consumers drop older versions.")
    orders_count: int
    total_spent: Decimal
    first_order_at: datetime | None
    last_order_at: datetime | None
    sources: list[str] = Field(default_factory=list, description="Sources with counted orders.")
    categories: list[str] = Field(default_factory=list, description="Top categories bought.")
    preferred_payment_method: str | None = None
    # Tenant-wide traits, as of the profile's last traits refresh (absent before the first one).
    rfm_group: str | None = Field(None, description="champions, loyal, ..., lost")
    rfm_score: str | None = Field(None, description="R, F and M quintile scores, e.g. `545`.")
    clv_12m: Decimal | None = Field(None, description="Predicted revenue over the next 12 months.")
    churn_probability: float | None = Field(None, ge=0, le=1)
    next_order_at: datetime | None = Field(None, description="Expected next order (may be overdue).")


class ProfileUpdatedV2(Event):
    """A profile's segmentable traits changed: every trait a segment rule can read, and which changed.

    Carries no contact data (no e-mail, phone, name, document or street): demographics, location down to
    the CEP, consents, purchase, behaviour and predicted traits only. Every field is sent every time (null
    or empty when unknown), so a consumer can rebuild its copy from the latest event alone.
    Replaces version 1 (still decoded and applied while v1 producers may be running)."""

    TYPE = "profile.updated"
    VERSION = 2
    TOPIC = PROFILES

    profile_id: UUID
    profile_version: int = Field(ge=1, description="Grows with every change; consumers drop older versions.")
    changed: list[str] = Field(
        description="Names of the payload fields that changed since the previous version (all of them on a "
        "profile's first version)."
    )
    # Purchases (orders that count: not cancelled or returned).
    orders_count: int = Field(ge=0)
    total_spent: Decimal
    average_order_value: Decimal | None = Field(description="Rounded to cents; null without orders.")
    first_order_at: AwareDatetime | None
    last_order_at: AwareDatetime | None
    sources: list[str] = Field(description="Sources with counted orders.")
    categories: list[str] = Field(description="Top categories bought.")
    products: list[str] = Field(description="Top products (SKUs) bought.")
    preferred_payment_method: str | None
    # Demographics and location.
    birth_date: date | None
    gender: str | None = Field(description="female, male or other.")
    city: str | None
    state: str | None = Field(description="UF code (`SP`).")
    zip: str | None = Field(pattern=r"^\d{5}(\d{3})?$", description="CEP: 8 digits (or a 5-digit prefix).")
    consents: dict[str, ConsentStatus] = Field(description="Purpose -> the latest decision.")
    # Tenant-wide traits, as of the profile's last traits refresh (null before the first one).
    rfm_group: str | None = Field(description="champions, loyal, ..., lost")
    rfm_r: int | None = Field(ge=1, le=5, description="Recency quintile score, 5 the most recent.")
    rfm_f: int | None = Field(ge=1, le=5, description="Frequency quintile score.")
    rfm_m: int | None = Field(ge=1, le=5, description="Monetary quintile score.")
    clv_12m: Decimal | None = Field(description="Predicted revenue over the next 12 months.")
    churn_probability: float | None = Field(ge=0, le=1)
    next_order_at: AwareDatetime | None = Field(description="Expected next order (may be overdue).")
    # Behaviour.
    last_seen_at: AwareDatetime | None
    viewed_categories: dict[str, AwareDatetime] = Field(description="Category -> when last viewed.")
    viewed_products: dict[str, AwareDatetime] = Field(description="Product (SKU) -> when last viewed.")
    cart_abandoned_at: AwareDatetime | None = Field(
        description="The latest abandoned cart's last add to cart; null if no cart was abandoned."
    )


class ProfilesMerged(Event):
    """Two profiles were found to be one person: `merged_id` now points to `survivor_id` (the older)."""

    TYPE = "profile.merged"
    VERSION = 1
    TOPIC = PROFILES

    survivor_id: UUID
    merged_id: UUID
    rule: str = Field(description="The identifier kind that linked them.")
    merge_id: UUID = Field(description="The merge record (GET /v1/profiles/{id}/merges).")


class ProfilesUnmerged(Event):
    """A merge was undone: `restored_id` is a profile of its own again, `survivor_id` keeps the rest; both
    are recomputed (their ProfileUpdated events follow)."""

    TYPE = "profile.unmerged"
    VERSION = 1
    TOPIC = PROFILES

    survivor_id: UUID
    restored_id: UUID
    merge_id: UUID = Field(description="The merge record that was undone.")


class SegmentMembershipChanged(Event):
    """A profile entered or left a segment. Superseded by `SegmentMembershipChangedV2` (still decoded)."""

    TYPE = "segment.membership_changed"
    VERSION = 1
    TOPIC = MEMBERSHIPS

    segment_id: UUID
    profile_id: UUID
    change: Literal["entered", "exited"]
    profile_version: int


class MemberTraits(BaseModel):
    """A profile's key segmentable traits when its membership changed (the subset webhooks carry): no
    contact data, and of the location only the state."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    orders_count: int
    total_spent: Decimal
    average_order_value: Decimal | None
    first_order_at: AwareDatetime | None
    last_order_at: AwareDatetime | None
    rfm_group: str | None
    clv_12m: Decimal | None
    churn_probability: float | None
    next_order_at: AwareDatetime | None
    state: str | None = Field(description="UF code (`SP`).")


class SegmentMembershipChangedV2(Event):
    """A profile entered or left a segment, with the segment's name, why, and the profile's key traits.

    Every entry and exit is announced, in order per profile (the key is tenant + profile), so a consumer
    that applies them keeps an exact copy of every segment's members. Replaces version 1."""

    TYPE = "segment.membership_changed"
    VERSION = 2
    TOPIC = MEMBERSHIPS

    segment_id: UUID
    segment_name: str
    profile_id: UUID
    change: Literal["entered", "exited"]
    profile_version: int = Field(description="The profile version the change was decided on (0: unknown).")
    reason: str = Field(
        description="What caused it: `profile_updated`, `profile_merged` (the profile was merged into "
        "another), `segment_created`, `rule_changed`, `schedule` (time passed), `requested` (a "
        "re-evaluation asked for through the API) or `segment_deleted`. More may be added."
    )
    traits: MemberTraits | None = Field(description="Null when the profile's traits are not known.")


class PrivacyReportRequested(Event):
    """A data-subject access/portability request: each service answers with what it holds about the
    person (`PrivacyReportPart`). Carries only ids: the person's profile ids (survivor and merged) and the
    ids of ingest's records that reached those profiles."""

    TYPE = "privacy.report_requested"
    VERSION = 1
    TOPIC = PRIVACY_REQUESTS

    request_id: UUID
    profile_ids: list[UUID]
    record_ids: list[UUID]


class PrivacyErasureRequested(Event):
    """A deletion or anonymisation: each service erases what it holds about the person and confirms
    (`PrivacyErasureConfirmed`); `suppress` are keyed hashes (`shared.crypto.Keyring.suppression`) of the
    person's identifiers that later records must not bring back."""

    TYPE = "privacy.erasure_requested"
    VERSION = 1
    TOPIC = PRIVACY_REQUESTS

    request_id: UUID
    mode: Literal["deletion", "anonymisation"]
    profile_ids: list[UUID]
    record_ids: list[UUID]
    suppress: list[str] = Field(default_factory=list)


class PrivacyReportPart(Event):
    """One service's part of an access report: JSON sealed for the tenant (`shared.crypto`), so personal
    data never travels in clear."""

    TYPE = "privacy.report_part_compiled"
    VERSION = 1
    TOPIC = PRIVACY_REPLIES

    request_id: UUID
    service: str
    sealed_part: str


class PrivacyErasureConfirmed(Event):
    """One service erased what it held about the person: how many rows of each kind (no personal data)."""

    TYPE = "privacy.erasure_confirmed"
    VERSION = 1
    TOPIC = PRIVACY_REPLIES

    request_id: UUID
    service: str
    erased: dict[str, int]


EVENT_TYPES: dict[tuple[str, int], type[Event]] = {
    (cls.TYPE, cls.VERSION): cls
    for cls in (
        TenantCreated,
        ApiKeyIssued,
        ApiKeyIssuedV2,
        ApiKeyChanged,
        ApiKeyRevoked,
        OrderIngested,
        CustomerRecorded,
        BehaviourRecorded,
        ProfileUpdated,
        ProfileUpdatedV2,
        ProfilesMerged,
        ProfilesUnmerged,
        SegmentMembershipChanged,
        SegmentMembershipChangedV2,
        PrivacyReportRequested,
        PrivacyErasureRequested,
        PrivacyReportPart,
        PrivacyErasureConfirmed,
    )
}


def decode(envelope: Envelope) -> Event | None:
    """The typed payload, or None for a type/version this code does not know (ignored by design)."""
    cls = EVENT_TYPES.get((envelope.type, envelope.version))
    # extra="ignore" reaches the nested records too: an optional field added within a version never breaks us.
    return None if cls is None else cls.model_validate(envelope.payload, extra="ignore")
