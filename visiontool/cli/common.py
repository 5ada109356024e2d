"""Options and output helpers shared by every command (the CLI contract in design.md).

Only typer, rich and the standard library here: no torch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

DeviceOpt = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output on stdout; logs on stderr.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="Print only errors and the final summary.")
SeedOpt = typer.Option(0, "--seed", help="Random seed.")
ExistOkOpt = typer.Option(
    False,
    "--exist-ok",
    help="Write into an existing --out (or runs/<cmd>/exp): this command's earlier files there "
    "are replaced, other files kept.",
)


def out_option(command: str) -> Any:
    return typer.Option(
        None,
        "--out",
        help=f"Output folder (default runs/{command}/exp, auto-incremented exp2, exp3...).",
    )


def plain_output() -> bool:
    """Line-oriented logs instead of rich widgets: not a terminal, or running in CI."""
    return not sys.stderr.isatty() or os.environ.get("CI", "") not in ("", "0", "false")


class Console:
    """Where a command's human-facing text goes.

    With --json, stdout is reserved for machine-readable output and all human text goes to
    stderr. With --quiet only warnings and the final lines are printed.
    """

    def __init__(self, *, json_mode: bool = False, quiet: bool = False) -> None:
        from rich.console import Console as RichConsole

        self.json_mode = json_mode
        self.quiet = quiet
        self.plain = plain_output()
        self.rich = RichConsole(
            stderr=json_mode, highlight=False, soft_wrap=True, no_color=self.plain
        )
        self.err = RichConsole(stderr=True, highlight=False, soft_wrap=True, no_color=self.plain)

    def log(self, message: str) -> None:
        if not self.quiet:
            self.rich.print(message, markup=False)

    def final(self, message: str) -> None:
        self.rich.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.err.print(f"warning: {message}", markup=False)

    def emit_json(self, data: Any) -> None:
        """One JSON document (or JSONL line) on stdout."""
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self.quiet:
            return
        from rich.table import Table

        table = Table(title=title, title_justify="left", box=None)
        for index, column in enumerate(columns):
            table.add_column(column, no_wrap=index == 0)
        for row in rows:
            table.add_row(*(str(value) for value in row))
        self.rich.print(table)


def parse_pair(text: str, *, sep: str = "x", name: str = "value") -> tuple[int, int]:
    """Parse 'HxW' (or 'Y,X' with sep=',') into two ints, with a usage error on bad input."""
    parts = text.lower().replace(" ", "").split(sep)
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise typer.BadParameter(f"{name} must look like 480{sep}640, got {text!r}")
    return int(parts[0]), int(parts[1])


def resolve_out(out: Path | None, command: str, *, exist_ok: bool = False) -> Path:
    """--out as given, or the next free runs/<command>/exp{,2,3...} folder."""
    from visiontool.io.paths import run_dir

    return run_dir(out, command, exist_ok=exist_ok)
