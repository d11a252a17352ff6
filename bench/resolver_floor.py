"""`uv run python -m bench.resolver_floor`: the sequential core of identity resolution alone, in memory.

What a profile consumer has to do one event after another, because the next event's profile depends on
this one's: decode each `order.ingested` event as the consumer decodes it (validated into its model), take
its identifiers (normalised, blocked values dropped: `profiles.identifiers_for`), their blind indexes
(`identity.blind`, memoised as a consumer batch memoises them), and join the groups of records they name
(union-find; two documents never join). No database, no traits, no probabilistic stage, no outbox: the
groups are not the service's profiles (the merge limits and the second stage are left out), only their
cost is. Everything else the profile service does per order can be spread over processes by profile; this
part is the floor of one resolver. The collector is off, as in the consumer's batches.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import uuid
from typing import Any

from bench import report
from bench.profiles import events, generated_rows
from services.profile import identity
from services.profile.profiles import identifiers_for
from shared.events import Envelope, OrderIngested, decode


def groups(blinded: list[list[identity.Identifier]]) -> int:
    """How many groups the records make when records sharing an identifier join (not two documents)."""
    parent: dict[int, int] = {}
    documents: dict[int, set[str]] = {}
    owner: dict[identity.Identifier, int] = {}

    def root_of(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for record, identifiers in enumerate(blinded):
        roots = sorted({root_of(owner[i]) for i in identifiers if i in owner})
        if roots:
            root = roots[0]
            for other in roots[1:]:
                if len(documents[root] | documents[other]) <= 1:
                    parent[other] = root
                    documents[root] |= documents.pop(other)
        else:
            root = parent[record] = record
            documents[root] = {value for kind, value in identifiers if kind == "document"}
        for identifier in identifiers:
            owner.setdefault(identifier, root)
    return len({root_of(node) for node in parent})


def measure(orders: int, seed: int) -> dict[str, Any]:
    tenant_id = uuid.uuid4()
    (raws,) = events(generated_rows(orders, seed), tenant_id)
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        started = time.process_time()
        decoded = [decode(Envelope.from_bytes(raw)) for raw in raws]
        decoded_at = time.process_time()
        found = [identifiers_for(e) for e in decoded if isinstance(e, OrderIngested)]
        found_at = time.process_time()
        memo: dict[tuple[uuid.UUID, str, str], str] = {}
        blinded = [identity.blind(tenant_id, identifiers, memo) for identifiers in found]
        blinded_at = time.process_time()
        made = groups(blinded)
        done_at = time.process_time()
    finally:
        gc.enable()
        gc.unfreeze()
    total = done_at - started
    return {
        "orders": len(raws),
        "decode_seconds": round(decoded_at - started, 2),
        "identifiers_seconds": round(found_at - decoded_at, 2),
        "blind_index_seconds": round(blinded_at - found_at, 2),
        "union_seconds": round(done_at - blinded_at, 2),
        "cpu_seconds": round(total, 2),
        "orders_per_s": round(len(raws) / total),
        "groups": made,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    results = report.publish(
        "resolver-floor",
        [measure(args.orders, args.seed)],
        columns=[
            ("orders", lambda c: c["orders"]),
            ("decode s", lambda c: c["decode_seconds"]),
            ("identifiers s", lambda c: c["identifiers_seconds"]),
            ("blind indexes s", lambda c: c["blind_index_seconds"]),
            ("union s", lambda c: c["union_seconds"]),
            ("CPU s", lambda c: c["cpu_seconds"]),
            ("orders/s", lambda c: c["orders_per_s"]),
            ("groups", lambda c: c["groups"]),
        ],
        note="One process, CPU seconds. The groups are not profiles (no merge limits, no second stage).",
        command="uv run python -m bench.resolver_floor",
        section="## Identity resolution's sequential core, in memory "
        "(`uv run python -m bench.resolver_floor`)\n\n"
        "What a profile consumer must do one event after another, with no database: decode the event as the "
        "consumer does, its identifiers, their blind indexes, and the union of the records they name (two "
        "documents never join). The floor of one resolver process, against which the profile consumer's "
        "own cost per order reads (`make bench-profiles`).",
    )
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report goes to stdout


if __name__ == "__main__":
    main()
