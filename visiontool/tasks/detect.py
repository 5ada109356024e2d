"""Object detection: every object's box and class.

Read from detection data sets (COCO, VOC, YOLO); the model is a torchvision-style detector that
computes its own loss; scored by `visiontool eval`'s COCO and VOC code (`engine.evaluate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visiontool import registry
from visiontool.metrics.coco import COCO_KEYS
from visiontool.tasks.spec import TaskSpec

METRICS = (*COCO_KEYS, "voc07_map50", "voc_map50", "f1")
"""COCO's 12 numbers, VOC AP50 (07 11-point, all-point) and the best F1 at IoU 0.5, as `visiontool
eval` reports them (what --fail-under and --metric may name)."""


def model_targets(targets: Sequence[Any], device: Any) -> list[dict[str, Any]]:
    """Our 0-based labels -> torchvision's (background = 0), plain tensors on the device."""
    import torch

    prepared = []
    for target in targets:
        boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(target["labels"], dtype=torch.int64) + 1
        prepared.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return prepared


def sgd_lr(batch: int) -> float:
    """torchvision's detection recipe: 0.02 for 16 images a step, in proportion."""
    return 0.02 * batch / 16


SPEC = registry.add(
    "task",
    TaskSpec(
        name="detect",
        description="object detection: a box and a class for every object",
        model_task="detect",
        output="boxes",
        reads=("detect",),
        metrics=METRICS,
        default_metric="map50",
        targets=model_targets,
        columns=(("P", "precision"), ("R", "recall"), ("mAP50", "map50"), ("mAP50-95", "map")),
        panels={
            "mAP (val)": {"val/map50": "mAP50", "val/map": "mAP50-95"},
            "precision / recall (val, conf 0.25)": {"val/precision": "P", "val/recall": "R"},
        },
        default_conf=0.25,
        sgd_lr=sgd_lr,
    ),
)
