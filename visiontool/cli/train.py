"""`visiontool train` (placeholder until its issue lands)."""

from __future__ import annotations

import typer

HELP = "Not implemented yet."


def train() -> None:
    raise typer.Exit(2)
