"""Evaluation plots as PNG files: precision-recall curves and confusion matrices.

matplotlib is imported inside each function with the non-interactive Agg backend, so importing
this module costs nothing and plots work on machines without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_LEGEND = 20
MAX_ANNOTATED = 30


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    *,
    title: str = "Precision-recall at IoU 0.5",
    ap: dict[str, float] | None = None,
) -> Path:
    """One line per class (recall on x, interpolated precision on y) plus their mean."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 6), dpi=100)
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
    if len(curves) <= MAX_LEGEND:
        ax.legend(loc="lower left", fontsize="small")
    return _save(plt, fig, path)


def plot_confusion(
    matrix: np.ndarray, names: list[str], path: Path, *, title: str = "Confusion matrix"
) -> Path:
    """Row-normalised matrix (rows = true class), with counts written in small matrices."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = min(max(6.0, 0.2 * len(names) + 3), 16.0)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=100)
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
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", color=color, fontsize=7)
    return _save(plt, fig, path)


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


def _save(plt: Any, fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
