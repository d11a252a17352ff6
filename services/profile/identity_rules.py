"""Identity resolution rules per tenant: identifier priority, per-kind limits, merge limit, blocked values
and the probabilistic thresholds. A tenant without its own rules uses the defaults.

What cannot be configured, on purpose: a profile holds one document (two CPFs are two people), and a
phone never merges by itself (families share phones); only which identifier wins, how many of each a
profile may hold, and which values identify nobody.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlmodel import Session, col

from services.profile.models import IdentityRuleSet, Profile
from shared.db import utcnow
from shared.normalize import normalize_email, normalize_phone
from shared.web import RequestInt

KINDS = ("document", "customer_id", "email", "relay_email", "phone", "anonymous_id")
Kind = Annotated[str, Field(pattern="^(document|customer_id|email|relay_email|phone|anonymous_id)$")]


class IdentityRules(BaseModel):
    """How a tenant's records are resolved into profiles."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "priority": ["document", "customer_id", "email", "relay_email", "phone", "anonymous_id"],
                    "limits": {"email": 3, "phone": 3},
                    "max_merges": 20,
                    "blocked_values": [{"kind": "email", "value": "compras@minhaloja.com.br"}],
                    "merge_threshold": 0.97,
                    "suggest_threshold": 0.7,
                }
            ]
        },
    )

    priority: list[Kind] = Field(
        default=list(KINDS),
        description="Identifier kinds, strongest first: a record belongs to its strongest identifier's owner",
    )
    limits: dict[Kind, Annotated[RequestInt, Field(ge=1, le=1000)]] = Field(
        default={
            "document": 1,
            "email": 5,
            "phone": 5,
            "customer_id": 20,
            "relay_email": 20,
            "anonymous_id": 50,
        },
        description="At most this many identifiers of a kind per profile (a merge that would exceed it does "
        "not happen). `document` is always 1.",
    )
    max_merges: RequestInt = Field(
        default=50, ge=0, le=10_000, description="At most this many merges into one profile."
    )
    blocked_values: list[BlockedValue] = Field(
        default_factory=list,
        max_length=1000,
        description="Values that identify nobody for this tenant (a shop's own e-mail or phone typed in by "
        "staff), on top of the built-in placeholders (`teste@teste.com`, ...).",
    )
    merge_threshold: float = Field(
        default=0.95, ge=0, le=1, strict=True, description="Probabilistic stage: merge at or above."
    )
    suggest_threshold: float = Field(
        default=0.6, ge=0, le=1, strict=True, description="Probabilistic stage: suggest at or above."
    )

    @field_validator("priority")
    @classmethod
    def _every_kind_once(cls, value: list[str]) -> list[str]:
        if sorted(value) != sorted(KINDS):
            raise ValueError(f"must list each of {', '.join(KINDS)} exactly once")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> IdentityRules:
        if self.limits.get("document", 1) != 1:
            raise ValueError("limits.document is always 1: a person has one CPF")
        if self.suggest_threshold > self.merge_threshold:
            raise ValueError("suggest_threshold must not exceed merge_threshold")
        return self

    def rank(self, kind: str) -> int:
        return self.priority.index(kind)

    def limit(self, kind: str) -> int:
        found = self.limits.get(kind)
        return found if found is not None else DEFAULT_LIMITS.get(kind, 100)

    def blocks(self, kind: str, value: str) -> bool:
        # Called for every identifier of every record: most tenants block nothing.
        return bool(self.blocked_values) and any(
            b.kind == kind and b.value == value for b in self.blocked_values
        )


class BlockedValue(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Annotated[str, Field(pattern="^(email|phone|document)$")]
    value: str = Field(min_length=1, max_length=300, description="Normalised on input like ingest does.")

    @model_validator(mode="after")
    def _normalised(self) -> BlockedValue:
        try:
            if self.kind == "email":
                object.__setattr__(self, "value", normalize_email(self.value))
            elif self.kind == "phone":
                object.__setattr__(self, "value", normalize_phone(self.value))
        except ValueError:
            raise ValueError(f"not a valid {self.kind}") from None
        return self


IdentityRules.model_rebuild()
DEFAULT = IdentityRules()
DEFAULT_LIMITS = dict(DEFAULT.limits)


def service_defaults(settings: object) -> IdentityRules:
    """The service's rules, for the tenants without their own: its thresholds (`PROFILE_MATCH_*`). Any
    service settings are taken; those without the profile service's thresholds give `DEFAULT`'s."""
    return IdentityRules(
        merge_threshold=getattr(settings, "match_merge_threshold", DEFAULT.merge_threshold),
        suggest_threshold=getattr(settings, "match_suggest_threshold", DEFAULT.suggest_threshold),
    )


def rules_for(session: Session, tenant_id: UUID) -> IdentityRules:
    """The tenant's rules, or the service's defaults (`session.info["identity_defaults"]`, set by the
    consumer from its settings); cached for the transaction, so a consumer batch reads them once."""
    cache: dict[UUID, IdentityRules] = session.info.setdefault("identity_rules", {})
    if tenant_id not in cache:
        row = session.get(IdentityRuleSet, tenant_id)
        defaults = session.info.get("identity_defaults", DEFAULT)
        cache[tenant_id] = IdentityRules.model_validate(row.rules) if row is not None else defaults
    return cache[tenant_id]


def save(session: Session, tenant_id: UUID, rules: IdentityRules) -> IdentityRules:
    row = session.get(IdentityRuleSet, tenant_id)
    if row is None:
        row = IdentityRuleSet(tenant_id=tenant_id, rules={})
    row.rules = rules.model_dump(mode="json")
    row.updated_at = utcnow()
    session.add(row)
    session.info.pop("identity_rules", None)
    # New thresholds or limits: every profile is scored again by the probabilistic stage when it next
    # changes, not only those whose data changed (see probabilistic.fingerprint).
    session.execute(
        sa.update(Profile)
        .where(col(Profile.tenant_id) == tenant_id)
        .values(match_fingerprint=None)
        .execution_options(synchronize_session=False)
    )
    return rules
