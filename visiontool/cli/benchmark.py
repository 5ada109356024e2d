"""`visiontool benchmark`: time models, training steps, data loading, COCO eval or the whole
detect pipeline on this machine (engine: `visiontool.engine.benchmark`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from visiontool.cli.common import (
    MODEL_HELP,
    Console,
    DeviceOpt,
    JsonOpt,
    WorkersOpt,
    list_option,
)

HELP = (
    "Time models on this machine. --task model (the default) times forward passes of each "
    "--model (repeat it or use commas) at every --batch x --imgsz x --dtype, one row each: "
    "latency (mean, p50, p90, p99; the cold first call apart), images/s, FLOPs, achieved "
    "TFLOP/s and its share of the device's peak, peak memory. train-step times forward + "
    "backward + optimizer step; data the decoding and augmentation of --data; eval our COCO "
    "eval against pycocotools; pipeline `detect` against a naive one-image-at-a-time loop on "
    "synthetic 1080p photos (--n, --repeat, --inflight). Runs on --device, by default this "
    "machine's default device (cuda if available, else cpu), with random weights unless "
    "--weights is given: speed only, the outputs mean nothing. --out DIR appends the rows to "
    "DIR/benchmark.csv, to compare machines."
)


def benchmark(
    ctx: typer.Context,
    model: list[str] = list_option(
        "--model",
        "-m",
        kind="name",
        help=MODEL_HELP,
        show_default="frcnn-mobile-320, or the --weights checkpoint's model",
    ),
    task: str = typer.Option(
        "model", "--task", "-t", help="model, train-step, data, eval or pipeline."
    ),
    backbone: str = typer.Option(
        None, "--backbone", help="Backbone of a model that composes one (tinyssd, yolo, single...)."
    ),
    weights: str = typer.Option(
        "none",
        "--weights",
        "-w",
        help="DEFAULT (pretrained), none (random init: timing only) or a checkpoint PATH.",
    ),
    device: str = DeviceOpt,
    batch: list[str] = list_option(
        "--batch", "-b", kind="int", help="Images per timed call.", show_default="1"
    ),
    imgsz: list[str] = list_option(
        "--imgsz", kind="int", help="Square input sizes.", show_default="the model's own"
    ),
    dtype: list[str] = list_option(
        "--dtype",
        kind="name",
        help="fp32, bf16 or fp16 (autocast; fp16 on cuda only).",
        show_default="fp32",
    ),  # fmt: skip
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    channels_last: bool = typer.Option(
        False, "--channels-last", help="Channels-last model and input."
    ),
    warmup: int = typer.Option(
        None,
        "--warmup",
        help="Untimed calls after the first.",
        show_default="10; train-step 5, data 2, eval 1",
    ),  # fmt: skip
    iters: int = typer.Option(
        None, "--iters", help="Timed calls.", show_default="50; train-step 20, data 20, eval 5"
    ),
    peak_tflops: float = typer.Option(
        None,
        "--peak-tflops",
        help="The device's peak TFLOP/s, for the share of peak.",
        show_default="GPU datasheet, else measured",
    ),  # fmt: skip
    data: str = typer.Option(None, "--data", help="Data set of --task data (as train's)."),
    workers: int = WorkersOpt,
    n: int = typer.Option(
        None, "--n", help="Images (pipeline's photos, eval's set).", show_default="32; eval 500"
    ),
    repeat: int = typer.Option(
        None, "--repeat", help="Pipeline runs of each; the best counts.", show_default="3"
    ),
    inflight: int = typer.Option(
        None, "--inflight", help="Batches in the model at once (detect's).", show_default="2"
    ),
    out: Path = typer.Option(
        None, "--out", help="Append the rows to DIR/benchmark.csv.", show_default="none"
    ),
    json_out: bool = JsonOpt,
) -> None:
    from visiontool.engine.benchmark import BenchmarkConfig, check_config

    config = check_config(
        BenchmarkConfig(
            task=task,
            models=list(model or []),
            backbone=backbone,
            weights=weights,
            device=device,
            batches=[int(b) for b in batch] if batch else [1],
            imgszs=[int(s) for s in imgsz] if imgsz else None,
            dtypes=list(dtype or ["fp32"]),
            compile=compile_model,
            channels_last=channels_last,
            warmup=warmup,
            iters=iters,
            peak_tflops=peak_tflops,
            data=data,
            workers=workers,
            n=n,
            repeat=repeat,
            inflight=inflight,
            given=_given(ctx),
        )  # fmt: skip
    )
    console = Console(json_mode=json_out)
    if config.task == "pipeline":
        _pipeline(config, console, json_out)
        return
    _rows(config, console, json_out, out)


def _rows(config: Any, console: Console, json_out: bool, out: Path | None) -> None:
    """Every task but pipeline: time the rows, append them to --out's CSV, print them."""
    from visiontool.engine.benchmark import append_csv, check_out, run
    from visiontool.engine.benchmark.system import describe
    from visiontool.engine.benchmark.table import LEGEND, fit_table

    inputs = [config.data] if config.data else []
    if out is not None:
        check_out(out, inputs=inputs)
    report = run(config, on_log=console.log)
    data = report.to_dict()
    if out is not None:
        console.log(f"rows appended to {append_csv(report, out, inputs=inputs)}")
    if json_out:
        console.emit_json(data)
    else:
        console.log(describe(data["system"]))
        headers, cells = fit_table(data["rows"], console.rich.width)
        console.table(_title(config), headers, cells)
        console.log(LEGEND)
        notes = {(row["model"], row["note"]) for row in data["rows"] if row["note"]}
        for model, note in sorted(notes):
            console.log(f"{model}: {note}")
    for row in data["rows"]:
        if row["error"]:
            console.warn(f"{row['model']} batch {row['batch']}: {row['error']}")
    if report.failed:
        raise typer.Exit(1)


def _title(config: Any) -> str:
    flags = [flag for flag, on in (("compiled", config.compile),
                                   ("channels-last", config.channels_last)) if on]  # fmt: skip
    return f"benchmark --task {config.task}" + (f" ({', '.join(flags)})" if flags else "")


def _pipeline(config: Any, console: Console, json_out: bool) -> None:
    """--task pipeline: detect against the naive loop, as whole processes."""
    from visiontool.engine.benchmark import pipeline

    bench = pipeline.pipeline_config(config)
    shown = bench.model or (
        bench.weights if bench.weights not in ("none", "DEFAULT") else pipeline.DEFAULT_MODEL
    )
    device = _device(bench.device)
    console.log(f"timing {bench.repeat} x ({bench.n} images naive, {bench.n} images detect) "
                f"with {shown}, {_weights_note(bench.weights)}, on {device}...")  # fmt: skip
    result = pipeline.run_benchmark(bench)
    if json_out:
        console.emit_json(result.to_dict())
        return
    console.final(f"naive loop       : {result.naive_images_per_s:.2f} images/s")
    console.final(f"visiontool detect: {result.ours_images_per_s:.2f} images/s")
    console.final(f"ratio            : {result.ratio:.2f}x best vs best, "
                  f"{result.median_paired_ratio:.2f}x median of run pairs")  # fmt: skip


def _given(ctx: typer.Context) -> tuple[str, ...]:
    """The options typed on the command line (or set through the environment), by their
    long name: the engine refuses those that do not apply to the task."""
    given = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name) if param.name else None
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given.append(max(param.opts, key=len))
    return tuple(given)


def _weights_note(weights: str) -> str:
    if weights.lower() in ("none", "random"):
        return "random weights (speed only; --weights DEFAULT or PATH for real ones)"
    return f"weights {weights}"


def _device(name: str) -> str:
    from visiontool.runtime import resolve_device

    return str(resolve_device(name))
