"""`visiontool data`: check, convert, synth, show and stats for data sets.

Thin commands: parse options, call one engine function in `visiontool.data`, print through
`Console`. Engine imports stay inside the functions so `visiontool --help` stays light.
"""

from __future__ import annotations

from pathlib import Path

import typer

from visiontool.cli.common import (
    Command,
    Console,
    ExistOkOpt,
    Group,
    JsonOpt,
    QuietOpt,
    SeedOpt,
    out_option,
    resolve_out,
)

app = typer.Typer(
    help="Check, convert, generate, preview and summarise data sets "
    "(COCO, VOC, YOLO, ImageFolder, CSV).",
    no_args_is_help=True,
    cls=Group,
)

FormatOpt = typer.Option(
    None,
    "--format",
    "-f",
    help="Read as coco, voc, yolo, imagefolder or csv.",
    show_default="detected from the files",
)
PATH_HELP = "Data set folder, COCO json, CSV or data spec."
MAX_LISTED = 20


@app.command("check", cls=Command)
def check(
    path: Path = typer.Argument(..., help=PATH_HELP),
    format: str = FormatOpt,
    max_issues: int = typer.Option(MAX_LISTED, "--max-issues", help="Problems to list (0: all)."),
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Find malformed annotations in every split; exit 1 when there are errors."""
    from visiontool.data.check import check_dataset

    report = check_dataset(path, format=format)
    console = Console(json_mode=json_out, quiet=quiet)
    if json_out:
        console.emit_json(report.to_dict())
    else:
        _print_check(console, report, max_issues)
    if not report.ok:
        raise typer.Exit(1)


def _print_check(console: Console, report: object, max_issues: int) -> None:
    console.table(
        f"{report.path} ({report.format}, {len(report.classes)} classes)",
        ["split", "images", "objects", "errors", "warnings"],
        [
            [s.name, s.images, "-" if s.objects is None else s.objects, s.errors, s.warnings]
            for s in report.splits
        ],
    )
    ordered = sorted(report.issues, key=lambda item: item[1].level != "error")
    shown = ordered if max_issues <= 0 else ordered[:max_issues]
    for _, issue in shown:
        console.final(f"{issue.level}: {issue}")
    if len(shown) < len(ordered):
        console.final(f"... {len(ordered) - len(shown)} more (use --max-issues 0 to list all)")
    verdict = "ok" if report.ok else "FAILED"
    console.final(f"{verdict}: {report.errors} errors, {report.warnings} warnings")


@app.command("convert", cls=Command)
def convert(
    src: Path = typer.Argument(..., help="Source data set (any readable format)."),
    to: str = typer.Option(
        ..., "--to", help="coco, voc or yolo (detection); imagefolder or csv (classification)."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder (must be new or empty)."),
    link: bool = typer.Option(False, "--link", help="Symlink images instead of copying them."),
    format: str = FormatOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Write a data set in another format, every split, images copied or linked."""
    from visiontool.data.convert import convert_dataset

    summary = convert_dataset(src, to=to, out=out, link=link, format=format)
    console = Console(json_mode=json_out, quiet=quiet)
    if json_out:
        console.emit_json(summary)
        return
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    console.final(f"wrote {summary['format']} to {summary['out']} ({splits} images)")


@app.command("synth", cls=Command)
def synth(
    out: Path = out_option("data/synth"),
    n: int = typer.Option(200, "--n", help="Number of images."),
    imgsz: int = typer.Option(
        None,
        "--imgsz",
        help="Image size in pixels.",
        show_default="256 (detect), 64 (classify shapes), 28 (digits)",
    ),
    format: str = typer.Option(
        None, "--format", help="Annotations (detect): coco, voc or yolo.", show_default="coco"
    ),
    task: str = typer.Option("detect", "--task", help="detect, or classify (ImageFolder)."),
    kind: str = typer.Option(
        None, "--kind", help="What to draw (classify): shapes or digits.", show_default="shapes"
    ),
    max_objects: int = typer.Option(
        None,
        "--max-objects",
        help="Most shapes per image (detect); 1 makes single-object data.",
        show_default="6",
    ),
    object_size: str = typer.Option(
        None,
        "--object-size",
        metavar="LOW,HIGH",
        help="Shape extent (detect) as fractions of the image side, drawn log-uniform.",
        show_default="0.04,0.5",
    ),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of images for val."),
    seed: int = SeedOpt,
    exist_ok: bool = ExistOkOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Generate a labelled data set of shapes (or digits) offline; same seed, same bytes."""
    from visiontool.data.synth import (
        DEFAULT_OBJECT_SIZE,
        synth_classification,
        synth_detection,
    )
    from visiontool.errors import ConfigError

    if task not in ("detect", "classify"):
        raise ConfigError(f"--task must be 'detect' or 'classify', got {task!r}")
    if task == "detect" and kind is not None:
        raise ConfigError("--kind applies to --task classify only (detection draws shapes)")
    if task == "classify" and format is not None:
        raise ConfigError("--format applies to --task detect only (classify writes ImageFolder)")
    if task == "classify" and max_objects is not None:
        raise ConfigError("--max-objects applies to --task detect only (one shape per tile)")
    if task == "classify" and object_size is not None:
        raise ConfigError("--object-size applies to --task detect only")
    kind = kind or "shapes"
    if task == "detect":
        summary = synth_detection(
            out, n=n, imgsz=imgsz or 256, fmt=format or "coco", seed=seed,
            val_fraction=val_fraction, max_objects=6 if max_objects is None else max_objects,
            object_size=tuple(object_size.split(",")) if object_size else DEFAULT_OBJECT_SIZE,
            exist_ok=exist_ok,
        )  # fmt: skip
    else:  # classify (checked above)
        size = imgsz or (28 if kind == "digits" else 64)
        summary = synth_classification(
            out, n=n, imgsz=size, seed=seed, kind=kind, val_fraction=val_fraction,
            exist_ok=exist_ok,
        )  # fmt: skip
    console = Console(json_mode=json_out, quiet=quiet)
    if json_out:
        console.emit_json(summary)
        return
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    console.final(
        f"wrote {summary['images']} images ({splits}) as {summary['format']} to {summary['out']}"
    )


@app.command("show", cls=Command)
def show(
    path: Path = typer.Argument(..., help=PATH_HELP),
    split: str = typer.Option("train", "--split", help="Data set split."),
    n: int = typer.Option(16, "--n", help="Number of samples."),
    augment: str = typer.Option(
        "none", "--augment", help="Augmentation preset: frcnn, ssd, classify, multilabel or none."
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="PNG file to write (a file, not a folder).",
        show_default="runs/data/show/exp/grid.png, then exp2...",
    ),
    format: str = FormatOpt,
    seed: int = SeedOpt,
    exist_ok: bool = typer.Option(
        False,
        "--exist-ok",
        help="Replace an existing --out file (never one inside the data set); without --out, "
        "reuse runs/data/show/exp.",
    ),
    quiet: bool = QuietOpt,
) -> None:
    """Draw a grid of samples with their boxes after an augmentation preset."""
    from visiontool.data.datasets import open_dataset
    from visiontool.data.outputs import RASTER_SUFFIXES, check_out_file, check_outside
    from visiontool.data.show import render_grid
    from visiontool.data.transforms import PRESETS

    if n < 1:
        raise typer.BadParameter("--n must be at least 1", param_hint="--n")
    if augment not in PRESETS:
        raise typer.BadParameter(
            f"one of {', '.join(PRESETS)}, got {augment!r}", param_hint="--augment"
        )
    checks = {"option": "--out", "exist_ok": exist_ok, "suffixes": RASTER_SUFFIXES}
    if out is not None:  # before the data set is read: a doomed run fails at once
        check_out_file(out, reads=[path], **checks)
    dataset = open_dataset(path, split=split, format=format)
    reads = [path, dataset.root]
    if out is not None:
        target = check_out_file(out, reads=reads, **checks)
    else:
        check_outside(Path("runs") / "data" / "show", reads, option="--out")
        target = resolve_out(None, "data/show", exist_ok=exist_ok) / "grid.png"
    written = render_grid(dataset, target, n=n, augment=augment, seed=seed)
    Console(quiet=quiet).final(f"wrote {written}")


@app.command("stats", cls=Command)
def stats(
    path: Path = typer.Argument(..., help=PATH_HELP),
    split: str = typer.Option(
        "train", "--split", help="Data set split (a set without splits is read whole)."
    ),
    format: str = FormatOpt,
    plot: Path = typer.Option(
        None, "--plot", help="Also write box histograms to this PNG file (detection sets)."
    ),
    exist_ok: bool = typer.Option(
        False, "--exist-ok", help="Replace an existing --plot file (never one inside the data set)."
    ),
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Images, objects, per-class counts, box size and aspect-ratio distribution."""
    from visiontool.data.datasets import open_dataset
    from visiontool.data.outputs import check_out_file
    from visiontool.data.stats import dataset_stats, plot_stats

    checks = {"option": "--plot", "exist_ok": exist_ok, "example": "stats.png"}
    if plot is not None:  # before the data set is read: a doomed run fails at once
        check_out_file(plot, reads=[path], **checks)
    dataset = open_dataset(path, split=split, format=format)
    result = {"path": str(path), **dataset_stats(dataset)}
    console = Console(json_mode=json_out, quiet=quiet)
    if plot is not None and result["task"] == "detect":
        check_out_file(plot, reads=[path, dataset.root], **checks)
        plot_stats(dataset, plot)
        console.log(f"wrote {plot}")
    elif plot is not None:
        console.warn(f"--plot: {path} is a classification data set; no box histograms written")
    if json_out:
        console.emit_json(result)
        return
    _print_stats(console, result)


def _print_stats(console: Console, result: dict) -> None:
    head = f"{result['path']} ({result['format']}, split {result['split']}): "
    if result["task"] == "classify":
        console.table(
            head + f"{result['images']} images",
            ["id", "class", "images"],
            [[c["id"], c["name"], c["images"]] for c in result["classes"]],
        )
        return
    console.table(
        head + f"{result['images']} images, {result['objects']} objects, "
        f"{result['negatives']} without objects",
        ["id", "class", "objects", "images"],
        [[c["id"], c["name"], c["objects"], c["images"]] for c in result["classes"]],
    )
    columns = ["min", "p5", "p25", "median", "mean", "p75", "p95", "max"]
    rows = [
        [name, *(_num(values.get(c)) for c in columns)]
        for name, values in result["box"].items()
        if values
    ]
    console.table("boxes", ["", *columns], rows)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
