"""Batch lookups keep their plan when the statistics are wrong (PostgreSQL).

A tenant's first thousands of records are written before any statistics describe them (a new tenant, a
young table): PostgreSQL then estimates one row for the tenant. Joined plainly to a batch's keys, that
estimate makes it hash all of the tenant's rows for every batch, a cost that grows with the table and that
a prepared statement keeps. `make bench-ingest` ran into it one run in three. The lookups are written so
that each key is one probe of the unique index whatever the statistics say; these tests hold that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from services.ingest.intake import _STATES_OF_PAIRS
from services.profile.identity import _OWNERS_OF_PAIRS
from services.profile.models import Profile
from shared.db import make_engine, new_row

pytestmark = pytest.mark.integration


@pytest.fixture
def engine_of(clean_databases: dict[str, str]) -> Iterator[Callable[[str], Engine]]:
    """An engine on a service's (clean) test database."""
    made: list[Engine] = []

    def engine(service: str) -> Engine:
        made.append(make_engine(clean_databases[service]))
        return made[-1]

    yield engine
    for engine_made in made:
        engine_made.dispose()


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def explained(
    connection: Connection, statement: sa.ClauseElement, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """The plan PostgreSQL chooses for `statement` with these values (EXPLAIN ANALYZE: what it did)."""
    compiled = statement.compile(dialect=connection.dialect)
    raw = connection.exec_driver_sql(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + str(compiled), compiled.construct_params(params)
    ).scalar_one()
    found = raw if isinstance(raw, list) else orjson.loads(raw)
    return list(nodes(found[0]["Plan"]))


def one_probe_per_key(plan: list[dict[str, Any]], keys: int, index: str) -> None:
    """The plan probed `index` once per key (no hash of the table, no scan of it); every key but the last
    (stored by no row) found its row."""
    kinds = [node["Node Type"] for node in plan]
    assert "Hash Join" not in kinds, kinds
    assert "Seq Scan" not in kinds, kinds
    (probe,) = [node for node in plan if node["Node Type"] in ("Index Scan", "Index Only Scan")]
    assert probe["Index Name"] == index
    assert probe["Actual Loops"] == keys
    assert plan[0]["Actual Rows"] == keys - 1


def test_stored_versions_are_found_by_index_probes_while_the_statistics_say_the_tenant_is_empty(
    engine_of: Callable[[str], Engine],
) -> None:
    tenant_id = uuid4()
    with engine_of("ingest").begin() as connection:
        connection.exec_driver_sql("ANALYZE inbound_record")  # statistics of an empty table
        connection.execute(
            sa.text(
                "INSERT INTO inbound_record (id, tenant_id, kind, source, external_id, version, body_hash,"
                " payload_sealed, received_at, updated_at)"
                " SELECT gen_random_uuid(), :tenant, 'order', 'shopee', 'o' || n, 1, md5(n::text),"
                " '\\x00'::bytea, now(), now() FROM generate_series(1, 20000) AS n"
            ),
            {"tenant": tenant_id},
        )
        wanted = [f"o{n}" for n in range(1, 2001, 2)] + ["not-stored"]
        plan = explained(
            connection,
            _STATES_OF_PAIRS,
            {
                "tenant_id": tenant_id,
                "kind": "order",
                "sources": ["shopee"] * len(wanted),
                "external_ids": wanted,
            },
        )
    one_probe_per_key(plan, len(wanted), "uq_inbound_record_tenant_id_kind_source_external_id")


def test_identifiers_owners_are_found_by_index_probes_while_the_statistics_say_the_tenant_is_empty(
    engine_of: Callable[[str], Engine],
) -> None:
    tenant_id = uuid4()
    with engine_of("profile").begin() as connection:
        connection.exec_driver_sql("ANALYZE profile_identifier")  # statistics of an empty table
        with Session(connection) as session:
            profile = new_row(Profile, tenant_id=tenant_id)
            session.add(profile)
            session.flush()
            profile_id = profile.id
        connection.execute(
            sa.text(
                "INSERT INTO profile_identifier"
                " (tenant_id, kind, value, sealed, profile_id, seen_at, created_at)"
                " SELECT :tenant, 'email', 'e' || n, 'x', :profile, now(), now()"
                " FROM generate_series(1, 20000) AS n"
            ),
            {"tenant": tenant_id, "profile": profile_id},
        )
        wanted = [f"e{n}" for n in range(1, 1001)] + ["not-stored"]
        plan = explained(
            connection,
            _OWNERS_OF_PAIRS,
            {"tenant": tenant_id, "kinds": ["email"] * len(wanted), "values": wanted},
        )
    one_probe_per_key(plan, len(wanted), "pk_profile_identifier")
