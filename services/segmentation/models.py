"""The segmentation service's own tables (plus the shared infrastructure tables in `shared.infra`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid4

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from shared.crypto import open_date, open_text, seal_value
from shared.db import UTCDateTime, new_registry, utcnow

segmentation_registry = new_registry()


class SegmentationTable(SQLModel, registry=segmentation_registry):
    pass


class ProfileProjection(SegmentationTable, table=True):
    """This service's copy of each profile's segmentable scalar traits, built from ProfileUpdated events.

    One column per scalar trait a rule can read (null = unknown); money in integer minor units (cents).
    Set-valued traits live in `profile_tag`. Age and birth month are computed from the birth date when a
    rule is evaluated (they change with time, not with events).

    The birth date and the CEP are personal data: they are stored sealed for the tenant (AES-GCM,
    `shared.crypto`; read and set in clear through `.birth_date` and `.zip`), and in clear only generalised,
    as SQL needs them: the year and month of birth and the CEP's first five digits (its sub-sector, a
    district-sized area). The SQL evaluator decides on those (`compiler`: a lower and an upper bound) and
    opens the sealed values only of the few profiles the generalised values leave undecided.
    """

    __tablename__ = "profile_projection"

    profile_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    profile_version: int
    orders_count: int
    total_spent_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    average_order_value_minor: int | None = Field(
        default=None, sa_column=sa.Column(sa.BigInteger(), nullable=True)
    )
    first_order_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    last_order_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    preferred_payment_method: str | None = Field(default=None, max_length=40)
    birth_date_sealed: str | None = Field(default=None, max_length=100)
    birth_year: int | None = Field(default=None, sa_column=sa.Column(sa.SmallInteger(), nullable=True))
    birth_month: int | None = Field(default=None, sa_column=sa.Column(sa.SmallInteger(), nullable=True))
    gender: str | None = Field(default=None, max_length=10)
    city: str | None = Field(default=None, max_length=200)
    state: str | None = Field(default=None, max_length=2)
    zip_sealed: str | None = Field(default=None, max_length=100)
    zip_prefix: str | None = Field(default=None, max_length=5)
    rfm_group: str | None = Field(default=None, max_length=40)
    rfm_r: int | None = Field(default=None, sa_column=sa.Column(sa.SmallInteger(), nullable=True))
    rfm_f: int | None = Field(default=None, sa_column=sa.Column(sa.SmallInteger(), nullable=True))
    rfm_m: int | None = Field(default=None, sa_column=sa.Column(sa.SmallInteger(), nullable=True))
    clv_12m_minor: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger(), nullable=True))
    churn_probability: float | None = Field(default=None, sa_column=sa.Column(sa.Float(), nullable=True))
    next_order_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    last_seen_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    cart_abandoned_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True)
    )
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))

    # The sealed columns read and set in clear; setting one also sets its generalised columns. Setting the
    # value already stored keeps its token (no needless write).
    @property
    def birth_date(self) -> date | None:
        return open_date(self.tenant_id, self.birth_date_sealed)

    @birth_date.setter
    def birth_date(self, value: date | None) -> None:
        self._set_birth_date(value, None)

    @property
    def zip(self) -> str | None:
        return open_text(self.tenant_id, self.zip_sealed)

    @zip.setter
    def zip(self, value: str | None) -> None:
        self._set_zip(value, None)

    def set_sealed(self, *, birth_date: date | None, zip: str | None, opened: Opened | None = None) -> None:
        """Set both sealed columns (and their generalised copies) where they differ from what is stored.
        `opened`: the clear values of tokens already opened or sealed (a consumer batch's, see `Opened`)."""
        self._set_birth_date(birth_date, opened)
        self._set_zip(zip, opened)

    def _set_birth_date(self, value: date | None, opened: Opened | None) -> None:
        if value != _opened(opened, self.tenant_id, self.birth_date_sealed, open_date):
            self.birth_date_sealed = _sealed(opened, self.tenant_id, value)
            self.birth_year = None if value is None else value.year
            self.birth_month = None if value is None else value.month

    def _set_zip(self, value: str | None, opened: Opened | None) -> None:
        if value != _opened(opened, self.tenant_id, self.zip_sealed, open_text):
            self.zip_sealed = _sealed(opened, self.tenant_id, value)
            self.zip_prefix = None if value is None else value[:5]

    def columns(self, opened: Opened | None = None) -> dict[str, Any]:
        """The traits by column name as the evaluators read them: the sealed ones opened (under their
        own names, `birth_date` and `zip`), the generalised copies left out."""
        found = {name: getattr(self, name) for name in _SHOWN}
        found["birth_date"] = _opened(opened, self.tenant_id, self.birth_date_sealed, open_date)
        found["zip"] = _opened(opened, self.tenant_id, self.zip_sealed, open_text)
        return found


# The clear values of sealed tokens (each token opens to one value: its nonce is its own), kept by a
# consumer batch for its poll: an event compares the stored values with its own and shows both, before and
# after, and each time opening a token costs an AES-GCM decryption. Dropped with the batch.
Opened = dict[str, Any]


def _opened(
    opened: Opened | None, tenant_id: UUID, token: str | None, opener: Callable[[UUID, str], Any]
) -> Any:
    if token is None:
        return None
    if opened is None:
        return opener(tenant_id, token)
    found = opened.get(token, _UNKNOWN)
    if found is _UNKNOWN:
        found = opened[token] = opener(tenant_id, token)
    return found


def _sealed(opened: Opened | None, tenant_id: UUID, value: str | date | None) -> str | None:
    token = seal_value(tenant_id, value)
    if opened is not None and token is not None:
        opened[token] = value
    return token


_UNKNOWN = object()


# How the projection stores the birth date and the CEP (`ProfileProjection.columns` shows them opened).
_SEALED_STORAGE = {"birth_date_sealed", "birth_year", "birth_month", "zip_sealed", "zip_prefix"}
_SHOWN = tuple(name for name in ProfileProjection.model_fields if name not in _SEALED_STORAGE)


class TagKind(StrEnum):
    """What a `profile_tag` row is an element of. A consent is stored as its purpose under the kind of its
    latest decision, so that "consent X is granted" is one EXISTS like the others."""

    source = "source"
    bought_category = "bought_category"
    bought_product = "bought_product"
    viewed_category = "viewed_category"
    viewed_product = "viewed_product"
    consent_granted = "consent_granted"
    consent_denied = "consent_denied"
    consent_revoked = "consent_revoked"


class ProfileTag(SegmentationTable, table=True):
    """One element of a profile's set-valued traits: a `kind` (`TagKind`) and a `value`, with the time of
    the element where it has one (`viewed_category`: when last viewed).

    Rows instead of a JSON column so that "contains" and "viewed X in the last N days" are plain EXISTS
    subqueries, portable between PostgreSQL and SQLite and served by the primary key.
    """

    __tablename__ = "profile_tag"
    __table_args__ = (sa.Index("ix_profile_tag_tenant_id_kind_value", "tenant_id", "kind", "value"),)

    profile_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    kind: str = Field(sa_column=sa.Column(sa.String(30), primary_key=True))
    value: str = Field(sa_column=sa.Column(sa.String(200), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))


class Segment(SegmentationTable, table=True):
    """A tenant's segment: a rule (stored in its canonical JSON form), an optional consent `purpose` (what
    the segment's members will be contacted for: exports keep only those who granted it) and whether the
    rule depends on time alone (`time_relative`: re-evaluated on a schedule)."""

    __tablename__ = "segment"

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    name: str = Field(max_length=200)
    rule: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    purpose: str | None = Field(default=None, max_length=30)
    time_relative: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.false())
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


def _segment_fk() -> sa.ForeignKey:
    return sa.ForeignKey("segment.id", ondelete="CASCADE")


class SegmentMember(SegmentationTable, table=True):
    """A current member. The foreign key makes a change racing with the segment's deletion fail (and be
    retried) instead of leaving members of a segment that is gone."""

    __tablename__ = "segment_member"
    # A batch looks up the memberships of the profiles it changes (`batch`, `privacy`).
    __table_args__ = (sa.Index("ix_segment_member_profile_id", "profile_id"),)

    segment_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), _segment_fk(), primary_key=True))
    profile_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    entered_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class MembershipChange(StrEnum):
    entered = "entered"
    exited = "exited"


class SegmentMembershipEvent(SegmentationTable, table=True):
    """The history of a segment's membership: one row per entry or exit, written in the transaction of the
    change (with its outbox event). Sizes over time are computed from it (`stats`); rows go with their
    segment."""

    __tablename__ = "segment_membership_event"
    __table_args__ = (
        sa.Index("ix_segment_membership_event_segment_id_at_id", "segment_id", "at", "id"),
        sa.Index("ix_segment_membership_event_profile_id", "profile_id"),
    )

    # BIGINT on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY auto-increments.
    id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    segment_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), _segment_fk(), nullable=False))
    profile_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    change: str = Field(max_length=10)
    reason: str = Field(max_length=30)
    profile_version: int
    at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class EvaluationStatus(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"  # superseded by a newer rule, or its segment was deleted


PENDING_EVALUATION = (EvaluationStatus.queued, EvaluationStatus.running)


class SegmentEvaluation(SegmentationTable, table=True):
    """A full evaluation of a segment over every profile of its tenant, with its progress.

    Queued when a segment is created or its rule changes, by the schedule (time-relative rules) or on
    request; run in chunks of profiles (keyset on the profile id: `cursor` is the last one done, so a
    taken-over evaluation resumes there) by one worker at a time (`lease_*`). At most one is queued or
    running per segment (a partial unique index). `evaluated_at` is the time the rule is evaluated at."""

    __tablename__ = "segment_evaluation"
    __table_args__ = (
        sa.Index("ix_segment_evaluation_segment_id_created_at", "segment_id", "created_at"),
        sa.Index(
            "ux_segment_evaluation_pending_segment_id",
            "segment_id",
            unique=True,
            sqlite_where=sa.text("status IN ('queued', 'running')"),
            postgresql_where=sa.text("status IN ('queued', 'running')"),
        ),
    )

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    segment_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), _segment_fk(), nullable=False))
    reason: str = Field(max_length=20)
    status: str = Field(default=EvaluationStatus.queued, max_length=10)
    evaluated_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    profiles_total: int | None = None
    processed: int = 0
    entered: int = 0
    exited: int = 0
    cursor: UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid(), nullable=True))
    error: str | None = Field(default=None, max_length=200)
    lease_owner: UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid(), nullable=True))
    lease_until: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    finished_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))


class WebhookEndpoint(SegmentationTable, table=True):
    """A seller's HTTP endpoint that receives signed deliveries of the events it subscribes to.

    The signing secrets are sealed (`shared.crypto`, AES-GCM per tenant): `secret` signs every delivery,
    `previous_secret` too until `previous_secret_expires_at` (a rotation's overlap). `lease_*` say which
    dispatcher serves the endpoint now (one at a time, across processes); `paused_until` is set by a
    `Retry-After`; `failing_since` is the first failed attempt since the last success (the auto-disable
    clock).
    """

    __tablename__ = "webhook_endpoint"

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    url: str = Field(sa_column=sa.Column(sa.String(2000), nullable=False))
    description: str | None = Field(default=None, max_length=500)
    event_types: list[str] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    segment_ids: list[str] | None = Field(default=None, sa_column=sa.Column(sa.JSON(), nullable=True))
    enabled: bool = Field(default=True, sa_column=sa.Column(sa.Boolean(), nullable=False))
    disabled_reason: str | None = Field(default=None, max_length=20)
    disabled_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    secret: str = Field(sa_column=sa.Column(sa.String(300), nullable=False))
    previous_secret: str | None = Field(default=None, sa_column=sa.Column(sa.String(300), nullable=True))
    previous_secret_expires_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True)
    )
    failing_since: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    paused_until: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    lease_owner: UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid(), nullable=True))
    lease_until: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class DeliveryStatus(StrEnum):
    pending = "pending"  # waiting for its first attempt or a retry
    delivered = "delivered"  # a 2xx answer
    failed = "failed"  # every attempt failed, 410, or the endpoint was disabled


class WebhookDelivery(SegmentationTable, table=True):
    """One message to one endpoint: the exact body that is signed and sent, and its attempts so far.

    `message_id` is the `webhook-id` header: the same for every attempt, for every endpoint that gets the
    event, and for a redelivery (a new row with `redelivery_of` set), so receivers can deduplicate.
    """

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        sa.Index("ix_webhook_delivery_due", "endpoint_id", "status", "next_attempt_at"),
        sa.Index("ix_webhook_delivery_endpoint_id_created_at", "endpoint_id", "created_at"),
    )

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    endpoint_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    message_id: str = Field(max_length=40)
    event_type: str = Field(max_length=50)
    payload: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
    status: str = Field(default=DeliveryStatus.pending, max_length=20)
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    last_attempt_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    response_status: int | None = None
    latency_ms: int | None = None
    error: str | None = Field(default=None, max_length=100)
    delivered_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    redelivery_of: UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid(), nullable=True))
    # The segment of a segment.entered / segment.exited (its pending deliveries fail when it is deleted).
    segment_id: UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid(), nullable=True))
    # The correlation id of what caused it (the request id of the order's POST, carried by its events).
    correlation_id: str | None = Field(default=None, max_length=100)
    # Deliveries to one endpoint with the same key (the profile they are about) are sent one after another,
    # in order; the others in parallel (`WebhookDispatcher.parallelism`). None: a key of its own.
    ordering_key: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class ErasedProfile(SegmentationTable, table=True):
    """A profile erased at the person's request (LGPD): a `profile.updated` of it still in flight is
    ignored instead of bringing it back. Only the random id is kept, linked to nothing else."""

    __tablename__ = "erased_profile"

    profile_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    erased_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
