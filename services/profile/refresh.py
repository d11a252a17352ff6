"""The tenant-wide traits (RFM scores and groups, predicted CLV, churn probability, next order), refreshed
on demand (`POST /v1/traits:refresh`) and on a schedule, by a background worker.

A refresh reads every active profile's counted orders, ranks the tenant's customers (RFM), fits the BG/NBD
and Gamma-Gamma models (`services.profile.predict` says how and their limits) and writes each profile's
`predicted` traits in chunks, so `GET /v1/traits/refreshes/{id}` shows progress. A profile whose traits
changed gets a new version and a `profile.updated` event (segments follow). Everything else about a
profile keeps updating on every event, between refreshes.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.profile import predict
from services.profile.models import Profile, ProfileOrder, TraitsRefresh
from services.profile.profiles import announce
from services.profile.traits import COUNTED
from shared.db import utcnow
from shared.errors import NotFound
from shared.infra import Tenant

log = logging.getLogger(__name__)
CHUNK = 500
HORIZON_MONTHS = 12
STALE_AFTER = timedelta(minutes=10)  # a running refresh without progress for this long is taken over


def request(session: Session, tenant_id: UUID, *, reason: str) -> TraitsRefresh:
    """Queue a refresh (or return the one already queued or running: refreshes do not pile up)."""
    pending = session.exec(
        select(TraitsRefresh).where(
            TraitsRefresh.tenant_id == tenant_id, col(TraitsRefresh.status).in_(["queued", "running"])
        )
    ).first()
    if pending is not None:
        return pending
    job = TraitsRefresh(tenant_id=tenant_id, reason=reason)
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def get(refresh_id: UUID, *, tenant_id: UUID, session: Session) -> TraitsRefresh:
    job = session.get(TraitsRefresh, refresh_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFound("No traits refresh with this id.")
    return job


def latest(session: Session, tenant_id: UUID) -> TraitsRefresh | None:
    query = select(TraitsRefresh).where(TraitsRefresh.tenant_id == tenant_id)
    return session.exec(query.order_by(col(TraitsRefresh.created_at).desc())).first()


def run(engine: Engine, refresh_id: UUID, *, now: datetime | None = None) -> None:
    """Compute and store the tenant-wide traits of one refresh."""
    now = now or utcnow()
    with Session(engine) as session:
        job = session.get(TraitsRefresh, refresh_id)
        assert job is not None
        tenant_id = job.tenant_id
        orders: dict[UUID, list[tuple[datetime, int]]] = defaultdict(list)
        # In id order: the same data gives the very same floating-point fit (no spurious changes).
        active = session.exec(
            select(Profile.id)
            .where(Profile.tenant_id == tenant_id, Profile.status == "active")
            .order_by(col(Profile.id))
        ).all()
        rows = session.exec(
            select(ProfileOrder.profile_id, ProfileOrder.placed_at, ProfileOrder.total_minor).where(
                ProfileOrder.tenant_id == tenant_id, col(ProfileOrder.status).in_(COUNTED)
            )
        ).all()
        for profile_id, placed_at, total in sorted(rows):
            orders[profile_id].append((placed_at, total))
        computed, model = compute(list(active), orders, now=now)
        job.profiles_total = len(active)
        job.model = model
        job.heartbeat_at = utcnow()
        session.add(job)
        session.commit()

    ids = sorted(active)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        with Session(engine) as session:
            query = select(Profile).where(col(Profile.id).in_(chunk)).order_by(col(Profile.id))
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update()  # the records consumer may be updating the same profiles
            for profile in session.exec(query):
                wanted = computed.get(profile.id, {})
                if profile.status != "active" or _same(profile.predicted, wanted):
                    continue
                profile.predicted = wanted
                announce(session, profile, correlation_id=f"traits-refresh:{refresh_id}")
            job = session.get(TraitsRefresh, refresh_id)
            assert job is not None
            job.profiles_done = min(start + len(chunk), len(ids))
            job.heartbeat_at = utcnow()
            session.add(job)
            session.commit()
    with Session(engine) as session:
        job = session.get(TraitsRefresh, refresh_id)
        assert job is not None
        job.status, job.finished_at = "done", utcnow()
        session.add(job)
        session.commit()


def _same(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return {k: v for k, v in current.items() if k != "refreshed_at"} == {
        k: v for k, v in wanted.items() if k != "refreshed_at"
    }


def compute(
    profiles: list[UUID], orders: dict[UUID, list[tuple[datetime, int]]], *, now: datetime
) -> tuple[dict[UUID, dict[str, Any]], dict[str, Any]]:
    """Each profile's predicted traits (empty for a profile without counted orders), and the fitted model."""
    buyers = [pid for pid in profiles if orders.get(pid)]
    histories = [
        predict.purchase_history([at for at, _ in orders[pid]], [t for _, t in orders[pid]], now)
        for pid in buyers
    ]
    rfm = predict.rfm_scores(
        buyers,
        [(now - h.last_order_at).days for h in histories],
        [len(orders[pid]) for pid in buyers],
        [sum(t for _, t in orders[pid]) for pid in buyers],
    )
    x = [h.x for h in histories]
    t_x = [h.t_x for h in histories]
    age = [h.age for h in histories]
    bgnbd = predict.fit_bgnbd(x, t_x, age) if buyers else None
    repeaters = [i for i, h in enumerate(histories) if h.x > 0]
    gamma_gamma = (
        predict.fit_gamma_gamma([x[i] for i in repeaters], [histories[i].average_value for i in repeaters])
        if repeaters
        else None
    )
    predictions = (
        predict.predict(
            bgnbd,
            gamma_gamma,
            x=x,
            t_x=t_x,
            age=age,
            average_value=[h.average_value for h in histories],
            last_order_at=[h.last_order_at for h in histories],
            horizon_months=HORIZON_MONTHS,
        )
        if buyers
        else []
    )
    stamp = now.isoformat()
    found: dict[UUID, dict[str, Any]] = {}
    for pid, prediction in zip(buyers, predictions, strict=True):
        score = rfm[pid]
        found[pid] = {
            "rfm": {"r": score.r, "f": score.f, "m": score.m, "score": f"{score.r}{score.f}{score.m}"},
            "rfm_group": score.group.value,
            "churn_probability": _round(prediction.churn_probability, 4),
            "expected_orders_12m": _round(prediction.expected_orders, 2),
            "clv_12m_minor": prediction.clv_minor,
            "next_order_at": (
                prediction.next_order_at.replace(microsecond=0).isoformat()
                if prediction.next_order_at
                else None
            ),
            "refreshed_at": stamp,
        }
    model = {
        "customers": len(buyers),
        "repeaters": len(repeaters),
        "bgnbd": vars(bgnbd) if bgnbd else None,
        "gamma_gamma": vars(gamma_gamma) if gamma_gamma else None,
        "horizon_months": HORIZON_MONTHS,
        "as_of": stamp,
    }
    return found, model


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class TraitsRefresher:
    """Background worker: runs queued refreshes, and queues one per tenant every `every` (the schedule)."""

    def __init__(self, engine: Engine, *, every: timedelta, poll_interval_s: float = 1.0) -> None:
        self.engine = engine
        self.every = every
        self.poll_interval_s = poll_interval_s

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.schedule()
            job_id = self.claim()
            if job_id is None:
                stop.wait(self.poll_interval_s)
                continue
            try:
                run(self.engine, job_id)
            except Exception as exc:
                log.exception("traits refresh failed", extra={"refresh_id": str(job_id)})
                with Session(self.engine) as session:
                    job = session.get(TraitsRefresh, job_id)
                    if job is not None:
                        job.status, job.error, job.finished_at = "failed", type(exc).__name__, utcnow()
                        session.add(job)
                        session.commit()

    def schedule(self) -> None:
        """Queue a refresh for each tenant whose last one is older than the schedule's period."""
        with Session(self.engine) as session:
            for tenant_id in session.exec(select(Tenant.id)).all():
                last = latest(session, tenant_id)
                if last is None or last.created_at < utcnow() - self.every:
                    request(session, tenant_id, reason="schedule")

    def claim(self) -> UUID | None:
        now = utcnow()
        with Session(self.engine) as session:
            candidates = session.exec(
                select(TraitsRefresh.id, TraitsRefresh.status, TraitsRefresh.heartbeat_at)
                .where(col(TraitsRefresh.status).in_(["queued", "running"]))
                .order_by(col(TraitsRefresh.created_at))
            ).all()
            for job_id, status, heartbeat in candidates:
                if status == "running" and heartbeat is not None and heartbeat > now - STALE_AFTER:
                    continue  # another worker is on it
                claimed = session.execute(
                    sa.update(TraitsRefresh)
                    .where(col(TraitsRefresh.id) == job_id, col(TraitsRefresh.status) == status)
                    .where(
                        col(TraitsRefresh.heartbeat_at).is_(None)
                        if heartbeat is None
                        else col(TraitsRefresh.heartbeat_at) == heartbeat
                    )
                    .values(status="running", heartbeat_at=now, started_at=now)
                )
                session.commit()
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    return job_id
        return None
