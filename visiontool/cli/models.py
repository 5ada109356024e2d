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
        ["name", "task", "weights", "classes", "input", "aliases"],
        [
            [
                r["name"],
                r["task"],
                r["weights"],
                f"{len(r['classes'])} ({r['dataset']})",
                r["input_size"],
                ", ".join(r["aliases"]),
            ]
            for r in rows
        ],
    )
