"""`visiontool models`: list the registry (tables, or --json objects).

The tables fit the terminal: one line per model (a long description ends in "…"; --json, a
wider terminal or a pipe show it whole), and below 100 columns the input size is left out.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import typer

from visiontool.cli.common import Console, JsonOpt

# one table per kind of model (`TaskSpec.model_task`); a kind several tasks train says so
TITLES = {
    "detect": "detection models",
    "classify": "classification models (--task classify, or multilabel: trained per data set)",
    "single": "single-object models (--task single: the largest object of each image)",
}
HELP = (
    "List the models the registry can build: classes, input size, whether their weights are "
    "available offline, and a description."
)
WIDE = 100  # columns from which the tables show everything


def models(
    task: str = typer.Option(
        None,
        "--task",
        help="Only the models of one task: detect, classify, single or multilabel (which "
        "trains classifiers).",
    ),
    heads: bool = typer.Option(
        False, "--heads", help="List detection heads and backbones for `train --head`."
    ),
    json_out: bool = JsonOpt,
) -> None:
    from visiontool.models.catalog import list_models

    kind = None
    if task is not None:
        from visiontool.tasks.spec import get_task

        kind = get_task(task).model_task  # an unknown task exits 2 naming the known ones
    if heads:
        _parts(json_out)
        return
    rows = [row for row in list_models() if kind is None or row["task"] == kind]
    console = Console(json_mode=json_out)
    if json_out:
        console.emit_json(rows)
        return
    _whole_lines_in_files(console)
    wide = console.rich.width >= WIDE
    for kind, title in TITLES.items():
        group = [r for r in rows if r["task"] == kind]
        if group:
            columns = ["name", "classes", "input", "weights", "description"]
            cells = [[r["name"], _classes(r), r["input_size"], _weights(r), r["description"]]
                     for r in group]  # fmt: skip
            if not wide:
                columns.pop(2)
                cells = [cell[:2] + cell[3:] for cell in cells]
            _table(console, title, columns, cells, right={"input"})
    console.log("weights: " + "\n         ".join(_weights_legend(rows)))
    console.log("--json shows aliases, class names and weight files and URLs")


def _classes(row: dict[str, Any]) -> str:
    return f"{len(row['classes'])} {row['dataset']}" if row["classes"] else "per data set"


def _whole_lines_in_files(console: Console) -> None:
    """Piped or redirected (and no COLUMNS asked for): one whole line per row, nothing cut."""
    if not console.rich.is_terminal and not os.environ.get("COLUMNS"):
        console.rich.width = 1000


def _weights(row: dict[str, Any]) -> str:
    state = row["availability"]
    if state == "none":
        return "-"
    if state == "download" and row["download_mb"]:
        return f"download {row['download_mb']:.0f} MB"
    return state


def _weights_legend(rows: list[dict[str, Any]]) -> list[str]:
    """What the weights column says: one short line per state listed, then torch's cache."""
    states = {row["availability"] for row in rows}
    meaning = {
        "shipped": "inside the visiontool package (offline)",
        "cached": "in torch's cache (offline)",
        "download": "fetched once, on first use (offline: --weights FILE)",
        "missing": "shipped file not found: reinstall visiontool",
        "none": "no default weights: train one, then pass --weights FILE",
    }
    lines = [f"{'-' if state == 'none' else state:<9} {text}"
             for state, text in meaning.items() if state in states]  # fmt: skip
    folder = next((Path(r["weights_path"]).parent for r in rows
                   if r["availability"] in ("cached", "download")), None)  # fmt: skip
    if folder is not None:
        lines.append(f"torch's cache: {folder}")
    return lines


def _table(
    console: Console,
    title: str,
    columns: list[str],
    rows: list[list[Any]],
    *,
    right: set[str] = frozenset(),  # type: ignore[assignment]
    wrap_last: bool = False,
) -> None:
    """A borderless table whose last column takes what the terminal has left: cut short with
    "…" on one line, or wrapped (`wrap_last`)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in columns[:-1]:
        table.add_column(column, no_wrap=True, justify="right" if column in right else "left")
    table.add_column(columns[-1])  # the one column that gives way when the terminal is narrow
    for *cells, last in rows:
        text = Text(str(last), no_wrap=not wrap_last, overflow="fold" if wrap_last else "ellipsis")
        table.add_row(*(str(value) for value in cells), text)
    console.rich.print(table)


def _parts(json_out: bool) -> None:
    from visiontool.models.catalog import list_backbones, list_heads

    console = Console(json_mode=json_out)
    heads, backbones = list_heads(), list_backbones()
    if json_out:
        console.emit_json({"heads": heads, "backbones": backbones})
        return
    _whole_lines_in_files(console)
    _table(
        console,
        "heads (train --head NAME --backbone NAME)",
        ["head", "FPN", "default backbone", "imgsz", "description"],
        [
            [h["name"], h["fpn"], h["default_backbone"], h["input_size"], h["description"]]
            for h in heads
        ],  # fmt: skip
        right={"imgsz"},
        wrap_last=True,
    )
    for h in heads:
        if h["backbones"] != ["any"]:
            console.log(f"{h['name']} takes only these backbones: {', '.join(h['backbones'])}")
    for h in heads:  # wrapped by hand: the plain (non-terminal) console does not wrap
        if h["arch_options"]:
            text = f"{h['name']} --arch options: {', '.join(h['arch_options'])}"
            for line in textwrap.wrap(text, console.rich.width, subsequent_indent="  "):
                console.log(line)
    _table(console, "backbones", ["backbone", "description"],
           [[b["name"], b["description"]] for b in backbones])  # fmt: skip
