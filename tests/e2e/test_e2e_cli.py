"""The `clientela` CLI against the running services: generate data, then import it, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.conftest import ServiceStack
from tests.support import ADMIN_TOKEN, auth

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
OLIST_SUBSET = ROOT.parent / "shared" / "data" / "olist" / "subset_8135_orders"


def clientela(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {}), "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_generates_data_and_imports_it_and_the_olist_extract(
    services: ServiceStack, tmp_path: Path
) -> None:
    created = httpx.post(f"{services.ingest_url}/v1/tenants", json={"name": "CLI"}, headers=auth(ADMIN_TOKEN))
    assert created.status_code == 201
    env = {"CLIENTELA_INGEST_URL": services.ingest_url, "CLIENTELA_API_KEY": created.json()["api_key"]}

    generated = clientela("generate", "--orders", "300", "--seed", "7", "--out", str(tmp_path / "gen"))
    assert generated.returncode == 0, generated.stderr
    orders = (tmp_path / "gen" / "orders.jsonl").read_bytes().splitlines()
    versions = {(o["source"], o["external_id"]) for o in map(orjson.loads, orders)}

    imported = clientela("import", str(tmp_path / "gen" / "orders.jsonl"), "--format", "jsonl", env=env)
    assert imported.returncode == 0, imported.stderr
    assert "done" in imported.stderr
    jobs = httpx.get(f"{services.ingest_url}/v1/imports", headers=auth(env["CLIENTELA_API_KEY"])).json()[
        "items"
    ]
    job = jobs[0]
    assert job["rows_read"] == len(orders)
    assert job["rejected"] == 0
    assert job["accepted"] == len(versions)  # one record per order; later lines are new versions
    assert job["accepted"] + job["updated"] + job["stale"] + job["duplicates"] == len(orders)

    olist = clientela("import", str(OLIST_SUBSET), "--format", "olist", env=env)
    assert olist.returncode == 0, olist.stderr
    job = httpx.get(f"{services.ingest_url}/v1/imports", headers=auth(env["CLIENTELA_API_KEY"])).json()[
        "items"
    ][0]
    assert (job["format"], job["rows_read"], job["accepted"], job["rejected"]) == ("olist", 8135, 8135, 0)

    unknown_format = clientela("import", str(OLIST_SUBSET), "--format", "xml", env=env)
    assert unknown_format.returncode == 2  # a usage error, caught before any upload
    wrong_key = clientela(
        "import", str(OLIST_SUBSET), "--format", "olist", env={**env, "CLIENTELA_API_KEY": "clt_x"}
    )
    assert wrong_key.returncode == 1
    assert "401" in wrong_key.stderr
