"""The pictures a training run leaves beside its weights, for a person to look at afterwards.

- labels.png, at the start: what the model will learn from, read from the annotations only
  (no pixels decoded): instances per class and, for detection, where boxes sit and how big
  they are, as fractions of their image.
- train_batch.jpg, at the first step: the first training batch as the model sees it, after
  augmentation, with boxes and class names (`io.draw`, the colours `detect` gives each class),
  so a wrong transform or label shift shows before hours of training.
- pr_curve.png and confusion_matrix.png, at the end: the best epoch's validation, drawn by
  `visiontool eval`'s own plots (`engine.evaluate.plots`) from what validation kept.

Charts go through `io.plotting`, raster pictures through `io.draw`; both write atomically. A
picture is never worth a training run: the trainer draws through `drawn`, which turns a
failure into one warning line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visiontool.engine.train.validate import PlotInputs

LABELS = "labels.png"
TRAIN_BATCH = "train_batch.jpg"
PR_CURVE = "pr_curve.png"  # the names `visiontool eval` writes
CONFUSION = "confusion_matrix.png"

MAX_TILES = 16  # images of the first batch in train_batch.jpg (a 4 x 4 grid)
MAX_POINTS = 20_000  # box centres and sizes drawn as dots up to this many, as a 2-D histogram above
MAX_NAMED = 100  # class names under the bars up to this many classes


def drawn(name: str, draw: Callable[[], object], log: Callable[[str], None]) -> bool:
    """Run `draw`; if it fails, log one line naming the picture and the error and go on (a
    training run never ends for a picture). True when it was drawn."""
    try:
        draw()
    except Exception as exc:  # noqa: BLE001 - any failure to draw is reported, never raised
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        log(f"warning: {name} not written ({type(exc).__name__}"
            f"{': ' + reason if reason else ''}); training goes on")  # fmt: skip
        return False
    return True


# --- labels.png ----------------------------------------------------------------------------


def write_labels(dataset: Any, path: Path) -> Path:
    """labels.png of a training set: class counts; for detection also box centres and box
    sizes, each as a fraction of its image's width and height."""
    from visiontool.io.plotting import figure

    classes = list(dataset.classes)
    if getattr(dataset, "task", "detect") == "classify":
        label_sets = getattr(dataset, "label_sets", None)  # multi-label: every label counts
        ids = [k for s in label_sets for k in s] if label_sets is not None else dataset.targets
        counts = np.bincount(np.asarray(ids, np.int64), minlength=len(classes))
        with figure(path, size=(_bars_width(len(classes)), 4.5)) as (_, ax):
            _class_bars(ax, counts, classes, f"images per class ({len(dataset)} images)")
            ax.set_ylabel("images")
        return Path(path)
    labels, centres, sizes = normalised_boxes(dataset.records())
    counts = np.bincount(labels, minlength=len(classes))[: len(classes)]
    title = f"instances per class ({labels.size} boxes in {len(dataset)} images)"
    layout = [["counts", "counts"], ["centres", "sizes"]]
    with figure(path, size=(max(10.0, _bars_width(len(classes))), 10), mosaic=layout) as (_, ax):
        _class_bars(ax["counts"], counts, classes, title)
        ax["counts"].set_ylabel("boxes")
        _spread(ax["centres"], centres, labels, "box centres")
        ax["centres"].set(xlabel="x / image width", ylabel="y / image height")
        ax["centres"].invert_yaxis()  # as in the image: y grows downwards
        _spread(ax["sizes"], sizes, labels, "box sizes")
        ax["sizes"].set(xlabel="width / image width", ylabel="height / image height")
    return Path(path)


def normalised_boxes(records: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels (N,), centres (N, 2), sizes (N, 2)) of every box, centres and sizes as fractions
    of their image's width and height."""
    labels, centres, sizes = [np.zeros(0, np.int64)], [np.zeros((0, 2))], [np.zeros((0, 2))]
    for record in records:
        boxes = np.asarray(record.boxes, np.float64).reshape(-1, 4)
        scale = np.array([max(record.width, 1), max(record.height, 1)], np.float64)
        labels.append(np.asarray(record.labels, np.int64).reshape(-1))
        centres.append((boxes[:, :2] + boxes[:, 2:]) / 2 / scale)
        sizes.append((boxes[:, 2:] - boxes[:, :2]) / scale)
    return np.concatenate(labels), np.concatenate(centres), np.concatenate(sizes)


def _bars_width(classes: int) -> float:
    """Figure width that leaves each class name room under its bar."""
    return min(16.0, max(6.0, 0.25 * classes + 3))


def _class_bars(ax: Any, counts: np.ndarray, classes: list[str], title: str) -> None:
    """One bar per class in its `io.draw` colour, its count on top when there are few."""
    from visiontool.io.draw import color

    x = np.arange(len(classes))
    colours = [np.array(color(k)) / 255 for k in x]
    bars = ax.bar(x, counts, color=colours, edgecolor="0.3", linewidth=0.5)
    ax.set_title(title)
    ax.grid(axis="x", visible=False)
    ax.set_xlim(-0.6, len(classes) - 0.4)
    if len(classes) <= 30:
        ax.bar_label(bars, fontsize="small", padding=2)
        ax.margins(y=0.12)
    if len(classes) <= MAX_NAMED:
        # names side by side when they fit under their bars (about 10 characters an inch)
        longest = max((len(c) for c in classes), default=0) + 1
        rotate = longest * len(classes) > 8 * ax.figure.get_figwidth()
        ax.set_xticks(x, classes, rotation=90 if rotate else 0,
                      fontsize="small" if len(classes) <= 40 else 6)  # fmt: skip
    else:
        ax.set_xlabel("class id")


def _spread(ax: Any, points: np.ndarray, labels: np.ndarray, title: str) -> None:
    """Points in the unit square: dots coloured by class, or a 2-D histogram when there are
    too many to see."""
    from visiontool.io.draw import color

    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", title=f"{title} ({len(points)})")
    if len(points) > MAX_POINTS:
        ax.grid(False)
        ax.hist2d(points[:, 0], points[:, 1], bins=50, range=[[0, 1], [0, 1]], cmap="Blues",
                  cmin=1)  # fmt: skip
        return
    colours = np.array([color(int(k)) for k in labels], np.float64).reshape(-1, 3) / 255
    alpha = float(np.clip(300 / max(len(points), 1), 0.15, 0.9))
    ax.scatter(points[:, 0], points[:, 1], s=12, c=colours, alpha=alpha, linewidths=0)


# --- train_batch.jpg -----------------------------------------------------------------------


def write_train_batch(
    images: Sequence[Any], targets: Sequence[Any], classes: Sequence[str], path: Path
) -> Path:
    """Up to MAX_TILES images of a training batch in a grid, each fitted into a tile with its
    boxes and class names (detection) or its class name in the corner (classification).

    Images are what the loader yields: float in [0, 1] (every augmentation preset ends with
    `ToDtype(scale=True)`; normalisation belongs to the model) or uint8; shown as they are."""
    from visiontool.data.show import tile_grid
    from visiontool.io.draw import save_image

    count = min(MAX_TILES, len(images))
    tiles = [_tile(images[i], targets[i], classes) for i in range(count)]
    return save_image(tile_grid(tiles, max(1, math.ceil(math.sqrt(count)))), path)


def _tile(image: Any, target: Any, classes: Sequence[str]) -> np.ndarray:
    """One image fitted into a TILE x TILE white square (BGR), annotated."""
    from visiontool.data.show import FONT_SCALE, THICKNESS, TILE
    from visiontool.io.draw import color, draw_boxes, draw_tags

    bgr, scale = _fitted(image, TILE)
    if isinstance(target, dict):
        boxes = np.asarray(_on_host(target["boxes"]), np.float64).reshape(-1, 4) * scale
        labels = [int(k) for k in np.asarray(_on_host(target["labels"])).reshape(-1)]
        draw_boxes(bgr, boxes.tolist(), [color(k) for k in labels],
                   [_name(classes, k) for k in labels], thickness=THICKNESS,
                   font_scale=FONT_SCALE)  # fmt: skip
    else:  # the class is all there is to read: a larger tag than a box's
        tags = [(_name(classes, k), k) for k in _class_ids(target)]
        draw_tags(bgr, tags, thickness=THICKNESS, font_scale=1.5 * FONT_SCALE)
    canvas = np.full((TILE, TILE, 3), 255, np.uint8)
    canvas[: bgr.shape[0], : bgr.shape[1]] = bgr
    return canvas


def _fitted(image: Any, side: int) -> tuple[np.ndarray, float]:
    """(BGR uint8 picture with its long side `side`, the factor applied): shrunk by area
    averaging, or enlarged by `io.draw.upscaled` (crisp pixels)."""
    import cv2
    import torch

    from visiontool.io.draw import to_bgr_array, upscaled

    pixels = torch.as_tensor(image).detach().cpu()
    if pixels.is_floating_point():
        pixels = (pixels.float().clamp(0, 1) * 255).round()
    pixels = pixels.to(torch.uint8)
    if pixels.shape[0] == 1:
        pixels = pixels.expand(3, -1, -1)
    bgr = to_bgr_array(pixels[:3])
    height, width = bgr.shape[:2]
    factor = side / max(height, width, 1)
    if factor >= 1:
        bgr, factor = upscaled(bgr, side)
        return bgr[:side, :side], factor
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), factor


def _class_ids(target: Any) -> list[int]:
    """A classification target's class ids: one index, or the ones of a multi-hot vector."""
    values = np.asarray(_on_host(target)).reshape(-1)
    if values.size > 1:
        return [int(k) for k in np.flatnonzero(values)]
    return [int(values[0])] if values.size else []


def _on_host(value: Any) -> Any:
    """A tensor as numpy can read it: on the CPU (`--augment-on device` leaves targets on the
    GPU) and out of autograd."""
    return value.detach().cpu() if hasattr(value, "detach") else value


def _name(classes: Sequence[str], k: int) -> str:
    return classes[k] if 0 <= k < len(classes) else str(k)


# --- pr_curve.png, confusion_matrix.png -------------------------------------------------------


def write_validation_plots(plots: PlotInputs, out: Path, *, epoch: int) -> list[Path]:
    """The PR curves (detection) and confusion matrix of epoch `epoch`'s validation, drawn as
    `visiontool eval` draws them, at its default thresholds; the titles name the epoch."""
    from visiontool.engine.evaluate.plots import (
        plot_confusion,
        plot_detection_confusion,
        plot_pr_curves,
    )
    from visiontool.engine.evaluate.run import DETECTION_CONF, EvalConfig

    when = f"best epoch {epoch}"
    if plots.gt is None:
        title = f"Confusion matrix, {when}"
        return [plot_confusion(plots.confusion, plots.classes, out / CONFUSION, title=title)]
    files = []
    if plots.curves:
        files.append(plot_pr_curves(plots.curves, out / PR_CURVE, ap=plots.ap50,
                                    title=f"Precision-recall at IoU 0.5, {when}"))  # fmt: skip
    conf, iou = DETECTION_CONF, EvalConfig.iou
    title = f"Confusion matrix, {when} (conf >= {conf:g}, IoU >= {iou:g})"
    files.append(plot_detection_confusion(plots.gt, plots.dets, out / CONFUSION, conf=conf,
                                          iou=iou, title=title))  # fmt: skip
    return files
