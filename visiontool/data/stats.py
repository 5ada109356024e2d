"""Data set statistics: counts per class and the distribution of box sizes and shapes.

Computed from annotations only (no image decoding), so it is quick on large sets. The anchors
command reuses `box_sizes` and the summaries to fit anchor sizes and aspect ratios.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

QUANTILES = (("p5", 5), ("p25", 25), ("median", 50), ("p75", 75), ("p95", 95))


def summary(values: np.ndarray) -> dict[str, float]:
    """min, percentiles, mean, max of a 1-D array ({} when empty)."""
    if values.size == 0:
        return {}
    out = {"min": float(values.min())}
    out.update({name: float(np.percentile(values, q)) for name, q in QUANTILES})
    out["mean"] = float(values.mean())
    out["max"] = float(values.max())
    return {k: round(v, 4) for k, v in out.items()}


def box_sizes(dataset: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(widths, heights, labels) of every box, plus nothing decoded: (N,), (N,), (N,)."""
    records = dataset.records()
    boxes = [r.boxes for r in records]
    stacked = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    labels = np.concatenate([r.labels for r in records]) if records else np.zeros(0, np.int64)
    return stacked[:, 2] - stacked[:, 0], stacked[:, 3] - stacked[:, 1], labels


def dataset_stats(dataset: Any) -> dict[str, Any]:
    """Images, objects, per-class counts and box width/height/area/aspect summaries."""
    if getattr(dataset, "task", "detect") == "classify":
        return _classification_stats(dataset)
    records = dataset.records()
    widths, heights, labels = box_sizes(dataset)
    counts = np.bincount(labels, minlength=len(dataset.classes)) if labels.size else None
    images_with = [set() for _ in dataset.classes]
    for record in records:
        for label in set(record.labels.tolist()):
            images_with[label].add(record.image_id)
    image_w = np.array([r.width for r in records], np.float64)
    image_h = np.array([r.height for r in records], np.float64)
    objects = int(labels.size)
    return {
        "task": "detect",
        "format": getattr(dataset, "format", ""),
        "split": getattr(dataset, "split", None),
        "images": len(records),
        "objects": objects,
        "negatives": sum(1 for r in records if len(r.labels) == 0),
        "objects_per_image": round(objects / len(records), 4) if records else 0.0,
        "crowd": int(sum(int(r.iscrowd.sum()) for r in records)),
        "difficult": int(sum(int(r.difficult.sum()) for r in records)),
        "classes": [
            {
                "id": k,
                "name": name,
                "objects": int(counts[k]) if counts is not None else 0,
                "images": len(images_with[k]),
            }
            for k, name in enumerate(dataset.classes)
        ],
        "image_size": {"width": summary(image_w), "height": summary(image_h)},
        "box": {
            "width": summary(widths),
            "height": summary(heights),
            "area": summary(widths * heights),
            "sqrt_area": summary(np.sqrt(np.clip(widths * heights, 0, None))),
            "aspect_ratio": summary(widths / np.clip(heights, 1e-6, None)),
        },
    }


def _classification_stats(dataset: Any) -> dict[str, Any]:
    counts = np.bincount(
        np.array([label for _, label in dataset.samples], np.int64), minlength=len(dataset.classes)
    )
    return {
        "task": "classify",
        "format": getattr(dataset, "format", ""),
        "split": getattr(dataset, "split", None),
        "images": len(dataset),
        "classes": [
            {"id": k, "name": name, "images": int(counts[k])}
            for k, name in enumerate(dataset.classes)
        ],
    }


def plot_stats(dataset: Any, path: str | Path) -> Path:
    """A PNG with histograms of box sqrt(area) and aspect ratio, and objects per class. The
    caller checks `path` (`data.outputs.check_out_file`); an OS error writing it is one
    `ConfigError` naming `path` (never the temp file)."""
    from visiontool.errors import ConfigError
    from visiontool.runtime import os_error_text

    try:
        return _plot_stats(dataset, path)
    except OSError as exc:
        raise ConfigError(os_error_text(exc, path, "cannot write")) from exc


def _plot_stats(dataset: Any, path: str | Path) -> Path:
    from visiontool.io.plotting import figure

    widths, heights, labels = box_sizes(dataset)
    with figure(path, size=(15, 4), ncols=3) as (_, axes):
        axes[0].hist(np.sqrt(widths * heights), bins=40, color="tab:blue")
        axes[0].set(title="box size (sqrt of area, px)", xlabel="px", ylabel="boxes")
        ratios = np.log2(widths / np.clip(heights, 1e-6, None))
        axes[1].hist(ratios, bins=40, color="tab:orange")
        axes[1].set(title="aspect ratio (log2 w/h)", xlabel="log2(w/h)", ylabel="boxes")
        counts = np.bincount(labels, minlength=len(dataset.classes))
        axes[2].bar(range(len(dataset.classes)), counts, color="tab:green")
        axes[2].set_xticks(range(len(dataset.classes)), dataset.classes, rotation=60, ha="right")
        axes[2].set(title="objects per class", ylabel="boxes")
    return Path(path)
