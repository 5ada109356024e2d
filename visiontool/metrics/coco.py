"""COCO box metrics: pycocotools' 12 summary numbers and per-class AP, computed by faster-coco-eval.

faster-coco-eval is the maintained C++ port of pycocotools' matching and accumulation with the
same definitions (101-point interpolation, area ranges, maxDets 1/10/100, crowd regions, stable
score ordering); the tests hold it to pycocotools within 1e-9. This module only shapes inputs
(ground truth as a COCO dict, detections as COCO result rows) and reads the outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

COCO_KEYS = (
    "map",
    "map50",
    "map75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


@dataclass
class CocoResult:
    """The 12 summary numbers (-1 where undefined, as pycocotools) and per-class AP.

    `precision` is pycocotools' array [iou, recall, class, area, maxdets]; per-class values read
    the "all" area range at maxDets=100.
    """

    stats: dict[str, float]
    precision: np.ndarray
    iou_thresholds: np.ndarray
    category_ids: list[int]

    def threshold_row(self, iou: float) -> int | None:
        """Where `iou` sits among the evaluation's IoU thresholds (None: not among them)."""
        rows = np.flatnonzero(np.isclose(self.iou_thresholds, iou))
        return int(rows[0]) if rows.size else None

    def class_ap(self, k: int, *, iou: float | None = None) -> float:
        """AP of class index `k` over all IoU thresholds, or at one threshold (e.g. 0.5)."""
        p = self.precision[:, :, k, 0, -1]
        if iou is not None:
            row = self.threshold_row(iou)
            if row is None:
                return -1.0
            p = p[row]
        valid = p[p > -1]
        return float(valid.mean()) if valid.size else -1.0


def results_from_arrays(
    image_ids: np.ndarray, boxes_xywh: np.ndarray, scores: np.ndarray, category_ids: np.ndarray
) -> list[dict[str, Any]]:
    """COCO result rows (what loadRes would build) from flat arrays, ids numbered from 1."""
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4).tolist()
    rows = zip(
        np.asarray(image_ids).tolist(),
        np.asarray(category_ids).tolist(),
        boxes,
        np.asarray(scores, dtype=np.float64).tolist(),
        strict=True,
    )
    return [
        {
            "id": i,
            "image_id": img,
            "category_id": cat,
            "bbox": box,
            "score": score,
            "area": box[2] * box[3],
            "iscrowd": 0,
        }
        for i, (img, cat, box, score) in enumerate(rows, 1)
    ]


def evaluate_coco(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    *,
    iou_thresholds: Sequence[float] | None = None,
) -> CocoResult:
    """Score COCO result rows (see `results_from_arrays`) against a COCO ground-truth dict.

    `gt` annotations are used as given (their `area` decides small/medium/large, as in
    pycocotools); a missing `area` is filled with the box area. The dicts may be annotated in
    place by the evaluator.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    gt = _complete_gt(gt)
    coco_gt = COCO(gt)
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": gt["images"],
        "categories": gt["categories"],
        "annotations": results,
    }
    coco_dt.createIndex()
    evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=_silent)
    if iou_thresholds is not None:
        evaluator.params.iouThrs = np.asarray(sorted(iou_thresholds), dtype=np.float64)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    stats = {key: float(value) for key, value in zip(COCO_KEYS, evaluator.stats[:12], strict=True)}
    return CocoResult(
        stats=stats,
        precision=np.asarray(evaluator.eval["precision"]),
        iou_thresholds=np.asarray(evaluator.params.iouThrs),
        category_ids=[int(c) for c in evaluator.params.catIds],
    )


def _complete_gt(gt: dict[str, Any]) -> dict[str, Any]:
    """Shallow copy with the keys pycocotools assumes (annotations, area) present."""
    gt = dict(gt)
    annotations = gt.get("annotations") or []
    for ann in annotations:
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
    gt["annotations"] = annotations
    gt.setdefault("categories", [])
    gt.setdefault("images", [])
    return gt


def _silent(*_args: Any, **_kwargs: Any) -> None:
    """faster-coco-eval prints its progress through this; the engine never prints."""
