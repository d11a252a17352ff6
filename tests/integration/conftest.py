"""Fixtures shared by the integration tests. A module defines `settings` (which service it plays);
`engine` and `producer` follow from it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kafka import KafkaProducer
from sqlalchemy.engine import Engine

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
