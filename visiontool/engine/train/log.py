"""Training logs on disk: results.csv (one row per epoch) and PNG plots of losses and metrics."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def append_results(path: Path, row: dict[str, Any]) -> None:
    """Append one epoch; rewrite the header when a new column appears (e.g. first validation)."""
    rows = read_results(path)
    rows.append({k: _fmt(v) for k, v in row.items()})
    columns: list[str] = []
    for existing in rows:
        columns += [c for c in existing if c not in columns]
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


# metrics.png: a few small panels of the metrics people read, never all 14 COCO numbers; a
# run draws its task's own (`TaskSpec.panels`), these are detection's and classification's
PANELS: dict[str, dict[str, str]] = {
    "mAP (val)": {"val/map50": "mAP50", "val/map": "mAP50-95"},
    "precision / recall (val, conf 0.25)": {"val/precision": "P", "val/recall": "R"},
    "accuracy (val)": {"val/top1": "top1", "val/top5": "top5"},
}


def metric_panels(
    rows: list[dict[str, Any]], panels: dict[str, dict[str, str]] | None = None
) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """The series metrics.png draws: panel title -> label -> (epochs, values). Undefined values
    (-1, as pycocotools writes for nothing to score) and epochs without validation are left
    out; a series with no defined value, and a panel with no series, are not drawn."""
    drawn: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    losses = [c for c in (rows[-1] if rows else {}) if "loss" in c and not c.startswith("val/")]
    groups = {"losses (train)": {c: c for c in losses}, **(PANELS if panels is None else panels)}
    for title, columns in groups.items():
        series = {}
        for column, label in columns.items():
            points = [(int(r["epoch"]), float(r[column])) for r in rows
                      if r.get(column) not in (None, "") and float(r[column]) >= 0]  # fmt: skip
            if points:
                series[label] = ([e for e, _ in points], [v for _, v in points])
        if series:
            drawn[title] = series
    return drawn


def plot_results(
    csv_path: Path, out: Path, *, panels: dict[str, dict[str, str]] | None = None
) -> Path | None:
    """losses.png (every loss) and metrics.png (`metric_panels` of `panels`, side by side)
    from results.csv, through `visiontool.io.plotting`."""
    from visiontool.io.plotting import figure, integer_ticks

    rows = read_results(csv_path)
    if not rows:
        return None
    epochs = [int(r["epoch"]) for r in rows]
    columns = [c for c in rows[-1] if "loss" in c]
    if columns:
        with figure(out / "losses.png", size=(7, 4)) as (_, ax):
            for column in columns:
                kept = [(e, r) for e, r in zip(epochs, rows, strict=True) if r.get(column)]
                ax.plot([e for e, _ in kept], [float(r[column]) for _, r in kept], marker="o",
                        label=column)  # fmt: skip
            ax.set_xlabel("epoch")
            integer_ticks(ax.xaxis)
            ax.legend()
    panels = metric_panels(rows, panels)
    if panels:
        with figure(out / "metrics.png", size=(3.6 * len(panels), 3.2), ncols=len(panels)) as (
            _,
            axes,
        ):
            axes = list(axes) if len(panels) > 1 else [axes]
            for ax, (title, series) in zip(axes, panels.items(), strict=True):
                for label, (xs, ys) in series.items():
                    ax.plot(xs, ys, marker="o", markersize=3, label=label)
                ax.set_title(title)
                ax.set_xlabel("epoch")
                integer_ticks(ax.xaxis)
                if not title.startswith("losses"):
                    ax.set_ylim(0, 1.02)
                ax.legend()
    return out
