"""`clientela dlq replay`: send a service's dead letters back to the topics they came from.

A record that kept failing was copied to the service's dead-letter topic by `shared.consumer` with its
origin in headers (`dlq.original.topic`, partition, offset, `dlq.consumer`, `dlq.error`). Once the cause
is fixed, this reads the dead-letter topic from the beginning in its own consumer group
(`<CLIENTELA_CONSUMER_GROUP_PREFIX>.<service>.dlq-replay`), produces each message again (same key, same
value) to its original topic, and commits the group's offsets after the broker has acknowledged the copies:
a second run replays only what was dead-lettered since. A crash between the two replays a batch twice,
which is harmless: consumers deduplicate by event id.

Only topics the service consumes (under the topic prefix) are replayed to. A message whose original topic
is anything else (another prefix, no header) stops the run before it, so that nothing is skipped silently;
`--skip-unknown` steps over such messages (they stay on the dead-letter topic, readable by other tools).
Values and keys are never printed: they carry personal data.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cli.ops import Service, err, fail, out, service_settings
from shared.kafka import make_consumer, make_producer
from shared.outbox import close_quietly
from shared.settings import ServiceSettings
from shared.topics import ALL_TOPICS, INGEST_DLQ, PROFILE_DLQ, SEGMENTATION_DLQ, Topic

dlq_app = typer.Typer(help="Dead-letter topics: replay them once the cause is fixed.", no_args_is_help=True)

DEAD_LETTERS: dict[Service, Topic] = {
    Service.ingest: INGEST_DLQ,
    Service.profile: PROFILE_DLQ,
    Service.segmentation: SEGMENTATION_DLQ,
}
ORIGINAL_TOPIC = "dlq.original.topic"
ASSIGNMENT_TIMEOUT_S = 30.0


def consumed_topics(service: Service, prefix: str) -> set[str]:
    """The full names of the topics `service` consumes: the only ones a dead letter goes back to."""
    return {t.full(prefix) for t in ALL_TOPICS if service.value in t.consumers}


def original_topic(headers: list[tuple[str, bytes]] | None) -> str | None:
    for name, value in headers or []:
        if name == ORIGINAL_TOPIC:
            return value.decode(errors="replace")
    return None


@dlq_app.command("replay")
def replay(
    service: Annotated[Service, typer.Option(help="Whose dead-letter topic.", case_sensitive=False)],
    topic_prefix: Annotated[
        str | None,
        typer.Option(help="Prepended to every topic name (default: CLIENTELA_TOPIC_PREFIX, as the service)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be replayed; produce and commit nothing.")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Replay at most this many messages.")] = None,
    skip_unknown: Annotated[
        bool,
        typer.Option(
            "--skip-unknown",
            help="Step over messages whose original topic the service does not consume (default: stop).",
        ),
    ] = False,
) -> None:
    """Replay the service's dead-letter topic to the original topics, with a progress bar.

    Reads from where the last replay stopped (the beginning, the first time) up to the end seen at start,
    produces each message to its `dlq.original.topic` with the same key and value, then commits. Uses the
    service's Kafka settings (CLIENTELA_KAFKA_BOOTSTRAP_SERVERS, CLIENTELA_CONSUMER_GROUP_PREFIX)."""
    overrides = {} if topic_prefix is None else {"topic_prefix": topic_prefix}
    settings = service_settings(service, **overrides)
    dead_letter = DEAD_LETTERS[service].full(settings.topic_prefix)
    allowed = consumed_topics(service, settings.topic_prefix)
    group_id = f"{settings.consumer_group_prefix}.{settings.service_name}.dlq-replay"
    run = Replay(allowed=allowed, limit=limit, skip_unknown=skip_unknown)
    try:
        with _consumer(settings, group_id, dead_letter) as consumer, _producer(settings, dry_run) as producer:
            run.drain(consumer, producer)
    except KafkaError as exc:
        done = run.committed
        if not sum(run.replayed.values()) or dry_run:
            fail(
                f"cannot read {dead_letter} ({type(exc).__name__}): is Kafka up at "
                f"{settings.kafka_bootstrap_servers}, and is the topic prefix right (--topic-prefix)?"
            )
        fail(
            f"Kafka error on {dead_letter} ({type(exc).__name__}); {done} message(s) were replayed and "
            "committed before it, a new run goes on from there (a message sent twice is harmless: consumers "
            "deduplicate by event id)"
        )
    _report(run, dead_letter, dry_run)
    if run.stopped_at is not None:
        fail(
            f"stopped at offset {run.stopped_at[1]} of {dead_letter} (partition {run.stopped_at[0]}): its "
            f"original topic is not one the {service.value} service consumes under the prefix "
            f"{settings.topic_prefix!r}. Check --topic-prefix, or step over it with --skip-unknown."
        )


class Replay:
    """One run: reads the dead-letter topic to its end (as seen at start) and re-produces each message."""

    def __init__(self, *, allowed: set[str], limit: int | None, skip_unknown: bool) -> None:
        self.allowed = allowed
        self.limit = limit
        self.skip_unknown = skip_unknown
        self.replayed: Counter[str] = Counter()
        self.committed = 0  # messages whose offsets are committed (replayed or skipped)
        self.skipped = 0
        self.stopped_at: tuple[int, int] | None = None  # (partition, offset) of a message not replayable

    def _done(self) -> bool:
        return self.stopped_at is not None or (
            self.limit is not None and sum(self.replayed.values()) >= self.limit
        )

    def drain(self, consumer: KafkaConsumer, producer: KafkaProducer | None) -> None:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err(), transient=True) as bar:
            task = bar.add_task("dead letters", total=None)
            ends: dict[TopicPartition, int] | None = None
            deadline = time.monotonic() + ASSIGNMENT_TIMEOUT_S
            seen = 0
            while not self._done():
                polled = consumer.poll(timeout_ms=500, max_records=500)
                if ends is None and consumer.assignment():
                    ends = consumer.end_offsets(list(consumer.assignment()))
                    remaining = sum(max(0, end - consumer.position(tp)) for tp, end in ends.items())
                    records = sum(len(r) for r in polled.values())
                    total = seen + records + remaining
                    bar.update(task, total=total if self.limit is None else min(total, self.limit))
                batch = [r for records in polled.values() for r in records]
                seen += len(batch)
                self._replay(batch, consumer, producer)
                bar.update(task, completed=sum(self.replayed.values()) + self.skipped)
                if ends is None:
                    if time.monotonic() > deadline:
                        fail(
                            "got no partition of the dead-letter topic: is another replay of this service "
                            "running?"
                        )
                    continue
                if all(consumer.position(tp) >= end for tp, end in ends.items()):
                    return

    def _replay(self, batch: list[Any], consumer: KafkaConsumer, producer: KafkaProducer | None) -> None:
        commits: dict[TopicPartition, OffsetAndMetadata] = {}
        sends = []
        handled = 0
        for record in batch:
            if self._done():
                break
            topic = original_topic(record.headers)
            if topic is None or topic not in self.allowed:
                if not self.skip_unknown:
                    self.stopped_at = (record.partition, record.offset)
                    break
                self.skipped += 1
            else:
                if producer is not None:
                    sends.append(producer.send(topic, key=record.key, value=record.value))
                self.replayed[topic] += 1
            tp = TopicPartition(record.topic, record.partition)
            commits[tp] = OffsetAndMetadata(record.offset + 1, "", record.leader_epoch)
            handled += 1
        if producer is None or not commits:
            return
        producer.flush(timeout=30)
        for future in sends:
            future.get(timeout=30)  # raises the send error, if any: nothing is committed then
        consumer.commit(commits)
        self.committed += handled


def _report(run: Replay, dead_letter: str, dry_run: bool) -> None:
    verb = "would replay" if dry_run else "replayed"
    total = sum(run.replayed.values())
    if not total and not run.skipped:
        err().print(f"{dead_letter}: nothing to replay", highlight=False)
        return
    table = Table("original topic", verb, title=f"{dead_letter}: {verb} {total}")
    for topic, count in sorted(run.replayed.items()):
        table.add_row(topic, str(count))
    if run.skipped:
        table.add_row("(not a topic of this service: skipped)", str(run.skipped))
    out().print(table)


@contextmanager
def _consumer(settings: ServiceSettings, group_id: str, topic: str) -> Iterator[KafkaConsumer]:
    consumer = make_consumer(settings, group_id, [topic])
    try:
        yield consumer
    finally:
        consumer.close(autocommit=False)


@contextmanager
def _producer(settings: ServiceSettings, dry_run: bool) -> Iterator[KafkaProducer | None]:
    if dry_run:
        yield None
        return
    producer = make_producer(settings)
    try:
        yield producer
    finally:
        close_quietly(producer, timeout=10)
