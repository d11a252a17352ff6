"""`clientela` — the command line for ops and data work. Each command lives in its own module."""

from __future__ import annotations

import typer

from cli.dlq import dlq_app
from cli.generate import generate_command
from cli.importer import import_command
from cli.outbox import outbox_app
from cli.tenants import keys_app, tenants_app
from cli.traits import traits_app
from cli.webhooks import webhooks_app

app = typer.Typer(help="Clientela: ops tasks and data tools.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Clientela's command line."""


app.command("generate")(generate_command)
app.command("import")(import_command)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(dlq_app, name="dlq")
app.add_typer(outbox_app, name="outbox")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(traits_app, name="traits")
