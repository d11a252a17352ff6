"""What every benchmark does with its numbers: bench/results/<name>.json and its table in bench/README.md."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench import targets
from shared.consumer import ConsumerWorker
from shared.settings import ServiceSettings
from shared.web import tune_gc

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
Column = tuple[str, Callable[[dict[str, Any]], object]]


def publish(
    name: str,
    cases: list[dict[str, Any]],
    *,
    columns: list[Column],
    note: str,
    section: str,
    command: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the results and refresh the README table between `<!-- name:start -->` and `:end -->`
    (a new section is appended the first time). `extra`: more of the benchmark's findings, kept in its
    JSON after the cases. Returns the results."""
    results = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "reference_seconds": reference_seconds(),
        "command": command or f"make bench-{name}",
        "cases": cases,
        **(extra or {}),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = [
        "| " + " | ".join(title for title, _ in columns) + " |",
        "|" + "---|" * len(columns),
        *["| " + " | ".join(_cell(get(case)) for _, get in columns) + " |" for case in cases],
        "",
        f"Measured {results['measured_at']} on {results['machine']} (reference workload "
        f"{results['reference_seconds']} s) with `{results['command']}`. {note}",
    ]
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = start + "\n" + "\n".join(rows) + "\n" + end
    readme = ROOT / "bench" / "README.md"
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + f"\n\n{section}\n\n" + block + "\n"
    readme.write_text(text)
    refresh_glance()
    return results


def refresh_glance() -> None:
    """The *At a glance* table of bench/README.md (`bench.targets`), from every bench/results/*.json."""
    readme = ROOT / "bench" / "README.md"
    if readme.exists():
        results = {path.stem: json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))}
        readme.write_text(targets.with_table(readme.read_text(), results))


def _cell(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def reference_seconds() -> float:
    """CPU seconds of a fixed pure-Python workload (integer arithmetic and a dict of strings), the best of
    three: how fast the machine was when the results were published. Its speed varies by the hour (the
    same code measured up to 20 % apart), so compare runs with their reference times in mind."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        total = 0
        for i in range(3_000_000):
            total += i * i
        names = {str(i): i for i in range(500_000)}
        best = min(best, time.process_time() - started)
        del names
    return round(best, 3)


def apply_in_polls(
    workers: Iterable[tuple[str, object]],
    name: str,
    settings: ServiceSettings,
    raws: list[bytes],
    batch: int | None = None,
) -> tuple[float, float]:
    """Apply these Kafka record values through the service's consumer `name` (one of its `workers(engine,
    settings)`: `shared.consumer.ConsumerWorker.apply`) `batch` at a time (the settings' poll size unless
    given), as polls would deliver them, the collector tuned as the service's processes tune it once
    started; return the wall and CPU seconds it took."""
    worker = dict(workers)[name]
    assert isinstance(worker, ConsumerWorker)
    batch = batch or settings.consumer_max_poll_records
    tune_gc(settings)
    started = time.perf_counter()
    cpu_started = time.process_time()
    for start in range(0, len(raws), batch):
        worker.apply(raws[start : start + batch])
    return time.perf_counter() - started, time.process_time() - cpu_started
