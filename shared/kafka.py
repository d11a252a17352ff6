"""kafka-python helpers: the producer every service uses and the consumer settings.

kafka-python is blocking: these objects live in worker threads (see `shared.workers`), never in
``async def`` code paths.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError

from shared.settings import ServiceSettings


def make_producer(settings: ServiceSettings, **overrides: Any) -> KafkaProducer:
    """An idempotent producer with acks=all: retries never duplicate or reorder within a partition."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": f"{settings.service_name}-producer",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 10,
        "batch_size": 512 * 1024,
        "compression_type": None,
        "bootstrap_timeout_ms": 10_000,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(
    settings: ServiceSettings, group_id: str, topics: list[str], **overrides: Any
) -> KafkaConsumer:
    """A consumer in `group_id` that never auto-commits: offsets are committed after the DB commit."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": f"{settings.service_name}-{group_id}",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": settings.consumer_max_poll_records,
        # The broker answers a fetch as soon as it has a record (fetch_min_bytes=1): the wait only bounds
        # how often an idle consumer asks again (kafka-python's fetches were most of an idle service's CPU).
        "fetch_max_wait_ms": 500,
        "bootstrap_timeout_ms": 10_000,
        # Refresh metadata often enough to notice new topics/partitions without a restart.
        "metadata_max_age_ms": 10_000,
        # A crashed member's partitions move on after 10 s (kafka-python's default is 45 s).
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 2_000,
    }
    config.update(overrides)
    consumer = KafkaConsumer(**config)
    # Load the topics' partition metadata before joining the group: a group leader that assigns
    # without it gives out no partitions (seen with freshly created topics).
    for topic in topics:
        deadline = time.monotonic() + 30
        while not consumer.partitions_for_topic(topic):
            if time.monotonic() > deadline:
                consumer.close()
                raise KafkaTimeoutError(f"no partition metadata for topic {topic}")
            time.sleep(0.1)
    consumer.subscribe(topics)
    return consumer
