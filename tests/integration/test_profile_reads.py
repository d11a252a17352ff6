"""The API's two hot reads without the ORM (`profiles.read_profile`, `profiles.find_profiles`) answer exactly
what the ORM reads (`get_profile`, `list_profiles`) answer, on the profile service's real database: a merged
profile with its pointer, another tenant's id as unknown, lookups by each identifier with and without
filters, masking in lists."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.profile import profiles
from services.profile.models import Profile
from services.profile.schemas import ProfileRead
from shared.consumer import ConsumerWorker
from shared.errors import Invalid, NotFound
from shared.events import OrderIngested
from shared.records import Order
from shared.settings import ServiceSettings
from tests.support import SettingsFactory, order_body

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(make_settings: SettingsFactory) -> ServiceSettings:
    result: ServiceSettings = make_settings("profile")
    return result


def order(tenant: UUID, number: str, total: str, **customer: Any) -> bytes:
    body = order_body(number, "unused@example.com", total)
    body["customer"] = customer
    event = OrderIngested(order_id=uuid4(), order_version=1, order=Order.model_validate(body))
    return event.envelope(tenant).to_bytes()


def read_session(engine: Engine) -> Session:
    return Session(engine.execution_options(isolation_level="AUTOCOMMIT"))


def test_core_reads_answer_what_the_orm_reads_answer(engine: Engine, profile_records: ConsumerWorker) -> None:
    tenant, other = uuid4(), uuid4()
    profile_records.apply(
        [
            order(
                tenant,
                "A-1",
                "10.00",
                email="ana@example.com",
                name="Ana Souza",
                address={"zip": "01310-100"},
            ),
            order(tenant, "B-1", "20.00", external_id="b-1", phone="11 98765-4321", birth_date="1990-05-01"),
            order(
                tenant, "C-1", "5.00", email="caio@example.com", address={"city": "Campinas", "state": "SP"}
            ),
        ]
    )
    # An order with Ana's e-mail and the second buyer's id links them: one profile is merged into the other.
    profile_records.apply([order(tenant, "A-2", "30.00", email="ana@example.com", external_id="b-1")])
    profile_records.apply([order(other, "X-1", "1.00", email="ana@example.com")])
    with Session(engine) as session:
        everyone = session.exec(select(Profile).order_by(col(Profile.id))).all()
        ids = [(p.id, p.tenant_id) for p in everyone]
        assert any(p.merged_into is not None for p in everyone)

    with Session(engine) as orm, read_session(engine) as core:
        for profile_id, owner in ids:
            expected = ProfileRead.of(profiles.get_profile(profile_id, tenant_id=owner, session=orm))
            assert (
                ProfileRead.of(profiles.read_profile(profile_id, tenant_id=owner, session=core)) == expected
            )
            stranger = other if owner == tenant else tenant
            with pytest.raises(NotFound):
                profiles.read_profile(profile_id, tenant_id=stranger, session=core)
        with pytest.raises(NotFound):
            profiles.read_profile(uuid4(), tenant_id=tenant, session=core)

        searches: list[tuple[dict[str, str], profiles.ListFilters, UUID | None, int]] = [
            ({"email": " Ana@Example.com "}, profiles.ListFilters(), None, 100),
            ({"phone": "(11) 98765-4321"}, profiles.ListFilters(), None, 100),
            ({"email": "nobody@example.com"}, profiles.ListFilters(), None, 100),
            ({"email": "caio@example.com"}, profiles.ListFilters(state="SP"), None, 100),
            ({"email": "ana@example.com", "phone": "11987654321"}, profiles.ListFilters(), None, 100),
            ({}, profiles.ListFilters(), None, 100),
            ({}, profiles.ListFilters(city="campinas"), None, 100),
            ({}, profiles.ListFilters(), ids[0][0], 1),
        ]
        for lookup, filters, after, limit in searches:
            for owner in (tenant, other):
                expected_list = profiles.list_profiles(
                    tenant_id=owner, session=orm, lookup=lookup, filters=filters, after=after, limit=limit
                )
                found = profiles.find_profiles(
                    tenant_id=owner, session=core, lookup=lookup, filters=filters, after=after, limit=limit
                )
                masked = not lookup
                assert [ProfileRead.of(p, masked=masked) for p in found] == [
                    ProfileRead.of(p, masked=masked) for p in expected_list
                ]
        assert profiles.find_profiles(
            tenant_id=tenant, session=core, lookup={"email": "ana@example.com"}, after=None, limit=100
        ), "the search found Ana"
        with pytest.raises(Invalid):
            profiles.find_profiles(
                tenant_id=tenant, session=core, lookup={"email": "not an e-mail"}, after=None, limit=100
            )
