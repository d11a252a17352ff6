"""Base settings shared by every service.

Each service subclasses `ServiceSettings` with its own `env_prefix` (``INGEST_``, ``PROFILE_``, ...), so
``INGEST_DATABASE_URL`` and ``PROFILE_DATABASE_URL`` are separate, while the ``CLIENTELA_*`` variables
below are common to all services.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Records per consumer poll: a batch's lookups and writes are a few statements whatever its size, so
# bigger batches cost less per record (the profile consumer: 1,000 took 8 % less CPU than 500, no gain past).
MAX_POLL_RECORDS = 5000

# The cyclic garbage collector's thresholds in service processes (Python's default: 700, 10, 10). A batch
# creates and drops tens of thousands of tracked objects (ORM rows and states, rows read, events), so at
# the defaults the collector ran so often, over the whole heap, that it took a third of the profile
# consumer's CPU (py-spy --native: `gc_collect_main`); at these, about what switching it off saves. The
# first is counted in objects alive, not made: a batch of 1,000 orders at the ingest API stays below
# 100,000 and leaves nothing for the collector, where at 10,000 its collections took 6 to 7 % of the
# request's CPU (in process, 30 batches: 0 collections against 32, 2.6 against 2.8 CPU s). The profile
# consumer, which switches the collector off while it applies a batch, measured the same at both.
GC_THRESHOLDS = (100_000, 20, 100)


def _common(name: str) -> AliasChoices:
    # Accept the field name too, so tests can build settings with keyword arguments.
    return AliasChoices(f"CLIENTELA_{name.upper()}", name)


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", validate_by_name=True, frozen=True)

    service_name: str = "clientela"
    database_url: str = "sqlite:///.data/clientela.db"
    host: str = "127.0.0.1"
    port: int = 8000
    web_workers: int = Field(
        1, ge=1, le=32, description="uvicorn worker processes (each runs its own workers)."
    )
    rate_limit_per_second: float = Field(
        200, ge=0, description="Requests a second per API key, in this process (0: no limit)."
    )
    rate_limit_burst: int = Field(
        400,
        ge=0,
        description="Requests a key may send at once above the rate, in this process (0: no limit).",
    )

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias=_common("kafka_bootstrap_servers")
    )
    topic_prefix: str = Field(
        "", validation_alias=_common("topic_prefix"), description="Prepended to every topic name."
    )
    consumer_group_prefix: str = Field("clientela", validation_alias=_common("consumer_group_prefix"))
    run_workers: bool = Field(
        True,
        validation_alias=_common("run_workers"),
        description="Run the Kafka consumers and the outbox relay inside the API process.",
    )
    run_migrations: bool = Field(True, validation_alias=_common("run_migrations"))
    log_level: str = Field("INFO", validation_alias=_common("log_level"))
    admin_token: SecretStr | None = Field(None, validation_alias=_common("admin_token"))
    outbox_poll_interval_s: float = Field(
        0.5,
        gt=0,
        validation_alias=_common("outbox_poll_interval_s"),
        description="How often the relay looks for rows written by other processes; rows committed in its "
        "own process wake it at once.",
    )
    outbox_linger_s: float = Field(
        0.01,
        ge=0,
        validation_alias=_common("outbox_linger_s"),
        description="How long a relay woken by a commit waits for the next ones before publishing.",
    )
    outbox_retention_minutes: int = Field(
        60,
        ge=0,
        validation_alias=_common("outbox_retention_minutes"),
        description="Published outbox rows (event bodies, personal data included) are deleted after this.",
    )
    gc_thresholds: tuple[int, int, int] = Field(
        GC_THRESHOLDS,
        validation_alias=_common("gc_thresholds"),
        description="The garbage collector's thresholds (`gc.set_threshold`, JSON: `[100000, 20, 100]`) in "
        "service processes, whose start-up objects are also frozen (`gc.freeze`); `[700, 10, 10]` is "
        "Python's default.",
    )
    consumer_max_attempts: int = Field(3, validation_alias=_common("consumer_max_attempts"))
    consumer_max_poll_records: int = Field(
        MAX_POLL_RECORDS,
        ge=1,
        le=10_000,
        validation_alias=_common("consumer_max_poll_records"),
        description="Records a consumer takes from Kafka at most per poll and applies in one transaction "
        "(a backlog goes faster in bigger batches; one poll's work is redone if it fails).",
    )
    consumer_defer_busy: bool = Field(
        True,
        validation_alias=_common("consumer_defer_busy"),
        description="Profile consumer: a batch leaves the events of profiles another member of the group is "
        "writing for a transaction after its own, and scores look-alikes another member holds after its "
        "commit, instead of waiting for them, so that two members run side by side (bench/README.md, "
        "*Profiles*). `false`: a batch waits for them, holding its own.",
    )
    api_key_cache_seconds: float = Field(
        5,
        ge=0,
        description="Verified API keys are kept this long in memory: a revocation or scope change applies "
        "at once in the process that made it (ingest) or consumed it (a service running its workers), "
        "within this time in another process (0: the key is read at every request).",
    )
    metrics_port: int = Field(
        9100,
        ge=0,
        le=65535,
        validation_alias=_common("metrics_port"),
        description="A consumer process run alone serves /metrics on this port (0: not at all); the API "
        "serves them at /metrics on its own port.",
    )
