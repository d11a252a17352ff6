"""bench.ingest: the generated case is the run with the median orders/s accepted, with every run's figures."""

from __future__ import annotations

from typing import Any

from bench.ingest import median_run


def run(accepted: int, cpu: float) -> dict[str, Any]:
    return {
        "case": "generated",
        "accepted_per_s": accepted,
        "published_per_s": accepted - 50,
        "ingest_cpu_seconds": cpu,
        "machine_cpu_seconds_accepted": cpu + 5,
        "postgres_cpu_seconds_accepted": cpu / 2,
        "outcomes": {"accepted": 100},
    }


def test_the_median_run_is_kept_with_every_runs_figures() -> None:
    chosen = median_run([run(9_000, 14.0), run(7_000, 16.0), run(10_800, 12.5)])
    assert (chosen["accepted_per_s"], chosen["ingest_cpu_seconds"]) == (9_000, 14.0)  # its own figures
    assert chosen["outcomes"] == {"accepted": 100}
    assert [r["accepted_per_s"] for r in chosen["runs"]] == [9_000, 7_000, 10_800]  # in the order they ran
    assert chosen["runs"][1] == {
        "accepted_per_s": 7_000,
        "published_per_s": 6_950,
        "ingest_cpu_seconds": 16.0,
        "machine_cpu_seconds_accepted": 21.0,
        "postgres_cpu_seconds_accepted": 8.0,
    }


def test_of_an_even_number_the_lower_middle_run_is_kept() -> None:
    assert (
        median_run([run(8_000, 1), run(9_000, 1), run(7_000, 1), run(10_000, 1)])["accepted_per_s"] == 8_000
    )
    assert median_run([run(8_000, 1)])["accepted_per_s"] == 8_000
