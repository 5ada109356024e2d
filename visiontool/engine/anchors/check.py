"""`visiontool anchors check`: how well a detector's own anchors cover a data set's boxes.

For each distinct image size in the data set the model's head spec lays its anchors over that
size (`HeadSpec.image_anchors`: for torchvision heads, the transform on a blank image, the
backbone on the meta device, then the model's own anchor generator). Each ground-truth box,
scaled into the model's input coordinates, is matched to its best anchor; recall at IoU 0.5 and
0.7 is reported per COCO size bucket (by box area in the original image: small < 32^2,
medium < 96^2, large otherwise), with a plain hint for buckets that are badly covered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from visiontool import registry
from visiontool.errors import ConfigError

BUCKETS = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, math.inf))
GOOD_RECALL = 0.9  # a bucket below this recall at IoU 0.5 gets a hint


@dataclass
class CheckConfig:
    model: str | None
    data: Path
    split: str | None = None
    limit: int | None = None  # check only the first N images
    device: str = "auto"  # auto, cpu, cuda or cuda:N (auto = cuda when available)
    weights: Path | None = None  # a trained checkpoint: its model (and anchors) are checked


@dataclass
class BucketRecall:
    name: str
    boxes: int
    recall_50: float
    recall_70: float
    mean_iou: float
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckResult:
    model: str
    data: str
    images: int
    boxes: int
    generator: str
    input_sizes: list[dict[str, Any]]  # image [W, H] -> model input [W, H] -> anchor count
    buckets: list[BucketRecall]
    overall: BucketRecall
    hints: list[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["buckets"] = [b.to_dict() for b in self.buckets]
        out["overall"] = self.overall.to_dict()
        return out


def check_anchors(config: CheckConfig) -> CheckResult:
    """Load the model (no weights needed; a checkpoint's `weights` rebuild the model it was
    trained as, anchors included), open the data set, and measure anchor recall."""
    from visiontool.data.datasets import open_dataset
    from visiontool.models.factory import load_model
    from visiontool.runtime import resolve_device

    weights = str(config.weights) if config.weights is not None else "none"
    loaded = load_model(config.model, weights=weights, device=resolve_device(config.device))
    name = config.model or loaded.info.name
    head = loaded.head
    if head is None or head.image_anchors is None:
        with_anchors = [h.name for h in registry.specs("head") if h.image_anchors is not None]
        raise ConfigError(
            f"model {name!r} has no anchor generator to check (detectors whose head "
            f"has anchors: {', '.join(with_anchors)}; see `visiontool models --heads`)"
        )
    dataset = open_dataset(config.data, split=config.split, task="detect")
    records = dataset.records()
    if config.limit is not None:
        records = records[: max(config.limit, 0)]
    return check_records(
        partial(head.image_anchors, loaded.module), records, model=name,
        data=str(config.data), generator=f"{head.name} anchors",
    )  # fmt: skip


def check_records(
    image_anchors: Callable[[tuple[int, int]], tuple[Any, tuple[int, int]]],
    records: list[Any],
    *,
    model: str = "",
    data: str = "",
    generator: str = "",
) -> CheckResult:
    """Best-anchor IoU of every non-crowd box of `records`, summarised per size bucket.
    `image_anchors((H, W))` gives the model's anchors for an image of that size, in its input
    coordinates, and that input size (a `HeadSpec.image_anchors` bound to the model)."""
    geometry: dict[tuple[int, int], tuple[Any, tuple[int, int]]] = {}
    best_parts, area_parts, missed = [], [], []
    for record in records:
        key = (int(record.height), int(record.width))
        if key not in geometry:
            geometry[key] = image_anchors(key)
        anchors, (in_h, in_w) = geometry[key]
        boxes = np.asarray(record.boxes, dtype=np.float32).reshape(-1, 4)
        areas = np.asarray(record.box_area(), dtype=np.float32).reshape(-1)
        crowd = np.asarray(record.iscrowd, dtype=bool).reshape(-1)
        if len(crowd) == len(boxes) and crowd.any():
            boxes, areas = boxes[~crowd], areas[~crowd]
        if len(boxes) == 0:
            continue
        scale = np.array([in_w / key[1], in_h / key[0]] * 2, dtype=np.float32)
        scaled = boxes * scale
        best = best_iou(anchors, scaled)
        best_parts.append(best)
        area_parts.append(areas)
        missed.append(scaled[best < 0.5])
    best = np.concatenate(best_parts) if best_parts else np.zeros(0, np.float32)
    areas = np.concatenate(area_parts) if area_parts else np.zeros(0, np.float32)
    missed_boxes = np.concatenate(missed) if missed else np.zeros((0, 4), np.float32)
    shapes = cell_shapes(geometry)
    buckets = []
    for name, low, high in BUCKETS:
        inside = (areas >= low) & (areas < high)
        bucket = summarise(name, best[inside])
        if bucket.boxes and bucket.recall_50 < GOOD_RECALL:
            bucket.hint = coverage_hint(name, bucket, missed_boxes, shapes)
        buckets.append(bucket)
    return CheckResult(
        model=model,
        data=data,
        images=len(records),
        boxes=int(len(best)),
        generator=generator,
        input_sizes=[  # width x height, as every size visiontool shows
            {"image": [k[1], k[0]], "input": [v[1][1], v[1][0]], "anchors": int(v[0].shape[0])}
            for k, v in sorted(geometry.items())
        ],
        buckets=buckets,
        overall=summarise("all", best),
        hints=[b.hint for b in buckets if b.hint],
    )


def best_iou(anchors: Any, boxes: np.ndarray) -> np.ndarray:
    """IoU of each box (G, 4) with its best anchor, reduced over cache-sized anchor blocks."""
    import torch

    from visiontool.ops.boxes import iou_blocks

    best = torch.zeros(len(boxes))
    if len(boxes) == 0:
        return best.numpy()
    for _, block in iou_blocks(anchors, torch.from_numpy(boxes).float()):
        best = torch.maximum(best, block.max(dim=0).values)
    return best.numpy()


def summarise(name: str, best: np.ndarray) -> BucketRecall:
    if len(best) == 0:
        return BucketRecall(name, 0, 0.0, 0.0, 0.0)
    return BucketRecall(
        name=name,
        boxes=int(len(best)),
        recall_50=float((best >= 0.5).mean()),
        recall_70=float((best >= 0.7).mean()),
        mean_iou=float(best.mean()),
    )


def cell_shapes(geometry: dict[tuple[int, int], Any]) -> np.ndarray:
    """Distinct anchor (w, h) shapes in model-input pixels, read off the generated anchors."""
    parts = []
    for anchors, _ in geometry.values():
        wh = (anchors[:, 2:] - anchors[:, :2]).numpy()
        parts.append(np.unique(np.round(wh, 1), axis=0))
    if not parts:
        return np.zeros((0, 2))
    return np.unique(np.concatenate(parts), axis=0)


def coverage_hint(name: str, bucket: BucketRecall, missed: np.ndarray, shapes: np.ndarray) -> str:
    """One plain sentence on why a bucket is badly covered and what to try."""
    head = (
        f"{name} boxes: only {bucket.recall_50:.0%} of {bucket.boxes} have an anchor with "
        f"IoU >= 0.5"
    )
    if len(missed) == 0 or len(shapes) == 0:
        return head + "."
    wh = np.clip(missed[:, 2:] - missed[:, :2], 1e-3, None)
    box_size = float(np.median(np.sqrt(wh[:, 0] * wh[:, 1])))
    sizes = np.sqrt(shapes[:, 0] * shapes[:, 1])
    if box_size < 0.7 * sizes.min():
        return (
            f"{head}; the missed boxes are ~{box_size:.0f} px at the model's input but the "
            f"smallest anchor is {sizes.min():.0f} px: add smaller anchor sizes, use a larger "
            "input size, or fit anchors with `visiontool anchors fit`."
        )
    if box_size > 1.4 * sizes.max():
        return (
            f"{head}; the missed boxes are ~{box_size:.0f} px but the largest anchor is "
            f"{sizes.max():.0f} px: add larger anchor sizes or use a smaller input size."
        )
    box_ratio = float(np.exp(np.median(np.log(wh[:, 0] / wh[:, 1]))))  # width / height
    ratios = shapes[:, 0] / shapes[:, 1]
    if abs(np.log(box_ratio)) > np.abs(np.log(ratios)).max() + 0.3:
        return (
            f"{head}; the missed boxes are elongated (median width/height {box_ratio:.2f}) "
            f"beyond the anchors' ratios w/h ({ratios.min():.2f}..{ratios.max():.2f}): add "
            f"ratios near {box_ratio:.2f} (`train --anchor-ratios`, width/height)."
        )
    return (
        f"{head}; anchor sizes ({sizes.min():.0f}..{sizes.max():.0f} px) span these boxes but "
        "no anchor lines up well enough (centres too far apart, or sizes and ratios too "
        "coarse): add intermediate sizes or ratios, a finer feature level, or fit anchors with "
        "`visiontool anchors fit`."
    )
