"""`clientela` — the command line for ops and data work. Each command lives in its own module."""

from __future__ import annotations

import typer

from cli.generate import generate_command
from cli.importer import import_command

app = typer.Typer(help="Clientela: ops tasks and data tools.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Clientela's command line."""


app.command("generate")(generate_command)
app.command("import")(import_command)
