"""Evaluation plots as PNG files: precision-recall curves and confusion matrices.

`visiontool eval` and training (the best epoch's validation) draw them here, from the same
scores, so the two look alike. Drawn through `visiontool.io.plotting` (the one plotting setup:
Agg canvas, shared style, atomic save); matplotlib is imported only when a plot is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_LEGEND = 20
MAX_ANNOTATED = 30
BACKGROUND = "background"


def plot_pr_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    *,
    title: str = "Precision-recall at IoU 0.5",
    ap: dict[str, float] | None = None,
) -> Path:
    """One line per class (recall on x, interpolated precision on y) plus their mean."""
    from visiontool.io.plotting import figure

    with figure(path, size=(8, 6)) as (_, ax):
        grid = np.linspace(0, 1, 101)
        stacked = []
        for name, (recall, precision) in curves.items():
            envelope = _envelope(recall, precision, grid)
            stacked.append(envelope)
            label = f"{name} {ap[name]:.3f}" if ap and name in ap else name
            ax.plot(grid, envelope, linewidth=1, alpha=0.7, label=label)
        if stacked:
            mean_ap = np.mean([v for v in (ap or {}).values() if v >= 0]) if ap else None
            label = "mean" + (f" {mean_ap:.3f}" if mean_ap is not None else "")
            ax.plot(grid, np.mean(stacked, axis=0), color="black", linewidth=3, label=label)
        ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
        if len(curves) <= MAX_LEGEND and ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower left")
    return Path(path)


def plot_confusion(
    matrix: np.ndarray, names: list[str], path: Path, *, title: str = "Confusion matrix"
) -> Path:
    """Row-normalised matrix (rows = true class), with counts written in small matrices."""
    from visiontool.io.plotting import cell_labels, figure

    matrix = np.asarray(matrix, dtype=np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = min(max(6.0, 0.2 * len(names) + 3), 16.0)
    with figure(path, size=(size, size * 0.85)) as (fig, ax):
        ax.grid(False)
        image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ticks = np.arange(len(names))
        small = len(names) <= MAX_ANNOTATED
        font = "small" if small else 5
        ax.set_xticks(ticks, names, rotation=90, fontsize=font)
        ax.set_yticks(ticks, names, fontsize=font)
        ax.set(xlabel="Predicted", ylabel="True", title=title)
        if small:  # the counts sit inside the axes: tight_layout need not measure them
            rows_, cols = np.nonzero(matrix)
            labels = [f"{int(v)}" for v in matrix[rows_, cols]]
            colors = np.where(norm[rows_, cols] > 0.5, "white", "black")
            cell_labels(
                ax, cols, rows_, labels, colors, fontsize=count_fontsize(size, names, labels)
            )
    return Path(path)


def count_fontsize(size: float, names: list[str], labels: list[str]) -> float:
    """Counts as large as their cells allow (a 4-class matrix has 70 pt cells: 7 pt counts
    were lost in them), 6..14 pt: at most 42% of a cell's height, and the longest count
    within 90% of its width (a digit is ~0.65 em wide)."""
    cell = size * 72 * 0.7 / max(1, len(names))  # the axes take ~70% of the figure's width
    digits = max((len(label) for label in labels), default=1)
    return float(np.clip(min(cell * 0.42, cell * 0.9 / (0.65 * digits)), 6.0, 14.0))


def plot_detection_confusion(
    gt: Any, dets: Any, path: Path, *, conf: float, iou: float, title: str | None = None
) -> Path:
    """The detection confusion matrix of `dets` against `gt` (`metrics.confusion`, with a
    background class), drawn by `plot_confusion`; the title names the thresholds."""
    matrix, names, title = detection_confusion_plot(gt, dets, conf=conf, iou=iou, title=title)
    return plot_confusion(matrix, names, path, title=title)


def detection_confusion_plot(
    gt: Any, dets: Any, *, conf: float, iou: float, title: str | None = None
) -> tuple[np.ndarray, list[str], str]:
    """What `plot_confusion` draws for detections: (matrix, class names + background, title);
    small enough to hand to a plot worker."""
    from visiontool.metrics.confusion import detection_confusion

    matrix = detection_confusion(
        gt.image, gt.boxes, gt.labels, gt.difficult | gt.crowd, dets.image_ids, dets.boxes,
        dets.scores, dets.labels, num_classes=len(gt.classes), conf=conf, iou=iou,
    )  # fmt: skip
    title = title or f"Confusion matrix (conf >= {conf:g}, IoU >= {iou:g})"
    return matrix, [*gt.classes, BACKGROUND], title


def pr_curves(
    gt: Any, metrics: dict[str, Any], extras: dict[str, Any]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, float]]:
    """What `plot_pr_curves` draws from `score_detections`' (metrics, extras): per class with
    ground truth, COCO's interpolated curve at IoU 0.5 (what AP50 averages), or the raw VOC
    curve when 0.5 is not among the thresholds; and each class's AP50."""
    drawn = coco_pr_curves(gt, extras["coco"])
    if drawn is not None:
        return drawn
    voc = extras["voc"]
    curves, ap = {}, {}
    for k, name in enumerate(gt.classes):
        if voc.n_pos[k] == 0:
            continue
        curves[name] = voc.curves[k]
        ap[name] = metrics["per_class"][name]["voc_ap50"]
    return curves, ap


def coco_pr_curves(
    gt: Any, coco: Any
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, float]] | None:
    """COCO's interpolated precision at IoU 0.5 and AP50 per class with ground truth, from
    the COCO evaluation alone (so the plot can start before the VOC numbers); None when 0.5
    is not among its IoU thresholds."""
    row = coco.threshold_row(0.5)
    if row is None:
        return None
    recall_points = np.linspace(0.0, 1.0, 101)
    curves, ap = {}, {}
    for k, name in enumerate(gt.classes):
        ap50 = coco.class_ap(k, iou=0.5)
        if ap50 < 0:  # no ground truth of this class
            continue
        curves[name] = (recall_points, np.clip(coco.precision[row, :, k, 0, -1], 0.0, None))
        ap[name] = ap50
    return curves, ap


def _envelope(recall: np.ndarray, precision: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Best precision at recall >= each grid point (0 beyond the last recall reached)."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.size == 0:
        return np.zeros_like(grid)
    best = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, grid, side="left")
    out = np.zeros_like(grid)
    inside = idx < recall.size
    out[inside] = best[idx[inside]]
    return out
