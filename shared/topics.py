"""Every Kafka topic, its owner, key and partition count. Topics are created here, never auto-created.

Run ``python -m shared.topics`` (``make topics``) to create them; it is idempotent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger("clientela.topics")


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    key: str
    producer: str
    consumers: tuple[str, ...]

    def full(self, prefix: str = "") -> str:
        return f"{prefix}{self.name}"


TENANTS = Topic("ingest.tenants.v1", 3, "tenant id", "ingest", ("profile", "segmentation"))
ORDERS = Topic("ingest.orders.v1", 12, "tenant id + customer key", "ingest", ("profile",))
CUSTOMERS = Topic("ingest.customers.v1", 12, "tenant id + customer key", "ingest", ("profile",))
BEHAVIOUR = Topic("ingest.behaviour.v1", 12, "tenant id + customer or anonymous key", "ingest", ("profile",))
PROFILES = Topic("profile.profiles.v1", 12, "tenant id + profile id", "profile", ("segmentation",))
MEMBERSHIPS = Topic("segmentation.memberships.v1", 6, "tenant id + profile id", "segmentation", ())
# Data-subject requests (LGPD): profile asks, ingest and segmentation answer. Keyed by tenant id.
PRIVACY_REQUESTS = Topic("profile.privacy-requests.v1", 3, "tenant id", "profile", ("ingest", "segmentation"))
PRIVACY_REPLIES = Topic("privacy.replies.v1", 3, "tenant id", "ingest, segmentation", ("profile",))
INGEST_DLQ = Topic("ingest.dlq.v1", 1, "original key", "ingest", ())
PROFILE_DLQ = Topic("profile.dlq.v1", 1, "original key", "profile", ())
SEGMENTATION_DLQ = Topic("segmentation.dlq.v1", 1, "original key", "segmentation", ())

ALL_TOPICS = (
    TENANTS,
    ORDERS,
    CUSTOMERS,
    BEHAVIOUR,
    PROFILES,
    MEMBERSHIPS,
    PRIVACY_REQUESTS,
    PRIVACY_REPLIES,
    INGEST_DLQ,
    PROFILE_DLQ,
    SEGMENTATION_DLQ,
)


def ensure_topics(bootstrap_servers: str, prefix: str = "", timeout_s: float = 60.0) -> list[str]:
    """Create the missing topics; return the names created."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap_servers, client_id="clientela-topics", bootstrap_timeout_ms=5000
            )
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(name=t.full(prefix), num_partitions=t.partitions, replication_factor=1)
            for t in ALL_TOPICS
            if t.full(prefix) not in existing
        ]
        created: list[str] = []
        for topic in wanted:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        # Creation is asynchronous: return once the broker lists every topic.
        names = {t.full(prefix) for t in ALL_TOPICS}
        while not names <= set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError("topics not visible in time")
            time.sleep(0.1)
        return created
    finally:
        admin.close()


def main() -> None:
    from shared.logs import configure_logging
    from shared.settings import ServiceSettings

    settings = ServiceSettings()
    configure_logging("topics", settings.log_level)
    created = ensure_topics(settings.kafka_bootstrap_servers, settings.topic_prefix)
    log.info("topics ready", extra={"topics_created": created, "prefix": settings.topic_prefix})


if __name__ == "__main__":
    main()
