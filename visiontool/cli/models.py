"""`visiontool models`: list the registry (table, or --json objects)."""

from __future__ import annotations

import typer

from visiontool.cli.common import Console, JsonOpt

TASKS = ("detect", "classify")
HELP = "List the models the registry can build, with task, weights, classes and input size."


def models(
    task: str = typer.Option(None, "--task", help="Only 'detect' or 'classify' models."),
    heads: bool = typer.Option(
        False, "--heads", help="List detection heads and backbones for `train --head`."
    ),
    json_out: bool = JsonOpt,
) -> None:
    from visiontool.models.catalog import list_models

    if task is not None and task not in TASKS:
        from visiontool.errors import ConfigError

        raise ConfigError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    if heads:
        _parts(json_out)
        return
    rows = [row for row in list_models() if task is None or row["task"] == task]
    console = Console(json_mode=json_out)
    if json_out:
        console.emit_json(rows)
        return
    console.table(
        "models",
        ["name", "task", "classes", "input", "description"],
        [
            [
                r["name"],
                r["task"],
                f"{len(r['classes'])} {r['dataset']}" if r["classes"] else "per data set",
                r["input_size"],
                r["description"],
            ]
            for r in rows
        ],
    )
    console.log("--json shows aliases, weights and class names")


def _parts(json_out: bool) -> None:
    from visiontool.models.catalog import list_backbones, list_heads

    console = Console(json_mode=json_out)
    heads, backbones = list_heads(), list_backbones()
    if json_out:
        console.emit_json({"heads": heads, "backbones": backbones})
        return
    console.table(
        "heads (train --head NAME --backbone NAME)",
        ["head", "FPN", "default backbone", "input", "description"],
        [
            [
                h["name"],
                h["fpn"],
                h["default_backbone"],
                h["input_size"],
                h["description"] + _only(h["backbones"]),
            ]  # fmt: skip
            for h in heads
        ],
    )
    console.table(
        "backbones", ["backbone", "description"], [[b["name"], b["description"]] for b in backbones]
    )


def _only(backbones: list[str]) -> str:
    return "" if backbones == ["any"] else f"; backbones: {', '.join(backbones)}"
