"""`visiontool anchors` (placeholder until its issue lands)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Not implemented yet.", no_args_is_help=True)


@app.command("todo")
def todo() -> None:
    raise typer.Exit(2)
