"""`make bench-segments`: full evaluation of ten typical segments over 100,000 and 1,000,000 profiles.

The segmentation service's projection (`profile_projection` and its `profile_tag` rows, with the model's
indexes) is filled with generated profiles on a fresh PostgreSQL database, loaded with COPY: a realistic
spread of orders, spend, dates, demographics, places, RFM scores, predictions, purchase and viewing tags
and consents; birth dates and CEPs sealed as the service stores them, with their generalised copies. Then
each segment's rule goes through the service's evaluator (`segments.matching`: SQL, and the Python
evaluator for the profiles whose sealed birth date or CEP SQL cannot decide), and the matching profile ids
are read, as a full evaluation of a segment does before it brings the members in line. Timed: the ten
evaluations, cold (first run after loading and ANALYZE) and warm (the best of three). Membership writes
are not timed here (they are proportional to the members that change, not to the profiles). Writes
bench/results/segments.json and the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlmodel import Session

from bench import report
from bench.ingest import PG, reset_database
from services.segmentation.models import ProfileProjection, ProfileTag, segmentation_registry
from services.segmentation.rules import RFM_GROUPS, parse_rule
from services.segmentation.segments import matching
from services.segmentation.templates import TEMPLATES
from shared.crypto import keyring
from shared.db import make_engine

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
STATES = ["SP", "RJ", "MG", "PR", "RS", "BA", "SC", "PE", "GO", "CE"]
CITIES = {"SP": "São Paulo", "RJ": "Rio de Janeiro", "MG": "Belo Horizonte", "PR": "Curitiba"}
SOURCES = ["mercadolivre", "shopee", "amazon", "magalu", "site"]
CATEGORIES = [
    "beleza_saude", "cama_mesa_banho", "esporte_lazer", "informatica_acessorios", "moveis_decoracao",
    "utilidades_domesticas", "relogios_presentes", "telefonia", "automotivo", "brinquedos",
    "cool_stuff", "ferramentas_jardim", "perfumaria", "bebes", "eletronicos",
]  # fmt: skip
PURPOSES = ["marketing_email", "marketing_sms", "marketing_whatsapp", "profiling", "data_sharing"]
TEMPLATE_IDS = (
    "rfm_champions",
    "one_time_buyers",
    "abandoned_cart_7d",
    "high_value_at_risk",
    "birthday_this_month",
    "replenishment_due",
    "inactive_180d",
)
CUSTOM: dict[str, dict[str, Any]] = {
    "women_25_34_sp_beauty": {
        "all": [
            {"field": "gender", "op": "eq", "value": "female"},
            {"field": "age", "op": "between", "value": [25, 34]},
            {"field": "state", "op": "eq", "value": "SP"},
            {"field": "bought_categories", "op": "contains", "value": "beleza_saude"},
        ]
    },
    "viewed_phones_7d_whatsapp_not_bought": {
        "all": [
            {"field": "viewed_categories", "key": "telefonia", "op": "within_last_days", "value": 7},
            {"field": "consent", "key": "marketing_whatsapp", "op": "eq", "value": "granted"},
            {"not": {"field": "bought_categories", "op": "contains", "value": "telefonia"}},
        ]
    },
    "big_spenders_ml_sao_paulo_cep": {
        "all": [
            {"field": "total_spent", "op": "gte", "value": "500"},
            {"field": "sources", "op": "contains", "value": "mercadolivre"},
            {"field": "zip", "op": "starts_with", "value": "01"},
        ]
    },
}


def segments() -> dict[str, Any]:
    templates = {t.id: t.rule for t in TEMPLATES}
    rules = {name: templates[name] for name in TEMPLATE_IDS} | CUSTOM
    return {name: parse_rule(rule) for name, rule in rules.items()}


def _ts(days_ago: np.ndarray, mask: np.ndarray) -> list[str | None]:
    return [
        (NOW - timedelta(days=float(d))).isoformat() if m else None
        for d, m in zip(days_ago, mask, strict=True)
    ]


def generate(n: int, seed: int, tenant: uuid.UUID) -> tuple[io.StringIO, io.StringIO]:
    """Tab-separated projection rows and tag rows for COPY."""
    rng = np.random.default_rng(seed)
    ids = [uuid.UUID(bytes=rng.bytes(16), version=4) for _ in range(n)]
    orders = np.minimum(rng.geometric(0.55, n) - 1 + (rng.random(n) < 0.85), 60)  # ~15% never bought
    aov = np.round(rng.lognormal(4.7, 0.7, n) * 100).astype(np.int64)
    spent = orders * aov
    last_days = rng.exponential(150, n)
    first_days = last_days + rng.exponential(200, n) * (orders > 1)
    bought = orders > 0
    born = rng.integers(18 * 365, 75 * 365, n)
    has_birth = rng.random(n) < 0.6
    gender = rng.choice(["female", "male", "other", ""], n, p=[0.5, 0.4, 0.02, 0.08])
    state = rng.choice(STATES, n)
    zips = rng.integers(1_000_000, 99_999_999, n)
    rfm = rng.integers(1, 6, (n, 3))
    group = rng.choice(RFM_GROUPS, n)
    clv = np.round(spent * rng.uniform(0.1, 1.5, n)).astype(np.int64)
    churn = rng.beta(2, 3, n)
    next_days = rng.normal(20, 40, n)
    seen_days = rng.exponential(60, n)
    seen = rng.random(n) < 0.7
    abandoned_days = rng.exponential(30, n)
    abandoned = rng.random(n) < 0.2

    first_at, last_at = _ts(first_days, bought), _ts(last_days, bought)
    seen_at, abandoned_at = _ts(seen_days, seen), _ts(abandoned_days, abandoned)
    next_at = _ts(-next_days, bought)
    rows, tags = io.StringIO(), io.StringIO()
    t = str(tenant)
    keys = keyring()
    for i, pid in enumerate(ids):
        birth = date(2026, 11, 29) - timedelta(days=int(born[i])) if has_birth[i] else None
        cep = f"{zips[i]:08d}"
        values = [
            str(pid), t, "1", str(orders[i]), str(spent[i]), str(aov[i]) if bought[i] else None,
            first_at[i], last_at[i], "pix" if i % 3 else "credit_card",
            None if birth is None else keys.seal(tenant, birth.isoformat()),
            None if birth is None else str(birth.year), None if birth is None else str(birth.month),
            gender[i] or None, CITIES.get(state[i], "Cidade"), state[i], keys.seal(tenant, cep), cep[:5],
            group[i] if bought[i] else None, *(str(v) for v in rfm[i]), str(clv[i]) if bought[i] else None,
            f"{churn[i]:.4f}" if bought[i] else None, next_at[i], seen_at[i], abandoned_at[i],
            NOW.isoformat(),
        ]  # fmt: skip
        rows.write("\t".join("\\N" if v is None else v for v in values) + "\n")
        if bought[i]:
            for source in rng.choice(SOURCES, min(int(orders[i]), 3), replace=False):
                tags.write(f"{pid}\tsource\t{source}\t{t}\t\\N\n")
            for category in rng.choice(CATEGORIES, min(int(orders[i]), 4), replace=False):
                tags.write(f"{pid}\tbought_category\t{category}\t{t}\t\\N\n")
        if seen[i]:
            for category in rng.choice(CATEGORIES, int(rng.integers(1, 5)), replace=False):
                at = (NOW - timedelta(days=float(rng.exponential(30)))).isoformat()
                tags.write(f"{pid}\tviewed_category\t{category}\t{t}\t{at}\n")
        for purpose in PURPOSES:
            decision = rng.choice(
                ["consent_granted", "consent_denied", "consent_revoked", ""], p=[0.5, 0.2, 0.1, 0.2]
            )
            if decision:
                tags.write(f"{pid}\t{decision}\t{purpose}\t{t}\t\\N\n")
    rows.seek(0)
    tags.seek(0)
    return rows, tags


PROJECTION_COLUMNS = (
    "profile_id", "tenant_id", "profile_version", "orders_count", "total_spent_minor",
    "average_order_value_minor", "first_order_at", "last_order_at", "preferred_payment_method",
    "birth_date_sealed", "birth_year", "birth_month", "gender", "city", "state", "zip_sealed", "zip_prefix",
    "rfm_group", "rfm_r", "rfm_f", "rfm_m", "clv_12m_minor",
    "churn_probability", "next_order_at", "last_seen_at", "cart_abandoned_at", "updated_at",
)  # fmt: skip
TAG_COLUMNS = ("profile_id", "kind", "value", "tenant_id", "at")


def load(engine: sa.Engine, rows: io.StringIO, tags: io.StringIO) -> None:
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:  # type: ignore[attr-defined]
            for table, columns, data in (
                ("profile_projection", PROJECTION_COLUMNS, rows),
                ("profile_tag", TAG_COLUMNS, tags),
            ):
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    while chunk := data.read(1 << 20):
                        copy.write(chunk)
            cursor.execute("ANALYZE profile_projection")
            cursor.execute("ANALYZE profile_tag")
        raw.commit()
    finally:
        raw.close()


def run_case(profiles: int, seed: int) -> dict[str, Any]:
    url = f"{PG}/clientela_segmentation_bench"
    reset_database(url)
    engine = make_engine(url)
    tenant = uuid.uuid4()
    try:
        tables = [sa.inspect(m).local_table for m in (ProfileProjection, ProfileTag)]
        segmentation_registry.metadata.create_all(engine, tables=tables)  # type: ignore[arg-type]
        started = time.perf_counter()
        rows, tags = generate(profiles, seed, tenant)
        generated = time.perf_counter() - started
        started = time.perf_counter()
        load(engine, rows, tags)
        loaded = time.perf_counter() - started
        per_segment: dict[str, dict[str, Any]] = {}
        with Session(engine) as session:
            tag_rows = session.execute(sa.text("SELECT count(*) FROM profile_tag")).scalar_one()
            for attempt in range(4):  # cold, then three warm runs
                for name, rule in segments().items():
                    started = time.perf_counter()
                    members = len(matching(session, rule, tenant_id=tenant, now=NOW))
                    seconds = time.perf_counter() - started
                    session.expunge_all()
                    entry = per_segment.setdefault(
                        name, {"members": members, "cold_s": seconds, "warm_s": []}
                    )
                    if attempt:
                        entry["warm_s"].append(seconds)
    finally:
        engine.dispose()
    for entry in per_segment.values():
        entry["warm_s"] = round(min(entry["warm_s"]), 3)
        entry["cold_s"] = round(entry["cold_s"], 3)
    return {
        "profiles": profiles,
        "tag_rows": tag_rows,
        "segments": len(per_segment),
        "cold_s": round(sum(e["cold_s"] for e in per_segment.values()), 2),
        "warm_s": round(sum(e["warm_s"] for e in per_segment.values()), 2),
        "load_s": round(loaded, 1),
        "generate_s": round(generated, 1),
        "per_segment": per_segment,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profiles", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    cases = [run_case(n, args.seed) for n in args.profiles]
    targets = {100_000: 2.0, 1_000_000: 10.0}
    results = report.publish(
        "segments",
        cases,
        columns=[
            ("profiles", lambda c: f"{c['profiles']:,}"),
            ("tag rows", lambda c: f"{c['tag_rows']:,}"),
            ("segments", lambda c: c["segments"]),
            ("all ten, cold (s)", lambda c: c["cold_s"]),
            ("all ten, warm (s)", lambda c: c["warm_s"]),
            ("target (s)", lambda c: targets.get(c["profiles"], "—")),
            ("COPY load (s)", lambda c: c["load_s"]),
        ],
        note="Targets: ≤ 2 s for 100,000 profiles and ≤ 10 s for 1,000,000 (the ten segments together). "
        "Per-segment times and member counts are in bench/results/segments.json.",
        command=None
        if args.profiles == [100_000, 1_000_000]
        else f"uv run python -m bench.segments --profiles {' '.join(map(str, args.profiles))}",
        section="## Segments (`make bench-segments`)\n\nTen typical segments (seven templates: Champions, "
        "one-time buyers, abandoned cart 7 days, high value at risk, birthday this month, replenishment due, "
        "inactive 180 days; and three custom rules mixing demographics, place, tags, viewing times and "
        "consents) evaluated by the segmentation service's evaluator over generated projections on "
        "PostgreSQL (birth dates and CEPs sealed as the service stores them: SQL on their generalised "
        "copies, and the Python evaluator on the opened values of the profiles SQL leaves undecided): the "
        "time to select every matching profile id.",
    )
    print(json.dumps({k: v for k, v in results.items() if k != "cases"}, indent=2))  # noqa: T201
    for case in cases:
        print(case["profiles"], case["cold_s"], case["warm_s"])  # noqa: T201


if __name__ == "__main__":
    main()
