"""`visiontool models`: list the registry (tables, or --json objects); `visiontool models
info NAME`: one model's parameters per part, FLOPs and receptive fields.

The tables fit the terminal: one line per model (a long description ends in "…"; --json, a
wider terminal or a pipe show it whole), and below 100 columns the input size is left out.
`models` is a group whose callback lists (so `visiontool models [--task T] [--heads]` is
unchanged); `info` is its one subcommand.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import typer

from visiontool.cli.common import Command, Console, Group, JsonOpt

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
INFO_HELP = (
    "One model's parameters (per part, trainable and total), FLOPs per image at --imgsz "
    "(FLOPs = 2 x multiply-adds) and the receptive field of each stage and feature map; "
    "built with random weights, offline."
)

app = typer.Typer(cls=Group, invoke_without_command=True, no_args_is_help=False)


@app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
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
    if ctx.invoked_subcommand is not None:
        if task is not None or heads or json_out:
            raise typer.BadParameter(
                f"--task, --heads and --json before {ctx.invoked_subcommand!r} list the "
                f"registry; put the options of {ctx.invoked_subcommand!r} after it"
            )
        return
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
    # the one column that gives way when the terminal is narrow
    table.add_column(columns[-1], justify="right" if columns[-1] in right else "left")
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


@app.command("info", cls=Command, help=INFO_HELP)
def info(
    name: str = typer.Argument(..., help="Registry name (see `visiontool models`)."),
    imgsz: int = typer.Option(
        None, "--imgsz", help="Input size in pixels (a square image).", show_default="the model's"
    ),
    backbone: str = typer.Option(
        None,
        "--backbone",
        help="Registered backbone, for models composed over one (tinyssd, ssd-focal, yolo, "
        "frcnn-vgg16, single).",
        show_default="the model's",
    ),
    json_out: bool = JsonOpt,
) -> None:
    from visiontool.models.complexity import describe_model

    report = describe_model(name, imgsz=imgsz, backbone=backbone)
    console = Console(json_mode=json_out)
    if json_out:
        console.emit_json(report)
        return
    _whole_lines_in_files(console)
    channels, height, width = report["input"]
    over = f", {report['backbone']} backbone" if report["backbone"] else ""
    console.log(f"{report['name']}: {report['task']}{over}, input {channels}x{height}x{width}, "
                f"weights {report['weights']}")  # fmt: skip
    params = report["parameters"]
    _table(
        console,
        f"parameters: {params['total']:,} ({params['trainable']:,} trainable)",
        ["part", "parameters", "trainable", "share"],
        [[g["name"], f"{g['total']:,}", f"{g['trainable']:,}",
          f"{100 * g['total'] / max(params['total'], 1):.1f}%"] for g in params["groups"]],
        right={"parameters", "trainable", "share"},
    )  # fmt: skip
    console.log(f"FLOPs per image at {height}x{width}: {report['flops']:,} "
                f"({_si(report['flops'])}FLOPs; {report['flops_note']})")  # fmt: skip
    fields = report["receptive_fields"]
    if fields:
        rows = [[f["name"], "x".join(map(str, f["shape"])), _num(f["jump"]),
                 "global" if f["size"] is None else _num(f["size"]), _num(f["start"])]
                for f in fields]  # fmt: skip
        columns = ["stage", "output", "j", "r", "start"]
        _table(console, "receptive field per stage and feature map", columns, rows,
               right={"j", "r", "start"})  # fmt: skip
        for line in textwrap.wrap(report["receptive_field_note"], max(console.rich.width, 40)):
            console.log(line)


def _si(value: float) -> str:
    """1234567 -> '1.23 M'."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}"
    return f"{value:g} "


def _num(value: float) -> str:
    return f"{value:g}"
