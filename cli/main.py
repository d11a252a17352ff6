"""`clientela` — the command line for ops and data work. Each command lives in its own module."""

from __future__ import annotations

import typer

app = typer.Typer(help="Clientela: ops tasks and data tools.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Clientela's command line."""
