"""shared.consumer: error descriptions for logs and DLQ headers quote no record data; a consumer whose
commits keep failing, or whose idle polls spin, joins its group again; service processes tune the garbage
collector."""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import orjson
import psycopg
import pytest
from kafka.errors import CommitFailedError
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc

from shared import consumer as consumer_module
from shared.consumer import (
    CONFLICT_RETRIES,
    MAX_COMMIT_FAILURES,
    SPIN_CPU_S,
    SPIN_PAUSE_S,
    SPIN_REJOIN_S,
    ConsumerWorker,
    SpinWatch,
    describe_error,
)
from shared.events import Envelope
from shared.records import Order
from shared.settings import ServiceSettings
from shared.web import tune_gc

EMAIL = "maria.silva@example"


def validation_error(data: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Order.model_validate(data)
    return caught.value


def test_validation_error_lists_locations_and_types_only() -> None:
    error = validation_error(
        {
            "external_id": "ML-1",
            "source": "Mercado Livre",
            "status": "paid",
            "placed_at": "2026-11-20T14:03:00",
            "total": "12.345",
            "customer": {"email": EMAIL, "name": "Maria Silva"},
        }
    )
    description = describe_error(error)
    assert description == (
        "ValidationError: customer.email:value_error, "
        "source:string_pattern_mismatch, total:decimal_max_places"
    )
    for value in (EMAIL, "Maria", "Mercado Livre", "12.345", "2026-11-20"):
        assert value not in description
    assert EMAIL in str(error)  # pydantic's own text would have leaked it


def test_validation_error_description_is_bounded() -> None:
    items = [{"sku": f"SKU-{i}", "unit_price": "-1", "quantity": 0} for i in range(200)]
    error = validation_error({"items": items})
    description = describe_error(error)
    assert description.startswith("ValidationError: ")
    assert len(description) <= 1000


def test_other_errors_are_described_by_type_only() -> None:
    assert describe_error(RuntimeError(f"duplicate key ({EMAIL})")) == "RuntimeError"
    with pytest.raises(orjson.JSONDecodeError) as caught:
        Envelope.from_bytes(b'{"customer": "maria.silva@example", ')
    assert describe_error(caught.value) == "JSONDecodeError"


class StuckConsumer:
    """What kafka-python did in a 1,000,000-order benchmark run: fetching went on while every commit failed
    (the broker had dropped the member). It stops the worker after ten polls of its own, so a worker that
    never rejoins fails the test instead of hanging it."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.polls = self.commits = 0
        self.closed = False

    def poll(self, timeout_ms: int) -> dict[str, list[object]]:
        self.polls += 1
        if self.polls >= 10:
            self.stop.set()
        return {"orders-0": [object()]}

    def commit(self) -> None:
        self.commits += 1
        raise CommitFailedError("not part of an active group")

    def close(self, autocommit: bool = True) -> None:
        assert autocommit is False
        self.closed = True

    def assignment(self) -> set[object]:
        return set()


def stub_worker() -> ConsumerWorker:
    """A records worker without a database: the tests replace what would reach it."""
    return ConsumerWorker(
        name="records",
        engine=None,  # type: ignore[arg-type]
        settings=ServiceSettings(),
        topics=[],
        handlers={},
        dead_letter=None,
    )


def test_a_consumer_whose_commits_keep_failing_joins_again(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    made: list[StuckConsumer] = []

    def make_consumer(*_: object, **__: object) -> StuckConsumer:
        made.append(StuckConsumer(stop))
        if len(made) == 2:
            stop.set()  # the worker stops after the new consumer's first poll
        return made[-1]

    monkeypatch.setattr(consumer_module, "make_consumer", make_consumer)
    worker = stub_worker()
    handled: list[int] = []
    monkeypatch.setattr(worker, "handle", lambda records, _producer: handled.append(len(records)))
    worker.run(stop)

    # Three failed commits in a row: the first consumer is closed and a new one joins; the records since
    # the last commit are polled again (and skipped as processed by the real handlers).
    assert [c.commits for c in made] == [MAX_COMMIT_FAILURES, 1]
    assert [c.closed for c in made] == [True, True]
    assert len(handled) == MAX_COMMIT_FAILURES + 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


EXPENSIVE = SPIN_CPU_S * 3  # what a spinning client's idle poll used: about 70 ms of CPU for 200 ms
CHEAP = SPIN_CPU_S / 40  # a healthy idle poll: 0.4 ms


def test_idle_polls_that_use_the_cpu_pause_then_join_again() -> None:
    clock = Clock()
    watch = SpinWatch(clock)
    assert watch.after_poll(CHEAP, records=False) == "ok"
    assert watch.after_poll(EXPENSIVE, records=False) == "pause"
    clock.now += SPIN_REJOIN_S / 2
    assert watch.after_poll(CHEAP, records=False) == "ok"  # one poll that waited on a fetch ends nothing
    assert watch.after_poll(EXPENSIVE, records=False) == "pause"
    clock.now += SPIN_REJOIN_S / 2
    assert watch.after_poll(EXPENSIVE, records=False) == "rejoin"  # a session timeout of spinning
    assert watch.after_poll(EXPENSIVE, records=False) == "pause"  # the new consumer starts afresh


def test_records_or_cheap_idle_polls_end_a_spell_of_spinning() -> None:
    clock = Clock()
    for healthy in ([(CHEAP, False)] * SpinWatch.HEALTHY_POLLS, [(EXPENSIVE, True)]):
        watch = SpinWatch(clock)
        assert watch.after_poll(EXPENSIVE, records=False) == "pause"
        clock.now += SPIN_REJOIN_S - 1
        for cpu, records in healthy:
            assert watch.after_poll(cpu, records=records) == "ok"
        clock.now += 1
        assert watch.after_poll(EXPENSIVE, records=False) == "pause"  # a new spell, not the old one's end
    # A batch's poll may use the CPU (decoding records): polls with records never count as spinning.
    assert SpinWatch(clock).after_poll(EXPENSIVE, records=True) == "ok"


class SpinningConsumer(StuckConsumer):
    """kafka-python 3.0.12 without its heartbeat: every idle poll uses the CPU until its timeout. It stops
    the worker after fifty polls, so a worker that never rejoins fails the test instead of hanging it."""

    def poll(self, timeout_ms: int) -> dict[str, list[object]]:
        self.polls += 1
        if self.polls >= 50:
            self.stop.set()
        started = time.thread_time()
        while time.thread_time() - started < EXPENSIVE:
            pass
        return {}


class RecordingStop(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return super().wait(0)


def test_a_consumer_whose_idle_polls_spin_pauses_and_joins_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stop = RecordingStop()
    made: list[StuckConsumer] = []

    def make_consumer(*_: object, **__: object) -> StuckConsumer:
        made.append(SpinningConsumer(stop) if not made else StuckConsumer(stop))
        if len(made) == 2:
            stop.set()  # the worker stops after the new consumer's first poll
        return made[-1]

    monkeypatch.setattr(consumer_module, "make_consumer", make_consumer)
    monkeypatch.setattr(consumer_module, "SPIN_REJOIN_S", EXPENSIVE * 4)
    worker = stub_worker()
    monkeypatch.setattr(worker, "handle", lambda records, _producer: None)
    monkeypatch.setattr(worker, "measure_lag", lambda _consumer: None)
    worker.run(stop)

    assert made[0].polls >= 4
    assert made[0].closed
    assert stop.waits[: made[0].polls - 1] == [SPIN_PAUSE_S] * (made[0].polls - 1)  # a pause after each
    assert len(made) == 2
    assert "idle polls keep using the CPU; joining the group again" in caplog.messages


class Record:
    def __init__(self, value: bytes) -> None:
        self.value, self.topic, self.partition, self.offset, self.key = value, "orders", 0, 0, None


def integrity_error() -> sa_exc.IntegrityError:
    return sa_exc.IntegrityError("INSERT ...", {}, Exception("duplicate key"))


def records_worker(monkeypatch: pytest.MonkeyPatch, failures: list[BaseException]) -> list[list[bytes]]:
    """A worker whose `apply` raises `failures` in turn, then succeeds; returns the calls' messages."""
    worker = stub_worker()
    calls: list[list[bytes]] = []

    def apply(values: list[bytes], topics: list[str] | None = None) -> int:
        calls.append(list(values))
        if failures:
            raise failures.pop(0)
        return len(values)

    monkeypatch.setattr(worker, "apply", apply)
    worker.handle([Record(b"a"), Record(b"b"), Record(b"c")], lambda: None)
    return calls


def test_a_batch_that_met_a_concurrent_write_is_retried_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = records_worker(monkeypatch, [integrity_error()])
    assert calls == [[b"a", b"b", b"c"], [b"a", b"b", b"c"]]


def test_a_batch_meeting_concurrent_writes_again_and_again_is_retried_whole_then_in_halves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shared.consumer.time.sleep", lambda _s: None)
    calls = records_worker(monkeypatch, [integrity_error() for _ in range(CONFLICT_RETRIES + 1)])
    whole = [[b"a", b"b", b"c"]] * (CONFLICT_RETRIES + 1)
    assert calls == [*whole, [b"a"], [b"b", b"c"]]


def deadlock() -> sa_exc.OperationalError:
    return sa_exc.OperationalError("UPDATE ...", {}, psycopg.errors.DeadlockDetected("deadlock detected"))


def test_a_batch_that_deadlocked_with_another_members_is_retried_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr("shared.consumer.time.sleep", pauses.append)
    calls = records_worker(monkeypatch, [deadlock(), integrity_error(), deadlock()])
    assert calls == [[b"a", b"b", b"c"]] * 4
    assert len(pauses) == 3
    assert all(0.01 * n <= pause <= 0.05 * n for n, pause in enumerate(pauses, start=1))


def test_a_batch_that_keeps_deadlocking_is_left_to_the_reconnect_and_never_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shared.consumer.time.sleep", lambda _s: None)
    with pytest.raises(sa_exc.OperationalError):
        records_worker(monkeypatch, [deadlock() for _ in range(CONFLICT_RETRIES + 1)])


def test_other_operational_errors_raise_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = sa_exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("server closed the connection"))
    with pytest.raises(sa_exc.OperationalError):
        records_worker(monkeypatch, [gone])


def test_other_batch_failures_go_in_halves_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = records_worker(monkeypatch, [ValueError("impossible content")])
    assert calls == [[b"a", b"b", b"c"], [b"a"], [b"b", b"c"]]


def test_a_bad_record_is_found_in_halves_and_dead_lettered_and_the_others_applied_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shared.consumer.time.sleep", lambda _s: None)
    worker = stub_worker()
    values = [str(i).encode() for i in range(1000)]
    bad = values[637]
    applied: list[bytes] = []
    transactions = 0

    def apply(batch: list[bytes], topics: list[str] | None = None) -> int:
        nonlocal transactions
        transactions += 1
        if bad in batch:
            raise ValueError("impossible content")
        applied.extend(batch)
        return len(batch)

    dead: list[bytes] = []
    monkeypatch.setattr(worker, "apply", apply)
    monkeypatch.setattr(worker, "_dead_letter", lambda record, _error, _producer: dead.append(record.value))
    worker.handle([Record(v) for v in values], lambda: None)
    assert dead == [bad]
    assert applied == [v for v in values if v != bad]  # in their order
    attempts = worker.settings.consumer_max_attempts
    assert transactions <= 1 + 2 * 10 + attempts  # the whole, two halves per level, the bad one's tries


def test_the_records_per_poll_are_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServiceSettings().consumer_max_poll_records == 5000
    monkeypatch.setenv("CLIENTELA_CONSUMER_MAX_POLL_RECORDS", "250")
    assert ServiceSettings().consumer_max_poll_records == 250
    for wrong in (0, 10_001):
        with pytest.raises(ValidationError):
            ServiceSettings(consumer_max_poll_records=wrong)


def test_service_processes_tune_the_garbage_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServiceSettings().gc_thresholds == (100_000, 20, 100)
    monkeypatch.setenv("CLIENTELA_GC_THRESHOLDS", "[5000, 15, 50]")
    settings = ServiceSettings()
    before = gc.get_threshold()
    try:
        tune_gc(settings)
        assert gc.get_threshold() == (5000, 15, 50)
        assert gc.get_freeze_count() > 0  # what existed when the process started is out of its scans
    finally:
        gc.set_threshold(*before)


def test_batches_pause_the_collector_until_the_last_one_ends() -> None:
    assert gc.isenabled()
    inside_first, second_started, first_ended = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def first() -> None:
        with consumer_module.collector_paused():
            seen["first"] = gc.isenabled()
            inside_first.set()
            second_started.wait(5)
        first_ended.set()

    def second() -> None:
        inside_first.wait(5)
        with consumer_module.collector_paused():
            second_started.set()
            first_ended.wait(5)
            seen["second, after the first ended"] = gc.isenabled()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == {"first": False, "second, after the first ended": False}
    assert gc.isenabled()


def test_a_failing_batch_switches_the_collector_back_on_and_a_disabled_one_stays_off() -> None:
    with pytest.raises(RuntimeError), consumer_module.collector_paused():
        raise RuntimeError("the batch failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with consumer_module.collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
