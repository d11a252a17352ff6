"""bench.targets: the *At a glance* table of bench/README.md, each target against the latest result."""

from __future__ import annotations

from typing import Any

from bench import targets


def results(**benchmarks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: {"measured_at": "2026-12-01 03:45 UTC", "command": f"make bench-{name}", "cases": cases}
        for name, cases in benchmarks.items()
    }


def line(table: str, what: str) -> list[str]:
    found = [row for row in table.splitlines() if f" {what} " in row]
    assert len(found) == 1, what
    return [cell.strip() for cell in found[0].strip("|").split("|")]


def test_each_target_reads_its_case_and_says_whether_it_is_met() -> None:
    table = targets.table(
        results(
            ingest=[
                {"case": "olist-extract", "accepted_per_s": 12_000},
                {"case": "generated", "accepted_per_s": 5_817},
            ],
            api=[
                {"lookup": "id", "rate": 1000, "p99_ms": 41.9},
                {"lookup": "id", "rate": 500, "p99_ms": 4.16},
                {"lookup": "email", "rate": 500, "p99_ms": 25.0},
            ],
        )
    )
    # The generated case, not the Olist extract's faster one; at least 10,000 wanted.
    assert line(table, "Ingest: orders/s accepted, 100,000 generated") == [
        "3",
        "Ingest: orders/s accepted, 100,000 generated",
        "5,817",
        "≥ 10,000",
        "**no**",
        "2026-12-01 03:45 UTC, `make bench-ingest`",
    ]
    assert line(table, "Profile by id, p99 at 500 req/s (ms)")[2:5] == [
        "4.16",
        "≤ 20.0",
        "yes",
    ]  # not 1,000/s
    assert line(table, "Profile by e-mail, p99 at 500 req/s (ms)")[2:5] == ["25.0", "≤ 20.0", "**no**"]


def test_a_goal_can_be_another_cases_value() -> None:
    identity = [
        {"case": "clientela", "f1": 0.9974, "cross_document_merges": 0},
        {"case": "splink (p ≥ 0.9)", "f1": 0.9389, "cross_document_merges": 130},
    ]
    table = targets.table(results(identity=identity))
    assert line(table, "Identity resolution: pairwise F1, against Splink's")[2:5] == [
        "0.9974",
        "≥ 0.9389 (Splink)",
        "yes",
    ]
    assert line(table, "Identity resolution: merges across documents")[2:5] == ["0", "= 0", "yes"]
    identity[0]["f1"] = 0.9
    table = targets.table(results(identity=identity))
    assert line(table, "Identity resolution: pairwise F1, against Splink's")[4] == "**no**"


def test_a_benchmark_not_run_yet_says_so() -> None:
    table = targets.table(results())
    assert line(table, "Pipeline: 100,000 orders end to end (s)")[2:5] == ["not measured", "≤ 10.0", "—"]
    assert len(table.splitlines()) == 2 + len(targets.TARGETS)


def test_the_table_goes_between_its_markers_and_nowhere_else() -> None:
    readme = f"# Benchmarks\n\nintro\n\n{targets.START}\nold table\n{targets.END}\n\n## Ingest\n"
    refreshed = targets.with_table(readme, results())
    assert refreshed.startswith("# Benchmarks\n\nintro\n\n" + targets.START + "\n| issue |")
    assert refreshed.endswith(targets.END + "\n\n## Ingest\n")
    assert "old table" not in refreshed
    assert targets.with_table(refreshed, results()) == refreshed  # refreshing again changes nothing
    assert targets.with_table("# Benchmarks\n", results()) == "# Benchmarks\n"  # no markers: left alone
