"""`make bench-identity`: how well the profile service tells people apart, against the ground truth and
against Splink on the same records.

Data: `clientela generate --orders 20000 --seed 7` (cached like the other benchmarks): its orders (every
version), customer records (registrations, newsletter leads, the CRM export) and the behaviour events
that carry customer identifiers (anonymous browsing is left out: it holds nothing but a device id).
`truth.jsonl` says which person each record belongs to.

- Clientela: each line becomes the event ingest would publish (`order.ingested`, `customer.recorded`,
  `behaviour.recorded`; versions of one order or customer record share its id, with increasing versions)
  and the three streams are merged in arrival order (each file is in arrival order; a line's place is its
  latest timestamp so far in its file). They are applied through the profile service's own records
  consumer (`ConsumerWorker.apply`) on a fresh PostgreSQL database, in batches of 500 as a Kafka poll
  delivers them (`--batch 1` applies them one at a time). Within a batch the deterministic rules resolve
  event after event (the batch only preloads the graph); the probabilistic stage then scores the profiles
  the batch changed. Events/s is over the whole run. Then each record's final profile is read back
  (`profile_order`, `profile_record`, following `merged_into`).
- Splink 5 (DuckDB) on the same records, one row per record (its latest version), with the fields
  normalised by the canonical models and folded (lower case, no accents): a Fellegi-Sunter model with
  u estimated by random sampling and m by EM, predictions from blocking rules, clustered by connected
  components at a match probability threshold (`splink_model` and `run_splink` document the settings).
  Its time runs from loading the rows to the clusters; the JSON also has its scores at other thresholds.
- Metrics: pairwise precision, recall and F1 over records (pairs placed together vs pairs of one person),
  from the contingency counts of predicted and true clusters; profiles (clusters) vs people; and
  cross-document merges: profiles whose records carry more than one document (CPF/CNPJ), which must be 0.

Writes bench/results/identity.json and the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from pydantic import ValidationError

from bench import report
from bench.ingest import CACHE, PG, migrated_database, orders_file
from services.profile.consumer import workers
from services.profile.settings import ProfileSettings
from shared.events import BehaviourRecorded, CustomerRecorded, OrderIngested
from shared.normalize import fold
from shared.records import BehaviourEvent, Customer, CustomerRecord, CustomerRef, Order
from shared.settings import MAX_POLL_RECORDS

# As the consumer's polls deliver them (500 until 2026-11-30 13:30, 1,000 until 16:00).
BATCH = MAX_POLL_RECORDS
THRESHOLD = 0.9
SWEEP = (0.5, 0.8, 0.95, 0.99)  # Splink's clusters at other thresholds, in the JSON only
DEFAULT_ORDERS = 20_000
SEED = 7
Canonical = Order | CustomerRecord | BehaviourEvent
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- metrics (pure) ------------------------------------------------------------------------------


def pairs(n: int) -> int:
    return n * (n - 1) // 2


@dataclass(frozen=True, slots=True)
class PairScores:
    """Pairwise scores of a clustering: a pair of records is predicted when both are in one cluster and
    true when both belong to one person."""

    records: int
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int

    @property
    def precision(self) -> float:
        return self.correct_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.correct_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def pairwise_scores(predicted: Mapping[str, Hashable], truth: Mapping[str, Hashable]) -> PairScores:
    """Scores of `predicted` (record -> cluster) against `truth` (record -> person), both over the same
    records, from cluster sizes: sum of C(n, 2) over predicted clusters, true clusters and their
    intersections, never enumerating pairs."""
    if predicted.keys() != truth.keys():
        raise ValueError("predicted and truth must cover the same records")
    both = Counter((predicted[k], truth[k]) for k in truth)
    return PairScores(
        records=len(truth),
        true_pairs=sum(pairs(n) for n in Counter(truth.values()).values()),
        predicted_pairs=sum(pairs(n) for n in Counter(predicted.values()).values()),
        correct_pairs=sum(pairs(n) for n in both.values()),
    )


def cross_document_clusters(predicted: Mapping[str, Hashable], documents: Mapping[str, str | None]) -> int:
    """How many clusters hold records with more than one distinct document."""
    seen: dict[Hashable, set[str]] = defaultdict(set)
    for key, cluster in predicted.items():
        if document := documents.get(key):
            seen[cluster].add(document)
    return sum(1 for found in seen.values() if len(found) > 1)


# --- the records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Records:
    envelopes: list[bytes]  # in arrival order
    key_of: dict[uuid.UUID, str]  # order id / record id -> truth key
    rows: dict[str, dict[str, Any]]  # truth key -> the record's fields (latest version), for Splink
    invalid: int  # lines the canonical models reject (ingest would not publish them)


def _arrival(lines: list[tuple[datetime, Canonical]]) -> Iterator[tuple[datetime, Canonical]]:
    """A file's lines keyed by the latest timestamp seen so far: a non-decreasing key that keeps the file's
    (arrival) order, to merge the three files."""
    latest: datetime | None = None
    for at, record in lines:
        latest = at if latest is None or at > latest else latest
        yield latest, record


def read_stream(path: Path, kind: str) -> tuple[list[tuple[datetime, Canonical]], int]:
    found: list[tuple[datetime, Canonical]] = []
    invalid = 0
    for line in path.read_bytes().splitlines():
        row = orjson.loads(line)
        try:
            if kind == "order":
                order = Order.model_validate(row)
                found.append((order.updated_at or order.placed_at, order))
            elif kind == "customer":
                record = CustomerRecord.model_validate(row)
                found.append((record.updated_at or (found[-1][0] if found else EPOCH), record))
            elif row.get("customer"):  # identified behaviour only
                event = BehaviourEvent.model_validate(row)
                found.append((event.occurred_at, event))
        except ValidationError:
            invalid += 1
    return found, invalid


def load_records(folder: Path, *, events: bool) -> Records:
    """The generated lines as the events the profile consumer reads, merged in arrival order."""
    tenant_id = uuid.uuid4()
    streams = [("order", "orders.jsonl"), ("customer", "customers.jsonl")]
    if events:
        streams.append(("event", "events.jsonl"))
    read = [read_stream(folder / name, kind) for kind, name in streams]
    merged = heapq.merge(*(_arrival(lines) for lines, _ in read), key=lambda pair: pair[0])
    ids: dict[tuple[str, str, str], uuid.UUID] = {}
    versions: Counter[uuid.UUID] = Counter()
    envelopes: list[bytes] = []
    key_of: dict[uuid.UUID, str] = {}
    rows: dict[str, dict[str, Any]] = {}
    for _, record in merged:
        if isinstance(record, Order):
            key = f"order:{record.source}:{record.external_id}"
            order_id = ids.setdefault(("order", record.source, record.external_id), uuid.uuid4())
            versions[order_id] += 1
            event: OrderIngested | CustomerRecorded | BehaviourRecorded = OrderIngested(
                order_id=order_id, order_version=versions[order_id], order=record
            )
            key_of[order_id] = key
            rows[key] = fields(key, record.customer, record.source)
        elif isinstance(record, CustomerRecord):
            key = f"customer:{record.source}:{record.external_id}"
            record_id = ids.setdefault(("customer", record.source, record.external_id or ""), uuid.uuid4())
            versions[record_id] += 1
            event = CustomerRecorded(record_id=record_id, record_version=versions[record_id], customer=record)
            key_of[record_id] = key
            rows[key] = fields(key, record, record.source)
        else:
            key = f"event:{record.source}:{record.event_id}"
            record_id = uuid.uuid4()
            event = BehaviourRecorded(record_id=record_id, event=record)
            key_of[record_id] = key
            rows[key] = fields(key, record.customer, record.source, anonymous_id=record.anonymous_id)
        envelopes.append(event.envelope(tenant_id).to_bytes())
    return Records(envelopes, key_of, rows, invalid=sum(invalid for _, invalid in read))


def fields(
    key: str, customer: Customer | CustomerRef | None, source: str, *, anonymous_id: str | None = None
) -> dict[str, Any]:
    """One Splink row: the canonical (normalised) values, names and cities folded for string comparison
    (the state is left out: the CEP and the city imply it)."""
    row: dict[str, Any] = {"unique_id": key}
    name = fold(customer.name) if isinstance(customer, Customer) and customer.name else None
    words = name.split() if name else []
    row["first_name"] = words[0] if words else None
    row["surname"] = words[-1] if len(words) > 1 else None
    row["email"] = customer.email if customer else None
    row["phone"] = customer.phone if customer else None
    row["document"] = customer.document if customer else None
    row["customer_id"] = f"{source}:{customer.external_id}" if customer and customer.external_id else None
    row["anonymous_id"] = f"{source}:{anonymous_id}" if anonymous_id else None
    birth = customer.birth_date if isinstance(customer, Customer) else None
    row["birth_date"] = birth.isoformat() if birth else None
    address = customer.address if isinstance(customer, Customer) else None
    row["zip"] = address.zip if address else None
    row["city"] = fold(address.city) if address and address.city else None
    # Splink's forename/surname comparison applies term frequencies to the two together.
    row["first_and_surname"] = f"{row['first_name']} {row['surname']}" if row["surname"] else None
    return row


def read_truth(folder: Path, keys: Mapping[str, object]) -> dict[str, str]:
    truth: dict[str, str] = {}
    for line in (folder / "truth.jsonl").read_bytes().splitlines():
        row = orjson.loads(line)
        if row["record"] in keys:
            truth[row["record"]] = row["person"]
    return truth


# --- Clientela -----------------------------------------------------------------------------------


def run_clientela(records: Records, batch: int = BATCH) -> tuple[dict[str, str], dict[str, Any]]:
    """Apply the events through the records consumer; return record -> profile and the run's numbers."""
    url = f"{PG}/clientela_identity_bench"
    engine = migrated_database(url, "profile")
    try:
        settings = ProfileSettings(database_url=url, topic_prefix="bench.")
        raws = records.envelopes
        seconds, cpu = report.apply_in_polls(
            workers(engine, settings), "profile-records", settings, raws, batch
        )
        with engine.connect() as conn:
            owner = {
                str(row.id): str(row.profile_id)
                for query in (
                    "SELECT order_id AS id, profile_id FROM profile_order",
                    "SELECT id, profile_id FROM profile_record",
                )
                for row in conn.execute(sa.text(query))
            }
            merged_into = {
                str(row.id): str(row.merged_into)
                for row in conn.execute(
                    sa.text("SELECT id, merged_into FROM profile WHERE merged_into IS NOT NULL")
                )
            }
            merges = {
                str(method): int(count)
                for method, count in conn.execute(
                    sa.text("SELECT method, count(*) FROM merge_record GROUP BY method ORDER BY method")
                )
            }
    finally:
        engine.dispose()
    predicted: dict[str, str] = {}
    for record_id, key in records.key_of.items():
        profile = owner.get(str(record_id))
        for _ in range(100):  # merged_into points at the survivor directly; a chain would be a bug
            if profile is None or profile not in merged_into:
                break
            profile = merged_into[profile]
        # A record the consumer did not store stays alone (counted as `unresolved`).
        predicted[key] = profile if profile is not None else f"unresolved:{key}"
    return predicted, {
        "events": len(raws),
        "batch": batch,
        "seconds": round(seconds, 1),
        "events_per_s": round(len(raws) / seconds),
        "consumer_cpu_seconds": round(cpu, 1),
        "merges": merges,
        "unresolved": sum(1 for p in predicted.values() if p.startswith("unresolved:")),
    }


# --- Splink --------------------------------------------------------------------------------------


def splink_model() -> Any:
    """The Splink settings: what a competent user would build for these fields from the comparison
    library.

    - Comparisons: exact document, exact source customer id, exact device id (events), Splink's email
      comparison (exact, exact user name, Jaro-Winkler >= 0.88 on the address or the user name), exact
      phone (E.164), forename/surname (exact, swapped, Jaro-Winkler >= 0.92 / 0.88 on both, exact surname,
      exact forename), date of birth (exact, one edit, within a month, a year, ten years), CEP (exact, same
      5-digit prefix) and city (exact).
    - Blocking rules for predictions: document, e-mail, phone, customer id, device id, CEP + surname,
      forename + surname + birth date.
    """
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import ColumnExpression, SettingsCreator, block_on

    zip_prefix = ColumnExpression("zip").substr(1, 5)
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=[
            cl.ExactMatch("document"),
            cl.ExactMatch("customer_id"),
            cl.ExactMatch("anonymous_id"),
            cl.EmailComparison("email"),
            cl.ExactMatch("phone"),
            cl.ForenameSurnameComparison(
                "first_name", "surname", forename_surname_concat_col_name="first_and_surname"
            ),
            cl.DateOfBirthComparison("birth_date", input_is_string=True),
            cl.CustomComparison(
                [
                    cll.NullLevel("zip"),
                    cll.ExactMatchLevel("zip"),
                    cll.ExactMatchLevel(zip_prefix).configure(label_for_charts="Same CEP prefix (5 digits)"),
                    cll.ElseLevel(),
                ],
                output_column_name="zip",
            ),
            cl.ExactMatch("city"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("document"),
            block_on("email"),
            block_on("phone"),
            block_on("customer_id"),
            block_on("anonymous_id"),
            block_on("zip", "surname"),
            block_on("first_name", "surname", "birth_date"),
        ],
        retain_intermediate_calculation_columns=False,
    )


def run_splink(
    rows: list[dict[str, Any]], threshold: float, sweep: Sequence[float] = SWEEP
) -> tuple[dict[str, str], dict[str, Any], dict[float, dict[str, str]]]:
    """Train, predict and cluster at `threshold`; return record -> cluster, the run's numbers, and the
    clusters at the `sweep` thresholds too (not timed).

    Training as Splink's tutorials do it: the prior from deterministic rules (same document or e-mail,
    taken to find 70 % of the matches), u from 10 million random pairs (seeded), m by EM blocked on the
    document, then the phone, then CEP + surname. Predictions keep pairs above 0.5 (or the lowest
    threshold asked for)."""
    import duckdb
    from splink import DuckDBAPI, Linker, block_on

    logging.getLogger("splink").setLevel(logging.ERROR)
    started = time.perf_counter()
    connection = duckdb.connect()
    connection.execute("SET enable_progress_bar = false")
    linker = Linker(
        DuckDBAPI(connection).register(rows, dataset_display_name="records"),
        splink_model(),
        log_level=logging.ERROR,
    )
    # Documents and e-mails are near-certain links; say they find 70 % of the matching pairs.
    linker.training.estimate_probability_two_random_records_match(
        [block_on("document"), block_on("email")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e7, seed=SEED)
    # Each EM pass estimates m for every comparison but those in its blocking rule.
    for rule in (block_on("document"), block_on("phone"), block_on("zip", "surname")):
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
    trained = time.perf_counter()
    predictions = linker.inference.predict(threshold_match_probability=min(0.5, threshold, *sweep))

    def clusters_at(p: float) -> dict[str, str]:
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
            predictions, threshold_match_probability=p
        )
        relation = clusters.as_duckdbpyrelation().select("unique_id, cluster_id")
        return {str(unique_id): str(cluster_id) for unique_id, cluster_id in relation.fetchall()}

    predicted = clusters_at(threshold)
    seconds = time.perf_counter() - started
    swept = {p: clusters_at(p) for p in sweep}
    scored = predictions.as_duckdbpyrelation().count("*").fetchall()[0][0]
    connection.close()
    run = {
        "seconds": round(seconds, 1),
        "training_seconds": round(trained - started, 1),
        "scored_pairs": scored,
        "threshold": threshold,
    }
    return predicted, run, swept


# --- the report ----------------------------------------------------------------------------------


def quality(
    predicted: Mapping[str, str], truth: Mapping[str, str], documents: Mapping[str, str | None]
) -> dict[str, Any]:
    """The scores of a clustering over the records of `truth`."""
    predicted = {key: predicted[key] for key in truth}
    scores = pairwise_scores(predicted, truth)
    return {
        "records": scores.records,
        "people": len(set(truth.values())),
        "profiles": len(set(predicted.values())),
        "precision": round(scores.precision, 4),
        "recall": round(scores.recall, 4),
        "f1": round(scores.f1, 4),
        "cross_document_merges": cross_document_clusters(predicted, documents),
        "pairs": asdict(scores),
    }


def summary(
    name: str,
    predicted: Mapping[str, str],
    truth: Mapping[str, str],
    documents: Mapping[str, str | None],
    run: dict[str, Any],
) -> dict[str, Any]:
    found = quality(predicted, truth, documents)
    return {"case": name, **found, "records_per_s": round(found["records"] / run["seconds"]), **run}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=DEFAULT_ORDERS, help="orders to generate")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="Splink's clustering threshold")
    parser.add_argument("--batch", type=int, default=BATCH, help="events per consumer transaction")
    parser.add_argument(
        "--events", action=argparse.BooleanOptionalAction, default=True, help="include identified events"
    )
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    folder = orders_file(args.orders, args.seed).parent
    records = load_records(folder, events=args.events)
    truth = read_truth(folder, records.rows)
    keys = [key for key in records.rows if key in truth]  # every record has a truth line
    truth = {key: truth[key] for key in keys}
    documents = {key: records.rows[key]["document"] for key in keys}

    clientela, clientela_run = run_clientela(records, args.batch)
    splink, splink_run, swept = run_splink([records.rows[key] for key in keys], args.threshold)
    splink_run["sweep"] = [
        {"threshold": p} | {k: v for k, v in quality(clusters, truth, documents).items() if k in SWEPT}
        for p, clusters in sorted({**swept, args.threshold: splink}.items())
    ]
    cases = [
        summary("clientela", clientela, truth, documents, clientela_run | {"invalid_lines": records.invalid}),
        summary(f"splink (p ≥ {args.threshold})", splink, truth, documents, splink_run),
    ]
    flags = [f"--orders {args.orders}", f"--seed {args.seed}", f"--threshold {args.threshold}"]
    flags += [f"--batch {args.batch}"] + ([] if args.events else ["--no-events"])
    defaults = (DEFAULT_ORDERS, SEED, THRESHOLD, BATCH, True)
    custom = (args.orders, args.seed, args.threshold, args.batch, args.events) != defaults
    results = report.publish(
        "identity",
        cases,
        columns=[
            ("case", lambda c: c["case"]),
            ("records", lambda c: c["records"]),
            ("people", lambda c: c["people"]),
            ("profiles", lambda c: c["profiles"]),
            ("precision", lambda c: f"{c['precision']:.4f}"),
            ("recall", lambda c: f"{c['recall']:.4f}"),
            ("F1", lambda c: f"{c['f1']:.4f}"),
            ("records/s", lambda c: c["records_per_s"]),
            ("events/s", lambda c: c.get("events_per_s", "—")),
            ("cross-document merges", lambda c: c["cross_document_merges"]),
        ],
        note="Goal: F1 ≥ Splink's while resolving incrementally, one event at a time; zero cross-document "
        "merges.",
        command="uv run python -m bench.identity " + " ".join(flags) if custom else None,
        section=SECTION,
    )
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report goes to stdout


SWEPT = ("profiles", "precision", "recall", "f1", "cross_document_merges")


SECTION = (
    "## Identity resolution (`make bench-identity`)\n\n"
    "Generated orders (every version), customer records and identified behaviour events "
    "(`clientela generate --orders 20000 --seed 7`), applied in arrival order through the profile service's "
    "records consumer (batches of 500 as a Kafka poll delivers them: the deterministic rules resolve event "
    "after event, the probabilistic stage runs at the end of each batch) on a fresh PostgreSQL database, "
    "and scored against the generator's ground truth: "
    "pairwise precision, recall and F1 over records, and profiles holding more than one document "
    "(cross-document merges). The same records, one row each, go through Splink 5 (DuckDB): u by random "
    "sampling, m by EM, clusters at the match probability shown (model in `bench/identity.py`). "
    "*records/s* is records over wall time (Clientela: consumer only; Splink: training, prediction and "
    "clustering); *events/s* counts every event the consumer applied, order versions included."
)


if __name__ == "__main__":
    main()
