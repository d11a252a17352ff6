"""`clientela tenants create|list` and `clientela keys issue|list|rotate|revoke`.

Tenants are created and keys managed through ingest's HTTP API (`POST /v1/tenants` with the admin token,
`/v1/api-keys` with a key holding `keys:manage`), exactly as any client would. Ingest has no route that
lists tenants, so `tenants list` reads ingest's own database (`INGEST_DATABASE_URL`), read-only.

A new key is printed once, alone on standard output (`KEY=$(clientela keys issue ...)`); everything
else goes to standard error or, for listings, shows only a key's first characters (`prefix`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from cli.ops import (
    ADMIN_TOKEN_ENV,
    API_KEY_ENV,
    DEFAULT_URLS,
    Service,
    call,
    err,
    fail,
    http_client,
    out,
    parse_time,
    secret_from_env,
    service_settings,
)
from shared.auth import ALL_SCOPES
from shared.db import make_engine, utcnow
from shared.infra import ApiKey, Tenant

tenants_app = typer.Typer(help="Tenants (sellers): create one, list them.", no_args_is_help=True)
keys_app = typer.Typer(
    help=f"A tenant's API keys through ingest's /v1/api-keys, with the key in {API_KEY_ENV} "
    "(it needs the `keys:manage` scope).",
    no_args_is_help=True,
)

IngestUrl = Annotated[
    str, typer.Option("--ingest-url", envvar="CLIENTELA_INGEST_URL", help="The ingest service.")
]


# -- tenants -----------------------------------------------------------------------------------------------


@tenants_app.command("create")
def create_tenant(
    name: Annotated[str, typer.Argument(help="The seller's display name.")],
    ingest_url: IngestUrl = DEFAULT_URLS["ingest"],
) -> None:
    """Create a tenant and its first API key (every scope), with the admin token in CLIENTELA_ADMIN_TOKEN.

    The key is printed once, alone on standard output: store it now, it cannot be shown again."""
    token = secret_from_env(ADMIN_TOKEN_ENV, "the admin token")
    with http_client(ingest_url) as client:
        response = call(
            client, "POST", "/v1/tenants", token=token, expect=(201,), service="ingest", json={"name": name}
        )
    created = response.json()
    err().print(
        f"tenant [bold]{created['id']}[/bold] created; its first API key (every scope) is below, "
        "shown once: store it now.",
        highlight=False,
    )
    out().print(created["api_key"], highlight=False, soft_wrap=True)


@tenants_app.command("list")
def list_tenants() -> None:
    """Every tenant with its number of active keys. Reads ingest's database (INGEST_DATABASE_URL): ingest
    has no HTTP route that lists tenants."""
    settings = service_settings(Service.ingest)
    engine = make_engine(settings.database_url)
    now = utcnow()
    try:
        with Session(engine) as session:
            tenants = session.exec(select(Tenant).order_by(col(Tenant.created_at), col(Tenant.id))).all()
            active = sa.and_(
                col(ApiKey.revoked_at).is_(None),
                sa.or_(col(ApiKey.expires_at).is_(None), col(ApiKey.expires_at) > now),
            )
            counts = dict(
                session.exec(
                    select(ApiKey.tenant_id, sa.func.count()).where(active).group_by(col(ApiKey.tenant_id))
                ).all()
            )
    except SQLAlchemyError as exc:
        fail(f"cannot read ingest's database ({type(exc).__name__}); check INGEST_DATABASE_URL")
    finally:
        engine.dispose()
    table = Table("id", "name", "created", "active keys", title=f"{len(tenants)} tenants")
    for tenant in tenants:
        table.add_row(str(tenant.id), tenant.name, _when(tenant.created_at), str(counts.get(tenant.id, 0)))
    out().print(table)


# -- keys --------------------------------------------------------------------------------------------------


@keys_app.command("issue")
def issue_key(
    name: Annotated[str, typer.Option(help="What the key is for (not secret).")],
    scope: Annotated[
        list[str],
        typer.Option(help=f"A scope the key gets (repeat it); one of: {', '.join(ALL_SCOPES)}."),
    ],
    expires: Annotated[
        str | None, typer.Option(help="When it stops working, ISO 8601 with zone (default: never).")
    ] = None,
    ingest_url: IngestUrl = DEFAULT_URLS["ingest"],
) -> None:
    """Issue a key; it is printed once, alone on standard output. A key can only grant scopes it holds."""
    unknown = [s for s in scope if s not in ALL_SCOPES]
    if unknown:
        raise typer.BadParameter(f"unknown scope(s): {', '.join(unknown)}", param_hint="--scope")
    body: dict[str, Any] = {"name": name, "scopes": scope}
    if expires is not None:
        body["expires_at"] = parse_time(expires, "--expires").isoformat()
    token = secret_from_env(API_KEY_ENV, "a key with the keys:manage scope")
    with http_client(ingest_url) as client:
        response = call(
            client, "POST", "/v1/api-keys", token=token, expect=(201,), service="ingest", json=body
        )
    created = response.json()
    err().print(
        f"key [bold]{created['id']}[/bold] ({created['prefix']}…, {', '.join(created['scopes'])}) issued; "
        "it is below, shown once: store it now.",
        highlight=False,
    )
    out().print(created["api_key"], highlight=False, soft_wrap=True)


@keys_app.command("list")
def list_keys(ingest_url: IngestUrl = DEFAULT_URLS["ingest"]) -> None:
    """The tenant's keys (revoked and expired ones too): id, prefix, name, scopes, status, expiry."""
    token = secret_from_env(API_KEY_ENV, "a key with the keys:manage scope")
    keys: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    with http_client(ingest_url) as client:
        while True:
            page = call(
                client, "GET", "/v1/api-keys", token=token, expect=(200,), service="ingest", params=params
            ).json()
            keys += page["items"]
            if not page.get("next_cursor"):
                break
            params["cursor"] = page["next_cursor"]
    table = Table("id", "prefix", "name", "scopes", "status", "expires", title=f"{len(keys)} keys")
    for key in keys:
        table.add_row(
            key["id"],
            key["prefix"],
            key["name"],
            " ".join(key["scopes"]),
            key["status"],
            _when(key["expires_at"]),
        )
    out().print(table)


@keys_app.command("rotate")
def rotate_key(
    key_id: Annotated[str, typer.Argument(help="The key to replace (its id, see `keys list`).")],
    grace_seconds: Annotated[
        int, typer.Option(min=0, help="How long the old key keeps working (at most 30 days).")
    ] = 86_400,
    ingest_url: IngestUrl = DEFAULT_URLS["ingest"],
) -> None:
    """A new key with the same name and scopes, printed once on standard output; the old one keeps
    working for --grace-seconds."""
    token = secret_from_env(API_KEY_ENV, "a key with the keys:manage scope")
    with http_client(ingest_url) as client:
        response = call(
            client,
            "POST",
            f"/v1/api-keys/{key_id}/rotate",
            token=token,
            expect=(201,),
            service="ingest",
            json={"grace_seconds": grace_seconds},
        )
    rotated = response.json()
    new, previous = rotated["key"], rotated["previous"]
    err().print(
        f"key {previous['id']} now expires {_when(previous['expires_at'])}; its replacement "
        f"[bold]{new['id']}[/bold] ({new['prefix']}…) is below, shown once: store it now.",
        highlight=False,
    )
    out().print(new["api_key"], highlight=False, soft_wrap=True)


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key to revoke (its id, see `keys list`).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    ingest_url: IngestUrl = DEFAULT_URLS["ingest"],
) -> None:
    """Revoke a key on every service within seconds. The tenant's last key with keys:manage cannot be
    revoked (issue another first)."""
    token = secret_from_env(API_KEY_ENV, "a key with the keys:manage scope")
    if not yes:
        typer.confirm(f"Revoke key {key_id}? Whatever uses it stops working.", abort=True, err=True)
    with http_client(ingest_url) as client:
        call(client, "DELETE", f"/v1/api-keys/{key_id}", token=token, expect=(204,), service="ingest")
    err().print(f"key {key_id} revoked", highlight=False)


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "never"
    at = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return at.isoformat(timespec="seconds")
