"""Canonical records accepted by ingest and carried in events (defined once, versioned with the events).

Money is an exact `Decimal` with at most two decimal places, never a float. Timestamps must carry a
time zone and are converted to UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from shared.normalize import normalize_email


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UTCTimestamp = Annotated[AwareDatetime, AfterValidator(_to_utc)]


CENT = Decimal("0.01")


def _money(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite amount")
    if value != value.quantize(CENT):
        raise ValueError("at most two decimal places")
    return value.quantize(CENT)


def average_order_value(total: Decimal, orders: int) -> Decimal | None:
    """Rounded to cents, the same everywhere (profile API and segment rules)."""
    return (total / orders).quantize(CENT) if orders else None


Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2), AfterValidator(_money)]


class OrderStatus(StrEnum):
    created = "created"
    paid = "paid"
    shipped = "shipped"
    delivered = "delivered"
    cancelled = "cancelled"
    returned = "returned"

    @property
    def counts_as_spend(self) -> bool:
        return self not in (OrderStatus.cancelled, OrderStatus.returned)


class Customer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    email: str = Field(description="The buyer's e-mail; normalised (trimmed, lower case).", max_length=254)
    external_id: str | None = Field(
        None, description="The customer's id on the source system.", max_length=200
    )
    name: str | None = Field(None, max_length=200)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalize_email(value)


class OrderItem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str = Field(min_length=1, max_length=200)
    name: str | None = Field(None, max_length=500)
    category: str | None = Field(None, max_length=200)
    quantity: int = Field(1, ge=1, le=100_000)
    unit_price: Money


class Order(BaseModel):
    """A canonical order, the same whatever channel it came from."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "external_id": "ML-2000001234",
                    "source": "mercadolivre",
                    "status": "paid",
                    "placed_at": "2026-11-20T14:03:00-03:00",
                    "currency": "BRL",
                    "total": "259.90",
                    "customer": {"email": "maria.silva@example.com.br", "external_id": "ML-998877"},
                    "items": [
                        {"sku": "CAFE-500G", "name": "Café 500 g", "quantity": 2, "unit_price": "129.95"}
                    ],
                }
            ]
        },
    )

    external_id: str = Field(min_length=1, max_length=200, description="The order's id on its source.")
    source: str = Field(
        min_length=1, max_length=40, pattern=r"^[a-z0-9_\-]+$", description="mercadolivre, shopee, site, ..."
    )
    status: OrderStatus
    placed_at: UTCTimestamp
    updated_at: UTCTimestamp | None = Field(
        None, description="When the source last changed the order; a later value makes a new version."
    )
    currency: str = Field("BRL", pattern=r"^[A-Z]{3}$")
    total: Money
    customer: Customer
    items: list[OrderItem] = Field(default_factory=list, max_length=1000)
