"""The ops commands of the `clientela` CLI against the real Kafka and PostgreSQL: tenants and keys through
ingest's API, dead-letter replay, outbox re-publication, webhook redelivery and the traits refresh.

The services run in-process (TestClient); `cli.ops.client_for` is pointed at them, so the commands' HTTP
calls reach the very apps the fixtures started. Commands that work on a database or a topic directly get
the test's database URLs and topic prefix through the environment, as an operator would give them."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from typer.testing import CliRunner, Result

from cli import ops
from cli.main import app
from services.profile.consumer import workers as profile_workers
from services.profile.models import Profile, TraitsRefresh
from services.segmentation.app import create_app as create_segmentation
from services.segmentation.delivery import Policy, WebhookDispatcher
from services.segmentation.settings import SegmentationSettings
from services.segmentation.ssrf import Guard
from shared.consumer import ConsumerWorker
from shared.db import make_engine, utcnow
from shared.events import Envelope, OrderIngested, TenantCreated
from shared.infra import OutboxMessage
from shared.kafka import make_producer
from shared.outbox import OutboxRelay, add_event
from shared.records import Order
from shared.topics import ORDERS, PROFILE_DLQ, TENANTS
from shared.web import WorkerThreads
from tests.support import (
    ADMIN_TOKEN,
    KAFKA,
    FakeClock,
    SettingsFactory,
    Stack,
    add_tenant,
    auth,
    eventually,
    order_body,
)

pytestmark = pytest.mark.integration

INGEST_URL = "http://ingest.cli-test"
PROFILE_URL = "http://profile.cli-test"
SEGMENTATION_URL = "http://segmentation.cli-test"
# Every variable a command reads a secret or an address from, unset unless a test sets it.
CLEAN_ENV: dict[str, str | None] = {
    "COLUMNS": "200",
    "CLIENTELA_ADMIN_TOKEN": None,
    "CLIENTELA_API_KEY": None,
    "CLIENTELA_INGEST_URL": INGEST_URL,
    "CLIENTELA_PROFILE_URL": PROFILE_URL,
    "CLIENTELA_SEGMENTATION_URL": SEGMENTATION_URL,
}


def clientela(*args: str, env: Mapping[str, str | None] | None = None, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env={**CLEAN_ENV, **(env or {})}, input=input)


@pytest.fixture
def route_http(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, TestClient]], None]:
    """Send the CLI's HTTP calls for each base URL to an app in this process."""

    def route(clients: dict[str, TestClient]) -> None:
        monkeypatch.setattr(ops, "client_for", lambda url: nullcontext(clients[url]))

    return route


def read_topic(topic: str, *, expect: int) -> list[tuple[bytes | None, bytes]]:
    """(key, value) of every message on `topic`, from the start; a short extra poll reports duplicates."""
    consumer = KafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        found: list[tuple[bytes | None, bytes]] = []
        for _ in range(50):
            for records in consumer.poll(timeout_ms=200).values():
                found.extend((r.key, r.value) for r in records)
            if len(found) >= expect:
                break
        for records in consumer.poll(timeout_ms=500).values():
            found.extend((r.key, r.value) for r in records)
        return found
    finally:
        consumer.close()


def order_event(tenant_id: UUID, external_id: str, email: str, total: str = "100.00") -> bytes:
    order = Order.model_validate(order_body(external_id, email, total))
    return OrderIngested(order_id=uuid4(), order_version=1, order=order).envelope(tenant_id).to_bytes()


# -- tenants and keys --------------------------------------------------------------------------------------


def _key_ids(stack: Stack, key: str, name: str) -> list[tuple[str, str]]:
    """(id, status) of the tenant's keys called `name`, oldest first."""
    items = stack.ingest.get("/v1/api-keys", headers=auth(key)).json()["items"]
    return [(k["id"], k["status"]) for k in items if k["name"] == name]


def _post_order(stack: Stack, key: str, external_id: str) -> int:
    body = order_body(external_id, f"{external_id.lower()}@example.com", "10.00")
    return stack.ingest.post("/v1/orders", json=body, headers=auth(key)).status_code


def test_tenants_and_keys_are_managed_through_the_ingest_api(
    stack: Stack, clean_databases: dict[str, str], route_http: Callable[[dict[str, TestClient]], None]
) -> None:
    route_http({INGEST_URL: stack.ingest})
    admin = {"CLIENTELA_ADMIN_TOKEN": ADMIN_TOKEN}

    missing = clientela("tenants", "create", "Loja CLI")
    assert missing.exit_code == 1
    assert "CLIENTELA_ADMIN_TOKEN" in missing.output
    wrong = clientela("tenants", "create", "Loja CLI", env={"CLIENTELA_ADMIN_TOKEN": "not-the-token"})
    assert wrong.exit_code == 1
    assert "401" in wrong.output

    created = clientela("tenants", "create", "Loja CLI", env=admin)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("clt_")
    assert key not in created.stderr  # shown once, alone on standard output
    assert stack.ingest.get("/v1/api-keys", headers=auth(key)).status_code == 200
    [(default_id, _)] = _key_ids(stack, key, "default")

    listed = clientela("tenants", "list", env={"INGEST_DATABASE_URL": clean_databases["ingest"]})
    assert listed.exit_code == 0, listed.output
    [row] = [line for line in listed.stdout.splitlines() if "Loja CLI" in line]
    assert row.split("│")[-2].strip() == "1"  # one active key
    assert key not in listed.output

    tenant = {"CLIENTELA_API_KEY": key}
    issued = clientela(
        "keys", "issue", "--name", "ERP", "--scope", "ingest:write", "--scope", "profiles:read", env=tenant
    )
    assert issued.exit_code == 0, issued.output
    erp = issued.stdout.strip()
    assert erp.startswith("clt_")
    assert erp != key
    assert _post_order(stack, erp, "ERP-1") == 202  # it works, with the scopes it was given...
    assert stack.ingest.get("/v1/api-keys", headers=auth(erp)).status_code == 403  # ...and only those
    [(erp_id, status)] = _key_ids(stack, key, "ERP")
    assert status == "active"

    keys = clientela("keys", "list", env=tenant)
    assert keys.exit_code == 0, keys.output
    assert erp_id in keys.stdout
    assert erp[:12] in keys.stdout  # the prefix, to recognise it
    assert "ingest:write profiles:read" in keys.stdout
    for secret in (key, erp):
        assert secret not in keys.output

    rotated = clientela("keys", "rotate", erp_id, "--grace-seconds", "0", env=tenant)
    assert rotated.exit_code == 0, rotated.output
    erp2 = rotated.stdout.strip()
    assert erp2.startswith("clt_")
    assert erp2 not in {erp, key}
    assert _post_order(stack, erp2, "ERP-2") == 202
    assert _post_order(stack, erp, "ERP-3") == 401  # no grace: the old key has expired
    (old_id, old_status), (erp2_id, new_status) = _key_ids(stack, key, "ERP")
    assert (old_id, old_status, new_status) == (erp_id, "expired", "active")

    refused = clientela("keys", "revoke", erp2_id, env=tenant, input="n\n")
    assert refused.exit_code == 1
    assert _post_order(stack, erp2, "ERP-4") == 202  # not revoked
    revoked = clientela("keys", "revoke", erp2_id, "--yes", env=tenant)
    assert revoked.exit_code == 0, revoked.output
    assert _post_order(stack, erp2, "ERP-5") == 401
    assert _key_ids(stack, key, "ERP")[-1] == (erp2_id, "revoked")

    lockout = clientela("keys", "revoke", default_id, "--yes", env=tenant)  # its last keys:manage key
    assert lockout.exit_code == 1
    assert "409" in lockout.output
    assert "keys:manage" in lockout.output
    assert stack.ingest.get("/v1/api-keys", headers=auth(key)).status_code == 200

    bad_scope = clientela("keys", "issue", "--name", "X", "--scope", "everything", env=tenant)
    assert bad_scope.exit_code == 2
    no_key = clientela("keys", "list")
    assert no_key.exit_code == 1
    assert "CLIENTELA_API_KEY" in no_key.output


# -- dead letters ------------------------------------------------------------------------------------------


def test_dead_letters_are_replayed_to_their_topic_once(make_settings: SettingsFactory) -> None:
    settings = make_settings("profile")
    prefix = settings.topic_prefix
    orders, dead_letters = ORDERS.full(prefix), PROFILE_DLQ.full(prefix)
    tenant_id = uuid4()
    letters = [
        (f"key-{i}".encode(), order_event(tenant_id, f"D-{i}", f"pessoa{i}@example.com")) for i in range(3)
    ]
    producer = make_producer(settings)
    try:
        for offset, (key, value) in enumerate(letters):
            headers = [
                ("dlq.original.topic", orders.encode()),
                ("dlq.original.partition", b"0"),
                ("dlq.original.offset", str(offset).encode()),
                ("dlq.consumer", f"{settings.consumer_group_prefix}.profile.records".encode()),
                ("dlq.error", b"OperationalError"),
            ]
            producer.send(dead_letters, key=key, value=value, headers=headers).get(timeout=10)
    finally:
        producer.close()
    env = {
        "CLIENTELA_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "CLIENTELA_CONSUMER_GROUP_PREFIX": settings.consumer_group_prefix,
    }

    def replay(*extra: str) -> Result:
        return clientela("dlq", "replay", "--service", "profile", "--topic-prefix", prefix, *extra, env=env)

    dry = replay("--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would replay 3" in dry.output
    assert orders in dry.output
    assert read_topic(orders, expect=0) == []  # a dry run produces nothing...

    first = replay("--limit", "2")  # ...and commits nothing: everything is still to replay
    assert first.exit_code == 0, first.output
    assert "replayed 2" in first.output
    rest = replay()
    assert rest.exit_code == 0, rest.output
    assert "replayed 1" in rest.output
    again = replay()
    assert again.exit_code == 0, again.output
    assert "nothing to replay" in again.output

    assert sorted(read_topic(orders, expect=3)) == sorted(letters)  # same keys and values, once each
    for person in (b"pessoa0@example.com", b"pessoa1", b"pessoa2"):
        assert person not in (dry.stdout_bytes + first.stdout_bytes + rest.stdout_bytes)

    # The profile service's consumer takes the replayed orders as it would have the first time.
    engine = make_engine(settings.database_url)
    worker = dict(profile_workers(engine, settings))["profile-records"]
    assert isinstance(worker, ConsumerWorker)
    threads = WorkerThreads([("records", worker)])
    threads.start()
    try:

        def three_profiles() -> None:
            with Session(engine) as session:
                assert session.exec(select(func.count()).select_from(Profile)).one() == 3

        eventually(three_profiles)
    finally:
        threads.stop()
        engine.dispose()

    # A letter from a topic this service does not consume stops the replay before it, unless skipped.
    producer = make_producer(settings)
    try:
        foreign = [("dlq.original.topic", b"elsewhere.orders.v1")]
        producer.send(dead_letters, key=b"k", value=letters[0][1], headers=foreign).get(timeout=10)
        origin = [("dlq.original.topic", orders.encode())]
        producer.send(dead_letters, key=b"k", value=letters[1][1], headers=origin).get(timeout=10)
    finally:
        producer.close()
    stopped = replay()
    assert stopped.exit_code == 1
    assert "--skip-unknown" in stopped.output
    assert "stopped at offset 3" in stopped.output
    skipped = replay("--skip-unknown")
    assert skipped.exit_code == 0, skipped.output
    assert "replayed 1" in skipped.output
    assert "skipped" in skipped.output
    assert len(read_topic(orders, expect=4)) == 4
    assert "nothing to replay" in replay().output


# -- outbox ------------------------------------------------------------------------------------------------


def _stage(engine: Engine, count: int) -> list[UUID]:
    tenant_id = uuid4()
    with Session(engine) as session:
        ids = [
            add_event(
                session,
                TenantCreated(name="Loja", created_at=utcnow()),
                tenant_id=tenant_id,
                key=str(tenant_id),
            ).event_id
            for _ in range(count)
        ]
        session.commit()
    return ids


def _unpublished(engine: Engine) -> set[UUID]:
    with Session(engine) as session:
        query = select(OutboxMessage.event_id).where(col(OutboxMessage.published_at).is_(None))
        return set(session.exec(query).all())


def test_the_outbox_republishes_a_window_of_published_events(make_settings: SettingsFactory) -> None:
    settings = make_settings("ingest")
    engine = make_engine(settings.database_url)
    producer = make_producer(settings)
    relay = OutboxRelay(engine, settings)
    try:
        older = _stage(engine, 2)
        with Session(engine) as session:
            cut = max(session.exec(select(OutboxMessage.created_at)).all()) + timedelta(microseconds=1)
        window = _stage(engine, 3)
        while relay.publish_batch(producer):
            pass
        assert _unpublished(engine) == set()
        env = {"INGEST_DATABASE_URL": settings.database_url}
        since = ("--service", "ingest", "--since", cut.isoformat())
        tenants = TENANTS.full(settings.topic_prefix)

        declined = clientela("outbox", "republish", *since, env=env, input="n\n")
        assert declined.exit_code == 1
        assert "ingest.tenants.v1" in declined.stdout
        assert "tenant.created" in declined.stdout
        assert "3 published" in declined.stdout
        assert _unpublished(engine) == set()  # nothing changed

        confirmed = clientela("outbox", "republish", *since, env=env, input="y\n")
        assert confirmed.exit_code == 0, confirmed.output
        assert "3 events marked unpublished" in confirmed.output
        assert _unpublished(engine) == set(window)  # the older ones stay published

        assert relay.publish_batch(producer) == 3  # the relay sends them again
        on_kafka = [Envelope.from_bytes(value).event_id for _, value in read_topic(tenants, expect=8)]
        assert sorted(on_kafka) == sorted(older + window + window)  # the window's events twice

        past = ("--since", "2026-01-01T00:00:00Z", "--until", "2026-01-02T00:00:00-03:00")
        nothing = clientela("outbox", "republish", "--service", "ingest", *past, "--yes", env=env)
        assert nothing.exit_code == 0, nothing.output
        assert "no published ingest events" in nothing.output
        naive = clientela(
            "outbox", "republish", "--service", "ingest", "--since", "2026-11-20T10:00", env=env
        )
        assert naive.exit_code == 2
        assert "time zone" in naive.output
    finally:
        producer.close()
        engine.dispose()


# -- webhooks ----------------------------------------------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 that answers `status` and records each request's webhook-id."""

    def __init__(self) -> None:
        self.status = 500
        self.received: list[tuple[int, str]] = []  # (answer, webhook-id)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.received.append((receiver.status, self.headers.get("webhook-id", "")))
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def test_webhooks_are_redelivered_through_the_segmentation_api(
    clean_databases: dict[str, str], route_http: Callable[[dict[str, TestClient]], None], receiver: Receiver
) -> None:
    settings = SegmentationSettings(
        database_url=clean_databases["segmentation"],
        run_workers=False,
        run_migrations=False,
        admin_token=ADMIN_TOKEN,
        webhook_allow_private=True,
    )
    engine = make_engine(settings.database_url)
    _, key = add_tenant(engine)
    _, other_key = add_tenant(engine)
    clock = FakeClock()
    dispatcher = WebhookDispatcher(
        engine,
        policy=Policy(schedule_s=(1.0,), timeout_s=5.0),  # two attempts
        guard=Guard(allow_private=True),
        clock=clock,
        rng=random.Random(1),
        poll_interval_s=0.02,
    )

    def dispatch_all() -> int:
        sent = 0
        while found := dispatcher.dispatch_due():
            sent += found
        return sent

    try:
        with TestClient(create_segmentation(settings)) as client:
            route_http({SEGMENTATION_URL: client})
            made = client.post(
                "/v1/webhook-endpoints",
                json={"url": receiver.url, "event_types": ["segment.entered"]},
                headers=auth(key),
            )
            assert made.status_code == 201, made.text
            endpoint = made.json()["id"]
            started = utcnow()
            queued = [
                client.post(f"/v1/webhook-endpoints/{endpoint}/test", headers=auth(key)).json()
                for _ in range(3)
            ]
            for _ in range(2):
                dispatch_all()
                clock.advance(seconds=5)
            listed = client.get(f"/v1/webhook-endpoints/{endpoint}/deliveries", headers=auth(key)).json()
            assert {d["status"] for d in listed["items"]} == {"failed"}
            receiver.status = 200
            env = {"CLIENTELA_API_KEY": key}

            one = clientela(
                "webhooks", "redeliver", "--endpoint", endpoint, "--delivery", queued[0]["id"], env=env
            )
            assert one.exit_code == 0, one.output
            assert queued[0]["message_id"] in one.stdout
            assert dispatch_all() == 1

            window = (
                "--since",
                started.isoformat(),
                "--until",
                (utcnow() + timedelta(seconds=1)).isoformat(),
            )
            ranged = clientela("webhooks", "redeliver", "--endpoint", endpoint, *window, env=env)
            assert ranged.exit_code == 0, ranged.output
            assert "2 failed message(s)" in ranged.stdout  # the first was delivered by its redelivery
            assert dispatch_all() == 2
            delivered = {webhook_id for status, webhook_id in receiver.received if status == 200}
            assert delivered == {q["message_id"] for q in queued}

            everything = clientela(
                "webhooks", "redeliver", "--endpoint", endpoint, *window, "--status", "all", env=env
            )
            assert everything.exit_code == 0, everything.output
            assert "3 failed or delivered message(s)" in everything.stdout
            assert dispatch_all() == 3

            other = clientela(
                "webhooks", "redeliver", "--endpoint", endpoint, *window, env={"CLIENTELA_API_KEY": other_key}
            )
            assert other.exit_code == 1
            assert "404" in other.output
            neither = clientela("webhooks", "redeliver", "--endpoint", endpoint, env=env)
            assert neither.exit_code == 2
    finally:
        engine.dispose()


# -- traits ------------------------------------------------------------------------------------------------


def _scheduled_refresh_done(engine: Engine) -> None:
    """The first refresh the service's schedule queues for a new tenant has run: the next is the CLI's."""
    with Session(engine) as session:
        statuses = session.exec(select(TraitsRefresh.status)).all()
        assert statuses
        assert set(statuses) == {"done"}


def test_traits_are_refreshed_through_the_profile_api(
    stack: Stack, clean_databases: dict[str, str], route_http: Callable[[dict[str, TestClient]], None]
) -> None:
    key = stack.create_tenant()
    for i, total in enumerate(("50.00", "120.00", "300.00")):
        body = order_body(f"T-{i}", f"comprador{i}@example.com", total)
        assert stack.ingest.post("/v1/orders", json=body, headers=auth(key)).status_code == 202
    engine = make_engine(clean_databases["profile"])
    try:

        def three_profiles() -> None:
            with Session(engine) as session:
                assert session.exec(select(func.count()).select_from(Profile)).one() == 3

        eventually(three_profiles)
        eventually(lambda: _scheduled_refresh_done(engine))
        route_http({PROFILE_URL: stack.profile})

        refreshed = clientela("traits", "refresh", env={"CLIENTELA_API_KEY": key})
        assert refreshed.exit_code == 0, refreshed.output
        assert "done" in refreshed.stdout
        assert "3/3" in refreshed.stdout
        with Session(engine) as session:
            job = session.exec(select(TraitsRefresh).where(TraitsRefresh.reason == "api")).one()
            assert (job.status, job.profiles_total, job.profiles_done, job.model["customers"]) == (
                "done",
                3,
                3,
                3,
            )
            # (A scheduled refresh may have scored them already: an unchanged score is not written again.)
            assert all(p.predicted["rfm_group"] for p in session.exec(select(Profile)))
        for person in ("comprador0", "comprador1", "comprador2"):
            assert person not in refreshed.output

        no_key = clientela("traits", "refresh")
        assert no_key.exit_code == 1
        assert "CLIENTELA_API_KEY" in no_key.output
    finally:
        engine.dispose()


def test_traits_are_refreshed_directly_on_the_profile_database(make_settings: SettingsFactory) -> None:
    settings = make_settings("profile")
    engine = make_engine(settings.database_url)
    try:
        tenant_id, _ = add_tenant(engine)
        other_tenant, _ = add_tenant(engine)
        worker = dict(profile_workers(engine, settings))["profile-records"]
        assert isinstance(worker, ConsumerWorker)
        worker.apply(
            [
                order_event(tenant_id, f"R-{i}", f"cliente{i}@example.com", f"{10 * (i + 1)}.00")
                for i in range(4)
            ]
        )
        env = {"PROFILE_DATABASE_URL": settings.database_url}

        refreshed = clientela("traits", "refresh", "--tenant", str(tenant_id), env=env)
        assert refreshed.exit_code == 0, refreshed.output
        assert str(tenant_id) in refreshed.stdout
        assert "4/4" in refreshed.stdout
        with Session(engine) as session:
            [job] = session.exec(select(TraitsRefresh)).all()  # the other tenant's was not asked for
            assert (job.tenant_id, job.reason, job.status) == (tenant_id, "cli", "done")
            profiles = session.exec(select(Profile).where(Profile.tenant_id == tenant_id)).all()
            assert len(profiles) == 4
            assert all(p.predicted["rfm_group"] for p in profiles)
            announced = session.exec(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.event_type == "profile.updated")
            ).one()
            assert announced == 8  # each profile once for its order, once for its new traits

        unknown = clientela("traits", "refresh", "--tenant", str(uuid4()), env=env)
        assert unknown.exit_code == 1
        assert "no such tenant" in unknown.output

        everyone = clientela("traits", "refresh", "--all-tenants", env=env)
        assert everyone.exit_code == 0, everyone.output
        assert str(other_tenant) in everyone.stdout
        with Session(engine) as session:
            jobs = session.exec(select(TraitsRefresh)).all()
            assert sorted((j.tenant_id == tenant_id, j.status) for j in jobs) == [
                (False, "done"),
                (True, "done"),
                (True, "done"),
            ]
    finally:
        engine.dispose()
