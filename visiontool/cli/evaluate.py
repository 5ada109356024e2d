"""`visiontool eval`: score a model or a predictions file against a data set.

Parses options into an `EvalConfig`, calls `engine.evaluate.run_eval`, prints the summary and
per-class tables, and exits 1 when a `--fail-under` gate is missed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from visiontool.cli.common import (
    MODEL_HELP,
    WEIGHTS_HELP,
    Console,
    DeviceOpt,
    ExistOkOpt,
    JsonOpt,
    QuietOpt,
    WorkersOpt,
    list_option,
    out_option,
)

HELP = (
    "Score a model (--model/--weights) or a predictions file (--pred) against a data set: "
    "COCO mAP (12 numbers), VOC AP50, per-class AP, PR curve and confusion matrix plots; "
    "top-1/top-5 for classifiers; class accuracy, box L1 and IoU for single-object models; "
    "mAP, F1 and exact match for multi-label models."
)
MAX_WARNINGS = 10


def evaluate(
    data: Path = typer.Option(
        ..., "--data", help="Data set folder, COCO json, CSV or data spec (the ground truth)."
    ),
    pred: Path = typer.Option(
        None, "--pred", help="Predictions to score: predictions.jsonl or a COCO results json."
    ),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    weights: str = typer.Option(None, "--weights", "-w", help=WEIGHTS_HELP, show_default="DEFAULT"),
    split: str = typer.Option("val", "--split", help="Data set split."),
    iou_thresholds: list[str] = list_option(
        "--iou-thresholds",
        kind="threshold",
        help="COCO IoU thresholds: 0.5,0.75 or start:stop:step.",
        show_default="0.5:0.95:0.05",
    ),
    fail_under: list[str] = list_option(
        "--fail-under",
        kind="gate",
        help="Exit 1 when a metric is under its gate, e.g. map50=0.5,top1=0.9 "
        "(single: accuracy, mean_iou; multilabel: map, f1, exact_match...).",
    ),
    conf: float = typer.Option(
        None,
        "--conf",
        help="Confusion matrix: minimum score; multilabel: the label threshold.",
        show_default="0.25; multilabel the model's trained --threshold",
    ),
    iou: float = typer.Option(0.45, "--iou", help="Confusion matrix: IoU for a match."),
    lenient: bool = typer.Option(
        False, "--lenient", help="Skip bad prediction lines with a warning instead of exiting 2."
    ),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
    report: bool = typer.Option(
        True, "--report/--no-report", help="Write report.html (scores, plots; opens offline)."
    ),
    batch: int = typer.Option(8, "--batch", help="Images per forward pass (with --model; >= 1)."),
    workers: int = WorkersOpt,
    half: bool = typer.Option(False, "--half", help="fp16 autocast on GPU (ignored on CPU)."),
    imgsz: int = typer.Option(
        None, "--imgsz", help="Model input size.", show_default="the model's"
    ),
    device: str = DeviceOpt,
    out: Path = out_option("eval"),
    exist_ok: bool = ExistOkOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    from visiontool.engine.evaluate.run import EvalConfig, check_config, run_eval

    config = EvalConfig(
        data=data,
        pred=pred,
        model=model,
        weights=weights,
        split=split,
        iou_thresholds=iou_thresholds,
        conf=conf,
        iou=iou,
        fail_under=dict(fail_under or []),
        lenient=lenient,
        plots=plots,
        report=report,
        device=device,
        batch=batch,
        workers=workers,
        half=half,
        imgsz=imgsz,
    )
    check_config(config)  # a bad option is refused before the output folder is made
    console = Console(json_mode=json_out, quiet=quiet)
    with _out_folder(out, exist_ok, data, pred, console) as folder:
        config.out = folder.path
        started = time.time()
        report = run_eval(config, on_log=console.log)
        # --exist-ok: the earlier run's files this one did not write again go only now, so a
        # run that fails (a typo in --model, a bad predictions file) leaves them as they were
        folder.clear_previous(written_since=started)
    for message in report.warnings[:MAX_WARNINGS]:
        console.warn(message)
    if len(report.warnings) > MAX_WARNINGS:
        console.warn(f"... and {len(report.warnings) - MAX_WARNINGS} more warnings")
    if json_out:
        console.emit_json(report.to_dict())
    else:
        _print_tables(console, report)
    console.final(f"results saved to {config.out}")
    for gate in report.failed:
        console.err.print(f"gate missed: {gate}", markup=False)
    if report.failed_images:  # said among the warnings (how many, the first reason)
        console.err.print(
            f"{report.failed_images} image(s) failed in the model: exit code 1", markup=False
        )
    if report.failed or report.failed_images:
        raise typer.Exit(1)


def _print_tables(console: Console, report: Any) -> None:
    metrics = report.metrics
    per_class = metrics["per_class"]
    from visiontool.tasks.spec import get_task

    if get_task(report.task).score is not None:  # scored per image by the task
        _print_task_tables(console, report)
        return
    if report.task == "classify":
        console.table(
            "accuracy", ["metric", "value"], [[k, _f(metrics[k])] for k in ("top1", "top5")]
        )
        rows = [
            [n, v["n"], _f(v["precision"]), _f(v["recall"]), _f(v["f1"])]
            for n, v in per_class.items()
        ]
        console.table("per class", ["class", "images", "precision", "recall", "F1"], rows)
        return
    rows = [
        [n, v["n_gt"], v["n_pred"], _f(v["ap"]), _f(v["ap50"]), _f(v["voc_ap50"])]
        for n, v in per_class.items()
    ]
    console.table("per class", ["class", "gt", "pred", "AP", "AP50", "VOC AP50"], rows)
    summary = [[key, _f(value)] for key, value in metrics.items() if key != "per_class"]
    console.table(
        f"{report.source}: {report.predictions} predictions, {report.images} images",
        ["metric", "value"],
        summary,
    )


def _print_task_tables(console: Console, report: Any) -> None:
    """A task scored per image: its numbers, then one row per class with the keys it gives."""
    metrics = report.metrics
    summary = [[k, _f(v)] for k, v in metrics.items() if k != "per_class"]
    console.table(f"{report.source}: {report.images} images", ["metric", "value"], summary)
    rows = metrics["per_class"]
    keys = list(next(iter(rows.values()), {}))
    console.table(
        "per class",
        ["class", *keys],
        [[name, *(_cell(values[k]) for k in keys)] for name, values in rows.items()],
    )


def _cell(value: Any) -> str:
    return str(value) if isinstance(value, int) else _f(float(value))


def _f(value: float) -> str:
    return "-" if value < 0 else f"{value:.4f}"


EVAL_OUTPUTS = ("metrics.json", "pr_curve.png", "confusion_matrix.png", "report.html")


def _out_folder(out: Path | None, exist_ok: bool, data: Path, pred: Path | None, console: Any):
    """The checked, locked output folder (io.paths.prepare_out): never the data set or the
    predictions file, never a non-empty folder without --exist-ok."""
    from visiontool.io.paths import prepare_out

    data_path = Path(data)
    return prepare_out(
        out,
        "eval",
        exist_ok=exist_ok,
        inputs=[p for p in (data_path, pred) if p is not None and not Path(p).is_dir()],
        recursive_inputs=[data_path] if data_path.is_dir() else [],
        owned=EVAL_OUTPUTS,
        on_log=console.log,
        clear_later=True,
        holds_run=lambda folder: (folder / "metrics.json").is_file(),
    )
