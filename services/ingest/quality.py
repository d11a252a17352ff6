"""Data-quality counts per tenant, day and record kind: what was received, accepted, deduplicated,
rejected (by field and reason) and how complete the accepted records are.

Counts are tallied in memory while a request is processed and added to `quality_counter` in the same
transaction as the records (one upsert per metric), so they stay exact under retries and replays. Each
metric's daily count is spread over `SHARDS` rows, one picked at random per request and summed when read:
with a single row, every request of a tenant held the same row locks until it committed, and concurrent
requests queued behind each other.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session, col

from services.ingest.models import QualityCounter
from shared.db import table_of

_COUNTERS = table_of(QualityCounter)

SHARDS = 16  # rows per metric and day: concurrent requests rarely pick the same one

# The optional fields whose completeness is tracked, per kind (dotted paths into the canonical JSON).
TRACKED: dict[str, tuple[str, ...]] = {
    "order": (
        "customer.email",
        "customer.phone",
        "customer.document",
        "customer.name",
        "customer.birth_date",
        "customer.gender",
        "customer.address.zip",
        "customer.address.city",
        "customer.address.state",
        "items",
        "payments",
    ),
    "customer": ("email", "phone", "document", "name", "birth_date", "gender", "address.zip", "address.city"),
    "behaviour": ("customer", "anonymous_id"),
}


# Per kind, the tracked paths as a tree walked once per record: key -> (the metric counted when the value
# is present, or None; the tree below it, or None). `Tally.valid` runs for every record: this is a third
# of the time of looking each path up from the top (measured).
_Tree = dict[str, tuple[str | None, "_Tree | None"]]


def _tree(paths: Iterable[str], prefix: str = "") -> _Tree:
    below: dict[str, list[str]] = {}  # first key -> the rest of each path under it ("" for itself)
    for path in paths:
        head, _, rest = path.partition(".")
        below.setdefault(head, []).append(rest)
    return {
        head: (
            f"present:{prefix}{head}" if "" in rests else None,
            _tree([r for r in rests if r], f"{prefix}{head}.") if any(rests) else None,
        )
        for head, rests in below.items()
    }


_TREES = {kind: _tree(paths) for kind, paths in TRACKED.items()}


def _count_present(counts: Counter[str], body: dict[str, Any], tree: _Tree) -> None:
    for key, (metric, below) in tree.items():
        value = body.get(key)
        if value:
            if metric is not None:
                counts[metric] += 1
            if below is not None and value.__class__ is dict:  # canonical JSON: no dict subclasses
                _count_present(counts, value, below)


@dataclass
class Tally:
    kind: str
    counts: Counter[str] = field(default_factory=Counter)

    def rejected(self, errors: Iterable[dict[str, Any]]) -> None:
        self.counts["received"] += 1
        self.counts["rejected"] += 1
        for reason in {f"{'.'.join(e['loc'])}:{e['type']}" for e in errors}:
            self.counts[f"rejected:{reason}"[:200]] += 1

    def valid(self, body: dict[str, Any]) -> None:
        self.counts["received"] += 1
        self.counts["valid"] += 1
        _count_present(self.counts, body, _TREES.get(self.kind, {}))

    def outcome(self, outcome: str) -> None:
        self.counts[outcome] += 1


def add(session: Session, tenant_id: UUID, tally: Tally, *, day: date | None = None) -> None:
    """Add a tally to today's counters (an upsert per metric), in the caller's transaction."""
    if not tally.counts:
        return
    day = day or datetime.now(UTC).date()
    shard = random.randrange(SHARDS)  # noqa: S311 - spreads row locks, nothing secret
    rows = [
        {"tenant_id": tenant_id, "day": day, "kind": tally.kind, "metric": metric, "shard": shard, "count": n}
        for metric, n in sorted(tally.counts.items())  # sorted: concurrent upserts lock in one order
    ]
    session.execute(_upsert(session.get_bind().dialect.name), rows)


@functools.cache
def _upsert(dialect: str) -> Insert:
    """One row's upsert, built once and executed for many rows (compiled once, not at every request)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(_COUNTERS)
    return statement.on_conflict_do_update(
        index_elements=["tenant_id", "day", "kind", "metric", "shard"],
        set_={"count": _COUNTERS.c["count"] + statement.excluded["count"]},
    )


def record_rejection(session: Session, tenant_id: UUID, kind: str, reason: str) -> None:
    """Count a record refused before validation (e.g. a marketplace payload that cannot be mapped)."""
    tally = Tally(kind)
    tally.counts.update({"received": 1, "rejected": 1, f"rejected:{reason}": 1})
    add(session, tenant_id, tally)
    session.commit()


def report(session: Session, tenant_id: UUID, *, days: int, today: date | None = None) -> dict[str, Any]:
    """Totals over the last `days` days (today included), per kind."""
    today = today or datetime.now(UTC).date()
    since = today - timedelta(days=days - 1)
    rows = session.execute(
        sa.select(
            col(QualityCounter.kind), col(QualityCounter.metric), sa.func.sum(col(QualityCounter.count))
        )
        .where(col(QualityCounter.tenant_id) == tenant_id, col(QualityCounter.day) >= since)
        .group_by(col(QualityCounter.kind), col(QualityCounter.metric))
    ).all()
    by_kind: dict[str, Counter[str]] = {}
    for kind, metric, total in rows:
        by_kind.setdefault(kind, Counter())[metric] = int(total)
    kinds = {}
    for kind in TRACKED:
        counts = by_kind.get(kind, Counter())
        valid = counts["valid"]
        kinds[kind] = {
            "received": counts["received"],
            "accepted": counts["accepted"],
            "updated": counts["updated"],
            "duplicates": counts["duplicate"],
            "stale": counts["stale"],
            "rejected": counts["rejected"],
            "rejections_by_reason": dict(
                sorted(
                    (
                        (m.removeprefix("rejected:"), n)
                        for m, n in counts.items()
                        if m.startswith("rejected:")
                    ),
                    key=lambda item: (-item[1], item[0]),
                )
            ),
            "completeness": {
                path: round(counts[f"present:{path}"] / valid, 4) if valid else None for path in TRACKED[kind]
            },
        }
    return {"from": since.isoformat(), "to": today.isoformat(), "days": days, "kinds": kinds}
