"""`visiontool anchors`: generate, see, label, fit and check anchor boxes.

Thin commands: parse options, build a config, call one engine function, print. List options
(`--sizes`, `--ratios`, `--scales`) take a comma-separated list (`--ratios 0.5,1,2`), the flag
repeated, or several numbers after one flag (`--ratios 0.5 1 2`): see `common.list_option`.
prior, grid, label and fit write into a run folder, `--out DIR` or runs/anchors/exp, exp2, ...
like every other command.

One convention in every subcommand, its help, output and pictures (docs/anchors.md): sizes are
width x height as image tools print them (`--size 640x480` is 640 wide, 480 high; `--fmap 8x4`
is 8 columns, 4 rows; `--at X,Y` is column X, row Y), and a ratio is width / height (2 = wide).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from visiontool.cli.common import (
    Command,
    Console,
    DeviceOpt,
    ExistOkOpt,
    Group,
    JsonOpt,
    QuietOpt,
    SeedOpt,
    list_option,
    out_option,
    parse_pair,
)

app = typer.Typer(
    help="Generate, see, label, fit and check anchor boxes.",
    no_args_is_help=True,
    cls=Group,
)


def _pair(text: str | None, name: str, sep: str = "x") -> tuple[int, int] | None:
    """'WxH' as (W, H), or 'X,Y' as (x, y) with sep=',': the order given, as the engine takes it."""
    return None if text is None else parse_pair(text, sep=sep, name=name)


ImageOpt = typer.Option(None, "--image", help="Draw on this image (its size is the image size).")
SizeOpt = typer.Option(
    None, "--size", help="Blank canvas WxH (width x height), e.g. 728x561 = 728 wide, 561 high."
)
FmapOpt = typer.Option(
    None, "--fmap", help="Feature map WxH: columns x rows, e.g. 8x4 (default: one cell per pixel)."
)
OffsetOpt = typer.Option(0.5, "--offset", help="Anchor centre within a cell (0 = corner).")
OutOpt = out_option("anchors")


@app.command("prior", cls=Command)
def prior(
    sizes: list[str] = list_option(
        "--sizes", kind="positive", help="Anchor sizes (fractions of the image), e.g. 0.75,0.5."
    ),
    ratios: list[str] = list_option(
        "--ratios", kind="positive", help="Anchor ratios width/height (2 = wide), e.g. 1,2,0.5."
    ),
    image: Path = ImageOpt,
    size: str = SizeOpt,
    fmap: str = FmapOpt,
    offset: float = OffsetOpt,
    at: str = typer.Option(
        None, "--at", help="Feature-map cell X,Y (column, row) to draw (default: centre)."
    ),
    out: Path = OutOpt,
    exist_ok: bool = ExistOkOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Multibox anchors (n+m-1 per cell): count, table and a picture (anchors.png)."""
    from visiontool.engine.anchors.show import PriorConfig, prior_view

    _need("--sizes", sizes)
    _need("--ratios", ratios)
    _need_canvas(image, size)

    result = prior_view(
        PriorConfig(
            sizes=sizes or [],
            ratios=ratios or [],
            image=image,
            size=_pair(size, "--size"),
            fmap=_pair(fmap, "--fmap"),
            offset=offset,
            at=_pair(at, "--at", sep=","),
            out=out,
            exist_ok=exist_ok,
        )
    )
    console = Console(json_mode=json_out, quiet=quiet)
    if json_out:
        console.emit_json(result.to_dict())
        return
    fw, fh = result.fmap
    where = f"cell {result.at[0]},{result.at[1]} (x,y)" if result.at else "every cell"
    console.table(
        f"anchors at {where} (image {_wxh(result.image_size)})",
        ["#", "size", "w/h", "w", "h", "w px", "h px", "box (normalized xyxy)"],
        [
            [a["index"], f"{a['size']:g}", f"{a['ratio']:g}", f"{a['w']:.3f}", f"{a['h']:.3f}",
             f"{a['w_px']:.1f}", f"{a['h_px']:.1f}", a["box"]]
            for a in result.anchors
        ],
    )  # fmt: skip
    console.final(
        f"{result.count} anchors = {fw}x{fh} (WxH) cells x {result.per_location} per cell; "
        f"picture: {result.picture}"
    )
    console.final(f"results saved to {result.out}")


@app.command("grid", cls=Command)
def grid(
    ctx: typer.Context,
    size: str = SizeOpt,
    image: Path = ImageOpt,
    stride: int = typer.Option(16, "--stride", help="Feature-map stride in pixels."),
    scales: list[str] = list_option(
        "--scales", kind="positive", default="8,16,32", help="Anchor scales (multiples of stride)."
    ),
    ratios: list[str] = list_option(
        "--ratios",
        kind="positive",
        default="0.5,1,2",
        help="Anchor ratios width/height (2 = wide).",
    ),
    border: float = typer.Option(0.0, "--border", help="Pixels an inside anchor may cross by."),
    model: str = typer.Option(
        None, "--model", help="Take stride, scales, ratios from this model (e.g. frcnn-vgg16)."
    ),
    weights: str = typer.Option(None, "--weights", help="... or from this checkpoint."),
    out: Path = OutOpt,
    exist_ok: bool = ExistOkOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Faster R-CNN grid anchors in pixels: count, inside count, per-shape table, picture
    (grid.png). --model/--weights show a one-map model's own anchors."""
    from visiontool.engine.anchors.show import GridConfig, grid_view

    _need_canvas(image, size)
    if model is not None or weights is not None:
        given = [f"--{n}" for n in ("stride", "scales", "ratios") if _given(ctx, n)]
        if given:
            raise _config_error(given)

    result = grid_view(
        GridConfig(
            scales=scales or [],
            ratios=ratios or [],
            stride=stride,
            image=image,
            size=_pair(size, "--size"),
            border=border,
            out=out,
            exist_ok=exist_ok,
            model=model,
            weights=weights,
        )
    )
    console = Console(json_mode=json_out, quiet=quiet)
    if json_out:
        console.emit_json(result.to_dict())
        return
    console.table(
        "anchor shapes",
        ["#", "scale", "ratio w/h", "w", "h", "inside"],
        [
            [s["index"], f"{s['scale']:g}", f"{s['ratio']:g}", s["w"], s["h"], s["inside"]]
            for s in result.shapes
        ],
    )
    fw, fh = result.fmap
    console.final(
        f"{result.count} anchors = {fw}x{fh} (WxH) cells x {result.per_location}; "
        f"{result.inside} fully inside the image; picture: {result.picture}"
    )
    console.final(f"results saved to {result.out}")


@app.command("label", cls=Command)
def label(
    gt: Path = typer.Option(..., "--gt", help='JSON {"classes": [...], "boxes": [...]}.'),
    anchors: Path = typer.Option(None, "--anchors", help="JSON list of normalized xyxy anchors."),
    sizes: list[str] = list_option(
        "--sizes", kind="positive", help="Generate anchors: sizes (fractions of the image)."
    ),
    ratios: list[str] = list_option(
        "--ratios", kind="positive", help="Generate anchors: ratios width/height (2 = wide)."
    ),
    fmap: str = FmapOpt,
    offset: float = OffsetOpt,
    image: Path = ImageOpt,
    size: str = typer.Option(
        None, "--size", help="Canvas WxH (width x height) when there is no --image; 512x512."
    ),
    iou: float = typer.Option(0.5, "--iou", help="IoU an extra anchor needs to take a box."),
    show_all: bool = typer.Option(False, "--all", help="List every anchor, not only assigned."),
    out: Path = OutOpt,
    exist_ok: bool = ExistOkOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Label anchors against ground truth: assignment table (IoU, box, class, offsets), picture
    (labels.png)."""
    from visiontool.engine.anchors.show import LabelConfig, label_view

    canvas = _pair(size, "--size")
    if image is None and canvas is None:
        canvas = (512, 512)
    result = label_view(
        LabelConfig(
            gt=gt,
            anchors=anchors,
            sizes=sizes or [],
            ratios=ratios or [],
            fmap=_pair(fmap, "--fmap"),
            offset=offset,
            image=image,
            size=canvas,
            iou_threshold=iou,
            show_all=show_all,
            out=out,
            exist_ok=exist_ok,
        )
    )
    console = Console(json_mode=json_out, quiet=quiet)
    if json_out:
        console.emit_json(result.to_dict())
        return
    shown = result.rows[:LABEL_ROWS]
    more = len(result.rows) - len(shown)
    console.table(
        f"anchor labels (the first {len(shown)} of {len(result.rows):,})" if more
        else "anchor labels",
        ["anchor", "best IoU", "box", "class", "label", "offsets"],
        [
            [r["anchor"], f"{r['best_iou']:.3f}", r["assigned"] if r["assigned"] >= 0 else "-",
             r["class"], r["label"], " ".join(f"{v:.3f}" for v in r["offsets"])]
            for r in shown
        ],
    )  # fmt: skip
    if more:
        console.log(f"... {more:,} more rows (--json lists every row)")
    per_class = ", ".join(f"{k}: {v}" for k, v in result.per_class.items())
    sample = (
        f" ({result.drawn} of them drawn: each box's best and an even sample)"
        if result.drawn < result.assigned
        else ""
    )
    console.final(
        f"{result.assigned:,} of {result.count:,} anchors assigned ({per_class}){sample}; "
        f"picture: {result.picture}"
    )
    console.final(f"results saved to {result.out}")


LABEL_ROWS = 20  # `anchors label` table rows printed; --json has them all


@app.command("fit", cls=Command)
def fit(
    data: Path = typer.Option(..., "--data", help="Data set (folder, COCO json, YAML spec...)."),
    num: int = typer.Option(9, "--num", help="Number of anchors K."),
    imgsz: int = typer.Option(640, "--imgsz", help="Image size (long side) the anchors are for."),
    algo: str = typer.Option("kmeans", "--algo", help="kmeans, or evolve (k-means + evolution)."),
    split: str = typer.Option(None, "--split", help="Data set split (default: the reader's)."),
    generations: int = typer.Option(1000, "--generations", help="Evolution generations."),
    iou: float = typer.Option(0.5, "--iou", help="IoU a box's best anchor needs for recall."),
    thr: float = typer.Option(
        4.0, "--thr", help="Ratio-metric threshold: max box/anchor width or height ratio."
    ),
    out: Path = OutOpt,
    exist_ok: bool = ExistOkOpt,
    seed: int = SeedOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Fit K anchor shapes to a data set's boxes; write anchors.json and anchors.png. Shapes
    are width x height in pixels, ratios width/height (2 = wide)."""
    from visiontool.engine.anchors.fit import FitConfig, run_fit

    config = FitConfig(
        num=num, imgsz=imgsz, algo=algo, iou=iou, thr=thr, generations=generations, seed=seed
    )
    result = run_fit(data, config, split=split, out=out, exist_ok=exist_ok)
    console = Console(json_mode=json_out, quiet=quiet)
    if json_out:
        console.emit_json(result.to_dict())
        return
    doc = result.to_dict()
    console.table(
        f"{doc['num']} anchors at imgsz {imgsz} (pixels)",
        ["#", "w", "h", "size", "ratio w/h"],
        [
            [i, f"{w:.1f}", f"{h:.1f}", f"{s[0]:.1f}", f"{r[0]:.3f}"]
            for i, ((w, h), s, r) in enumerate(
                zip(doc["wh"], doc["sizes"], doc["ratios"], strict=True)
            )
        ],
    )
    stats = result.stats
    if result.initial is not None:
        console.log(f"k-means alone: mean IoU {result.initial.mean_iou:.3f}")
    if result.dropped:
        console.warn(f"{result.dropped} boxes under {config.min_size:g} px at imgsz were ignored")
    console.final(
        f"{stats.boxes} boxes: mean IoU {stats.mean_iou:.3f}, best possible recall "
        f"{stats.bpr:.3f} (IoU >= {iou:g}), {stats.bpr_ratio:.3f} (box/anchor sides within "
        f"{thr:g}x), {stats.anchors_per_box:.2f} anchors/box; wrote {result.extra['json']} and "
        f"{result.extra['picture']}"
    )
    console.final(f"results saved to {result.extra['out']}")


@app.command("check", cls=Command)
def check(
    model: str = typer.Option(
        None, "--model", help="Detector name (see `visiontool models`); or give --weights."
    ),
    weights: Path = typer.Option(
        None, "--weights", help="A trained checkpoint: the model it rebuilds is checked."
    ),
    data: Path = typer.Option(..., "--data", help="Data set (folder, COCO json, YAML spec...)."),
    split: str = typer.Option(None, "--split", help="Data set split (default: the reader's)."),
    limit: int = typer.Option(None, "--limit", help="Check only the first N images."),
    device: str = DeviceOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Recall of a model's own anchors on a data set's boxes, per size bucket, with hints."""
    from visiontool.engine.anchors.check import CheckConfig, check_anchors

    if model is None and weights is None:
        raise typer.BadParameter("pass --model NAME (see `visiontool models`) or --weights PATH")
    result = check_anchors(
        CheckConfig(
            model=model, data=data, split=split, limit=limit, device=device, weights=weights
        )
    )
    console = Console(json_mode=json_out, quiet=quiet)
    if json_out:
        console.emit_json(result.to_dict())
        return
    console.table(
        f"{result.model} anchors ({result.generator}) on {result.images} images",
        ["bucket", "boxes", "recall@0.5", "recall@0.7", "mean IoU"],
        [
            [b.name, b.boxes, *(_rate(b, v) for v in (b.recall_50, b.recall_70, b.mean_iou))]
            for b in [*result.buckets, result.overall]
        ],
    )
    if result.note:
        console.log(f"note: {result.note}")
    for hint in result.hints:
        console.warn(hint)
    o = result.overall
    console.final(
        f"{o.boxes} boxes: recall {o.recall_50:.3f} at IoU 0.5, {o.recall_70:.3f} at IoU 0.7"
    )


def _wxh(size: Any) -> str:
    """A (W, H) pair as WxH."""
    return f"{size[0]}x{size[1]}"


def _rate(bucket: Any, value: float) -> str:
    return f"{value:.3f}" if bucket.boxes else "-"


def _need(flag: str, values: list[Any] | None) -> None:
    """A required list option (a usage error, with the help hint, when missing)."""
    if not values:
        raise typer.BadParameter("this option is required", param_hint=flag)


def _need_canvas(image: Path | None, size: str | None) -> None:
    if image is None and size is None:
        raise typer.BadParameter("give --image IMG or --size WxH", param_hint="--image/--size")


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user typed option `name` (not its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _config_error(given: list[str]) -> Exception:
    from visiontool.errors import ConfigError

    return ConfigError(f"{', '.join(given)}: --model/--weights take them from the model")
