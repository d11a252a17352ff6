"""Identity resolution rules per tenant: set over HTTP, applied by the consumer to the next records."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.profile import identity_rules
from services.profile.identity_rules import IdentityRules
from services.profile.models import Profile
from shared.consumer import ConsumerWorker
from shared.events import OrderIngested
from shared.records import Order
from shared.settings import ServiceSettings
from tests.support import SettingsFactory, auth, order_body

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(make_settings: SettingsFactory) -> ServiceSettings:
    result: ServiceSettings = make_settings("profile")
    return result


def order(tenant: UUID, number: str, source: str = "site", **customer: Any) -> bytes:
    # W-1 placed on the 1st, W-2 on the 2nd, ...: records in time order, as they are applied here.
    day = int(number.rpartition("-")[2])
    body = order_body(
        number, "unused@example.com", "10.00", source=source, placed_at=f"2026-11-{day:02d}T10:00:00Z"
    )
    body["customer"] = customer
    event = OrderIngested(order_id=uuid4(), order_version=1, order=Order.model_validate(body))
    return event.envelope(tenant).to_bytes()


def counts(engine: Engine, tenant: UUID) -> list[int]:
    with Session(engine) as session:
        query = select(Profile).where(Profile.tenant_id == tenant, Profile.status == "active")
        return sorted(p.orders_count for p in session.exec(query.order_by(col(Profile.created_at))))


def test_a_tenants_blocked_values_and_limits_apply_to_it_alone(
    engine: Engine, profile_records: ConsumerWorker
) -> None:
    strict, default = uuid4(), uuid4()
    rules = IdentityRules(
        blocked_values=[{"kind": "email", "value": "VENDAS@loja.com.br"}],
        limits={"email": 1},
    )
    with Session(engine) as session:
        identity_rules.save(session, strict, rules)
        session.commit()
    for tenant in (strict, default):
        # Staff typed the shop's own e-mail for two walk-in buyers: it identifies nobody for `strict`.
        profile_records.apply([order(tenant, "W-1", "pos", external_id="c1", email="vendas@loja.com.br")])
        profile_records.apply([order(tenant, "W-2", "pos", external_id="c2", email="vendas@loja.com.br")])
        profile_records.apply([order(tenant, "W-3", "pos", external_id="c1", email="c1@example.com")])
        # A second e-mail for c1: `strict` allows one e-mail per profile, so it is not attached.
        profile_records.apply([order(tenant, "W-4", "pos", external_id="c1", email="c1.b@example.com")])
        profile_records.apply([order(tenant, "W-5", "site", email="c1.b@example.com")])
    assert counts(engine, strict) == [1, 1, 3]  # c1 (W-1, W-3, W-4), c2 (W-2), W-5 on a profile of its own
    assert counts(engine, default) == [5]  # the shop's e-mail made one profile of everyone


def test_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        IdentityRules(priority=["email", "document"])
    with pytest.raises(ValueError, match="one CPF"):
        IdentityRules(limits={"document": 2})
    with pytest.raises(ValueError, match="suggest_threshold"):
        IdentityRules(merge_threshold=0.5, suggest_threshold=0.8)
    with pytest.raises(ValueError, match="valid phone"):
        IdentityRules(blocked_values=[{"kind": "phone", "value": "12"}])


def test_identity_rules_over_http(stack: Any) -> None:
    key = stack.create_tenant()
    h = auth(key)
    defaults = stack.profile.get("/v1/identity-rules", headers=h).json()
    assert defaults["limits"]["document"] == 1
    assert defaults["merge_threshold"] == 0.95
    wanted = {
        **defaults,
        "max_merges": 3,
        "merge_threshold": 0.99,
        "blocked_values": [{"kind": "phone", "value": "(11) 3333-4444"}],
    }
    response = stack.profile.put("/v1/identity-rules", json=wanted, headers=h)
    assert response.status_code == 200, response.text
    saved = stack.profile.get("/v1/identity-rules", headers=h).json()
    assert (saved["max_merges"], saved["blocked_values"]) == (
        3,
        [{"kind": "phone", "value": "+551133334444"}],
    )
    bad = stack.profile.put("/v1/identity-rules", json={**defaults, "limits": {"document": 2}}, headers=h)
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    other = stack.create_tenant()
    assert stack.profile.get("/v1/identity-rules", headers=auth(other)).json()["max_merges"] == 50
