"""Fixtures shared by the integration tests. A module defines `settings` (which service it plays);
`engine`, `producer` and, for the profile's modules, `profile_records` follow from it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kafka import KafkaProducer
from sqlalchemy.engine import Engine

from services.profile.consumer import workers as profile_workers
from shared.consumer import ConsumerWorker
from shared.db import make_engine
from shared.kafka import make_producer
from shared.settings import ServiceSettings


@pytest.fixture
def engine(settings: ServiceSettings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def producer(settings: ServiceSettings) -> Iterator[KafkaProducer]:
    producer = make_producer(settings)
    yield producer
    producer.close()


@pytest.fixture
def profile_records(engine: Engine, settings: ServiceSettings) -> ConsumerWorker:
    """The profile service's records consumer, applied directly (`apply`) as a Kafka poll would."""
    worker = dict(profile_workers(engine, settings))["profile-records"]
    assert isinstance(worker, ConsumerWorker)
    return worker
