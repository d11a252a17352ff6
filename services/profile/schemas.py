"""The profile service's API models."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from services.profile.models import MergeRecord, MergeSuggestion, Profile, TraitsRefresh
from services.profile.profiles import ProfileRow
from shared.crypto import keyring
from shared.records import Consent, average_order_value, from_minor


def age_on(birth_date: date | None, today: date) -> int | None:
    if birth_date is None:
        return None
    return today.year - birth_date.year - ((today.month, today.day) < (birth_date.month, birth_date.day))


def mask_email(email: str | None) -> str | None:
    if email is None:
        return None
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(phone: str | None) -> str | None:
    return None if phone is None else phone[:5] + "*" * max(len(phone) - 7, 0) + phone[-2:]


class ProfileRead(BaseModel):
    """A unified customer profile with its purchase traits."""

    id: UUID
    email: str | None = Field(
        description="First e-mail seen, normalised; masked (`m***@example.com`) in lists."
    )
    phone: str | None = Field(
        None, description="First phone seen, E.164; masked (`+5511*******78`) in lists."
    )
    orders_count: int = Field(description="Orders that count (not cancelled or returned).")
    total_spent: Decimal = Field(description="Sum of the counted orders' totals.")
    average_order_value: Decimal | None
    first_order_at: datetime | None
    last_order_at: datetime | None
    version: int = Field(description="Grows with every change of the profile.")
    name: str | None
    birth_date: date | None
    age: int | None = Field(description="From the birth date, today.")
    gender: str | None
    location: dict[str, str | None] = Field(description="city, state (UF), zip (CEP), country.")
    consents: dict[str, Any] = Field(
        description="Per purpose, the latest decision (status, at, source, text_version)."
    )
    last_seen_at: datetime | None = Field(description="Latest behaviour event.")
    purchases: dict[str, Any] = Field(
        description="By source, cancellations, returns, preferred payment method and installments, top "
        "categories and products (counted orders only)."
    )
    behaviour: dict[str, Any] = Field(
        description="From behaviour events: `counts` by type, `last_seen_at`, `viewed_products` and "
        "`viewed_categories` (most viewed first), `carts_started`, `carts_abandoned` (no order within 24 h)."
    )
    predicted: dict[str, Any] = Field(
        description="Tenant-wide traits from the last refresh (`POST /v1/traits:refresh`): RFM scores and "
        "group, predicted CLV, churn probability, expected next order; empty before the first refresh."
    )
    status: str = Field(description="active, or merged: then `merged_into` is the profile that holds it all.")
    merged_into: UUID | None = Field(description="For a merged profile: the surviving profile's id.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, profile: Profile | ProfileRow, *, masked: bool = False) -> ProfileRead:
        total = from_minor(profile.total_spent_minor)
        keys = keyring()
        email = keys.open(profile.tenant_id, profile.email) if profile.email else None
        phone = keys.open(profile.tenant_id, profile.phone) if profile.phone else None
        birth_date = profile.birth_date  # name, birth date and CEP: opened by the model
        return cls(
            id=profile.id,
            email=mask_email(email) if masked else email,
            phone=mask_phone(phone) if masked else phone,
            orders_count=profile.orders_count,
            total_spent=total,
            average_order_value=average_order_value(total, profile.orders_count),
            first_order_at=profile.first_order_at,
            last_order_at=profile.last_order_at,
            version=profile.version,
            name=profile.name,
            birth_date=birth_date,
            age=age_on(birth_date, date.today()),
            gender=profile.gender,
            location={
                "city": profile.city,
                "state": profile.state,
                "zip": profile.zip,
                "country": profile.country,
            },
            consents=profile.consents,
            last_seen_at=profile.last_seen_at,
            purchases=profile.purchases,
            behaviour=profile.behaviour,
            predicted=profile.predicted,
            status=profile.status,
            merged_into=profile.merged_into,
            created_at=profile.created_at,
            updated_at=profile.updated_at,
        )


class ProfilePage(BaseModel):
    items: list[ProfileRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class MergeRead(BaseModel):
    """One merge: which profiles, why (rule and linking identifier kinds), triggered by which event."""

    id: UUID
    survivor_id: UUID
    merged_id: UUID
    rule: str = Field(description="The identifier kind that decided the merge (deterministic rules).")
    linked_by: list[str]
    moved: dict[str, int] = Field(description="How many identifiers and orders moved to the survivor.")
    event_id: UUID | None = Field(description="The event that linked them.")
    method: str = Field(
        description="deterministic, probabilistic (with `score`) or manual (an accepted suggestion)."
    )
    score: float | None = Field(description="Match probability of a probabilistic merge.")
    undone_at: datetime | None = Field(description="When the merge was undone (`POST .../unmerge`).")
    created_at: datetime

    @classmethod
    def of(cls, record: MergeRecord) -> MergeRead:
        return cls(
            id=record.id,
            survivor_id=record.survivor_id,
            merged_id=record.merged_id,
            rule=record.rule,
            linked_by=record.linked_by,
            moved={"identifiers": len(record.moved_identifiers), "orders": len(record.moved_orders)},
            event_id=record.event_id,
            method=record.method,
            score=record.score,
            undone_at=record.undone_at,
            created_at=record.created_at,
        )


class MergeList(BaseModel):
    items: list[MergeRead]


class TimelineEntry(BaseModel):
    """An order (latest version), a customer record, a behaviour event or a merge; fields depend on
    `type`."""

    model_config = ConfigDict(extra="allow")

    at: datetime
    type: str = Field(
        description="order, customer_record, merge, or the behaviour event's type (page_view, product_view, "
        "search, add_to_cart, checkout_started, survey_answered, signup)"
    )


class Timeline(BaseModel):
    items: list[TimelineEntry]


class IdentifierRef(BaseModel):
    """An identifier as the seller knows it (normalised like ingest does)."""

    kind: Literal["email", "phone", "document", "customer_id"]
    value: str = Field(
        min_length=1, max_length=300, description="For `customer_id`: `<source>:<the customer's id there>`."
    )


class UnmergeRequest(BaseModel):
    """The merge to undo: its id (see `GET /v1/profiles/{id}/merges`) or an identifier that came with it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"merge_id": "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"}],
            "oneOf": [{"required": ["merge_id"]}, {"required": ["identifier"]}],
        }
    )

    merge_id: UUID | SkipJsonSchema[None] = None
    identifier: IdentifierRef | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _one_of(self) -> UnmergeRequest:
        # Exactly one of them, and not null: `{"merge_id": null, "identifier": ...}` is refused too.
        given = self.model_fields_set & {"merge_id", "identifier"}
        if len(given) != 1 or getattr(self, given.pop()) is None:
            raise ValueError("give exactly one of `merge_id` and `identifier`")
        return self


class UnmergeResult(BaseModel):
    """The undone merge and both profiles, recomputed from their history."""

    merge_id: UUID
    survivor: ProfileRead = Field(description="The profile that keeps everything else.")
    restored: ProfileRead = Field(description="The profile that is its own again.")


class SuggestionRead(BaseModel):
    """Two profiles that look like one person (probabilistic stage, grey zone), and why."""

    id: UUID
    profile_ids: list[UUID] = Field(description="The two profiles.")
    score: float = Field(description="Match probability (Fellegi-Sunter).")
    contributions: list[dict[str, Any]] = Field(
        description="Per comparison (name, birth_date, zip, phone, ...): the agreement level and its weight "
        "in bits; never the compared values."
    )
    status: str = Field(description="pending, accepted, rejected, or obsolete (a profile changed since).")
    created_at: datetime
    decided_at: datetime | None

    @classmethod
    def of(cls, suggestion: MergeSuggestion) -> SuggestionRead:
        return cls(
            id=suggestion.id,
            profile_ids=[suggestion.profile_a, suggestion.profile_b],
            score=suggestion.score,
            contributions=suggestion.contributions,
            status=suggestion.status,
            created_at=suggestion.created_at,
            decided_at=suggestion.decided_at,
        )


class SuggestionPage(BaseModel):
    items: list[SuggestionRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class TraitsRefreshRead(BaseModel):
    """A refresh of the tenant-wide traits: progress, and the fitted model once done."""

    id: UUID
    status: str = Field(description="queued, running, done or failed")
    reason: str = Field(
        description="api (POST /v1/traits:refresh), schedule, or cli (`clientela traits refresh --tenant`)"
    )
    profiles_total: int | None
    profiles_done: int
    progress: float | None = Field(description="0..1")
    model: dict[str, Any] = Field(
        description="customers (with a counted order), repeaters, BG/NBD (r, alpha in days, a, b) and "
        "Gamma-Gamma (p, q, v in cents) parameters; null when there was too little history to fit"
    )
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: TraitsRefresh) -> TraitsRefreshRead:
        total = job.profiles_total
        return cls(
            id=job.id,
            status=job.status,
            reason=job.reason,
            profiles_total=total,
            profiles_done=job.profiles_done,
            progress=(job.profiles_done / total if total else 1.0) if total is not None else None,
            model=job.model,
            error=job.error,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


class ConsentsUpdate(BaseModel):
    """Decisions the person made, e.g. in the seller's preference centre (each purpose's newest wins)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "consents": [
                        {
                            "purpose": "marketing_whatsapp",
                            "status": "revoked",
                            "at": "2026-11-29T10:00:00-03:00",
                            "source": "preference_centre",
                            "text_version": "2026-05",
                        }
                    ]
                }
            ]
        },
    )

    consents: list[Consent] = Field(min_length=1, max_length=20)


class ConsentDecision(BaseModel):
    purpose: str
    status: str = Field(description="granted, denied or revoked")
    at: datetime
    source: str | None = None
    text_version: str | None = None
    origin: str = Field(description="Where Clientela got it: order, customer_record or api.")


class ConsentsRead(BaseModel):
    profile_id: UUID
    consents: dict[str, Any] = Field(description="Per purpose, the newest decision (what segments read).")
    history: list[ConsentDecision] = Field(description="Every decision received, newest first.")
