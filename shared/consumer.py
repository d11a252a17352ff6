"""Idempotent Kafka consumer: effects and processed-event ids commit in one DB transaction, then offsets.

A poll's records are applied in one transaction. A batch that met another member's concurrent write (a
row it inserts too, or a deadlock) is applied again, whole. If it fails otherwise, it is applied in halves,
and a failing half in halves again, down to single records, each retried alone (bounded); a record that
still fails goes to the service's dead-letter topic with its origin in the headers; the partition keeps
flowing.
"""

from __future__ import annotations

import gc
import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol
from uuid import UUID

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from shared.db import any_of, bulk_insert, is_deadlock, utcnow
from shared.errors import safe_loc
from shared.events import Envelope, Event, decode
from shared.infra import ProcessedEvent
from shared.kafka import make_consumer, make_producer
from shared.logs import correlation_id_var, event_id_var, tenant_id_var
from shared.metrics import CONSUMER_LAG, DEAD_LETTERS, EVENTS_CONSUMED
from shared.outbox import close_quietly
from shared.settings import ServiceSettings
from shared.topics import Topic

log = logging.getLogger("clientela.consumer")

Handler = Callable[[Session, Envelope, Any], None]
LAG_EVERY_S = 5.0  # how often a consumer refreshes its lag gauges
# A rebalance costs one failed commit: the next poll rejoins the group. More failures in a row mean the
# client believes it is a member while the group no longer knows it (seen with kafka-python 3.0.12 on a
# saturated machine: the broker had dropped the member and the then empty group, no heartbeat error was
# logged, and every later commit failed locally while fetching went on for 20 minutes). It then leaves and
# joins again as a new consumer.
MAX_COMMIT_FAILURES = 3
# The same client can also lose its heartbeat while it believes it is a stable member (its heartbeat task
# disabled, seen in about one 100,000-order pipeline run in four: the privacy consumer, idle, was dropped by
# the broker and still polling). `poll` then no longer waits: every call asks for the next heartbeat at once
# and spins until its timeout, about 70 ms of CPU for each 200 ms poll against 0.4 ms when healthy, and the
# spinning thread and its network thread took 40 s of the profile service's CPU in that run. An empty poll
# that used SPIN_CPU_S of its thread's CPU is followed by a pause; after SPIN_REJOIN_S of them in a row (a
# session timeout: the broker has dropped a member that sends no heartbeat by then) the consumer leaves and
# joins again.
SPIN_CPU_S = 0.02
SPIN_PAUSE_S = 0.5
SPIN_REJOIN_S = 10.0


class SpinWatch:
    """Tells, after each poll, whether the consumer is spinning (see SPIN_CPU_S): "ok", "pause" or
    "rejoin". A spinning client's polls are not all expensive (about one in five waited on a fetch in a
    reproduction), so only records or five cheap idle polls in a row end a spell of spinning."""

    HEALTHY_POLLS = 5

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.since: float | None = None  # when the spell began
        self.cheap = 0

    def after_poll(self, cpu_seconds: float, *, records: bool) -> str:
        if records:
            self.since, self.cheap = None, 0
            return "ok"
        if cpu_seconds < SPIN_CPU_S:
            self.cheap += 1
            if self.cheap >= self.HEALTHY_POLLS:
                self.since = None
            return "ok"
        self.cheap = 0
        now = self.clock()
        if self.since is None:
            self.since = now
        if now - self.since < SPIN_REJOIN_S:
            return "pause"
        self.since = None
        return "rejoin"


class BatchHooks(Protocol):
    """Per-transaction work around the handlers: load what the whole batch needs in a few queries
    (`prepare`), and do once per batch what would otherwise be done per event (`finish`)."""

    def prepare(
        self, session: Session, events: list[tuple[Envelope, Event]], *, may_defer: bool = False
    ) -> Collection[UUID] | None:
        """Load what the batch needs. With `may_defer`, it may name events (their ids) to leave for a
        transaction of their own after this one commits (another member of the group is writing their
        records now): the consumer applies those then, with `may_defer` false (waiting for them)."""

    def finish(self, session: Session) -> None: ...

    def after_commit(self, session: Session) -> None:
        """After the batch's transaction committed: the session is free for work of its own (committed
        by the hook), which sees what other transactions committed meanwhile."""


# Failures of the infrastructure, not of the record: never dead-letter for these, reconnect and redeliver.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    KafkaError,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)


# A batch that met another member's concurrent write is applied again this many times (`handle`). After
# that a deadlock is treated as any database error (the consumer reconnects, the batch is delivered again),
# a unique violation as the records' own (each is tried alone).
CONFLICT_RETRIES = 5


def describe_error(exc: BaseException) -> str:
    """A description of a processing error that quotes no record data (no personal data in headers/logs)."""
    if isinstance(exc, ValidationError):
        fields = sorted(
            {".".join(safe_loc(err["loc"], err["type"])) + ":" + err["type"] for err in exc.errors()}
        )
        return f"ValidationError: {', '.join(fields)}"[:1000]
    return type(exc).__name__


_paused_lock = threading.Lock()
_paused_by = 0  # batches being applied (in any thread) that paused the collector
_paused_from_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is applied (in any of the process's consumer threads):
    a batch's thousands of ORM objects, rows and events all live until it commits, and the collector
    traced them again and again (12 % of the profile consumer's samples at polls of 5,000, after
    `shared.web.tune_gc`). What the batch leaves behind is collected once it is over: the collector is
    switched back on when the last paused batch ends."""
    global _paused_by, _paused_from_enabled
    with _paused_lock:
        if _paused_by == 0:
            _paused_from_enabled = gc.isenabled()
            gc.disable()
        _paused_by += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused_by -= 1
            if _paused_by == 0 and _paused_from_enabled:
                gc.enable()


class ConsumerWorker:
    def __init__(
        self,
        *,
        name: str,
        engine: Engine,
        settings: ServiceSettings,
        topics: Sequence[Topic],
        handlers: Mapping[type[Event], Handler],
        dead_letter: Topic | None,
        hooks: BatchHooks | None = None,
    ) -> None:
        self.name = name
        self.hooks = hooks
        self.engine = engine
        self.settings = settings
        self.topics = [t.full(settings.topic_prefix) for t in topics]
        self.handlers = dict(handlers)
        self.dead_letter = dead_letter.full(settings.topic_prefix) if dead_letter else None
        self.group_id = f"{settings.consumer_group_prefix}.{settings.service_name}.{name}"
        self.applied_total = 0
        self.dead_lettered_total = 0
        self._lag_labels: set[tuple[str, str, str, str]] = set()

    # -- processing ------------------------------------------------------------------------------
    def apply(
        self, values: Sequence[bytes], topics: Sequence[str] | None = None, *, may_defer: bool | None = None
    ) -> int:
        """Apply raw messages in one transaction; return how many were new (not already processed).
        `topics`: each message's topic, for the metrics (counted once the transaction committed). With
        `may_defer` (by default `consumer_defer_busy`), those the batch hooks defer (`BatchHooks.prepare`)
        are applied in a transaction of their own after it."""
        if may_defer is None:
            may_defer = self.settings.consumer_defer_busy
        envelopes = [Envelope.from_bytes(v) for v in values]
        outcomes: list[str] = []
        later: Collection[UUID] = ()
        with collector_paused(), Session(self.engine) as session:
            ids = {e.event_id for e in envelopes}
            done = set(
                session.exec(
                    select(ProcessedEvent.event_id).where(
                        ProcessedEvent.consumer == self.name,
                        any_of(session, col(ProcessedEvent.event_id), ids),
                    )
                ).all()
            )
            fresh: list[tuple[Envelope, Event | None]] = []
            processed: list[dict[str, Any]] = []
            now = utcnow()
            for envelope in envelopes:
                if envelope.event_id in done:
                    outcomes.append("duplicate")
                    continue
                outcomes.append("applied")
                done.add(envelope.event_id)
                fresh.append((envelope, decode(envelope)))
            if self.hooks is not None:
                events = [(e, ev) for e, ev in fresh if ev is not None]
                named = self.hooks.prepare(session, events, may_defer=may_defer)
                later = (named or ()) if may_defer else ()  # never deferred twice
            for envelope, event in fresh:
                if envelope.event_id in later:
                    continue
                handler = self.handlers.get(type(event)) if event is not None else None
                if handler is not None:
                    event_token = event_id_var.set(str(envelope.event_id))
                    tenant_token = tenant_id_var.set(str(envelope.tenant_id))
                    correlation_token = correlation_id_var.set(envelope.correlation_id)
                    try:
                        handler(session, envelope, event)
                    finally:
                        event_id_var.reset(event_token)
                        tenant_id_var.reset(tenant_token)
                        correlation_id_var.reset(correlation_token)
                processed.append({"consumer": self.name, "event_id": envelope.event_id, "processed_at": now})
            if self.hooks is not None:
                self.hooks.finish(session)
            # One statement for the batch, in its transaction (no ORM object per event).
            bulk_insert(session, ProcessedEvent, processed)
            session.commit()
            if self.hooks is not None:
                self._after_commit(session, self.hooks)
        applied = len(processed)
        self.applied_total += applied
        service = self.settings.service_name
        labels = topics or ["unknown"] * len(outcomes)
        for topic, outcome, envelope in zip(labels, outcomes, envelopes, strict=True):
            if outcome != "applied" or envelope.event_id not in later:  # a deferred one: counted when applied
                EVENTS_CONSUMED.labels(service, self.name, topic, outcome).inc()
        if later:
            rest = [
                i
                for i, (envelope, outcome) in enumerate(zip(envelopes, outcomes, strict=True))
                if outcome == "applied" and envelope.event_id in later
            ]
            log.info("events another member is writing applied after the batch", extra={"events": len(rest)})
            applied += self.apply(
                [values[i] for i in rest],
                [labels[i] for i in rest],
                may_defer=False,
            )
        return applied

    def _after_commit(self, session: Session, hooks: BatchHooks) -> None:
        """The hooks' work after the batch committed. The batch stays applied whatever happens to it: an
        infrastructure error still raises (the consumer reconnects; the events come again and are found
        processed), any other is logged."""
        try:
            hooks.after_commit(session)
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            session.rollback()
            log.error("work after the batch's commit failed", extra={"error": describe_error(exc)})

    def handle(self, records: Sequence[Any], dlq_producer: Callable[[], KafkaProducer]) -> None:
        failure = self._apply_all(records, deadlocks=True)
        for attempt in range(1, CONFLICT_RETRIES + 1):
            # Another member of the group wrote what this batch writes too: it inserted a row the batch
            # inserts (the profile of an identifier both saw), or locked rows the batch locks in the other
            # order and PostgreSQL rolled this one back (a deadlock). Applied again, whole, after a pause of
            # random length (the two do not meet again in step), the batch finds the other's rows and uses
            # them. Only a failure that outlasts the retries is the records' own.
            if isinstance(failure, sa_exc.IntegrityError) and len(records) > 1:
                log.info("batch met a concurrent write; retrying it", extra={"attempt": attempt})
            elif is_deadlock(failure):
                log.info("batch deadlocked with a concurrent one; retrying it", extra={"attempt": attempt})
            else:
                break
            time.sleep(random.uniform(0.01, 0.05) * attempt)  # noqa: S311 - spreading retries, not security
            failure = self._apply_all(records, deadlocks=True)
        if is_deadlock(failure):
            raise failure  # still: as any error of the database, the consumer reconnects and redelivers
        if failure is None:
            return
        if len(records) > 1:
            log.warning("batch failed; applying it in halves", extra={"error": describe_error(failure)})
        self._in_halves(records, dlq_producer)

    def _in_halves(self, records: Sequence[Any], dlq_producer: Callable[[], KafkaProducer]) -> None:
        """One bad record must not block the others: the records of a failed batch are applied in halves, in
        order, and a half that fails in halves again, down to single records, each tried a few times and
        then dead-lettered. A bad record among 5,000 costs some 25 transactions, not 5,000."""
        if len(records) == 1:
            (record,) = records
            error: Exception | None = None
            for attempt in range(self.settings.consumer_max_attempts):
                error = self._apply_all([record])
                if error is None:
                    return
                time.sleep(0.05 * (attempt + 1))
            if error is not None:
                self._dead_letter(record, error, dlq_producer())
            return
        half = len(records) // 2
        for part in (records[:half], records[half:]):
            if len(part) == 1 or self._apply_all(part, deadlocks=True) is not None:
                self._in_halves(part, dlq_producer)

    def _apply_all(self, records: Sequence[Any], *, deadlocks: bool = False) -> Exception | None:
        """Apply the records in one transaction; the error if that failed (infrastructure errors raise;
        a deadlock is returned when `deadlocks`, the caller applies the batch again)."""
        try:
            self.apply([r.value for r in records], [r.topic for r in records])
        except TRANSIENT_ERRORS as exc:
            if deadlocks and is_deadlock(exc):
                return exc
            raise
        except Exception as exc:
            return exc
        return None

    def _dead_letter(self, record: Any, error: BaseException, producer: KafkaProducer) -> None:
        description = describe_error(error)
        log.error(
            "record dead-lettered",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": description,
            },
        )
        if self.dead_letter is None:
            raise RuntimeError("no dead-letter topic configured") from error
        headers = [
            ("dlq.original.topic", record.topic.encode()),
            ("dlq.original.partition", str(record.partition).encode()),
            ("dlq.original.offset", str(record.offset).encode()),
            ("dlq.consumer", self.group_id.encode()),
            ("dlq.error", description.encode()),
        ]
        producer.send(self.dead_letter, key=record.key, value=record.value, headers=headers).get(timeout=30)
        self.dead_lettered_total += 1
        DEAD_LETTERS.labels(self.settings.service_name, self.name, record.topic).inc()

    def measure_lag(self, consumer: KafkaConsumer) -> None:
        """Set `clientela_consumer_lag` for the assigned partitions (high-water mark minus position), and
        drop the partitions no longer assigned."""
        service, seen = self.settings.service_name, set()
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue  # no fetch answer yet
            position = consumer.position(tp, timeout_ms=0)
            if position is None:
                continue
            labels = (service, self.name, tp.topic, str(tp.partition))
            CONSUMER_LAG.labels(*labels).set(max(highwater - position, 0))
            seen.add(labels)
        for gone in self._lag_labels - seen:
            CONSUMER_LAG.remove(*gone)
        self._lag_labels = seen

    # -- loop ------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        consumer: KafkaConsumer | None = None
        producer: KafkaProducer | None = None

        def dlq_producer() -> KafkaProducer:
            nonlocal producer
            if producer is None:
                producer = make_producer(self.settings)
            return producer

        lag_measured = 0.0
        commit_failures = 0
        spin = SpinWatch()

        def rejoin(why: str) -> None:
            """Leave the group (the client's state is not to be trusted) for a new consumer to join it."""
            nonlocal consumer, commit_failures
            log.warning(why, extra={"group": self.group_id})
            if consumer is not None:
                consumer.close(autocommit=False)
            consumer, commit_failures = None, 0

        try:
            while not stop.is_set():
                try:
                    if consumer is None:
                        consumer = make_consumer(self.settings, self.group_id, self.topics)
                    started = time.thread_time()
                    polled = consumer.poll(timeout_ms=200)
                    records = [r for partition_records in polled.values() for r in partition_records]
                    verdict = spin.after_poll(time.thread_time() - started, records=bool(records))
                    if time.monotonic() - lag_measured >= LAG_EVERY_S:
                        lag_measured = time.monotonic()
                        self.measure_lag(consumer)
                    if not records:
                        if verdict == "pause":
                            stop.wait(SPIN_PAUSE_S)
                        elif verdict == "rejoin":
                            rejoin("idle polls keep using the CPU; joining the group again")
                        continue
                    self.handle(records, dlq_producer)
                    consumer.commit()
                    commit_failures = 0
                except (
                    CommitFailedError,
                    RebalanceInProgressError,
                    IllegalGenerationError,
                    UnknownMemberIdError,
                ) as exc:
                    # The group rebalanced: these records will be redelivered and skipped as processed.
                    commit_failures += 1
                    log.warning(
                        "offset commit failed after rebalance",
                        extra={
                            "group": self.group_id,
                            "error_type": type(exc).__name__,
                            "failures_in_a_row": commit_failures,
                        },
                    )
                    if commit_failures >= MAX_COMMIT_FAILURES and consumer is not None:
                        rejoin("commits keep failing; joining the group again")
                except (KafkaError, SQLAlchemyError) as exc:
                    log.warning(
                        "consumer error; reconnecting",
                        extra={"group": self.group_id, "error_type": type(exc).__name__},
                    )
                    if consumer is not None:
                        consumer.close(autocommit=False)
                        consumer = None
                    stop.wait(1.0)
        finally:  # closed here whatever ends the loop, never left to the garbage collector
            if consumer is not None:
                consumer.close(autocommit=False)
            if producer is not None:
                close_quietly(producer, timeout=5)


def consumer_workers(
    engine: Engine,
    settings: ServiceSettings,
    *,
    dead_letter: Topic,
    consumers: Mapping[str, tuple[Sequence[Topic], Mapping[type[Event], Handler]]],
    hooks: Mapping[str, BatchHooks] | None = None,
) -> list[tuple[str, ConsumerWorker]]:
    """A `ConsumerWorker` (thread `<service>-<name>`) per entry of `consumers`: name → (topics, handlers).
    Few consumers with several topics each keep the number of Kafka clients (and their threads) low."""
    return [
        (
            f"{settings.service_name}-{name}",
            ConsumerWorker(
                name=name,
                engine=engine,
                settings=settings,
                topics=topics,
                handlers=handlers,
                dead_letter=dead_letter,
                hooks=(hooks or {}).get(name),
            ),
        )
        for name, (topics, handlers) in consumers.items()
    ]
