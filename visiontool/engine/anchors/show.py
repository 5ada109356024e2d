"""Engines of `visiontool anchors prior|grid|label`: compute anchors, summarise, draw a picture.

Each function takes a config dataclass, returns a result dataclass with `to_dict()`, and writes
its PNG atomically. Pictures are drawn with Pillow on the given image, or on a blank canvas of
the given size; small canvases are scaled up so the labels stay readable.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from visiontool.errors import ConfigError, DataError

PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (128, 128, 0),
    (0, 128, 128),
    (170, 110, 40),
)
MIN_SIDE = 512  # pictures are drawn at least this large (long side)
MAX_DRAWN = 400  # draw every anchor of a coarse feature map only up to this many


def color(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


# ---------------------------------------------------------------------------- prior


@dataclass
class PriorConfig:
    sizes: list[float]
    ratios: list[float]
    image: Path | None = None
    size: tuple[int, int] | None = None  # (H, W) of a blank canvas
    fmap: tuple[int, int] | None = None  # (H, W); default: one cell per image pixel
    offset: float = 0.5
    at: tuple[int, int] | None = None  # (y, x) feature-map cell to draw
    out: Path = Path("anchors.png")


@dataclass
class PriorResult:
    image_size: tuple[int, int]
    fmap: tuple[int, int]
    per_location: int
    count: int
    mode: str  # "location" or "all"
    at: tuple[int, int] | None
    anchors: list[dict[str, Any]]  # the drawn location's anchors (or one per shape)
    out: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prior_view(config: PriorConfig) -> PriorResult:
    """multibox_prior on the feature map, a table of one location's anchors, and a picture."""
    from visiontool.ops.anchors import anchor_shapes, multibox_prior

    canvas = load_canvas(config.image, config.size)
    height, width = canvas.height, canvas.width
    fh, fw = config.fmap or (height, width)
    shapes = _checked_shapes(config.sizes, config.ratios, anchor_shapes)
    anchors = multibox_prior(fh, fw, config.sizes, config.ratios, config.offset)[0]
    k = len(shapes)
    mode = "all" if config.at is None and config.fmap and fh * fw * k <= MAX_DRAWN else "location"
    at = None
    if mode == "location":
        at = config.at if config.at is not None else (fh // 2, fw // 2)
        if not (0 <= at[0] < fh and 0 <= at[1] < fw):
            raise ConfigError(f"--at {at[0]},{at[1]} is outside the {fh}x{fw} feature map")
        start = (at[0] * fw + at[1]) * k
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
    labels = [f"s={s:g} r={r:g}" for s, r in shapes] if mode == "location" else None
    colors = [color(i % k) for i in range(len(pixel_boxes))]
    picture = draw_boxes(canvas, pixel_boxes, colors, labels)
    for box in pixel_boxes[::k]:
        picture = mark_point(picture, canvas.size, _centre(box))
    save_png(picture, config.out)
    return PriorResult(
        image_size=(height, width),
        fmap=(fh, fw),
        per_location=k,
        count=int(anchors.shape[0]),
        mode=mode,
        at=at,
        anchors=rows,
        out=str(config.out),
    )


def _checked_shapes(sizes: Sequence[float], ratios: Sequence[float], make: Any) -> list:
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
    size: tuple[int, int] | None = None
    border: float = 0.0
    out: Path = Path("grid.png")


@dataclass
class GridResult:
    image_size: tuple[int, int]
    fmap: tuple[int, int]
    per_location: int
    count: int
    inside: int
    shapes: list[dict[str, Any]]
    out: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def grid_view(config: GridConfig) -> GridResult:
    """Faster R-CNN grid anchors: counts, per-shape table, and the centre cell's anchors drawn."""
    from visiontool.ops.anchors import grid_anchors, inside_image

    if config.stride < 1 or not config.scales or not config.ratios:
        raise ConfigError("--stride must be positive and --scales/--ratios non-empty")
    if min(config.scales) <= 0 or min(config.ratios) <= 0:
        raise ConfigError("--scales and --ratios must be positive")
    canvas = load_canvas(config.image, config.size)
    size = (canvas.height, canvas.width)
    anchors = grid_anchors(size, config.stride, config.scales, config.ratios)
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
    labels = [f"{s['scale']:g}x r={s['ratio']:g} ({s['w']:.0f}x{s['h']:.0f})" for s in shapes]
    picture = draw_boxes(canvas, drawn, [color(i) for i in range(k)], labels)
    picture = draw_centres(picture, canvas.size, config.stride, fh, fw)
    save_png(picture, config.out)
    return GridResult(
        image_size=size,
        fmap=(fh, fw),
        per_location=k,
        count=int(anchors.shape[0]),
        inside=int(inside.sum()),
        shapes=shapes,
        out=str(config.out),
    )


# ---------------------------------------------------------------------------- label


@dataclass
class LabelConfig:
    gt: Path
    anchors: Path | None = None
    sizes: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    fmap: tuple[int, int] | None = None
    offset: float = 0.5
    image: Path | None = None
    size: tuple[int, int] | None = None
    iou_threshold: float = 0.5
    show_all: bool = False
    out: Path = Path("labels.png")


@dataclass
class LabelResult:
    classes: list[str]
    count: int
    assigned: int
    per_class: dict[str, int]
    rows: list[dict[str, Any]]  # assigned anchors (all anchors with show_all)
    out: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_view(config: LabelConfig) -> LabelResult:
    """multibox_target on anchors vs ground truth: per-anchor table and a picture."""
    import torch

    from visiontool.ops.anchors import assign_anchors, multibox_prior, multibox_target
    from visiontool.ops.boxes import iou_with_box

    classes, gt = read_gt(config.gt)
    canvas = load_canvas(config.image, config.size)
    if config.anchors is not None:
        anchors = read_anchor_boxes(config.anchors)
    elif config.sizes and config.ratios:
        fh, fw = config.fmap or (canvas.height, canvas.width)
        try:
            anchors = multibox_prior(fh, fw, config.sizes, config.ratios, config.offset)[0]
        except ValueError as exc:
            raise ConfigError(f"--sizes/--ratios: {exc}") from exc
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
    scale = torch.tensor([canvas.width, canvas.height] * 2, dtype=torch.float32)
    assigned_ids = torch.nonzero(index >= 0).flatten()
    boxes_px = (anchors[assigned_ids] * scale).tolist()
    gt_classes = gt[index[assigned_ids], 0].long().tolist()
    picture = draw_boxes(
        canvas,
        boxes_px,
        [color(c) for c in gt_classes],
        [f"a{int(a)}" for a in assigned_ids],
        width=1,
    )
    gt_px = (gt[:, 1:] * scale).tolist()
    gt_cls = gt[:, 0].long().tolist()
    picture = draw_boxes(
        picture,
        gt_px,
        [color(c) for c in gt_cls],
        [f"{classes[c]} (gt {i})" for i, c in enumerate(gt_cls)],
        width=3,
        base_size=canvas.size,
    )
    save_png(picture, config.out)
    return LabelResult(
        classes=classes,
        count=int(anchors.shape[0]),
        assigned=int((index >= 0).sum()),
        per_class=per_class,
        rows=rows,
        out=str(config.out),
    )


def read_gt(path: Path) -> tuple[list[str], Any]:
    """Ground truth for `anchors label`: {"classes": [...], "boxes": [...]} with normalized xyxy.

    Each box is [class, x1, y1, x2, y2] (class an index or a name) or
    {"class": name-or-index, "box": [x1, y1, x2, y2]}. Returns (classes, (G, 5) tensor).
    """
    import torch

    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("boxes"), list):
        raise DataError(f'{path}: expected {{"classes": [...], "boxes": [...]}}')
    classes = [str(c) for c in data.get("classes") or []]
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


def _class_index(cls: Any, classes: list[str], path: Path, i: int) -> int:
    if isinstance(cls, str) and not cls.isdigit():
        if cls not in classes:
            classes.append(cls)
        return classes.index(cls)
    try:
        value = int(cls)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: box {i} has class {cls!r}; use an index or a name") from exc
    if value < 0 or (classes and value >= len(classes)):
        raise DataError(f"{path}: box {i} has class {value}, outside 0..{len(classes) - 1}")
    return value


def read_anchor_boxes(path: Path) -> Any:
    """Normalized xyxy anchors from a JSON list of boxes or {"anchors": [...]}: (A, 4)."""
    import torch

    data = _read_json(path)
    if isinstance(data, dict):
        data = data.get("anchors")
    try:
        anchors = torch.tensor(data, dtype=torch.float32).reshape(-1, 4)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(
            f'{path}: expected a list of [x1, y1, x2, y2] or {{"anchors": [...]}}'
        ) from exc
    if anchors.shape[0] == 0 or not bool((anchors[:, 2:] > anchors[:, :2]).all()):
        raise DataError(f"{path}: anchors must be non-empty with x2 > x1 and y2 > y1")
    return anchors


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from exc


# ---------------------------------------------------------------------------- drawing


def load_canvas(image: Path | None, size: tuple[int, int] | None) -> Any:
    """The picture to draw on: the image (RGB) or a blank canvas of size (H, W)."""
    from PIL import Image

    if image is not None:
        from visiontool.errors import ImageError
        from visiontool.io.images import read_image

        try:
            pixels = read_image(image)
        except ImageError as exc:
            raise DataError(f"{image}: {exc}") from exc
        return Image.fromarray(pixels.permute(1, 2, 0).numpy())
    if size is None:
        raise ConfigError("give --image IMG or --size HxW")
    height, width = size
    if height < 1 or width < 1 or height * width > 100_000_000:
        raise ConfigError(f"--size {height}x{width} is not a usable image size")
    return Image.new("RGB", (width, height), (235, 235, 235))


def _upscaled(canvas: Any) -> tuple[Any, float]:
    from PIL import Image

    factor = max(1.0, MIN_SIDE / max(canvas.size))
    if factor == 1.0:
        return canvas.copy(), 1.0
    size = (round(canvas.width * factor), round(canvas.height * factor))
    return canvas.resize(size, Image.NEAREST), factor


def draw_boxes(
    canvas: Any,
    boxes: Sequence[Sequence[float]],
    colors: Sequence[tuple[int, int, int]],
    labels: Sequence[str] | None = None,
    *,
    width: int = 2,
    base_size: tuple[int, int] | None = None,
) -> Any:
    """Boxes in the canvas's pixel coordinates (or `base_size`'s, when the canvas was scaled)."""
    from PIL import ImageDraw

    if base_size is None:
        picture, factor = _upscaled(canvas)
    else:
        picture, factor = canvas.copy(), canvas.width / base_size[0]
    draw = ImageDraw.Draw(picture)
    font = _font()
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = (v * factor for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colors[i], width=width)
        if labels:
            tx = min(max(x1 + 2, 0), picture.width - 8)
            ty = min(max(y1 + 2, 0), picture.height - 12)
            draw.text((tx, ty), labels[i], fill=colors[i], font=font)
    return picture


def mark_point(picture: Any, base_size: tuple[int, int], xy: tuple[float, float]) -> Any:
    from PIL import ImageDraw

    factor = picture.width / base_size[0]
    x, y = xy[0] * factor, xy[1] * factor
    ImageDraw.Draw(picture).ellipse([x - 4, y - 4, x + 4, y + 4], fill=(0, 0, 0))
    return picture


def draw_centres(picture: Any, base_size: tuple[int, int], stride: int, fh: int, fw: int) -> Any:
    """Dots at the anchor centres of a stride grid (skipped when there are too many to see)."""
    from PIL import ImageDraw

    factor = picture.width / base_size[0]
    if fh * fw > 10_000 or stride * factor < 4:
        return picture
    draw = ImageDraw.Draw(picture)
    for y in range(fh):
        for x in range(fw):
            cx, cy = (stride / 2 + x * stride) * factor, (stride / 2 + y * stride) * factor
            draw.point([(cx, cy)], fill=(90, 90, 90))
    return picture


def draw_fit(anchors_wh: Any, boxes_wh: Any, imgsz: int, path: Path) -> Path:
    """Fitted anchors (coloured, labelled w x h) over a sample of box shapes (grey), all
    centred on an imgsz x imgsz canvas, so one sees which shapes each anchor stands for."""
    from PIL import Image, ImageDraw

    side = max(MIN_SIDE, int(imgsz))
    factor = side / imgsz
    picture = Image.new("RGB", (side, side), (250, 250, 250))
    draw = ImageDraw.Draw(picture)
    c = side / 2
    for w, h in boxes_wh:
        w, h = w * factor / 2, h * factor / 2
        draw.rectangle([c - w, c - h, c + w, c + h], outline=(200, 200, 200), width=1)
    font = _font()
    for i, (w, h) in enumerate(anchors_wh):
        hw, hh = w * factor / 2, h * factor / 2
        draw.rectangle([c - hw, c - hh, c + hw, c + hh], outline=color(i), width=2)
        draw.text((c - hw + 2, c - hh + 2), f"{w:.0f}x{h:.0f}", fill=color(i), font=font)
    save_png(picture, path)
    return path


def _font() -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def save_png(picture: Any, path: Path) -> Path:
    from visiontool.io.atomic import write_bytes

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return write_bytes(path, buffer.getvalue())
