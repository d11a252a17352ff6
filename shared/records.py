"""Canonical records accepted by ingest and carried in events (defined once, versioned with the events).

- Money is an exact `Decimal` in cents (at most two decimal places), never a float.
- Timestamps are stored in UTC; one without a zone is read as Brazil's time (America/Sao_Paulo).
- Identifiers and addresses are normalised on the way in (see `shared.normalize`); an invalid value is
  rejected with an error that points at the field and never repeats the value.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from shared import normalize

CENT = Decimal("0.01")


def _money(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite amount")
    cents = value.quantize(CENT)
    if value != cents:
        raise ValueError("at most two decimal places")
    return cents


def to_minor(amount: Decimal) -> int:
    """Cents, for storage and arithmetic (`Decimal("259.90")` → 25990)."""
    return int(amount.scaleb(2))


def from_minor(minor: int) -> Decimal:
    return Decimal(minor).scaleb(-2).quantize(CENT)


def average_order_value(total: Decimal, orders: int) -> Decimal | None:
    """Rounded to cents, the same everywhere (profile API and segment rules)."""
    return (total / orders).quantize(CENT) if orders else None


def _strip_or_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _not_a_number(value: Any) -> Any:
    # pydantic would read a number as a Unix time (0: 1970); in a record, times and dates are ISO 8601 text.
    if isinstance(value, int | float | Decimal):
        raise ValueError("expected an ISO 8601 date or time, not a number")
    return value


UTCTimestamp = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(normalize.to_utc)]
Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2), AfterValidator(_money)]
Email = Annotated[str, Field(max_length=254), AfterValidator(normalize.normalize_email)]
Phone = Annotated[str, Field(max_length=40), AfterValidator(normalize.normalize_phone)]
Document = Annotated[str, Field(max_length=40), AfterValidator(lambda v: normalize.normalize_document(v)[1])]
PersonName = Annotated[str, Field(max_length=200), AfterValidator(normalize.normalize_name)]
BirthDate = Annotated[date, BeforeValidator(_not_a_number), AfterValidator(normalize.check_birth_date)]
Text = Annotated[str | None, BeforeValidator(_strip_or_none)]


def _frozen(examples: list[dict[str, Any]] | None = None) -> ConfigDict:
    # extra="forbid" at the API: a misspelt field is an error, not silently dropped. Consumers decode
    # events with extra="ignore" (see shared.events.decode), so adding optional fields stays compatible.
    config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)
    if examples:
        config["json_schema_extra"] = {"examples": examples}  # type: ignore[dict-item]
    return config


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


class Gender(StrEnum):
    female = "female"
    male = "male"
    other = "other"


_GENDERS = {
    "f": "female",
    "feminino": "female",
    "mulher": "female",
    "m": "male",
    "masculino": "male",
    "homem": "male",
}


def _gender(value: Any) -> Any:
    if isinstance(value, str):
        folded = normalize.fold(value)
        return _GENDERS.get(folded, folded) or None
    return value


class PaymentMethod(StrEnum):
    credit_card = "credit_card"
    debit_card = "debit_card"
    pix = "pix"
    boleto = "boleto"
    voucher = "voucher"
    wallet = "wallet"
    bank_transfer = "bank_transfer"
    cash = "cash"
    other = "other"


class ConsentPurpose(StrEnum):
    marketing_email = "marketing_email"
    marketing_sms = "marketing_sms"
    marketing_whatsapp = "marketing_whatsapp"
    profiling = "profiling"
    data_sharing = "data_sharing"


class ConsentStatus(StrEnum):
    granted = "granted"
    denied = "denied"
    revoked = "revoked"


class Consent(BaseModel):
    model_config = _frozen()

    purpose: ConsentPurpose
    status: ConsentStatus
    at: UTCTimestamp | None = Field(
        None, description="When the person decided; defaults to the record's time."
    )
    source: Text = Field(
        None, max_length=100, description="Where it was collected (checkout, form, app, ...)."
    )
    text_version: Text = Field(None, max_length=100, description="Version of the text the person agreed to.")


class Address(BaseModel):
    model_config = _frozen()

    street: Text = Field(None, max_length=300)
    number: Text = Field(None, max_length=30)
    complement: Text = Field(None, max_length=200)
    district: Text = Field(None, max_length=200, description="Bairro.")
    city: Annotated[Text, AfterValidator(lambda v: v and normalize.normalize_city(v))] = Field(
        None, max_length=200
    )
    state: Annotated[Text, AfterValidator(lambda v: v and normalize.normalize_state(v))] = Field(
        None, max_length=40, description="UF code or state name; stored as the UF code."
    )
    zip: Annotated[Text, AfterValidator(lambda v: v and normalize.normalize_zip(v))] = Field(
        None, max_length=20, description="CEP, 8 digits (a 5-digit prefix is accepted)."
    )
    country: Annotated[Text, AfterValidator(lambda v: v and normalize.normalize_country(v))] = Field(
        "BR", max_length=60, description="ISO 3166-1 alpha-2."
    )


class Customer(BaseModel):
    """Who bought: at least one identifier (e-mail, phone, document or the source's customer id)."""

    model_config = _frozen()

    external_id: Text = Field(None, max_length=200, description="The customer's id on the source (buyer id).")
    name: Annotated[PersonName | None, BeforeValidator(_strip_or_none)] = None
    email: Annotated[Email | None, BeforeValidator(_strip_or_none)] = Field(
        None, description="Normalised: trimmed, lower case, IDNA domain."
    )
    phone: Annotated[Phone | None, BeforeValidator(_strip_or_none)] = Field(
        None, description="Normalised to E.164; Brazil is the default region."
    )
    document: Annotated[Document | None, BeforeValidator(_strip_or_none)] = Field(
        None, description="CPF or CNPJ (alphanumeric CNPJ accepted), check digits verified; stored unmasked."
    )
    birth_date: BirthDate | None = None
    gender: Annotated[Gender | None, BeforeValidator(_gender)] = None
    address: Address | None = None

    @property
    def document_type(self) -> Literal["cpf", "cnpj"] | None:
        if self.document is None:
            return None
        return "cpf" if len(self.document) == 11 else "cnpj"

    def has_identifier(self) -> bool:
        return any((self.email, self.phone, self.document, self.external_id))

    @model_validator(mode="after")
    def _identified(self) -> Customer:
        if not self.has_identifier():
            raise ValueError("needs at least one of email, phone, document or external_id")
        return self


class OrderItem(BaseModel):
    model_config = _frozen()

    sku: str = Field(min_length=1, max_length=200)
    name: Text = Field(None, max_length=500)
    category: Text = Field(None, max_length=200)
    quantity: int = Field(1, ge=1, le=100_000)
    unit_price: Money


class Payment(BaseModel):
    model_config = _frozen()

    method: PaymentMethod
    installments: int = Field(1, ge=1, le=48)
    amount: Money


Source = Annotated[
    str,
    BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v),
    Field(
        min_length=1, max_length=40, pattern=r"^[a-z0-9_\-]+$", description="mercadolivre, shopee, site, ..."
    ),
]


class Order(BaseModel):
    """A canonical order, the same whatever channel it came from."""

    model_config = _frozen(
        examples=[
            {
                "external_id": "2000001234",
                "source": "mercadolivre",
                "status": "paid",
                "placed_at": "2026-11-20T14:03:00-03:00",
                "currency": "BRL",
                "total": "259.90",
                "shipping": "0.00",
                "items": [
                    {
                        "sku": "CAFE-500G",
                        "name": "Café 500 g",
                        "category": "alimentos",
                        "quantity": 2,
                        "unit_price": "129.95",
                    }
                ],
                "payments": [{"method": "credit_card", "installments": 3, "amount": "259.90"}],
                "customer": {
                    "external_id": "ML-998877",
                    "name": "Maria da Silva",
                    "email": "maria.silva@example.com.br",
                    "phone": "(11) 91234-5678",
                    "document": "529.982.247-25",
                    "address": {"city": "São Paulo", "state": "SP", "zip": "01310-100"},
                },
                "consents": [{"purpose": "marketing_email", "status": "granted", "source": "checkout"}],
            }
        ],
    )

    external_id: str = Field(min_length=1, max_length=200, description="The order's id on its source.")
    source: Source
    status: OrderStatus
    placed_at: UTCTimestamp
    updated_at: UTCTimestamp | None = Field(
        None, description="When the source last changed the order; a later value makes a new version."
    )
    currency: str = Field("BRL", pattern=r"^[A-Z]{3}$")
    total: Money
    discount: Money = Decimal("0.00")
    shipping: Money = Decimal("0.00")
    coupon: Text = Field(None, max_length=100)
    items: list[OrderItem] = Field(default_factory=list, max_length=1000)
    payments: list[Payment] = Field(default_factory=list, max_length=50)
    customer: Customer
    consents: list[Consent] = Field(default_factory=list, max_length=20)


class CustomerRecord(Customer):
    """A customer as a registration form or CRM export knows them (no order)."""

    model_config = _frozen(
        examples=[
            {
                "source": "site",
                "external_id": "C-1001",
                "name": "JOÃO PEREIRA DOS SANTOS",
                "email": "joao.santos@example.com",
                "birth_date": "1988-04-12",
                "gender": "M",
                "address": {"city": "belo horizonte", "state": "Minas Gerais", "zip": "30130-010"},
                "consents": [{"purpose": "marketing_whatsapp", "status": "granted", "text_version": "v3"}],
            }
        ],
    )

    source: Source
    updated_at: UTCTimestamp | None = Field(None, description="When the source last changed the record.")
    consents: list[Consent] = Field(default_factory=list, max_length=20)


class BehaviourType(StrEnum):
    page_view = "page_view"
    product_view = "product_view"
    search = "search"
    add_to_cart = "add_to_cart"
    checkout_started = "checkout_started"
    survey_answered = "survey_answered"
    signup = "signup"


class CustomerRef(BaseModel):
    """Identifiers of a known person in a behaviour event (no other personal data)."""

    model_config = _frozen()

    external_id: Text = Field(None, max_length=200)
    email: Annotated[Email | None, BeforeValidator(_strip_or_none)] = None
    phone: Annotated[Phone | None, BeforeValidator(_strip_or_none)] = None
    document: Annotated[Document | None, BeforeValidator(_strip_or_none)] = None


def _bounded_properties(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > 50:
        raise ValueError("at most 50 properties")
    return value


class BehaviourEvent(BaseModel):
    """Something a person did (viewed a product, searched, started a cart, ...)."""

    model_config = _frozen(
        examples=[
            {
                "type": "product_view",
                "source": "site",
                "anonymous_id": "dev-7f3a9c",
                "customer": {"email": "maria.silva@example.com.br"},
                "properties": {"sku": "CAFE-500G", "category": "alimentos"},
                "occurred_at": "2026-11-20T13:55:10-03:00",
            }
        ],
    )

    event_id: Text = Field(
        None, max_length=200, description="The sender's id for this event (deduplication)."
    )
    type: BehaviourType
    source: Source = "site"
    anonymous_id: Text = Field(None, max_length=200, description="Device or cookie id.")
    customer: CustomerRef | None = None
    properties: Annotated[dict[str, Any], AfterValidator(_bounded_properties)] = Field(default_factory=dict)
    occurred_at: UTCTimestamp

    @model_validator(mode="after")
    def _identified(self) -> BehaviourEvent:
        has_customer = self.customer is not None and any(
            (self.customer.email, self.customer.phone, self.customer.document, self.customer.external_id)
        )
        if not (self.anonymous_id or has_customer):
            raise ValueError("needs an anonymous_id or customer identifiers")
        return self
