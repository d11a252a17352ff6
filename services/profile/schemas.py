"""The profile service's API models."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

from pydantic import BaseModel, Field

from services.profile.models import Profile
from shared.records import average_order_value, from_minor


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
            created_at=profile.created_at,
            updated_at=profile.updated_at,
        )


class ProfilePage(BaseModel):
    items: list[ProfileRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )
