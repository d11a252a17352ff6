"""`clientela webhooks redeliver`: send a webhook endpoint's messages again, through segmentation's API.

A time range (`POST /v1/webhook-endpoints/{id}/redeliver`) or one delivery
(`.../deliveries/{delivery_id}/redeliver`); each message goes again with its own `webhook-id`, so
receivers deduplicate. The key (CLIENTELA_API_KEY) needs `webhooks:manage`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import typer

from cli.ops import API_KEY_ENV, DEFAULT_URLS, call, http_client, out, parse_time, secret_from_env

webhooks_app = typer.Typer(help="Webhook endpoints and their deliveries.", no_args_is_help=True)


class Status(StrEnum):
    failed = "failed"
    all = "all"


@webhooks_app.command("redeliver")
def redeliver(
    endpoint: Annotated[UUID, typer.Option(help="The webhook endpoint's id.")],
    since: Annotated[
        str | None, typer.Option(help="Messages created at or after this time (ISO 8601 with zone).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="...and before this time (ISO 8601 with zone; default: now).")
    ] = None,
    status: Annotated[
        Status,
        typer.Option(help="failed: messages whose delivery failed; all: delivered ones too."),
    ] = Status.failed,
    delivery: Annotated[
        UUID | None, typer.Option(help="Redeliver this one delivery instead of a time range.")
    ] = None,
    segmentation_url: Annotated[
        str,
        typer.Option(
            "--segmentation-url", envvar="CLIENTELA_SEGMENTATION_URL", help="The segmentation service."
        ),
    ] = DEFAULT_URLS["segmentation"],
) -> None:
    """Queue an endpoint's messages of a time range (or one delivery) for delivery again.

    A message that still has a pending delivery is left alone; a disabled endpoint must be enabled first."""
    if (since is None) == (delivery is None):
        raise typer.BadParameter("give either --since (a time range) or --delivery", param_hint="--since")
    body: dict[str, Any] = {}
    if since is not None:
        start = parse_time(since, "--since")
        body = {"since": start.isoformat(), "include_delivered": status is Status.all}
        if until is not None:
            end = parse_time(until, "--until")
            if end <= start:
                raise typer.BadParameter("must be after --since", param_hint="--until")
            body["until"] = end.isoformat()
    token = secret_from_env(API_KEY_ENV, "a key with the webhooks:manage scope")
    path = f"/v1/webhook-endpoints/{endpoint}"
    with http_client(segmentation_url) as client:
        if delivery is not None:
            queued = call(
                client,
                "POST",
                f"{path}/deliveries/{delivery}/redeliver",
                token=token,
                expect=(202,),
                service="segmentation",
            ).json()
            out().print(
                f"delivery {delivery} queued again as {queued['id']} (webhook-id {queued['message_id']})",
                highlight=False,
            )
            return
        result = call(
            client, "POST", f"{path}/redeliver", token=token, expect=(202,), service="segmentation", json=body
        ).json()
    what = "failed or delivered" if status is Status.all else "failed"
    out().print(
        f"{result['queued']} {what} message(s) of endpoint {endpoint} queued for delivery again",
        highlight=False,
    )
