"""`clientela traits refresh`: refresh the tenant-wide traits (RFM, CLV, churn, next order) now.

By default through the profile API, as the tenant's own systems would: `POST /v1/traits:refresh` with the
tenant's key (CLIENTELA_API_KEY, scope `profiles:write`), then `GET /v1/traits/refreshes/{id}` until the
service's worker has finished, with a progress bar.

With `--tenant ID` (repeatable) or `--all-tenants`, an operator refreshes tenants without their keys,
directly on the profile database (PROFILE_DATABASE_URL): a refresh is queued for each tenant
(`services.profile.refresh.request`; one already queued or running is reused) and this process runs
queued refreshes with the service's own worker (`TraitsRefresher`) until those are done. The profile
service's worker may take some of them instead, which is just as good: this follows them either way.
Writing the new traits seals events for the outbox, so this needs the profile service's secret
(CLIENTELA_SECRET_KEY, or its CLIENTELA_SECRET_KEY_FILE).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from cli.ops import (
    API_KEY_ENV,
    DEFAULT_URLS,
    Service,
    call,
    err,
    fail,
    http_client,
    out,
    secret_from_env,
    service_settings,
)
from shared.crypto import SecretSettings
from shared.db import make_engine
from shared.infra import Tenant

if TYPE_CHECKING:
    from services.profile.models import TraitsRefresh

traits_app = typer.Typer(help="The profiles' tenant-wide traits (RFM, CLV, churn).", no_args_is_help=True)

FINISHED = ("done", "failed")
POLL_S = 0.5
CLI_REASON = "cli"


def _bar() -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=err(), transient=True)


@traits_app.command("refresh")
def refresh_traits(
    tenant: Annotated[
        list[UUID] | None,
        typer.Option(help="Refresh this tenant directly on the profile database (repeatable; no API key)."),
    ] = None,
    all_tenants: Annotated[
        bool, typer.Option("--all-tenants", help="Refresh every tenant directly on the profile database.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Follow the refresh until it ends (API mode).")] = True,
    timeout: Annotated[float, typer.Option(min=1, help="Give up following after this many seconds.")] = 3600,
    profile_url: Annotated[
        str, typer.Option("--profile-url", envvar="CLIENTELA_PROFILE_URL", help="The profile service.")
    ] = DEFAULT_URLS["profile"],
) -> None:
    """Refresh RFM scores and groups, CLV, churn probability and next order now, with a progress bar.

    Without --tenant/--all-tenants: the tenant of CLIENTELA_API_KEY, through the profile API (the service's
    worker runs it). With them: directly on the profile database, run by this process."""
    if tenant and all_tenants:
        raise typer.BadParameter("give --tenant or --all-tenants, not both", param_hint="--tenant")
    if tenant or all_tenants:
        _refresh_directly(tenant or None, timeout=timeout)
    else:
        _refresh_through_api(profile_url, wait=wait, timeout=timeout)


# -- through the API ---------------------------------------------------------------------------------------


def _refresh_through_api(profile_url: str, *, wait: bool, timeout: float) -> None:
    token = secret_from_env(API_KEY_ENV, "a key with the profiles:write scope (or use --tenant)")
    with http_client(profile_url) as client:
        job: dict[str, Any] = call(
            client, "POST", "/v1/traits:refresh", token=token, expect=(202,), service="profile"
        ).json()
        err().print(f"traits refresh {job['id']} {job['status']}", highlight=False)
        if not wait:
            return
        deadline = time.monotonic() + timeout
        with _bar() as bar:
            task = bar.add_task("profiles", total=None)
            while job["status"] not in FINISHED:
                if time.monotonic() > deadline:
                    fail(
                        f"refresh {job['id']} still {job['status']} after {timeout:g} s: "
                        "is the profile service's worker running?"
                    )
                time.sleep(POLL_S)
                path = f"/v1/traits/refreshes/{job['id']}"
                job = call(client, "GET", path, token=token, expect=(200,), service="profile").json()
                bar.update(task, total=job["profiles_total"], completed=job["profiles_done"])
    table = _summary_table()
    _summary_row(
        table, "the key's tenant", job["status"], job["profiles_done"], job["profiles_total"], job["model"]
    )
    out().print(table)
    if job["status"] != "done":
        fail(f"refresh {job['id']} failed: {job.get('error') or 'no detail'}")


# -- directly on the database ------------------------------------------------------------------------------


def _refresh_directly(tenants: list[UUID] | None, *, timeout: float) -> None:
    # Imported here: the prediction models load scipy, which the other commands do without (seconds).
    from services.profile import refresh

    secrets = SecretSettings()
    if secrets.secret_key is None and not secrets.secret_key_file.exists():
        fail(
            "set CLIENTELA_SECRET_KEY (or CLIENTELA_SECRET_KEY_FILE) to the profile service's secret: the "
            "new traits are announced in sealed outbox events"
        )
    settings = service_settings(Service.profile)
    engine = make_engine(settings.database_url)

    class QueuedOnly(refresh.TraitsRefresher):
        """The service's worker without its schedule: it runs queued refreshes and queues none (the
        service's own worker keeps the schedule)."""

        def schedule(self) -> None:
            return None

    every = timedelta(hours=getattr(settings, "traits_refresh_hours", 24))
    worker = QueuedOnly(engine, every=every, poll_interval_s=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="cli-traits-refresh", daemon=True)
    finished_well = False
    try:
        jobs = _queue(engine, tenants, refresh.request)
        if not jobs:
            err().print("no tenants in the profile database", highlight=False)
            return
        thread.start()
        finished = _follow(engine, jobs, thread, timeout=timeout)
        finished_well = True
    except SQLAlchemyError as exc:
        fail(f"cannot work on the profile database ({type(exc).__name__}); check PROFILE_DATABASE_URL")
    finally:
        stop.set()
        if thread.is_alive():
            # After a success, let a refresh it has started end; after an error or a timeout, do not wait
            # long: a refresh left running is taken over by the service's worker (refresh.STALE_AFTER).
            thread.join(None if finished_well else 5)
        engine.dispose()
    table = _summary_table()
    for tenant_id, job in finished.items():
        _summary_row(table, str(tenant_id), job.status, job.profiles_done, job.profiles_total, job.model)
    out().print(table)
    failed = [str(t) for t, job in finished.items() if job.status != "done"]
    if failed:
        fail(f"the refresh failed for {', '.join(failed)} (see the service's logs)")


def _queue(engine: Engine, tenants: list[UUID] | None, request: Any) -> dict[UUID, UUID]:
    """tenant id -> id of its refresh, queued now or already queued or running."""
    with Session(engine) as session:
        known = set(session.exec(select(Tenant.id)).all())
        wanted = sorted(known) if tenants is None else list(dict.fromkeys(tenants))
        unknown = [str(t) for t in wanted if t not in known]
        if unknown:
            fail(f"no such tenant in the profile database: {', '.join(unknown)}")
        return {tenant_id: request(session, tenant_id, reason=CLI_REASON).id for tenant_id in wanted}


def _follow(
    engine: Engine, jobs: dict[UUID, UUID], thread: threading.Thread, *, timeout: float
) -> dict[UUID, TraitsRefresh]:
    from services.profile.models import TraitsRefresh

    deadline = time.monotonic() + timeout
    with _bar() as bar:
        task = bar.add_task(f"profiles ({len(jobs)} tenants)", total=None)
        while True:
            with Session(engine) as session:
                query = select(TraitsRefresh).where(col(TraitsRefresh.id).in_(list(jobs.values())))
                found = {job.tenant_id: job for job in session.exec(query)}
            totals = [job.profiles_total for job in found.values()]
            known = all(t is not None for t in totals)
            bar.update(
                task,
                total=sum(t or 0 for t in totals) if known else None,
                completed=sum(job.profiles_done for job in found.values()),
            )
            if all(job.status in FINISHED for job in found.values()):
                return found
            if not thread.is_alive():
                fail("the refresh worker stopped (see the logs); the refreshes stay queued for the service")
            if time.monotonic() > deadline:
                fail(
                    f"the refreshes are not finished after {timeout:g} s; "
                    "the profile service's worker takes them over"
                )
            time.sleep(POLL_S)


def _summary_table() -> Table:
    return Table("tenant", "status", "profiles", "customers", "repeat buyers", title="traits refresh")


def _summary_row(
    table: Table, tenant: str, status: str, done: int, total: int | None, model: dict[str, Any]
) -> None:
    """Counts only: how many customers the models saw, never who."""
    table.add_row(
        tenant,
        status,
        f"{done}/{'?' if total is None else total}",
        str(model.get("customers", "-")),
        str(model.get("repeaters", "-")),
    )
