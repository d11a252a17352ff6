"""The profile service's own tables (plus the shared infrastructure tables in `shared.infra`).

Personal data is stored sealed for the tenant (AES-GCM, `shared.crypto`): identifiers as blind index +
sealed value, the profile's contact e-mail and phone, its name, birth date and CEP (read and set in clear
through `Profile.name`, `.birth_date` and `.zip`), and the name, birth date and CEP in the snapshots kept
with each order and record (`seal_snapshot` / `open_snapshot`; one written in clear is sealed when
flushed, whoever wrote it). City, state, country and gender stay in clear: list filters and segment rules
select on them in SQL, and without the rest they point to no one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any, cast
from uuid import UUID, uuid4

import orjson
import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_attribute
from sqlmodel import Field, SQLModel

from shared.crypto import keyring, open_date, open_text, seal_value
from shared.db import UTCDateTime, new_registry, utcnow

profile_registry = new_registry()


class ProfileTable(SQLModel, registry=profile_registry):
    pass


class Profile(ProfileTable, table=True):
    """One unified customer profile per person within a tenant."""

    __tablename__ = "profile"

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    email: str | None = Field(
        default=None, max_length=400, description="The first e-mail seen (display), sealed (`shared.crypto`)."
    )
    phone: str | None = Field(
        default=None,
        max_length=400,
        description="The first phone its records carried, sealed: contact data, and what the probabilistic "
        "stage compares even when another profile holds the phone as an identifier (a family's phone).",
    )
    status: str = Field(default="active", max_length=10, description="active, or merged (see merged_into)")
    merged_into: UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid(), nullable=True, index=True))
    merges: int = Field(default=0, description="How many profiles were merged into this one.")
    name_sealed: str | None = Field(
        default=None, sa_column=sa.Column(sa.Text(), nullable=True), description="Sealed: see `name`."
    )
    birth_date_sealed: str | None = Field(
        default=None, max_length=100, description="Sealed ISO date: see `birth_date`."
    )
    gender: str | None = Field(default=None, max_length=10)
    city: str | None = Field(default=None, max_length=200)
    state: str | None = Field(default=None, max_length=2)
    zip_sealed: str | None = Field(default=None, max_length=100, description="Sealed CEP: see `zip`.")
    country: str | None = Field(default=None, max_length=2)
    attributes_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True), description="Time of the data above."
    )
    consents: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="purpose -> latest decision",
    )
    last_seen_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    purchases: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="by source, cancellations, returns, preferred payment, top categories and products",
    )
    behaviour: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="counts by event type, products and categories viewed, carts started and abandoned",
    )
    predicted: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="tenant-wide traits (RFM scores and group, CLV, churn, next order), set by a refresh",
    )
    announced: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="The segmentable traits as last announced (`profile.updated`): what `changed` compares.",
    )
    match_fingerprint: str | None = Field(
        default=None,
        max_length=64,
        description="Keyed hash of what the probabilistic stage last scored this profile on (its name, "
        "birth date, address, contact phone, identifiers and merges): unchanged, it is not scored again.",
    )
    match_variants_sealed: str | None = Field(
        default=None,
        sa_column=sa.Column(sa.Text(), nullable=True),
        description="Sealed JSON: the other names and addresses its records carried "
        "(`traits.person_variants`), which the probabilistic stage compares too: see `match_variants`.",
    )
    orders_count: int = 0
    total_spent_minor: int = Field(default=0, sa_column=sa.Column(sa.BigInteger(), nullable=False))
    first_order_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    last_order_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    version: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))

    # The sealed columns read and set in clear. Setting the value already stored keeps its token (no
    # needless write); a new value is sealed with the current key. Each value opened or set is remembered
    # with its token in the instance's dict (`_clear`): a consumer batch reads a profile's name, birth date
    # and CEP some ten times (traits, announcement, the match fingerprint and fields), and an opening costs
    # about 4 µs. A different token (set, loaded or refreshed since) is opened again.
    @property
    def name(self) -> str | None:
        return cast(str | None, self._clear("name_sealed"))

    @name.setter
    def name(self, value: str | None) -> None:
        self._keep_clear("name_sealed", value)

    @property
    def birth_date(self) -> date | None:
        return cast(date | None, self._clear("birth_date_sealed"))

    @birth_date.setter
    def birth_date(self, value: date | None) -> None:
        self._keep_clear("birth_date_sealed", value)

    @property
    def zip(self) -> str | None:
        return cast(str | None, self._clear("zip_sealed"))

    @zip.setter
    def zip(self, value: str | None) -> None:
        self._keep_clear("zip_sealed", value)

    @property
    def contact_phone(self) -> str | None:
        """The contact phone in clear (`phone` holds it sealed)."""
        return cast(str | None, self._clear("phone"))

    @property
    def match_variants(self) -> str | None:
        """The JSON of `traits.person_variants` in clear (`match_variants_sealed` holds it sealed)."""
        return cast(str | None, self._clear("match_variants_sealed"))

    def set_person(
        self, *, name: str | None, birth_date: date | None, zip: str | None, variants: str | None = None
    ) -> None:
        """`profile.name, profile.birth_date, profile.zip = …` without SQLModel's `__setattr__` (some
        3 µs a property): what the consumer sets on every profile it recomputes; and the JSON of the other
        names and addresses its records carried (`match_variants`)."""
        self._keep_clear("name_sealed", name)
        self._keep_clear("birth_date_sealed", birth_date)
        self._keep_clear("zip_sealed", zip)
        self._keep_clear("match_variants_sealed", variants)

    def _clear(self, column: str) -> Any:
        token = getattr(self, column)
        if token is None:
            return None
        remembered = self.__dict__.get(_CLEAR)
        if remembered is not None and (hit := remembered.get(column)) is not None and hit[0] == token:
            return hit[1]
        value = _OPENERS[column](self.tenant_id, token)
        self._remember(column, token, value)
        return value

    def _keep_clear(self, column: str, value: str | date | None) -> None:
        if value == self._clear(column):
            return
        token = seal_value(self.tenant_id, value)
        set_attribute(self, column, token)
        if token is not None:
            self._remember(column, token, value)

    def _remember(self, column: str, token: str, value: Any) -> None:
        # Beside SQLAlchemy's attribute values, under a key no column has: neither SQLAlchemy nor pydantic
        # reads keys of the instance's dict other than its fields'.
        self.__dict__.setdefault(_CLEAR, {})[column] = (token, value)


_CLEAR = "_clientela_clear"  # Profile.__dict__ key of the sealed values opened or set (`Profile._clear`)
# How each sealed column of `Profile` read in clear opens.
_OPENERS: dict[str, Callable[[UUID, str | None], Any]] = {
    "name_sealed": open_text,
    "birth_date_sealed": open_date,
    "zip_sealed": open_text,
    "phone": open_text,
    "match_variants_sealed": open_text,
}


class SealedRow:
    """`name`, `birth_date` and `zip` opened from their sealed columns, for profile rows read without the
    ORM (`profiles.ProfileRow`, `probabilistic.Candidate`; `Profile` sets them too)."""

    __slots__ = ()
    tenant_id: UUID
    name_sealed: str | None
    birth_date_sealed: str | None
    zip_sealed: str | None

    @property
    def name(self) -> str | None:
        return open_text(self.tenant_id, self.name_sealed)

    @property
    def birth_date(self) -> date | None:
        return open_date(self.tenant_id, self.birth_date_sealed)

    @property
    def zip(self) -> str | None:
        return open_text(self.tenant_id, self.zip_sealed)


# What a record says about the person (`profiles.snapshot`): these attributes are kept sealed together,
# as one token under `"sealed"`; the rest (time, gender, city, state, country, consents) in clear.
SEALED_ATTRIBUTES = ("name", "birth_date", "zip")


def seal_snapshot(tenant_id: UUID, snapshot: dict[str, Any]) -> dict[str, Any]:
    """A snapshot as stored in `ProfileOrder.customer` / `ProfileRecord.customer`. One already stored is
    returned as it is; one that has both a sealed part and values in clear gets them sealed together (the
    values in clear win)."""
    clear = {k: snapshot[k] for k in SEALED_ATTRIBUTES if snapshot.get(k) is not None}
    if not clear:
        return snapshot
    personal = orjson.loads(keyring().open(tenant_id, snapshot["sealed"])) if "sealed" in snapshot else {}
    personal.update(clear)
    stored = {k: v for k, v in snapshot.items() if k not in SEALED_ATTRIBUTES}
    stored["sealed"] = keyring().seal(tenant_id, orjson.dumps(personal).decode())
    return stored


def open_snapshot(tenant_id: UUID, stored: dict[str, Any]) -> dict[str, Any]:
    """A stored snapshot in clear (as `profiles.snapshot` made it)."""
    if "sealed" not in stored:
        return stored
    opened = {k: v for k, v in stored.items() if k != "sealed"}
    opened.update(orjson.loads(keyring().open(tenant_id, stored["sealed"])))
    return opened


class ProfileOrder(ProfileTable, table=True):
    """The latest version of each order seen, per profile: traits are recomputed from these rows."""

    __tablename__ = "profile_order"

    order_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    profile_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    order_version: int
    source: str = Field(max_length=40)
    status: str = Field(max_length=20)
    total_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    placed_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    items: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="sku, category, quantity",
    )
    payments: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="method, installments",
    )
    identifiers: list[list[str]] = Field(
        default_factory=list,
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="[kind, value] pairs the latest version carried (what unmerge re-resolves)",
    )
    customer: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="demographics, location and consents the order carried, and when (`at`); name, birth "
        "date and CEP sealed (`seal_snapshot`)",
    )
    recorded_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class ProfileRecord(ProfileTable, table=True):
    """A customer record or behaviour event applied to a profile: with the stored orders, the history every
    trait is computed from (so that a merge can be undone and both sides recomputed)."""

    __tablename__ = "profile_record"

    id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True), description="Ingest's record id.")
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    profile_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    record_version: int = Field(default=1, description="A customer record's latest version seen.")
    kind: str = Field(max_length=10, description="customer (a CRM/form record) or behaviour")
    type: str = Field(max_length=30, description="customer_record, or the behaviour type")
    source: str = Field(max_length=40)
    occurred_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    identifiers: list[list[str]] = Field(default_factory=list, sa_column=sa.Column(sa.JSON(), nullable=False))
    customer: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="customer records: demographics, location, consents and `at`; name, birth date and CEP "
        "sealed (`seal_snapshot`)",
    )
    properties: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="behaviour: sku, category, quantity",
    )
    recorded_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


@sa.event.listens_for(ProfileOrder, "before_insert")
@sa.event.listens_for(ProfileOrder, "before_update")
@sa.event.listens_for(ProfileRecord, "before_insert")
@sa.event.listens_for(ProfileRecord, "before_update")
def _snapshot_sealed(_mapper: Any, _connection: Any, target: ProfileOrder | ProfileRecord) -> None:
    """Whoever writes a snapshot, it is stored sealed (`seal_snapshot` leaves a sealed one as it is)."""
    sealed = seal_snapshot(target.tenant_id, target.customer)
    if sealed is not target.customer:
        target.customer = sealed


class ProfileIdentifier(ProfileTable, table=True):
    """Which profile an identifier belongs to, within a tenant: the identity graph's edges.

    kinds: `email`, `phone` (E.164), `document` (CPF/CNPJ), `customer_id` (`<source>:<id on source>`),
    `relay_email` (`<source>:<address>`: a marketplace relay address identifies a buyer only there),
    `anonymous_id` (`<source>:<device id>`). `value` is the normalised value's blind index (HMAC for the
    tenant), `sealed` the value itself, encrypted (`shared.crypto`).
    """

    __tablename__ = "profile_identifier"

    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    kind: str = Field(sa_column=sa.Column(sa.String(20), primary_key=True))
    value: str = Field(sa_column=sa.Column(sa.String(300), primary_key=True))
    sealed: str = Field(sa_column=sa.Column(sa.String(600), nullable=False))
    profile_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    seen_at: datetime | None = Field(
        default=None,
        sa_column=sa.Column(UTCDateTime(), nullable=True),
        description="Time of the earliest record that carried it (record time, not arrival): who holds a "
        "contested identifier is decided by it, so arrival order does not matter.",
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class MergeRecord(ProfileTable, table=True):
    """Why two profiles became one: which event, which rule, which identifiers linked them, and what moved
    (so that the merge can be explained and undone)."""

    __tablename__ = "merge_record"

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    survivor_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    merged_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    rule: str = Field(
        max_length=40, description="The identifier kind that linked them (deterministic rules)."
    )
    linked_by: list[str] = Field(
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="Kinds of the identifiers that linked them.",
    )
    moved_identifiers: list[list[str]] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    moved_orders: list[str] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    moved_records: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON(), nullable=False))
    linked_identifiers: list[list[str]] = Field(
        default_factory=list,
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="The [kind, value] pairs that linked them.",
    )
    method: str = Field(default="deterministic", max_length=20, description="deterministic or probabilistic")
    score: float | None = Field(default=None, description="Match probability (probabilistic merges).")
    undone_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    event_id: UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid(), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class MergeBlock(ProfileTable, table=True):
    """Two profiles that must not merge again (an undone merge): merge protection checks it."""

    __tablename__ = "merge_block"

    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    profile_a: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True), description="The lower id.")
    profile_b: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True, index=True))
    merge_id: UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid(), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class ProfileBlockKey(ProfileTable, table=True):
    """A blocking key of a profile (hashed: it holds personal data): the probabilistic stage scores the
    profiles that share one."""

    __tablename__ = "profile_block_key"

    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    key: str = Field(sa_column=sa.Column(sa.String(32), primary_key=True))
    profile_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True, index=True))


class BlockKeyCheck(ProfileTable, table=True):
    """The blocking keys a consumer batch's second stage inserted, with the profiles that held them then
    (`probabilistic.SeenKeys`, keyed hashes and ids: no personal data): read again after the batch commits
    (`probabilistic.missed_pairs`), then deleted. One its consumer could not read again (it stopped, or
    the scoring failed) is read by another batch once it is `STALE_CHECK_S` old."""

    __tablename__ = "block_key_check"

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    keys: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False, index=True)
    )


class MergeSuggestion(ProfileTable, table=True):
    """Two profiles that look like one person, in the grey zone of the probabilistic score: a person
    accepts (they merge) or rejects (never suggested again)."""

    __tablename__ = "merge_suggestion"
    __table_args__ = (sa.UniqueConstraint("profile_a", "profile_b"),)

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    profile_a: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False), description="The lower id.")
    profile_b: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    score: float = Field(description="Match probability.")
    contributions: list[dict[str, Any]] = Field(
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="comparison, level and weight (bits) of each comparison: why they look alike",
    )
    status: str = Field(default="pending", max_length=10, description="pending, accepted, rejected, obsolete")
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    decided_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))


class IdentityRuleSet(ProfileTable, table=True):
    """A tenant's own identity resolution rules (`identity_rules.IdentityRules`); absent: the defaults."""

    __tablename__ = "identity_rule_set"

    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    rules: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class TraitsRefresh(ProfileTable, table=True):
    """A refresh of a tenant's tenant-wide traits (RFM, CLV, churn, next order): queued, running, done."""

    __tablename__ = "traits_refresh"

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    reason: str = Field(max_length=20, description="api, schedule or cli")
    status: str = Field(default="queued", max_length=10, description="queued, running, done, failed")
    profiles_total: int | None = None
    profiles_done: int = 0
    model: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=sa.Column(sa.JSON(), nullable=False),
        description="customers, repeaters and the fitted BG/NBD and Gamma-Gamma parameters",
    )
    error: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    heartbeat_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    finished_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))


class PrivacyRequest(ProfileTable, table=True):
    """A data subject's request (LGPD Art. 18): what was asked, its status, and which services confirmed.

    Kept for accountability without personal data: the subject is named only by the kind of identifier
    given; once an erasure completes, `profile_ids` and `record_ids` are emptied and only counts remain.
    The access report is stored sealed for the tenant (`report`) and erased with the person.
    """

    __tablename__ = "privacy_request"

    id: UUID = Field(default_factory=uuid4, sa_column=sa.Column(sa.Uuid(), primary_key=True))
    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False, index=True))
    type: str = Field(max_length=30)
    status: str = Field(default="processing", max_length=20, description="processing, completed or failed")
    subject_kind: str = Field(max_length=20, description="email, phone, document or profile_id")
    found: bool = False
    profile_ids: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON(), nullable=False))
    record_ids: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON(), nullable=False))
    awaiting: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON(), nullable=False))
    confirmations: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(sa.JSON(), nullable=False)
    )
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(sa.JSON(), nullable=False))
    report: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    api_key_id: UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid(), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    due_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    completed_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))


class PrivacySuppression(ProfileTable, table=True):
    """An identifier of an erased person (`Keyring.suppression` hash): records carrying it are dropped."""

    __tablename__ = "privacy_suppression"

    tenant_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True))
    hash: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    request_id: UUID = Field(sa_column=sa.Column(sa.Uuid(), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
