"""`clientela outbox republish`: have a service's outbox relay publish a time window's events again.

Works on the service's own database (its `*_DATABASE_URL`): the published outbox rows created in the
window are marked unpublished, in one transaction; the service's relay, wherever it runs, then publishes
them again in id order (the bodies stay sealed here; the relay opens them as it publishes). Consumers
deduplicate by event id, so those that had them change nothing; a consumer that lost them gets them back,
after any newer events it already has (events carry versions for that).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.table import Table
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from cli.ops import Service, err, fail, out, parse_time, service_settings
from shared.db import make_engine, utcnow
from shared.infra import OutboxMessage

outbox_app = typer.Typer(help="A service's transactional outbox.", no_args_is_help=True)


def _window(since: datetime, until: datetime, topic: str | None) -> list[sa.ColumnElement[bool]]:
    conditions = [
        col(OutboxMessage.published_at).is_not(None),
        col(OutboxMessage.created_at) >= since,
        col(OutboxMessage.created_at) < until,
    ]
    if topic is not None:
        conditions.append(col(OutboxMessage.topic) == topic)
    return conditions


@outbox_app.command("republish")
def republish(
    service: Annotated[Service, typer.Option(help="Whose outbox.", case_sensitive=False)],
    since: Annotated[str, typer.Option(help="Events created at or after this time (ISO 8601 with zone).")],
    until: Annotated[
        str | None, typer.Option(help="...and before this time (ISO 8601 with zone; default: now).")
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="Only this topic (its name without prefix, e.g. ingest.orders.v1).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Mark the service's published events of a window unpublished: its relay publishes them again.

    Counts them first and asks before changing anything (unless --yes). Only rows still in the outbox can
    be republished: published rows are deleted CLIENTELA_OUTBOX_RETENTION_MINUTES (default 60) after
    publication, so the window can reach back that far at most. Consumers deduplicate by event id."""
    start = parse_time(since, "--since")
    end = parse_time(until, "--until") if until is not None else utcnow()
    if end <= start:
        raise typer.BadParameter("must be after --since", param_hint="--until")
    settings = service_settings(service)
    engine = make_engine(settings.database_url)
    try:
        counts = _count(engine, start, end, topic)
        found = sum(n for _, _, n in counts)
        if not found:
            err().print(
                f"no published {service.value} events in that window (published rows are kept "
                f"{settings.outbox_retention_minutes} minutes after publication)",
                highlight=False,
            )
            return
        table = Table("topic", "event type", "events", title=f"{service.value} outbox: {found} published")
        for name, event_type, n in counts:
            table.add_row(name, event_type, str(n))
        out().print(table)
        if not yes:  # outside any transaction: nothing is held while the question waits
            typer.confirm(
                f"Publish these {found} events again (the {service.value} relay sends them)?",
                abort=True,
                err=True,
            )
        with Session(engine) as session:
            result = session.execute(
                sa.update(OutboxMessage).where(*_window(start, end, topic)).values(published_at=None)
            )
            session.commit()
            marked = int(result.rowcount)  # type: ignore[attr-defined]
    except SQLAlchemyError as exc:
        fail(
            f"cannot work on the {service.value} database ({type(exc).__name__}); check "
            f"{service.value.upper()}_DATABASE_URL"
        )
    finally:
        engine.dispose()
    err().print(
        f"{marked} events marked unpublished; the {service.value} service's relay publishes them again "
        "(it must be running)",
        highlight=False,
    )


def _count(engine: Engine, since: datetime, until: datetime, topic: str | None) -> list[tuple[str, str, int]]:
    """(topic, event type, published events) in the window."""
    with Session(engine) as session:
        rows = session.exec(
            select(OutboxMessage.topic, OutboxMessage.event_type, sa.func.count())
            .where(*_window(since, until, topic))
            .group_by(col(OutboxMessage.topic), col(OutboxMessage.event_type))
            .order_by(col(OutboxMessage.topic), col(OutboxMessage.event_type))
        ).all()
    return [(name, event_type, int(n)) for name, event_type, n in rows]
