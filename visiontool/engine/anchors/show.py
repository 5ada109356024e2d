"""Engines of `visiontool anchors prior|grid|label`: compute anchors, summarise, draw a picture.

Each function takes a config dataclass, returns a result dataclass with `to_dict()`, and writes
its PNG atomically into the run folder: `config.out`, else runs/anchors/exp, exp2, ... (see
`output_dir`), under a fixed name (anchors.png, grid.png, labels.png). Pictures are drawn with
visiontool.io.draw (OpenCV, the shared palette) on the given image, or on a blank canvas of the
given size; small canvases are scaled up so the labels stay readable. Every picture has a
legend (one tag per anchor shape, in its colour) and, in a band below it, a caption saying what
it shows.

Conventions, the same in every command (docs/anchors.md): sizes are width x height, as image
tools print them: `size` (W, H) pixels, `fmap` (W, H) = columns x rows, `at` (x, y) = column,
row; results report `image_size`, `fmap` and `at` in the same order. A ratio is width / height
(2 = twice as wide as tall).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from visiontool.errors import ConfigError, DataError
from visiontool.io.draw import color
from visiontool.io.paths import OutDir, Owned

MIN_SIDE = 512  # pictures are drawn at least this large (long side)
MAX_DRAWN = 400  # draw every anchor of a coarse feature map only up to this many
PRIOR_NAME, GRID_NAME, LABEL_NAME = "anchors.png", "grid.png", "labels.png"  # inside the folder


# ---------------------------------------------------------------------------- prior


@dataclass
class PriorConfig:
    sizes: list[float]
    ratios: list[float]
    image: Path | None = None
    size: tuple[int, int] | None = None  # (W, H) of a blank canvas
    fmap: tuple[int, int] | None = None  # (W, H) = columns, rows; default one cell per pixel
    offset: float = 0.5
    at: tuple[int, int] | None = None  # (x, y) = column, row of the cell to draw
    out: Path | None = None  # run folder; default runs/anchors/exp, exp2, ...
    exist_ok: bool = False  # reuse runs/anchors/exp instead of making the next expN


@dataclass
class PriorResult:
    image_size: tuple[int, int]  # (W, H) pixels
    fmap: tuple[int, int]  # (W, H) = columns, rows
    per_location: int
    count: int
    mode: str  # "location" or "all"
    at: tuple[int, int] | None  # (x, y) cell drawn; None when every cell is
    anchors: list[dict[str, Any]]  # the drawn location's anchors (or one per shape)
    out: str  # the run folder
    picture: str  # the PNG written in it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prior_view(config: PriorConfig) -> PriorResult:
    """multibox_prior on the feature map, a table of one location's anchors, and a picture."""
    from visiontool.ops.anchors import anchor_shapes

    _check_number(config.offset, "--offset")
    check_out(config.out, exist_ok=config.exist_ok)
    canvas = load_canvas(config.image, config.size)
    height, width = canvas.shape[:2]
    fw, fh = _checked_fmap(config.fmap, (width, height))
    shapes = _checked_shapes(config.sizes, config.ratios, anchor_shapes)
    anchors = _prior(fw, fh, config.sizes, config.ratios, config.offset)
    k = len(shapes)
    mode = "all" if config.at is None and config.fmap and fh * fw * k <= MAX_DRAWN else "location"
    at = None
    if mode == "location":
        at = config.at if config.at is not None else (fw // 2, fh // 2)
        x, y = at
        if not (0 <= x < fw and 0 <= y < fh):
            raise ConfigError(
                f"--at {x},{y} is outside the {fw}x{fh} feature map (--at X,Y: column x < {fw}, "
                f"row y < {fh})"
            )
        start = (y * fw + x) * k
        drawn = anchors[start : start + k]
    else:
        drawn = anchors
    scale = (width, height, width, height)
    rows = []
    for index, ((s, r), box) in enumerate(zip(shapes, drawn[:k].tolist(), strict=True)):
        rows.append(
            {
                "index": index,
                "size": s,
                "ratio": r,
                "w": s * math.sqrt(r),
                "h": s / math.sqrt(r),
                "w_px": s * math.sqrt(r) * width,
                "h_px": s / math.sqrt(r) * height,
                "box": [round(v, 4) for v in box],
                "box_px": [round(v * f, 1) for v, f in zip(box, scale, strict=True)],
            }
        )
    pixel_boxes = [[v * f for v, f in zip(box, scale, strict=True)] for box in drawn.tolist()]
    colors = [color(i % k) for i in range(len(pixel_boxes))]
    picture, factor = picture_of(canvas)
    draw_boxes(picture, factor, pixel_boxes, colors)
    mark_points(picture, factor, [_centre(box) for box in pixel_boxes[::k]])
    draw_legend(picture, [f"s={s:g} w/h={r:g}" for s, r in shapes])
    where = f"cell {at[0]},{at[1]} (x,y)" if at is not None else "every cell"
    picture = with_caption(
        picture,
        [
            f"multibox: sizes {_listed(config.sizes)} (of the image), "
            f"ratios w/h {_listed(config.ratios)}",
            f"image {width}x{height}, fmap {fw}x{fh} (WxH); {where}",
        ],
    )
    with output_dir(config.out, exist_ok=config.exist_ok, owned=(PRIOR_NAME,)) as claimed:
        folder = claimed.path
        path = save_png(picture, folder / PRIOR_NAME)
    return PriorResult(
        image_size=(width, height),
        fmap=(fw, fh),
        per_location=k,
        count=int(anchors.shape[0]),
        mode=mode,
        at=at,
        anchors=rows,
        out=str(folder),
        picture=str(path),
    )


def _check_number(value: float, option: str) -> None:
    """nan and inf are no numbers for an option (ConfigError, exit 2)."""
    if not math.isfinite(value):
        raise ConfigError(f"{option} must be a finite number, got {value}")


def _checked_fmap(fmap: tuple[int, int] | None, default: tuple[int, int]) -> tuple[int, int]:
    """--fmap (W, H), or `default`: positive columns and rows, else ConfigError (exit 2)."""
    fw, fh = fmap or default
    if fw < 1 or fh < 1:
        raise ConfigError(f"--fmap {fw}x{fh}: columns and rows (WxH) must be positive")
    return fw, fh


def _prior(fw: int, fh: int, sizes: Sequence[float], ratios: Sequence[float], offset: float) -> Any:
    """`multibox_prior` on a fw x fh map, (A, 4); its errors as ConfigError in WxH terms (ops
    speak H x W, as torch does)."""
    from visiontool.ops.anchors import multibox_prior

    try:
        return multibox_prior(fh, fw, sizes, ratios, offset)[0]
    except ValueError as exc:
        raise ConfigError(f"--sizes/--ratios/--fmap {fw}x{fh}: {exc}") from exc
    except ConfigError as exc:  # over the memory budget
        raise ConfigError(_in_wxh(str(exc), fw, fh)) from exc


def _in_wxh(message: str, width: int, height: int) -> str:
    """An ops message naming a size as HxW, with that size written WxH."""
    if width == height:
        return message
    return message.replace(f"{height}x{width}", f"{width}x{height} (WxH)")


def _listed(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


RATIO_RANGE = (1e-3, 1e3)  # width / height: beyond this an anchor is a line, not a box
SIZE_RANGE = (1e-4, 100.0)  # --sizes, fractions of the image side
SCALE_RANGE = (1e-3, 1e4)  # --scales, multiples of the stride


def check_ranges(**options: Sequence[float] | None) -> None:
    """Each of --ratios, --sizes, --scales given (keyword without the dashes) within its sane
    range, else one ConfigError (exit 2) naming the option and the value: numbers far outside
    them overflow the anchor arithmetic (nan, inf) long before they mean anything."""
    ranges = {"ratios": RATIO_RANGE, "sizes": SIZE_RANGE, "scales": SCALE_RANGE}
    for name, values in options.items():
        low, high = ranges[name]
        for value in values or ():
            if not (math.isfinite(value) and low <= value <= high):
                what = " (width / height)" if name == "ratios" else ""
                raise ConfigError(
                    f"--{name} {value:g}: each value{what} must lie in {low:g}..{high:g}"
                )


def _checked_shapes(sizes: Sequence[float], ratios: Sequence[float], make: Any) -> list:
    check_ranges(sizes=sizes, ratios=ratios)
    try:
        return make(sizes, ratios)
    except ValueError as exc:
        raise ConfigError(f"--sizes/--ratios: {exc}") from exc


def _centre(box: Sequence[float]) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


# ---------------------------------------------------------------------------- grid


@dataclass
class GridConfig:
    scales: list[float]
    ratios: list[float]
    stride: int = 16
    image: Path | None = None
    size: tuple[int, int] | None = None  # (W, H) of a blank canvas
    border: float = 0.0
    out: Path | None = None  # run folder; default runs/anchors/exp, exp2, ...
    exist_ok: bool = False
    model: str | None = None  # take stride, scales and ratios from this model's anchors...
    weights: str | None = None  # ... or this checkpoint's (no other flag needed)


@dataclass
class GridResult:
    image_size: tuple[int, int]  # (W, H) pixels
    fmap: tuple[int, int]  # (W, H) = columns, rows
    per_location: int
    count: int
    inside: int
    shapes: list[dict[str, Any]]
    out: str  # the run folder
    picture: str  # the PNG written in it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def grid_view(config: GridConfig) -> GridResult:
    """Faster R-CNN grid anchors: counts, per-shape table, and the centre cell's anchors drawn."""
    from visiontool.ops.anchors import grid_anchors, inside_image

    if config.model is not None or config.weights is not None:
        config = replace(config, **model_grid(config.model, config.weights))
    if config.stride < 1 or not config.scales or not config.ratios:
        raise ConfigError("--stride must be positive and --scales/--ratios non-empty")
    if min(config.scales) <= 0 or min(config.ratios) <= 0:
        raise ConfigError("--scales and --ratios must be positive")
    check_ranges(scales=config.scales, ratios=config.ratios)
    _check_number(config.border, "--border")
    check_out(config.out, exist_ok=config.exist_ok)
    canvas = load_canvas(config.image, config.size)
    size = canvas.shape[:2]  # (H, W), as ops take it
    try:
        anchors = grid_anchors(size, config.stride, config.scales, config.ratios)
    except ConfigError as exc:  # over the memory budget
        raise ConfigError(_in_wxh(str(exc), size[1], size[0])) from exc
    inside = inside_image(anchors, size, config.border)
    k = len(config.scales) * len(config.ratios)
    fh, fw = math.ceil(size[0] / config.stride), math.ceil(size[1] / config.stride)
    per_shape = inside.view(-1, k).sum(dim=0).tolist()
    shapes = []
    for index, (s, r) in enumerate((s, r) for s in config.scales for r in config.ratios):
        w, h = config.stride * s * math.sqrt(r), config.stride * s / math.sqrt(r)
        shapes.append(
            {
                "index": index,
                "scale": s,
                "ratio": r,
                "w": round(w, 2),
                "h": round(h, 2),
                "inside": int(per_shape[index]),
            }
        )
    centre = ((fh // 2) * fw + fw // 2) * k
    drawn = anchors[centre : centre + k].tolist()
    labels = [
        f"scale {s['scale']:g} w/h={s['ratio']:g}: {s['w']:.0f}x{s['h']:.0f} px" for s in shapes
    ]
    picture, factor = picture_of(canvas)
    draw_centres(picture, factor, config.stride, fh, fw)
    draw_boxes(picture, factor, drawn, [color(i) for i in range(k)])
    draw_legend(picture, labels)
    picture = with_caption(
        picture,
        [
            f"grid: stride {config.stride} px, scales {_listed(config.scales)} (x stride), "
            f"ratios w/h {_listed(config.ratios)}",
            f"image {size[1]}x{size[0]}, fmap {fw}x{fh} (WxH); centre cell's anchors",
        ],
    )
    with output_dir(config.out, exist_ok=config.exist_ok, owned=(GRID_NAME,)) as claimed:
        folder = claimed.path
        path = save_png(picture, folder / GRID_NAME)
    return GridResult(
        image_size=(size[1], size[0]),
        fmap=(fw, fh),
        per_location=k,
        count=int(anchors.shape[0]),
        inside=int(inside.sum()),
        shapes=shapes,
        out=str(folder),
        picture=str(path),
    )


def model_grid(model: str | None, weights: str | None) -> dict[str, Any]:
    """Stride, scales (x stride) and ratios (width/height) of a one-map anchor model (the
    classic Faster R-CNN), read from the model itself; a model with several anchor maps is
    refused with the command that shows them (`anchors check`)."""
    from visiontool.models.factory import load_model
    from visiontool.models.heads.torchvision_parts import anchor_generator
    from visiontool.models.parts import probe

    loaded = load_model(model, weights=weights or "none")
    name = model or loaded.info.name
    try:
        generator = anchor_generator(loaded.module)
    except AttributeError:  # no anchors at all (a classifier, an anchor-free model)
        generator = None
    sizes = getattr(generator, "sizes", None)
    if not sizes or len(sizes) != 1:
        raise ConfigError(
            f"model {name!r} does not lay one grid of anchors on one feature map "
            "(anchors grid shows that, e.g. --model frcnn-vgg16); "
            "`visiontool anchors check --model NAME --data DATA` measures any model's anchors"
        )
    stride = probe(loaded.module.backbone)[-1].stride
    ratios = [1.0 / float(r) for r in generator.aspect_ratios[0]]  # torchvision's h/w -> w/h
    return {"stride": stride, "scales": [float(x) / stride for x in sizes[0]],
            "ratios": sorted(ratios)}  # fmt: skip


# ---------------------------------------------------------------------------- label


@dataclass
class LabelConfig:
    gt: Path
    anchors: Path | None = None
    sizes: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    fmap: tuple[int, int] | None = None  # (W, H) = columns, rows
    offset: float = 0.5
    image: Path | None = None
    size: tuple[int, int] | None = None  # (W, H) of a blank canvas
    iou_threshold: float = 0.5
    show_all: bool = False
    out: Path | None = None  # run folder; default runs/anchors/exp, exp2, ...
    exist_ok: bool = False


@dataclass
class LabelResult:
    classes: list[str]
    count: int
    assigned: int
    per_class: dict[str, int]
    rows: list[dict[str, Any]]  # assigned anchors (all anchors with show_all)
    out: str  # the run folder
    picture: str  # the PNG written in it
    drawn: int = 0  # assigned anchors drawn in the picture (a sample when there are many)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MAX_DRAWN = 50  # assigned anchors drawn in labels.png: each box's best, then an even sample
TAGGED = 20  # anchors get an "a<index>" tag only when at most this many are drawn


def label_view(config: LabelConfig) -> LabelResult:
    """multibox_target on anchors vs ground truth: per-anchor table and a picture."""
    import torch

    from visiontool.ops.anchors import anchor_shapes, assign_anchors, multibox_target
    from visiontool.ops.boxes import iou_with_box

    _check_number(config.offset, "--offset")
    _check_number(config.iou_threshold, "--iou")
    check_out(config.out, exist_ok=config.exist_ok)
    if config.anchors is not None and (config.sizes or config.ratios):
        raise ConfigError("--anchors FILE gives the anchors; --sizes/--ratios generate them: "
                          "pass one or the other")  # fmt: skip
    classes, gt = read_gt(config.gt)
    canvas = load_canvas(config.image, config.size)
    canvas_wh = (canvas.shape[1], canvas.shape[0])
    if config.anchors is not None:
        fmap = _checked_fmap(config.fmap, (1, 1)) if config.fmap else None
        anchors = read_anchor_boxes(
            config.anchors, fmap=fmap, offset=config.offset, canvas=canvas_wh
        )
        source = f"anchors from {Path(config.anchors).name}"
    elif config.sizes and config.ratios:
        fw, fh = _checked_fmap(config.fmap, canvas_wh)
        _checked_shapes(config.sizes, config.ratios, anchor_shapes)
        anchors = _prior(fw, fh, config.sizes, config.ratios, config.offset)
        source = (
            f"anchors: sizes {_listed(config.sizes)}, ratios w/h {_listed(config.ratios)}, "
            f"fmap {fw}x{fh} (WxH)"
        )
    else:
        raise ConfigError("give --anchors FILE, or --sizes and --ratios to generate them")
    labels = gt[None]
    offsets, _, cls = multibox_target(anchors, labels, iou_threshold=config.iou_threshold)
    index = assign_anchors(gt[:, 1:], anchors, config.iou_threshold)
    best = torch.full((anchors.shape[0],), 0.0)
    for box in gt[:, 1:]:
        best = torch.maximum(best, iou_with_box(anchors, box))
    offsets = offsets.view(-1, 4)
    picked = range(anchors.shape[0]) if config.show_all else torch.nonzero(index >= 0).flatten()
    rows = []
    for a in [int(i) for i in picked]:
        g = int(index[a])
        rows.append(
            {
                "anchor": a,
                "box": [round(v, 4) for v in anchors[a].tolist()],
                "best_iou": round(float(best[a]), 4),
                "assigned": g,
                "class": classes[int(gt[g, 0])] if g >= 0 else "background",
                "label": int(cls[0, a]),
                "offsets": [round(v, 4) for v in offsets[a].tolist()],
            }
        )
    per_class = {name: 0 for name in classes}
    for row in rows:
        if row["assigned"] >= 0:
            per_class[row["class"]] += 1
    scale = torch.tensor([canvas.shape[1], canvas.shape[0]] * 2, dtype=torch.float32)
    assigned_ids = _drawn_sample(torch.nonzero(index >= 0).flatten(), anchors, gt, index)
    boxes_px = (anchors[assigned_ids] * scale).tolist()
    gt_classes = gt[index[assigned_ids], 0].long().tolist()
    gt_px = (gt[:, 1:] * scale).tolist()
    gt_cls = gt[:, 0].long().tolist()
    picture, factor = picture_of(canvas)
    draw_boxes(  # ground truth (thick) first, so its tags keep their place
        picture,
        factor,
        gt_px + boxes_px,
        [color(c) for c in gt_cls + gt_classes],
        [f"{classes[c]} (gt {i})" for i, c in enumerate(gt_cls)]
        + [f"a{int(a)}" if len(assigned_ids) <= TAGGED else "" for a in assigned_ids],
        thickness=[3] * len(gt_px) + [1] * len(boxes_px),
    )
    picture = with_caption(
        picture,
        [
            source,
            f"thick: ground truth; thin: {len(assigned_ids)} assigned anchors, class colours",
        ],
    )
    with output_dir(config.out, exist_ok=config.exist_ok, owned=(LABEL_NAME,)) as claimed:
        folder = claimed.path
        path = save_png(picture, folder / LABEL_NAME)
    return LabelResult(
        classes=classes,
        count=int(anchors.shape[0]),
        assigned=int((index >= 0).sum()),
        per_class=per_class,
        rows=rows,
        out=str(folder),
        picture=str(path),
        drawn=len(assigned_ids),
    )


def _drawn_sample(assigned: Any, anchors: Any, gt: Any, index: Any) -> Any:
    """At most MAX_DRAWN of the `assigned` anchor ids, in order: every ground-truth box's best
    assigned anchor, then an even spread of the rest, so thousands never paint a solid block."""
    import torch

    from visiontool.ops.boxes import iou_with_box

    if len(assigned) <= MAX_DRAWN:
        return assigned
    keep: list[int] = []
    for g, box in enumerate(gt[:, 1:]):
        mine = assigned[index[assigned] == g]
        if len(mine):
            keep.append(int(mine[int(iou_with_box(anchors[mine], box).argmax())]))
    chosen = set(keep)
    rest = [int(a) for a in assigned if int(a) not in chosen]
    room = max(0, MAX_DRAWN - len(keep))
    step = len(rest) / room if room else 0
    keep += [rest[int(i * step)] for i in range(room)] if rest else []
    return torch.tensor(sorted(set(keep)), dtype=torch.long)


def output_dir(out: Path | str | None, *, exist_ok: bool = False, owned: Owned = ()) -> OutDir:
    """The folder an `anchors` command writes into, checked and locked (`io.paths.prepare_out`;
    use it as a context manager): `out` as given, else the next free runs/anchors/exp{,2,3...}
    (with `exist_ok`, runs/anchors/exp reused). Called once the results are computed, so a
    failed run claims no folder; `check_out` runs first so a doomed run fails at once. An
    existing `out` needs `exist_ok`, which replaces the files `owned` (the ones this command
    writes) and keeps every other file."""
    from visiontool.io.paths import prepare_out

    check_out(out, exist_ok=exist_ok)
    return prepare_out(
        None if out is None else Path(out), "anchors", exist_ok=exist_ok, owned=owned
    )


def check_out(out: Path | str | None, *, exist_ok: bool = True, reads: Sequence = ()) -> None:
    """`ConfigError` when `out` is an existing file or ends in .png/.json (--out is a folder),
    is not empty without `exist_ok`, or is, contains or lies inside a data set it `reads`."""
    from visiontool.io.paths import check_out_dir

    if out is not None and (Path(out).is_file() or Path(out).suffix.lower() in (".png", ".json")):
        raise ConfigError(
            f"--out {out}: --out names a folder (files are written inside it under fixed "
            "names); give a folder such as runs/anchors/mine"
        )
    inputs = [p for p in reads if not Path(p).is_dir()]
    folders = [p for p in reads if Path(p).is_dir()]
    check_out_dir(out, "anchors", exist_ok=exist_ok, inputs=inputs, recursive_inputs=folders)


def read_gt(path: Path) -> tuple[list[str], Any]:
    """Ground truth for `anchors label`: {"classes": [...], "boxes": [...]} with normalized xyxy.

    Each box is [class, x1, y1, x2, y2] (class an index or a name) or
    {"class": name-or-index, "box": [x1, y1, x2, y2]}. Returns (classes, (G, 5) tensor).
    """
    import torch

    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("boxes"), list):
        raise DataError(f'{path}: expected {{"classes": [...], "boxes": [...]}}')
    classes = _gt_classes(data.get("classes"), path)
    rows = []
    for i, item in enumerate(data["boxes"]):
        if isinstance(item, dict):
            cls, box = item.get("class", 0), item.get("box")
        elif isinstance(item, list) and len(item) == 5:
            cls, box = item[0], item[1:]
        else:
            cls, box = None, None
        if not isinstance(box, list) or len(box) != 4:
            raise DataError(f"{path}: box {i} must be [class, x1, y1, x2, y2] or {{class, box}}")
        if not all(_is_number(v) for v in box):
            raise DataError(
                f"{path}: box {i} has coordinates {box!r}; x1, y1, x2, y2 must be numbers "
                "(normalized xyxy, 0..1)"
            )
        rows.append([_class_index(cls, classes, path, i), *map(float, box)])
        x1, y1, x2, y2 = rows[-1][1:]
        if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
            raise DataError(
                f"{path}: box {i} {box} is not normalized xyxy (0 <= x1 < x2 <= 1, same for y)"
            )
    if not rows:
        raise DataError(f"{path}: no boxes")
    if not classes:
        classes = [str(c) for c in range(int(max(r[0] for r in rows)) + 1)]
    return classes, torch.tensor(rows, dtype=torch.float32)


def _gt_classes(value: Any, path: Path) -> list[str]:
    """The ground truth's "classes": absent (null), or a list of class-name strings."""
    from visiontool.data.records import name_problem

    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise DataError(f'{path}: "classes" must be a list of class names (strings), got {value!r}')
    for k, name in enumerate(value):
        problem = name_problem(name)
        if problem:
            raise DataError(f'{path}: "classes" entry {k} ({name!r}) {problem}')
    if len(set(value)) != len(value):
        raise DataError(f'{path}: "classes" names a class twice; give each name once')
    return list(value)


def _is_number(value: Any) -> bool:
    """A finite JSON number (true/false are not numbers)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


MAX_GT_CLASSES = 1000  # class indexes without a "classes" list: 0..999


def _class_index(cls: Any, classes: list[str], path: Path, i: int) -> int:
    from visiontool.data.records import name_problem

    if isinstance(cls, str) and not (cls.isascii() and cls.isdigit()):
        problem = name_problem(cls)
        if problem:
            raise DataError(f"{path}: box {i} has class {cls!r}, which {problem}")
        if cls not in classes:
            classes.append(cls)
        return classes.index(cls)
    if isinstance(cls, bool) or not isinstance(cls, (int, str)):
        raise DataError(
            f"{path}: box {i} has class {cls!r}; use a class index (a whole number) or a name"
        )
    value = int(cls)
    if value < 0 or (classes and value >= len(classes)):
        raise DataError(f"{path}: box {i} has class {value}, outside 0..{len(classes) - 1}")
    if not classes and value >= MAX_GT_CLASSES:
        raise DataError(
            f'{path}: box {i} has class {value}; without a "classes" list indexes run '
            f"0..{MAX_GT_CLASSES - 1}: add the class names"
        )
    return value


FIT_STRIDE = 16  # anchors.json shapes without --fmap: one cell per 16 canvas pixels


def read_anchor_boxes(
    path: Path,
    *,
    fmap: tuple[int, int] | None = None,
    offset: float = 0.5,
    canvas: tuple[int, int] = (512, 512),
) -> Any:
    """Normalized xyxy anchors (A, 4) from a JSON list of boxes, {"anchors": [...]}, or the
    anchors.json `anchors fit` writes: its K shapes (its `wh`, pixels at `imgsz`, read as
    fractions of it; its `ratios` are not read) centred on every cell of `fmap` (W, H) =
    columns, rows (default one cell per FIT_STRIDE pixels of the `canvas` (W, H)), row-major,
    K per cell."""
    import torch

    data = _read_json(path)
    if isinstance(data, dict) and "wh" in data and "anchors" not in data:
        from visiontool.io.anchors_file import read_anchors_json

        doc = read_anchors_json(path)
        if fmap is None:
            fmap = (math.ceil(canvas[0] / FIT_STRIDE), math.ceil(canvas[1] / FIT_STRIDE))
        wh = torch.tensor(doc["wh"], dtype=torch.float32) / float(doc["imgsz"])
        fw, fh = fmap
        ys = (torch.arange(fh, dtype=torch.float32) + offset) / fh
        xs = (torch.arange(fw, dtype=torch.float32) + offset) / fw
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2)
        half = (wh / 2).reshape(1, -1, 2)
        return torch.cat([centres - half, centres + half], -1).reshape(-1, 4)
    if isinstance(data, dict):
        data = data.get("anchors")
    try:
        anchors = torch.tensor(data, dtype=torch.float32).reshape(-1, 4)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(
            f'{path}: expected a list of [x1, y1, x2, y2], {{"anchors": [...]}} or the '
            "anchors.json `anchors fit` writes"
        ) from exc
    if anchors.shape[0] == 0 or not bool((anchors[:, 2:] > anchors[:, :2]).all()):
        raise DataError(f"{path}: anchors must be non-empty with x2 > x1 and y2 > y1")
    return anchors


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except RecursionError:
        raise DataError(f"{path}: not a readable JSON file (nested too deeply)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from exc


# ---------------------------------------------------------------------------- drawing
# Pictures are drawn with visiontool.io.draw (OpenCV, the shared palette): anchor shape i, or
# class i, has `color(i)`, the colour detect gives class i.

MARK_OUTER, MARK_INNER = (0, 0, 0), (255, 255, 255)  # a ring that shows on any background


def load_canvas(image: Path | None, size: tuple[int, int] | None) -> Any:
    """The picture to draw on (BGR array, H x W x 3): the image, or a blank canvas of `size`
    (W, H)."""
    from visiontool.io.draw import blank, to_bgr_array

    if image is not None:
        from visiontool.errors import ImageError
        from visiontool.io.images import read_image

        try:
            pixels = read_image(image)
        except ImageError as exc:
            raise DataError(f"{image}: {exc}") from exc
        return to_bgr_array(pixels)
    if size is None:
        raise ConfigError("give --image IMG or --size WxH")
    width, height = size
    if height < 1 or width < 1 or height * width > 100_000_000:
        raise ConfigError(f"--size {width}x{height} (WxH) is not a usable image size")
    return blank(height, width)


def picture_of(canvas: Any) -> tuple[Any, float]:
    """A copy of the canvas to draw on, scaled up to MIN_SIDE when smaller, and the factor
    from canvas pixels to picture pixels."""
    from visiontool.io.draw import upscaled

    return upscaled(canvas, MIN_SIDE)


def draw_boxes(
    picture: Any,
    factor: float,
    boxes: Sequence[Sequence[float]],
    colors: Sequence[tuple[int, int, int]],
    labels: Sequence[str] | None = None,
    *,
    thickness: int | Sequence[int] | None = None,
) -> Any:
    """Boxes given in canvas pixels, drawn in place on the (scaled) picture with label tags
    (see `visiontool.io.draw.draw_boxes`: tags are placed in list order)."""
    from visiontool.io import draw

    scaled = [[v * factor for v in box] for box in boxes]
    return draw.draw_boxes(picture, scaled, colors, labels, thickness=thickness)


LEGEND_SCALE = 0.45  # smallest font scale of legends and captions (readable at 512 px)


def draw_legend(picture: Any, labels: Sequence[str]) -> Any:
    """Label i in `color(i)`, stacked in the top-left corner: the key to boxes that share a
    centre, whose own corner tags would pile on each other."""
    from visiontool.io.draw import draw_tags, line_style

    scale = max(LEGEND_SCALE, line_style(*picture.shape[:2])[1])
    return draw_tags(picture, [(label, i) for i, label in enumerate(labels)], font_scale=scale)


CAPTION_RGB = (0, 0, 0)  # the caption band: black, so its tags' text is drawn white


def with_caption(picture: Any, lines: Sequence[str]) -> Any:
    """The picture with a black band below it holding `lines` (white text): what it shows
    (sizes, ratios as w/h, WxH), never covering a box. The font shrinks until the longest line
    fits the width. Drawn with visiontool.io.draw: each line is a black tag."""
    import cv2
    import numpy as np

    from visiontool.io.draw import blank, draw_box, line_style

    height, width = picture.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(LEGEND_SCALE, line_style(height, width)[1])
    widest = max(cv2.getTextSize(line, font, scale, 1)[0][0] for line in lines)
    if widest > width - 8:
        scale *= (width - 8) / widest
    (_, text_h), baseline = cv2.getTextSize("Ag", font, scale, 1)
    step = text_h + baseline + 6  # a tag's height (text, baseline, 2 px padding each side)
    band = blank(step * len(lines) + 4, width, CAPTION_RGB)
    for i, line in enumerate(lines):
        y = 2 + (i + 1) * step  # a tag sits above its corner
        draw_box(band, (2, y, 2, y), CAPTION_RGB, thickness=1, label=line, font_scale=scale)
    return np.ascontiguousarray(np.concatenate([picture, band], axis=0))


def mark_points(picture: Any, factor: float, points: Sequence[Sequence[float]]) -> Any:
    """Ring markers at canvas-pixel points (anchor centres)."""
    from visiontool.io.draw import draw_points

    scaled = [(x * factor, y * factor) for x, y in points]
    draw_points(picture, scaled, MARK_OUTER, radius=5)
    return draw_points(picture, scaled, MARK_INNER, radius=3)


def draw_centres(picture: Any, factor: float, stride: int, fh: int, fw: int) -> Any:
    """Dots at the anchor centres of a stride grid (skipped when there are too many to see)."""
    import numpy as np

    from visiontool.io.draw import FAINT, draw_points

    if fh * fw > 10_000 or stride * factor < 4:
        return picture
    ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
    centres = np.stack([xs.ravel(), ys.ravel()], axis=1) * stride + stride / 2
    return draw_points(picture, centres * factor, FAINT)


MAX_FIT_SIDE = 2048  # the fit picture's side: imgsz scaled down to it (up to MIN_SIDE)


def draw_fit(anchors_wh: Any, boxes_wh: Any, imgsz: int, path: Path) -> Path:
    """`fit_picture` written to `path` as a PNG."""
    save_png(fit_picture(anchors_wh, boxes_wh, imgsz), path)
    return path


def fit_picture(anchors_wh: Any, boxes_wh: Any, imgsz: int) -> Any:
    """Fitted anchors (coloured, with a WxH and w/h legend) over a sample of box shapes (faint), all
    centred on an imgsz x imgsz canvas (drawn MIN_SIDE..MAX_FIT_SIDE pixels wide), so one sees
    which shapes each anchor stands for."""
    from visiontool.io.draw import FAINT, blank
    from visiontool.io.draw import draw_boxes as draw_plain

    side = min(max(MIN_SIDE, int(imgsz)), MAX_FIT_SIDE)
    factor = side / imgsz
    picture = blank(side, side)
    c = side / 2

    def centred(w: float, h: float) -> list[float]:
        hw, hh = w * factor / 2, h * factor / 2
        return [c - hw, c - hh, c + hw, c + hh]

    samples = [centred(w, h) for w, h in boxes_wh]
    draw_plain(picture, samples, [FAINT] * len(samples), thickness=1)
    anchors = [centred(w, h) for w, h in anchors_wh]
    draw_plain(picture, anchors, [color(i) for i in range(len(anchors))], thickness=2)
    draw_legend(picture, [f"{w:.0f}x{h:.0f} px w/h={w / h:.2f}" for w, h in anchors_wh])
    picture = with_caption(
        picture,
        [
            f"{len(anchors)} fitted anchors at imgsz {imgsz}: WxH px, ratio w/h",
            "faint: a sample of the data set's box shapes; all centred",
        ],
    )
    return picture


def save_png(picture: Any, path: Path) -> Path:
    """Write the picture as a PNG, atomically."""
    from visiontool.io.atomic import write_bytes
    from visiontool.io.draw import encode_image

    return write_bytes(path, encode_image(picture, ".png", png_compression=6))
