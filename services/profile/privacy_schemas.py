"""The API models of data-subject requests (LGPD Art. 18)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.profile.models import PrivacyRequest
from shared.records import Address, BirthDate, ConsentPurpose, Gender, PersonName

RequestType = Literal[
    "confirmation", "access", "portability", "correction", "anonymisation", "deletion", "consent_revocation"
]


class Subject(BaseModel):
    """Who the request is about: exactly one of these (as the seller knows the person)."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(None, max_length=300)
    phone: str | None = Field(None, max_length=40, description="Any format; Brazil by default.")
    document: str | None = Field(None, max_length=20, description="CPF or CNPJ, with or without mask.")
    profile_id: UUID | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Subject:
        given = [k for k in ("email", "phone", "document", "profile_id") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("name the person by exactly one of email, phone, document or profile_id")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("email", "phone", "document", "profile_id") if getattr(self, k) is not None)


class Correction(BaseModel):
    """The corrected values (only those given change); they take precedence over what records said."""

    model_config = ConfigDict(extra="forbid")

    name: PersonName | None = None
    birth_date: BirthDate | None = None
    gender: Gender | None = None
    address: Address | None = None

    @model_validator(mode="after")
    def _something(self) -> Correction:
        if not self.model_fields_set:
            raise ValueError("a correction needs at least one of name, birth_date, gender or address")
        return self


class PrivacyRequestCreate(BaseModel):
    """A request the person made to the seller (the seller's DPO forwards it here)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"type": "access", "subject": {"email": "maria@example.com"}},
                {"type": "deletion", "subject": {"document": "123.456.789-09"}},
                {"type": "consent_revocation", "subject": {"phone": "+55 11 91234-5678"}},
                {
                    "type": "correction",
                    "subject": {"email": "maria@example.com"},
                    "correction": {"name": "Maria"},
                },
            ]
        },
    )

    type: RequestType = Field(
        description="confirmation (do you hold data about me?), access / portability (all of it, "
        "machine-readable), correction, anonymisation, deletion, consent_revocation."
    )
    subject: Subject
    correction: Correction | None = Field(None, description="For `correction`: the corrected values.")
    purposes: list[ConsentPurpose] | None = Field(
        None, description="For `consent_revocation`: the purposes revoked (default: every purpose)."
    )
    suppress: bool = Field(
        True,
        strict=True,
        description="For `deletion` / `anonymisation`: drop later records that carry the person's "
        "identifiers (keyed hashes are kept for that) instead of starting a new profile from them.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> PrivacyRequestCreate:
        if (self.type == "correction") != (self.correction is not None):
            raise ValueError("`correction` goes with type `correction`, and only with it")
        if self.purposes is not None and self.type != "consent_revocation":
            raise ValueError("`purposes` goes only with type `consent_revocation`")
        return self


class PrivacyRequestRead(BaseModel):
    """A request and where it stands. No personal data: the person is named by the kind of identifier."""

    id: UUID
    type: str
    status: str = Field(description="processing, or completed (every service confirmed / answered).")
    subject_kind: str
    found: bool = Field(description="Whether Clientela holds data about the person.")
    profile_ids: list[UUID] = Field(description="The person's profile ids (emptied once erased).")
    awaiting: list[str] = Field(description="Services that have not answered yet.")
    confirmations: dict[str, Any] = Field(
        description="Per service: when it answered and, for erasures, how many rows of each kind it erased."
    )
    summary: dict[str, Any] = Field(
        description="Given at once: what is held, in categories with counts (access, portability, "
        "confirmation), or what was done."
    )
    report_url: str | None = Field(description="The complete report, once every service answered.")
    created_at: datetime
    due_at: datetime = Field(description="The legal deadline (15 days, LGPD Art. 19 II).")
    completed_at: datetime | None

    @classmethod
    def of(cls, request: PrivacyRequest) -> PrivacyRequestRead:
        confirmations = {
            service: {k: v for k, v in answer.items() if k != "part"}
            for service, answer in request.confirmations.items()
        }
        return cls(
            id=request.id,
            type=request.type,
            status=request.status,
            subject_kind=request.subject_kind,
            found=request.found,
            profile_ids=[UUID(p) for p in request.profile_ids],
            awaiting=request.awaiting,
            confirmations=confirmations,
            summary=request.summary,
            report_url=(
                f"/v1/privacy/requests/{request.id}/report"
                if request.report is not None and request.status == "completed"
                else None
            ),
            created_at=request.created_at,
            due_at=request.due_at,
            completed_at=request.completed_at,
        )


class PrivacyRequestPage(BaseModel):
    items: list[PrivacyRequestRead]
    next_cursor: str | None
