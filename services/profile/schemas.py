"""The profile service's API models."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from services.profile.models import MergeRecord, Profile
from shared.records import average_order_value, from_minor


def age_on(birth_date: date | None, today: date) -> int | None:
    if birth_date is None:
        return None
    return today.year - birth_date.year - ((today.month, today.day) < (birth_date.month, birth_date.day))


def mask_email(email: str | None) -> str | None:
    if email is None:
        return None
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


class ProfileRead(BaseModel):
    """A unified customer profile with its purchase traits."""

    id: UUID
    email: str | None = Field(
        description="First e-mail seen, normalised; masked (`m***@example.com`) in lists."
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
    behaviour: dict[str, int] = Field(description="Behaviour events by type (page_view, add_to_cart, ...).")
    status: str = Field(description="active, or merged: then `merged_into` is the profile that holds it all.")
    merged_into: UUID | None = Field(description="For a merged profile: the surviving profile's id.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, profile: Profile, *, masked: bool = False) -> ProfileRead:
        total = from_minor(profile.total_spent_minor)
        return cls(
            id=profile.id,
            email=mask_email(profile.email) if masked else profile.email,
            orders_count=profile.orders_count,
            total_spent=total,
            average_order_value=average_order_value(total, profile.orders_count),
            first_order_at=profile.first_order_at,
            last_order_at=profile.last_order_at,
            version=profile.version,
            name=profile.name,
            birth_date=profile.birth_date,
            age=age_on(profile.birth_date, date.today()),
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
            created_at=record.created_at,
        )


class MergeList(BaseModel):
    items: list[MergeRead]


class TimelineEntry(BaseModel):
    """An order (latest version) or a merge; fields depend on `type`."""

    model_config = ConfigDict(extra="allow")

    at: datetime
    type: str = Field(description="order or merge")


class Timeline(BaseModel):
    items: list[TimelineEntry]
