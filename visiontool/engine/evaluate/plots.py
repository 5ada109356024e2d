"""Evaluation plots as PNG files: precision-recall curves and confusion matrices.

Drawn through `visiontool.io.plotting` (the one plotting setup: Agg canvas, shared style,
atomic save); matplotlib is imported only when a plot is made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_LEGEND = 20
MAX_ANNOTATED = 30


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
    from visiontool.io.plotting import figure

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
        if small:
            for i, j in zip(*np.nonzero(matrix), strict=True):
                color = "white" if norm[i, j] > 0.5 else "black"
                ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", color=color,
                        fontsize=7)  # fmt: skip
    return Path(path)


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
