"""`clientela import PATH --format olist|csv|jsonl`: upload through the ingest API and follow the job.

The CLI drives the same import as any client (POST /v1/imports, then GET /v1/imports/{id}); it never
touches a database. For `--format olist`, PATH is the folder with the published Olist tables.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

OLIST_NAMES = (
    "olist_orders_dataset",
    "olist_customers_dataset",
    "olist_order_items_dataset",
    "olist_order_payments_dataset",
    "olist_products_dataset",
    "product_category_name_translation",
)


def files_to_upload(path: Path, fmt: str) -> list[Path]:
    if fmt != "olist":
        if not path.is_file():
            raise typer.BadParameter(f"{path} is not a file", param_hint="PATH")
        return [path]
    if not path.is_dir():
        raise typer.BadParameter(
            "for --format olist, PATH is the folder with the Olist tables", param_hint="PATH"
        )
    found = []
    for name in OLIST_NAMES:
        matches = [p for p in (path / f"{name}.csv.gz", path / f"{name}.csv") if p.exists()]
        if matches:
            found.append(matches[0])
    return found


def import_command(
    path: Annotated[Path, typer.Argument(help="The file to import (the Olist folder for --format olist).")],
    format: Annotated[str, typer.Option("--format", help="csv, jsonl or olist.")],
    kind: Annotated[str, typer.Option(help="orders, customers or events.")] = "orders",
    url: Annotated[
        str, typer.Option(envvar="CLIENTELA_INGEST_URL", help="The ingest service.")
    ] = "http://127.0.0.1:8001",
    api_key: Annotated[str, typer.Option(envvar="CLIENTELA_API_KEY", help="The tenant's API key.")] = "",
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = True,
) -> None:
    """Import a CSV, JSONL or the Olist dataset through the ingest API, with a progress bar."""
    console = Console(stderr=True)
    if not api_key:
        raise typer.BadParameter("set --api-key or CLIENTELA_API_KEY", param_hint="--api-key")
    if format not in ("csv", "jsonl", "olist"):
        raise typer.BadParameter("one of csv, jsonl, olist", param_hint="--format")
    paths = files_to_upload(path, format)
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(30, write=600)) as client:
        with ExitStack() as stack:
            files = [("files", (p.name, stack.enter_context(p.open("rb")))) for p in paths]
            response = client.post("/v1/imports", data={"format": format, "kind": kind}, files=files)
        if response.status_code != 202:
            console.print(f"[red]import refused ({response.status_code}):[/red] {_detail(response)}")
            raise typer.Exit(1)
        job: dict[str, Any] = response.json()
        console.print(f"import {job['id']} queued")
        if not wait:
            return
        job = follow(client, job, console)
    table = Table(title=f"import {job['id']}: {job['status']}", show_header=False)
    for field in ("rows_read", "accepted", "updated", "duplicates", "stale", "rejected", "rate_per_s"):
        table.add_row(field.replace("_", " "), str(job[field]))
    console.print(table)
    if job["rejected"]:
        console.print(f"rejected rows and reasons: GET {url}{job['rejected_report']}")
    if job["status"] != "done":
        raise typer.Exit(1)


def follow(client: httpx.Client, job: dict[str, Any], console: Console) -> dict[str, Any]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("rows", total=None)
        while job["status"] in ("pending", "running"):
            time.sleep(0.5)
            response = client.get(f"/v1/imports/{job['id']}")
            response.raise_for_status()
            job = response.json()
            bar.update(task, total=job["rows_total"], completed=job["rows_read"])
    return job


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]
