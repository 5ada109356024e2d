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


def plot_results(csv_path: Path, out: Path) -> Path | None:
    """losses.png and metrics.png from results.csv (through `visiontool.io.plotting`)."""
    from visiontool.io.plotting import figure, integer_ticks

    rows = read_results(csv_path)
    if not rows:
        return None
    epochs = [int(r["epoch"]) for r in rows]
    groups = {
        "losses.png": [c for c in rows[-1] if "loss" in c],
        "metrics.png": [c for c in rows[-1] if c.startswith("val/")],
    }
    for name, columns in groups.items():
        if not columns:
            continue
        with figure(out / name, size=(7, 4)) as (_, ax):
            for column in columns:
                kept = [(e, r) for e, r in zip(epochs, rows, strict=True) if r.get(column)]
                ax.plot([e for e, _ in kept], [float(r[column]) for _, r in kept], marker="o",
                        label=column)  # fmt: skip
            ax.set_xlabel("epoch")
            integer_ticks(ax.xaxis)
            ax.legend()
    return out
