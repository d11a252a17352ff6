"""Tenant-wide traits (RFM, CLV, churn, next order) refreshed over generated marketplace data, on the
profile service's real database; and over HTTP with the background worker."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from cli.generate import REFERENCE, generate
from services.profile import predict, refresh
from services.profile.models import Profile, TraitsRefresh
from shared.consumer import ConsumerWorker
from shared.events import OrderIngested
from shared.infra import OutboxMessage
from shared.outbox import open_body
from shared.records import Order
from shared.settings import ServiceSettings
from tests.support import SettingsFactory, auth, eventually, order_body

pytestmark = pytest.mark.integration
OLIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "olist"


@pytest.fixture
def settings(make_settings: SettingsFactory) -> ServiceSettings:
    result: ServiceSettings = make_settings("profile")
    return result


def announced(session: Session, refresh_id: uuid.UUID) -> list[dict[str, Any]]:
    """The profile.updated events a refresh wrote to the outbox."""
    query = select(OutboxMessage).where(OutboxMessage.event_type == "profile.updated")
    envelopes = [orjson.loads(open_body(m.body)) for m in session.exec(query)]
    return [e for e in envelopes if e.get("correlation_id") == f"traits-refresh:{refresh_id}"]


def test_a_refresh_scores_every_buyer_and_fits_the_models(
    engine: Engine, profile_records: ConsumerWorker, tmp_path: Path
) -> None:
    generate(1500, 11, tmp_path, olist_dir=OLIST)
    tenant = uuid.uuid4()
    ids: dict[tuple[str, str], uuid.UUID] = {}
    versions: dict[uuid.UUID, int] = {}
    batch = []
    for line in (tmp_path / "orders.jsonl").read_bytes().splitlines():
        order = Order.model_validate(orjson.loads(line))
        order_id = ids.setdefault((order.source, order.external_id), uuid.uuid4())
        versions[order_id] = versions.get(order_id, 0) + 1
        batch.append(OrderIngested(order_id=order_id, order_version=versions[order_id], order=order))
    for start in range(0, len(batch), 250):
        profile_records.apply([e.envelope(tenant).to_bytes() for e in batch[start : start + 250]])

    with Session(engine) as session:
        job = refresh.request(session, tenant, reason="api")
        assert refresh.request(session, tenant, reason="api").id == job.id  # refreshes do not pile up
        job_id = job.id
    refresh.run(engine, job_id, now=REFERENCE)

    with Session(engine) as session:
        done = session.get(TraitsRefresh, job_id)
        assert done is not None
        assert done.status == "done"
        assert done.profiles_total == done.profiles_done
        assert done.model["bgnbd"] is not None, done.model
        assert done.model["gamma_gamma"] is not None
        assert done.model["repeaters"] > 0
        profiles = session.exec(
            select(Profile).where(Profile.tenant_id == tenant, Profile.status == "active")
        ).all()
        buyers = [p for p in profiles if p.orders_count > 0]
        assert buyers
        assert all(p.predicted == {} for p in profiles if p.orders_count == 0)
        groups = {p.predicted["rfm_group"] for p in buyers}
        assert groups <= {g.value for g in predict.RfmGroup}
        assert len(groups) >= 5  # a real spread of customers, not one bucket
        for p in buyers:
            assert 1 <= p.predicted["rfm"]["r"] <= 5
            assert 0.0 <= p.predicted["churn_probability"] <= 1.0
            assert p.predicted["clv_12m_minor"] is None or p.predicted["clv_12m_minor"] >= 0
        # Spending more, more often, more recently never ranks lower on any of R, F, M.
        best = max(buyers, key=lambda p: (p.orders_count, p.total_spent_minor))
        assert best.predicted["rfm"]["f"] == 5
        updated = announced(session, job_id)
        assert len(updated) == len(buyers)
        assert all(e["payload"]["rfm_group"] for e in updated)

    # The same data, the same day: nothing changed, nothing announced.
    with Session(engine) as session:
        again = refresh.request(session, tenant, reason="api").id
    refresh.run(engine, again, now=REFERENCE)
    with Session(engine) as session:
        assert announced(session, again) == []


def test_refresh_over_http(stack: Any) -> None:
    key = stack.create_tenant()
    h = auth(key)
    for number, total in (("R-1", "50.00"), ("R-2", "70.00")):
        body = order_body(number, f"{number.lower()}@example.com", total)
        assert stack.ingest.post("/v1/orders", json=body, headers=h).status_code == 202

    def two() -> None:
        assert len(stack.profile.get("/v1/profiles", headers=h).json()["items"]) == 2

    eventually(two)

    def refreshed() -> dict[str, Any]:
        # A refresh queued by the schedule when the tenant was created may still be the pending one: the
        # POST then returns it, and it may have run before the orders; so ask until a refresh saw both.
        response = stack.profile.post("/v1/traits:refresh", headers=h)
        assert response.status_code == 202
        job_id = response.json()["id"]

        def done() -> dict[str, Any]:
            job = stack.profile.get(f"/v1/traits/refreshes/{job_id}", headers=h).json()
            assert job["status"] == "done"
            return dict(job)

        job = eventually(done, timeout=30)
        assert job["model"]["customers"] == 2
        return job

    job = eventually(refreshed, timeout=60)
    assert (job["progress"], job["profiles_total"]) == (1.0, 2)
    items = stack.profile.get("/v1/profiles", headers=h).json()["items"]
    assert all(p["predicted"]["rfm_group"] for p in items)
    assert job["model"]["bgnbd"] is None  # two one-order customers: too little history to fit
    other = stack.create_tenant()
    assert stack.profile.get(f"/v1/traits/refreshes/{job['id']}", headers=auth(other)).status_code == 404
