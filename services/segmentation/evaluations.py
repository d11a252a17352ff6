"""Full evaluations of segments in the background, with progress, and the schedule of time-relative rules.

A `segment_evaluation` row is queued when a segment of a large tenant is created or its rule changes
(`segments.start_evaluation`; small tenants are evaluated within the request and get a `done` row), on
`POST /v1/segments/{id}/evaluations`, and by the schedule. `SegmentEvaluator`, a worker of the service:

- **Schedule**: every segment whose rule depends on time alone (`Segment.time_relative`: `within_last_days`,
  `more_than_days_ago`, `within_next_days`, `is_current_month`, `age`) and whose latest evaluation is
  older than `every` (SEGMENTATION_REEVALUATE_HOURS, default 24) gets one (reason `schedule`), so that
  people leave an "abandoned a cart in the last 7 days" segment when the 7 days have passed, though
  nothing about them changed. Other rules only change answer when a profile does, which the incremental
  path sees.
- **Claiming**: a queued evaluation, or a running one whose lease expired (its worker died), is leased to
  one worker by a conditional update.
- **Running**: the tenant's profiles in chunks of `chunk`, by profile id (keyset), each chunk in its own
  transaction (`segments.evaluate_range`, the SQL evaluator) together with the evaluation's progress
  (`cursor`, `processed`, `entered`, `exited`) and a renewed lease. A taken-over evaluation resumes after
  the last committed chunk. The rule is evaluated at one time for the whole run (`evaluated_at`).
  A newer rule cancels the running evaluation (it stops at its next chunk); a deleted segment takes its
  evaluations with it.

The worker's `clock` decides the evaluation time and what is due (tests inject one and never sleep).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from services.segmentation import segments
from services.segmentation.models import (
    PENDING_EVALUATION,
    EvaluationStatus,
    Segment,
    SegmentEvaluation,
)
from services.segmentation.rules import InvalidRule, load_rule
from services.segmentation.settings import SegmentationSettings
from shared.db import utcnow
from shared.errors import NotFound
from shared.settings import ServiceSettings

log = logging.getLogger("clientela.evaluations")

Clock = Callable[[], datetime]
LEASE = timedelta(minutes=5)
STEP_ATTEMPTS = 5


# -- reading ---------------------------------------------------------------------------------------------


def get_evaluation(
    segment_id: UUID, evaluation_id: UUID, *, tenant_id: UUID, session: Session
) -> SegmentEvaluation:
    segments.get_segment(segment_id, tenant_id=tenant_id, session=session)
    job = session.get(SegmentEvaluation, evaluation_id)
    if job is None or job.segment_id != segment_id:
        raise NotFound("No evaluation with this id for this segment.")
    return job


def list_evaluations(
    segment_id: UUID, *, tenant_id: UUID, session: Session, limit: int
) -> list[SegmentEvaluation]:
    """The segment's evaluations, newest first."""
    segments.get_segment(segment_id, tenant_id=tenant_id, session=session)
    query = (
        select(SegmentEvaluation)
        .where(SegmentEvaluation.segment_id == segment_id)
        .order_by(col(SegmentEvaluation.created_at).desc(), col(SegmentEvaluation.id))
        .limit(limit)
    )
    return list(session.exec(query).all())


def latest(session: Session, segment_id: UUID, *, finished: bool = False) -> SegmentEvaluation | None:
    """The segment's newest evaluation (`finished`: the newest that ran to its end)."""
    query = select(SegmentEvaluation).where(SegmentEvaluation.segment_id == segment_id)
    if finished:
        query = query.where(SegmentEvaluation.status == EvaluationStatus.done)
    return session.exec(query.order_by(col(SegmentEvaluation.created_at).desc()).limit(1)).first()


def request_evaluation(segment_id: UUID, *, tenant_id: UUID, session: Session) -> SegmentEvaluation:
    """Queue an evaluation of the segment now (or return the one already queued or running)."""
    segments.get_segment(segment_id, tenant_id=tenant_id, session=session)
    job, _ = segments.queue_evaluation(
        session, segment_id=segment_id, tenant_id=tenant_id, reason=segments.Reason.requested, now=utcnow()
    )
    return job


# -- the worker ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    evaluation_id: UUID
    token: UUID


class SegmentEvaluator:
    """Background worker: queues the schedule's evaluations and runs queued ones (module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        every: timedelta = timedelta(hours=24),
        chunk: int = segments.CHUNK,
        clock: Clock = utcnow,
        poll_interval_s: float = 0.5,
        schedule_interval_s: float = 60.0,
        lease: timedelta = LEASE,
    ) -> None:
        self.engine = engine
        self.every = every
        self.chunk = chunk
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.schedule_interval_s = schedule_interval_s
        self.lease = lease
        self._next_schedule = 0.0

    @classmethod
    def from_settings(cls, engine: Engine, settings: ServiceSettings) -> SegmentEvaluator:
        s = settings if isinstance(settings, SegmentationSettings) else SegmentationSettings()
        return cls(
            engine,
            every=timedelta(hours=s.reevaluate_hours),
            chunk=s.evaluation_chunk,
            poll_interval_s=s.evaluation_poll_interval_s,
        )

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if time.monotonic() >= self._next_schedule:
                    self._next_schedule = time.monotonic() + self.schedule_interval_s
                    self.schedule_due()
                claimed = self.claim()
                if claimed is None:
                    stop.wait(self.poll_interval_s)
                else:
                    self.execute(claimed, stop)
            except SQLAlchemyError as exc:
                log.warning(
                    "segment evaluator cannot reach the database", extra={"error_type": type(exc).__name__}
                )
                stop.wait(1.0)

    def run_pending(self) -> int:
        """Run every queued evaluation to its end, one after the other: how many ran. For tests and
        tools; the worker uses `run`."""
        ran = 0
        while (claimed := self.claim()) is not None:
            self.execute(claimed)
            ran += 1
        return ran

    # -- the schedule ------------------------------------------------------------------------------------
    def schedule_due(self) -> int:
        """Queue an evaluation (reason `schedule`) of every time-relative segment whose latest evaluation is
        older than `every` and none is pending; returns how many were queued."""
        now = self.clock()
        evaluation = SegmentEvaluation
        last = (
            sa.select(sa.func.max(evaluation.created_at))
            .where(col(evaluation.segment_id) == col(Segment.id))
            .correlate(Segment)
            .scalar_subquery()
        )
        pending = (
            sa.exists()
            .where(
                col(evaluation.segment_id) == col(Segment.id),
                col(evaluation.status).in_(PENDING_EVALUATION),
            )
            .correlate(Segment)
        )
        queued = 0
        with Session(self.engine) as session:
            due = session.exec(
                select(Segment.id, Segment.tenant_id).where(
                    col(Segment.time_relative).is_(True),
                    sa.not_(pending),
                    sa.or_(last.is_(None), last <= now - self.every),
                )
            ).all()
            for segment_id, tenant_id in due:
                try:
                    _, created = segments.queue_evaluation(
                        session,
                        segment_id=segment_id,
                        tenant_id=tenant_id,
                        reason=segments.Reason.schedule,
                        now=now,
                    )
                except NotFound:
                    continue  # deleted meanwhile
                queued += created
        if queued:
            log.info("time-relative segments queued for evaluation", extra={"segments": queued})
        return queued

    # -- claiming ----------------------------------------------------------------------------------------
    def claim(self) -> Claimed | None:
        """Lease the oldest queued evaluation, or a running one whose lease has expired."""
        now = self.clock()
        evaluation = SegmentEvaluation
        takeable = sa.or_(
            col(evaluation.status) == EvaluationStatus.queued,
            sa.and_(col(evaluation.status) == EvaluationStatus.running, col(evaluation.lease_until) < now),
        )
        with Session(self.engine) as session:
            candidates = session.exec(
                select(evaluation.id).where(takeable).order_by(col(evaluation.created_at)).limit(10)
            ).all()
            for evaluation_id in candidates:
                token = uuid4()
                taken = session.execute(
                    sa.update(evaluation)
                    .where(col(evaluation.id) == evaluation_id, takeable)
                    .values(
                        status=EvaluationStatus.running,
                        lease_owner=token,
                        lease_until=now + self.lease,
                        started_at=sa.func.coalesce(col(evaluation.started_at), now),
                        evaluated_at=sa.func.coalesce(col(evaluation.evaluated_at), now),
                    )
                )
                session.commit()
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    return Claimed(evaluation_id, token)
        return None

    # -- running -----------------------------------------------------------------------------------------
    def execute(self, claimed: Claimed, stop: threading.Event | None = None) -> None:
        """Run a claimed evaluation chunk by chunk until it is done, cancelled, taken over or failed."""
        failures = 0
        while stop is None or not stop.is_set():
            try:
                if not self.step(claimed):
                    return
                failures = 0
            except SQLAlchemyError as exc:
                # A deadlock with a consumer batch, a lost connection: the chunk rolled back; again. If it
                # keeps failing, the lease runs out and another worker (or this one) resumes it later.
                failures += 1
                log.warning(
                    "segment evaluation step failed; trying again",
                    extra={"evaluation_id": str(claimed.evaluation_id), "error_type": type(exc).__name__},
                )
                if failures >= STEP_ATTEMPTS:
                    return
                time.sleep(0.2 * failures)
            except Exception as exc:
                log.exception(
                    "segment evaluation failed", extra={"evaluation_id": str(claimed.evaluation_id)}
                )
                self._fail(claimed, type(exc).__name__)
                return

    def step(self, claimed: Claimed) -> bool:
        """Evaluate the next chunk of profiles and record the progress, in one transaction; False when the
        evaluation is finished or no longer this worker's."""
        with Session(self.engine) as session:
            job = session.get(SegmentEvaluation, claimed.evaluation_id, with_for_update=True)
            if job is None or job.lease_owner != claimed.token or job.status != EvaluationStatus.running:
                return False  # cancelled by a newer rule, deleted with its segment, or taken over
            segment = session.get(Segment, job.segment_id)
            if segment is None:
                return False
            try:
                rule = load_rule(segment.rule)
            except InvalidRule:
                job.status, job.error, job.finished_at = EvaluationStatus.failed, "invalid_rule", self.clock()
                job.lease_owner = job.lease_until = None
                session.add(job)
                session.commit()
                return False
            assert job.evaluated_at is not None
            if job.profiles_total is None:
                job.profiles_total = segments.profile_count(session, segment.tenant_id)
            ids = segments.next_chunk(session, segment.tenant_id, after=job.cursor, size=self.chunk)
            entered, exited = segments.evaluate_range(
                session,
                segment,
                rule,
                now=job.evaluated_at,
                reason=job.reason,
                after=job.cursor,
                upto=ids[-1] if ids else None,  # the last step: what is left, members whose profile is gone
                cid=f"segment-evaluation:{job.id}",
            )
            job.entered += entered
            job.exited += exited
            now = self.clock()
            if ids:
                job.cursor, job.processed = ids[-1], job.processed + len(ids)
                job.lease_until = now + self.lease
            else:
                job.status, job.finished_at = EvaluationStatus.done, now
                job.lease_owner = job.lease_until = None
            session.add(job)
            session.commit()
            if not ids:
                log.info(
                    "segment evaluated",
                    extra={
                        "evaluation_id": str(claimed.evaluation_id),
                        "segment_id": str(segment.id),
                        "reason": job.reason,
                        "profiles": job.processed,
                        "entered": job.entered,
                        "exited": job.exited,
                    },
                )
            return bool(ids)

    def _fail(self, claimed: Claimed, error: str) -> None:
        with Session(self.engine) as session:
            session.execute(
                sa.update(SegmentEvaluation)
                .where(
                    col(SegmentEvaluation.id) == claimed.evaluation_id,
                    col(SegmentEvaluation.lease_owner) == claimed.token,
                )
                .values(
                    status=EvaluationStatus.failed,
                    error=error[:200],
                    finished_at=self.clock(),
                    lease_owner=None,
                    lease_until=None,
                )
            )
            session.commit()


def progress(job: SegmentEvaluation) -> float | None:
    """Share of the tenant's profiles done (0-1); None before it is known."""
    if job.status == EvaluationStatus.done:
        return 1.0
    if not job.profiles_total:
        return None if job.profiles_total is None else 0.0
    return min(1.0, job.processed / job.profiles_total)


def duration_s(job: SegmentEvaluation) -> float | None:
    if job.started_at is None or job.finished_at is None:
        return None
    return round((job.finished_at - job.started_at).total_seconds(), 3)
