"""Webhook delivery: the dispatcher worker, Standard Webhooks signing, and the retry policy.

The queue is `webhook_delivery` in this service's database (rows are added with the changes they announce,
see `webhooks`). `WebhookDispatcher` runs in the service's worker threads:

- **Claiming**: an endpoint with due deliveries is leased to one dispatcher at a time (a lease with an
  owner token and an expiry in `webhook_endpoint`, claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and
  a conditional update everywhere), so one process serves an endpoint at a time. Up to `concurrency`
  endpoints are served at once, each in its own thread: a slow or dead endpoint only ever holds its own
  slot, never the others'. A crashed dispatcher's leases expire and the deliveries it was sending are sent
  again (at-least-once).
- **Lanes**: an endpoint gets up to `parallelism` requests at a time. Deliveries with the same ordering key
  (the profile they are about) share a lane and go one after another, in the order they were made, so news
  about one person arrives in order; `parallelism=1` sends everything to the endpoint in order.
- **Sending**: POST of the stored body with `webhook-id` (the message id, the same for every attempt),
  `webhook-timestamp` (the attempt's time) and `webhook-signature` (``v1,<base64 HMAC-SHA256>`` by the
  `standardwebhooks` package, with every current secret: both during a rotation), through the SSRF-guarded
  client (`ssrf.delivery_client`): redirects are not followed, 15 s timeouts.
- **Outcome**: 2xx delivered. 410 Gone disables the endpoint. Anything else (3xx included, timeouts,
  connection errors) is retried after the next delay of the schedule (Standard Webhooks': 5 s, 5 min,
  30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h; ±10 % jitter), and fails after the last one. A `Retry-After`
  on 429 or 503 (seconds or an HTTP date, capped at `MAX_RETRY_AFTER`) delays that delivery at least that
  long and pauses the whole endpoint until then.
- **Auto-disable**: an endpoint whose every attempt has failed for `disable_after` (default 5 days,
  counted from the first failure after its last success; any 2xx resets it) is disabled with reason
  `failing`; its pending deliveries fail and can be redelivered once it is enabled again.

The dispatcher's `clock` decides what is due (tests inject one and never sleep); the `webhook-timestamp`
is always the real time, since receivers check it against theirs.
"""

from __future__ import annotations

import email.utils
import logging
import random
import secrets as secrets_module
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select
from standardwebhooks import Webhook

from services.segmentation import webhooks
from services.segmentation.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from services.segmentation.settings import DEFAULT_RETRY_SCHEDULE_S, SegmentationSettings
from services.segmentation.ssrf import BlockedAddress, Guard, delivery_client
from shared.db import table_of, utcnow
from shared.metrics import WEBHOOK_DELIVERIES, WEBHOOK_LATENCY
from shared.settings import ServiceSettings

log = logging.getLogger("clientela.webhooks")

Clock = Callable[[], datetime]
MAX_RETRY_AFTER = timedelta(hours=24)
ERROR_PAUSE = timedelta(minutes=1)
JITTER = 0.1
USER_AGENT = "Clientela-Webhooks/1.0"
RESPONSE_BYTES = 64 * 1024  # read at most this much of an answer (the connection is kept if it fits)


# -- policy ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    schedule_s: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_S  # delay before each retry
    timeout_s: float = 15.0
    disable_after: timedelta = timedelta(days=5)
    jitter: float = JITTER

    @property
    def max_attempts(self) -> int:
        return 1 + len(self.schedule_s)


def retry_delay(policy: Policy, attempts: int, rng: random.Random) -> float | None:
    """Seconds to wait after the `attempts`-th failed attempt, with jitter; None when none is left."""
    if attempts < 1 or attempts > len(policy.schedule_s):
        return None
    base = policy.schedule_s[attempts - 1]
    return max(0.0, base * rng.uniform(1 - policy.jitter, 1 + policy.jitter))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After` in seconds (delay-seconds or an HTTP date), at most MAX_RETRY_AFTER; None if absent
    or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(int(value))
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER.total_seconds())


# -- signing -----------------------------------------------------------------------------------------------


def signature(secrets: Sequence[str], message_id: str, at: datetime, payload: bytes) -> str:
    """The `webhook-signature` header: one ``v1,<sig>`` per secret, space-separated."""
    text = payload.decode()
    return " ".join(Webhook(secret).sign(message_id, at, text) for secret in secrets)


def signed_headers(secrets: Sequence[str], message_id: str, payload: bytes, at: datetime) -> dict[str, str]:
    at = at.replace(microsecond=0)
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature(secrets, message_id, at, payload),
    }


_deliveries = table_of(WebhookDelivery)
# A successful attempt (an executemany: one statement for a run of consecutive successes).
_DELIVERED = (
    sa.update(_deliveries)
    .where(_deliveries.c.id == sa.bindparam("b_id"), _deliveries.c.status == DeliveryStatus.pending)
    .values(
        attempts=_deliveries.c.attempts + 1,
        last_attempt_at=sa.bindparam("b_now", type_=_deliveries.c.last_attempt_at.type),
        response_status=sa.bindparam("b_code"),
        latency_ms=sa.bindparam("b_ms"),
        error=None,
        status=DeliveryStatus.delivered,
        delivered_at=sa.bindparam("b_now", type_=_deliveries.c.delivered_at.type),
        next_attempt_at=None,
    )
)


# -- the dispatcher ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    delivery_id: UUID
    endpoint_id: UUID
    url: str
    message_id: str
    payload: bytes
    secrets: list[str] = field(repr=False)
    correlation_id: str | None = None
    ordering_key: str | None = None


def lanes(jobs: Sequence[Job], parallelism: int) -> list[list[Job]]:
    """`jobs` (oldest first) split into at most `parallelism` lanes: the jobs with one ordering key in one
    lane, in their order; a job without a key is a key of its own."""
    queues: dict[int, list[Job]] = {}
    for job in jobs:
        key = job.ordering_key if job.ordering_key is not None else str(job.delivery_id)
        queues.setdefault(zlib.crc32(key.encode()) % parallelism, []).append(job)
    return list(queues.values())


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    latency_ms: int
    error: str | None = None
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _error(exc: Exception) -> str:
    """A short code for a failed request; never the URL or the exception's text."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc.__cause__, BlockedAddress):
        return f"blocked_address:{exc.__cause__.reason}"
    if isinstance(exc, httpx.ConnectError):
        return "connection_failed"
    return type(exc).__name__[:100]


class WebhookDispatcher:
    """Background worker sending the queued webhook deliveries (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        policy: Policy | None = None,
        guard: Guard | None = None,
        client: httpx.Client | None = None,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        concurrency: int = 16,
        parallelism: int = 8,
        batch: int = 100,
        poll_interval_s: float = 0.2,
        retention: timedelta = timedelta(days=30),
    ) -> None:
        self.engine = engine
        self.policy = policy or Policy()
        self.client = client or delivery_client(
            guard or Guard(), timeout_s=self.policy.timeout_s, headers=[("user-agent", USER_AGENT)]
        )
        self.clock = clock
        self.rng = rng or secrets_module.SystemRandom()
        self.concurrency = concurrency
        self.parallelism = parallelism
        self.batch = batch
        self._lane_pool: ThreadPoolExecutor | None = None  # while `run` or `dispatch_due` runs
        self.poll_interval_s = poll_interval_s
        self.retention = retention
        # Longer than one request can take (connect, write, read: each up to the timeout).
        self.lease = timedelta(seconds=4 * self.policy.timeout_s + 30)
        self._next_purge = 0.0
        # httpx logs every request with its full URL at INFO; a webhook URL may carry a token in its query
        # string. Attempts are logged by `record` instead, with ids only.
        logging.getLogger("httpx").setLevel(logging.WARNING)

    @classmethod
    def from_settings(cls, engine: Engine, settings: ServiceSettings) -> WebhookDispatcher:
        s = settings if isinstance(settings, SegmentationSettings) else SegmentationSettings()
        return cls(
            engine,
            policy=Policy(
                schedule_s=s.webhook_retry_schedule_s,
                timeout_s=s.webhook_timeout_s,
                disable_after=timedelta(hours=s.webhook_disable_after_hours),
            ),
            guard=Guard(allow_private=s.webhook_allow_private),
            concurrency=s.webhook_concurrency,
            parallelism=s.webhook_endpoint_parallelism,
            poll_interval_s=s.webhook_poll_interval_s,
            retention=timedelta(days=s.webhook_retention_days),
        )

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        in_flight: dict[Future[int], UUID] = {}
        with (
            ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="webhook") as pool,
            self._lanes(),
            webhooks.DELIVERIES_QUEUED.listening() as queued,
        ):
            while not stop.is_set():
                claimed: list[tuple[UUID, UUID]] = []
                queued.clear()  # from now on, queued deliveries and endpoints served to the end ring again
                for future in [f for f in in_flight if f.done()]:
                    endpoint_id = in_flight.pop(future)
                    if future.exception() is not None:
                        log.error(
                            "webhook endpoint serving failed",
                            extra={
                                "endpoint_id": str(endpoint_id),
                                "error_type": type(future.exception()).__name__,
                            },
                        )
                try:
                    self._purge_now_and_then()
                    free = self.concurrency - len(in_flight)
                    claimed = self.claim(free, exclude=set(in_flight.values())) if free > 0 else []
                except SQLAlchemyError as exc:
                    log.warning(
                        "webhook dispatcher cannot reach the database",
                        extra={"error_type": type(exc).__name__},
                    )
                    stop.wait(1.0)
                for endpoint_id, token in claimed:
                    future = pool.submit(self.serve, endpoint_id, token, stop)
                    future.add_done_callback(lambda _: queued.set())
                    in_flight[future] = endpoint_id
                if not claimed:  # a served endpoint reads its own new deliveries; retries fall due with time
                    queued.wait(self.poll_interval_s)

    def dispatch_due(self) -> int:
        """Serve every endpoint with due deliveries once, concurrently, and wait: how many attempts were
        made. For tests and tools; the worker uses `run`."""
        claimed = self.claim(10_000)
        if not claimed:
            return 0
        never = threading.Event()
        with ThreadPoolExecutor(max_workers=min(len(claimed), self.concurrency)) as pool, self._lanes():
            return sum(pool.map(lambda c: self.serve(c[0], c[1], never), claimed))

    @contextmanager
    def _lanes(self) -> Iterator[None]:
        """The threads that send one endpoint's lanes at once (see `serve`), while the dispatcher runs."""
        if self.parallelism == 1:
            yield
            return
        workers = self.concurrency * self.parallelism
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook-lane") as pool:
            self._lane_pool = pool
            try:
                yield
            finally:
                self._lane_pool = None

    # -- claiming ----------------------------------------------------------------------------------------
    def claim(self, limit: int, *, exclude: set[UUID] | None = None) -> list[tuple[UUID, UUID]]:
        """Lease up to `limit` enabled, unpaused, unleased endpoints with due deliveries (least recently
        served first): a list of (endpoint id, lease token)."""
        now = self.clock()
        endpoint, delivery = WebhookEndpoint, WebhookDelivery
        free = sa.or_(col(endpoint.lease_until).is_(None), col(endpoint.lease_until) < now)
        due = (
            sa.exists()
            .where(
                col(delivery.endpoint_id) == col(endpoint.id),
                col(delivery.status) == DeliveryStatus.pending,
                col(delivery.next_attempt_at) <= now,
            )
            .correlate(endpoint)
        )
        query = (
            select(endpoint.id)
            .where(
                col(endpoint.enabled).is_(True),
                free,
                sa.or_(col(endpoint.paused_until).is_(None), col(endpoint.paused_until) <= now),
                due,
            )
            .order_by(col(endpoint.lease_until).asc().nulls_first())
            .limit(limit)
        )
        if exclude:
            query = query.where(col(endpoint.id).not_in(exclude))
        with Session(self.engine) as session:
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            claimed: list[tuple[UUID, UUID]] = []
            for endpoint_id in session.exec(query).all():
                token = uuid4()
                taken = session.execute(
                    sa.update(endpoint)
                    .where(col(endpoint.id) == endpoint_id, free)
                    .values(lease_owner=token, lease_until=now + self.lease)
                )
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append((endpoint_id, token))
            session.commit()
        return claimed

    def _release(self, endpoint_id: UUID, token: UUID, pause: timedelta | None = None) -> None:
        values: dict[str, object] = {"lease_owner": None, "lease_until": None}
        if pause is not None:
            values["paused_until"] = self.clock() + pause
        with Session(self.engine) as session:
            session.execute(
                sa.update(WebhookEndpoint)
                .where(col(WebhookEndpoint.id) == endpoint_id, col(WebhookEndpoint.lease_owner) == token)
                .values(**values)
            )
            session.commit()

    # -- serving one endpoint ----------------------------------------------------------------------------
    def serve(self, endpoint_id: UUID, token: UUID, stop: threading.Event) -> int:
        """Send the leased endpoint's due deliveries, oldest first (at most `batch`, so that the lease comes
        back to the pool); returns how many attempts were made.

        The oldest due delivery is sent first, alone; once it succeeded, the others are split into up to
        `parallelism` lanes by their ordering key (the profile they are about): a lane is sent one request
        at a time, in order, and the lanes at once, so deliveries about one profile arrive in the order they
        were made while one endpoint still takes many requests at a time. They are read in one transaction
        and the successes recorded in one: a delivery costs one HTTP request, not three round trips to the
        database. Anything but a 2xx is recorded at once, stops every lane after its current request, and
        the rest are read again (the answer may have disabled the endpoint); a `Retry-After` ends the
        turn."""
        attempts = 0
        pause: timedelta | None = None
        try:
            while attempts < self.batch and not stop.is_set():
                jobs = self._next_jobs(endpoint_id, token, self.batch - attempts)
                if not jobs:
                    break
                made, wait_asked = self._send_lanes(jobs, stop)
                attempts += made
                if wait_asked:
                    break  # the endpoint asked us to wait
        except Exception:
            pause = ERROR_PAUSE  # e.g. a secret that no longer opens: not again at once, not in a loop
            raise
        finally:
            self._release(endpoint_id, token, pause)
        return attempts

    def _send_lanes(self, jobs: list[Job], stop: threading.Event) -> tuple[int, bool]:
        """Send `jobs` (see `serve`): how many attempts were made, and whether the endpoint asked to wait."""
        renew_by = time.monotonic() + self.lease.total_seconds() / 2
        halt = threading.Event()  # a failure: the lanes stop after their current request

        def lane(queue: list[Job]) -> tuple[list[tuple[Job, Outcome]], int, bool]:
            delivered: list[tuple[Job, Outcome]] = []
            for job in queue:
                if stop.is_set() or halt.is_set() or time.monotonic() > renew_by:
                    break  # the rest stay due; fetching them again renews the lease
                outcome = self.send(job)
                if outcome.delivered:
                    delivered.append((job, outcome))
                    continue
                halt.set()
                self.record(job, outcome)
                return delivered, len(delivered) + 1, outcome.retry_after is not None
            return delivered, len(delivered), False

        # The oldest goes first, alone: an endpoint that is down, gone or asking to wait gets one request
        # per turn, not one per lane.
        results = [lane(jobs[:1])]
        if results[0][0] and len(jobs) > 1:
            queues = lanes(jobs[1:], self.parallelism)
            pool = self._lane_pool
            if pool is not None and len(queues) > 1:
                results += pool.map(lane, queues)
            else:
                results += [lane(q) for q in queues]
        self._record_delivered([done for delivered, _, _ in results for done in delivered])
        return sum(made for _, made, _ in results), any(wait for _, _, wait in results)

    def _next_jobs(self, endpoint_id: UUID, token: UUID, limit: int) -> list[Job]:
        """Up to `limit` of the leased endpoint's due deliveries, oldest first (the lease renewed)."""
        now = self.clock()
        with Session(self.engine) as session:
            endpoint = session.get(WebhookEndpoint, endpoint_id)
            if endpoint is None or endpoint.lease_owner != token or not endpoint.enabled:
                return []
            if endpoint.paused_until is not None and endpoint.paused_until > now:
                return []
            due = session.exec(
                select(WebhookDelivery)
                .where(
                    WebhookDelivery.endpoint_id == endpoint_id,
                    WebhookDelivery.status == DeliveryStatus.pending,
                    col(WebhookDelivery.next_attempt_at) <= now,
                )
                .order_by(col(WebhookDelivery.created_at), col(WebhookDelivery.id))
                .limit(limit)
            ).all()
            if not due:
                return []
            endpoint.lease_until = now + self.lease
            session.add(endpoint)
            secrets = webhooks.signing_secrets(endpoint, now)
            jobs = [
                Job(
                    delivery_id=delivery.id,
                    endpoint_id=endpoint_id,
                    url=endpoint.url,
                    message_id=delivery.message_id,
                    payload=delivery.payload,
                    secrets=secrets,
                    correlation_id=delivery.correlation_id,
                    ordering_key=delivery.ordering_key,
                )
                for delivery in due
            ]
            session.commit()
            return jobs

    def _record_delivered(self, done: list[tuple[Job, Outcome]]) -> None:
        """Record consecutive successful attempts in one transaction (see `record` for the general case)."""
        if not done:
            return
        now = self.clock()
        with self.engine.begin() as connection:
            connection.execute(
                _DELIVERED,
                [
                    {
                        "b_id": job.delivery_id,
                        "b_code": outcome.status_code,
                        "b_ms": outcome.latency_ms,
                        "b_now": now,
                    }
                    for job, outcome in done
                ],
            )
            connection.execute(
                sa.update(WebhookEndpoint)
                .where(col(WebhookEndpoint.id) == done[0][0].endpoint_id)
                .values(failing_since=None)
            )
        for job, outcome in done:
            log.info(
                "webhook attempt",
                extra={**self._ids(job), "status": outcome.status_code, "latency_ms": outcome.latency_ms},
            )

    def send(self, job: Job) -> Outcome:
        """One attempt: POST the signed body; the answer's status, or the failure's short code."""
        outcome = self._send(job)
        label = "delivered" if outcome.delivered else "failed"
        WEBHOOK_DELIVERIES.labels(label).inc()
        WEBHOOK_LATENCY.labels(label).observe(outcome.latency_ms / 1000)
        return outcome

    def _send(self, job: Job) -> Outcome:
        headers = signed_headers(job.secrets, job.message_id, job.payload, datetime.now(UTC))
        started = time.perf_counter()
        try:
            with self.client.stream("POST", job.url, content=job.payload, headers=headers) as response:
                latency_ms = round((time.perf_counter() - started) * 1000)
                self._drain(response)
                retry_after = None
                if response.status_code in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock())
                error = "redirect_not_followed" if 300 <= response.status_code < 400 else None
                return Outcome(response.status_code, latency_ms, error, retry_after)
        except Exception as exc:  # every failure is an attempt to record, whatever raised it
            latency_ms = round((time.perf_counter() - started) * 1000)
            if not isinstance(exc, httpx.HTTPError):
                log.warning("webhook attempt failed unexpectedly", extra={"error_type": type(exc).__name__})
            return Outcome(None, latency_ms, _error(exc))

    @staticmethod
    def _drain(response: httpx.Response) -> None:
        """Read (and drop) a little of the answer's body, so that its connection can serve the endpoint's
        next delivery; the status is what counts, whatever happens to the body."""
        read = 0
        try:
            for chunk in response.iter_raw():
                read += len(chunk)
                if read > RESPONSE_BYTES:
                    return
        except httpx.HTTPError:
            return

    def record(self, job: Job, outcome: Outcome) -> None:
        """Write an attempt's result and schedule what follows (retry, failure, disabling)."""
        now = self.clock()
        with Session(self.engine) as session:
            endpoint = session.get(WebhookEndpoint, job.endpoint_id, with_for_update=True)
            delivery = session.get(WebhookDelivery, job.delivery_id, with_for_update=True)
            if delivery is None:
                return  # deleted with its endpoint meanwhile
            delivery.attempts += 1
            delivery.last_attempt_at = now
            delivery.response_status = outcome.status_code
            delivery.latency_ms = outcome.latency_ms
            delivery.error = outcome.error
            if outcome.delivered:
                delivery.status, delivery.delivered_at, delivery.next_attempt_at = (
                    DeliveryStatus.delivered,
                    now,
                    None,
                )
                if endpoint is not None:
                    endpoint.failing_since = None
            elif delivery.status != DeliveryStatus.pending:
                pass  # failed meanwhile (the endpoint was disabled): nothing more to schedule
            elif outcome.status_code == 410:
                delivery.status, delivery.next_attempt_at = DeliveryStatus.failed, None
                if endpoint is not None and endpoint.enabled:
                    webhooks.disable(session, endpoint, webhooks.DisabledReason.gone, now)
                    log.warning("webhook endpoint answered 410 Gone: disabled", extra=self._ids(job))
            else:
                self._schedule_retry(session, delivery, endpoint, outcome, now)
            session.add(delivery)
            if endpoint is not None:
                session.add(endpoint)
            attempt = {
                **self._ids(job),
                "attempt": delivery.attempts,
                "status": outcome.status_code,
                "error": outcome.error,
                "latency_ms": outcome.latency_ms,
                "delivery_status": delivery.status,
            }
            session.commit()
        if attempt["delivery_status"] == DeliveryStatus.failed:
            WEBHOOK_DELIVERIES.labels("exhausted").inc()
        log.info("webhook attempt", extra=attempt)

    def _schedule_retry(
        self,
        session: Session,
        delivery: WebhookDelivery,
        endpoint: WebhookEndpoint | None,
        outcome: Outcome,
        now: datetime,
    ) -> None:
        delay = retry_delay(self.policy, delivery.attempts, self.rng)
        if delay is not None and outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        if delay is None:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.failed, None
        else:
            delivery.next_attempt_at = now + timedelta(seconds=delay)
        if endpoint is None:
            return
        if outcome.retry_after is not None:
            endpoint.paused_until = now + timedelta(seconds=outcome.retry_after)
        endpoint.failing_since = endpoint.failing_since or now
        if endpoint.enabled and now - endpoint.failing_since >= self.policy.disable_after:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.failed, None
            webhooks.disable(session, endpoint, webhooks.DisabledReason.failing, now)
            log.warning(
                "webhook endpoint failing for too long: disabled", extra={"endpoint_id": str(endpoint.id)}
            )

    @staticmethod
    def _ids(job: Job) -> dict[str, str]:
        ids = {"endpoint_id": str(job.endpoint_id), "delivery_id": str(job.delivery_id)}
        if job.correlation_id is not None:
            ids["correlation_id"] = job.correlation_id
        return ids

    # -- housekeeping ------------------------------------------------------------------------------------
    def _purge_now_and_then(self) -> None:
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + 3600
        self.purge()

    def purge(self) -> int:
        """Delete finished deliveries older than the retention period; returns how many."""
        cutoff = self.clock() - self.retention
        with Session(self.engine) as session:
            result = session.execute(
                sa.delete(WebhookDelivery).where(
                    col(WebhookDelivery.status).in_([DeliveryStatus.delivered, DeliveryStatus.failed]),
                    col(WebhookDelivery.created_at) < cutoff,
                )
            )
            session.commit()
        return int(result.rowcount)  # type: ignore[attr-defined]
