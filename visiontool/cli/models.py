"""`visiontool models`: list the registry (table, or --json objects)."""

from __future__ import annotations

import typer

from visiontool.cli.common import Console, JsonOpt

HELP = "List the models the registry can build, with task, weights, classes and input size."


def models(
    task: str = typer.Option(None, "--task", help="Only 'detect' or 'classify' models."),
    json_out: bool = JsonOpt,
) -> None:
    from visiontool.models.catalog import list_models

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
