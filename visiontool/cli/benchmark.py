"""`visiontool benchmark`: time the detection pipeline against a naive loop on this machine."""

from __future__ import annotations

import typer

from visiontool.cli.common import MODEL_HELP, Console, JsonOpt, WorkersOpt

HELP = (
    "Time `detect` against a naive one-image-at-a-time loop on synthetic 1080p photos "
    "(whole processes, same model and outputs) and print both throughputs and the ratio. "
    "Runs on this machine's default device (cuda if available, else cpu) with random weights "
    "unless --weights is given: speed only, the boxes mean nothing."
)


def benchmark(
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help=MODEL_HELP,
        show_default="frcnn-mobile-320, or the --weights checkpoint's model",
    ),
    weights: str = typer.Option(
        "none",
        "--weights",
        "-w",
        help="DEFAULT (pretrained), none (random init: timing only) or a checkpoint PATH.",
    ),
    n: int = typer.Option(32, "--n", help="Number of images."),
    batch: int = typer.Option(1, "--batch", "-b", help="Images per forward pass (detect's)."),
    workers: int = WorkersOpt,
    inflight: int = typer.Option(
        None, "--inflight", help="Batches in the model at once (detect's).", show_default="2"
    ),
    repeat: int = typer.Option(3, "--repeat", help="Runs of each; the best counts."),
    json_out: bool = JsonOpt,
) -> None:
    from visiontool.engine.bench import BenchConfig, run_benchmark
    from visiontool.errors import ConfigError

    if n < 1 or repeat < 1:
        raise ConfigError("--n and --repeat must be >= 1")
    console = Console(json_mode=json_out)
    from visiontool.engine.bench import DEFAULT_MODEL

    shown = model or (weights if weights not in ("none", "DEFAULT") else DEFAULT_MODEL)
    console.log(f"timing {repeat} x ({n} images naive, {n} images detect) with {shown}, "
                f"{_weights_note(weights)}, on {_device()}...")  # fmt: skip
    result = run_benchmark(
        BenchConfig(
            model=model,
            weights=weights,
            n=n,
            batch=batch,
            workers=workers,
            inflight=inflight,
            repeat=repeat,
        )
    )
    if json_out:
        console.emit_json(result.to_dict())
        return
    console.final(f"naive loop       : {result.naive_images_per_s:.2f} images/s")
    console.final(f"visiontool detect: {result.ours_images_per_s:.2f} images/s")
    console.final(f"ratio            : {result.ratio:.2f}x best vs best, "
                  f"{result.median_paired_ratio:.2f}x median of run pairs")  # fmt: skip


def _weights_note(weights: str) -> str:
    if weights.lower() in ("none", "random"):
        return "random weights (speed only; --weights DEFAULT or PATH for real ones)"
    return f"weights {weights}"


def _device() -> str:
    from visiontool.runtime import resolve_device

    return str(resolve_device("auto"))
