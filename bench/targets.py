"""The issues' measured targets, and where the latest results stand against them: the *At a glance* table
at the top of bench/README.md. `bench.report.publish` refreshes it whenever a benchmark publishes its
results; `uv run python -m bench.targets` refreshes it from bench/results/*.json alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Case = Mapping[str, Any]
START, END = "<!-- glance:start -->", "<!-- glance:end -->"


@dataclass(frozen=True)
class Target:
    issue: int
    what: str
    benchmark: str  # bench/results/<benchmark>.json
    case: Callable[[Case], bool]  # which of its cases
    value: str  # the case's field
    goal: float | str  # a number, or (with `versus`) the field of the other case that is the goal
    at_least: bool  # met when value >= goal (else value <= goal)
    versus: tuple[str, Callable[[Case], bool]] | None = None  # the other case: (its name, which case)


def _is(**fields: Any) -> Callable[[Case], bool]:
    return lambda case: all(case.get(k) == v for k, v in fields.items())


TARGETS = [
    Target(
        3,
        "Ingest: orders/s accepted, 100,000 generated",
        "ingest",
        _is(case="generated"),
        "accepted_per_s",
        10_000,
        True,
    ),
    Target(
        4,
        "Profile consumer: orders/s, 100,000 generated",
        "profiles",
        _is(case="generated"),
        "orders_per_s",
        10_000,
        True,
    ),
    Target(
        4,
        "Profile consumer, two processes (2 cores): orders/s, 100,000 generated",
        "profiles",
        _is(case="generated, 2 processes"),
        "orders_per_s",
        10_000,
        True,
    ),
    Target(
        4,
        "Identity resolution: pairwise F1, against Splink's",
        "identity",
        _is(case="clientela"),
        "f1",
        "f1",
        True,
        versus=("Splink", lambda case: str(case.get("case", "")).startswith("splink")),
    ),
    Target(
        4,
        "Identity resolution: merges across documents",
        "identity",
        _is(case="clientela"),
        "cross_document_merges",
        0,
        False,
    ),
    Target(
        5,
        "Ten segments evaluated, 100,000 profiles (s)",
        "segments",
        _is(profiles=100_000),
        "cold_s",
        2.0,
        False,
    ),
    Target(
        5,
        "Ten segments evaluated, 1,000,000 profiles (s)",
        "segments",
        _is(profiles=1_000_000),
        "cold_s",
        10.0,
        False,
    ),
    Target(
        5,
        "Order posted → webhook received, p95 at 200 orders/s (s)",
        "freshness",
        _is(rate=200),
        "p95_s",
        1.0,
        False,
    ),
    Target(
        7,
        "Pipeline: 100,000 orders end to end (s)",
        "pipeline",
        _is(case="generated 100,000"),
        "wall_seconds",
        10.0,
        False,
    ),
    Target(
        7, "Pipeline / floor, 100,000 orders", "pipeline", _is(case="generated 100,000"), "ratio", 3.0, False
    ),
    Target(
        7, "Profile by id, p99 at 500 req/s (ms)", "api", _is(lookup="id", rate=500), "p99_ms", 20.0, False
    ),
    Target(
        7,
        "Profile by e-mail, p99 at 500 req/s (ms)",
        "api",
        _is(lookup="email", rate=500),
        "p99_ms",
        20.0,
        False,
    ),
]


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _first(cases: list[Case], match: Callable[[Case], bool]) -> Case | None:
    return next((case for case in cases if match(case)), None)


def row(target: Target, results: Mapping[str, Mapping[str, Any]]) -> str:
    """The target's line of the table: latest value, goal, met or not, and when and how it was measured."""
    sign = "≥" if target.at_least else ("=" if target.goal == 0 else "≤")
    found = results.get(target.benchmark)
    cases = list(found.get("cases", [])) if found else []
    case = _first(cases, target.case)
    goal: Any = target.goal
    if target.versus is not None:
        other = _first(cases, target.versus[1])
        goal = None if other is None else other.get(str(target.goal))
    value = None if case is None else case.get(target.value)
    if found is None or value is None or goal is None:
        cells = ["not measured", f"{sign} {_number(goal) if goal is not None else '?'}", "—", "—"]
    else:
        met = value >= goal if target.at_least else value <= goal
        label = f"{sign} {_number(goal)}" + (f" ({target.versus[0]})" if target.versus is not None else "")
        cells = [
            _number(value),
            label,
            "yes" if met else "**no**",
            f"{found.get('measured_at', '?')}, `{found.get('command', '?')}`",
        ]
    return f"| {target.issue} | {target.what} | " + " | ".join(cells) + " |"


def table(results: Mapping[str, Mapping[str, Any]]) -> str:
    lines = [
        "| issue | target | latest | goal | met | measured |",
        "|---|---|---|---|---|---|",
        *(row(target, results) for target in TARGETS),
    ]
    return "\n".join(lines)


def with_table(text: str, results: Mapping[str, Mapping[str, Any]]) -> str:
    """`text` (bench/README.md) with the table between its markers; left as it is without them."""
    if START not in text or END not in text:
        return text
    block = f"{START}\n{table(results)}\n{END}"
    return text[: text.index(START)] + block + text[text.index(END) + len(END) :]


if __name__ == "__main__":
    from bench.report import refresh_glance

    refresh_glance()
