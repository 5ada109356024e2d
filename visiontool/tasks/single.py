"""Single-object (largest-object) detection: one box and one class per image.

The model (`models.single`, registry model "single": a backbone with a head of 4 box numbers and
C class scores) speaks torchvision's detector interface and computes its own loss, L1 of the box
in pixels + `--box-weight` x cross-entropy of the class. It reads any detection data set: the
target of an image is its largest box (by area; crowd boxes only when there is nothing else),
chosen after augmentation. `detect` writes exactly one detection per image (the score
threshold is 0 unless `--conf` is given). Scored by class accuracy, box L1 in pixels and as a
fraction of the image size, and mean IoU (`metrics.single`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visiontool import registry
from visiontool.tasks.spec import TaskScore, TaskSpec


def largest_box(boxes: Any, iscrowd: Any = None) -> int:
    """Index of the largest box (by area, the first of equals) of (N, 4) xyxy `boxes`, crowd
    boxes only when every box is one; -1 without boxes."""
    import numpy as np

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return -1
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    if iscrowd is not None:
        crowd = np.asarray(iscrowd).reshape(-1).astype(bool)
        if crowd.shape[0] == area.shape[0] and not crowd.all():
            area = np.where(crowd, -1.0, area)
    return int(np.argmax(area))


def _largest(target: Any) -> tuple[Any, Any]:
    """(boxes (0|1, 4), labels (0|1,)) of a detection target: its largest object."""
    import torch

    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
    labels = torch.as_tensor(target["labels"], dtype=torch.int64).reshape(-1)
    crowd = target.get("iscrowd") if isinstance(target, dict) else None
    crowd = None if crowd is None else torch.as_tensor(crowd).cpu().numpy()
    index = largest_box(boxes.detach().cpu().numpy(), crowd)
    if index < 0:
        return boxes[:0], labels[:0]
    return boxes[index : index + 1], labels[index : index + 1]


def model_targets(targets: Sequence[Any], device: Any) -> list[dict[str, Any]]:
    """Each target's largest box and its 0-based class (no background), on the device."""
    prepared = []
    for target in targets:
        boxes, labels = _largest(target)
        prepared.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return prepared


def image_row(prediction: Any, target: Any, *, mapping: Any, size: tuple[int, int]) -> Any:
    """(predicted box, predicted data-set class or -1, true box, true class, (W, H)) of one
    image; None for an image without boxes (nothing to score)."""
    import numpy as np

    true_boxes, true_labels = _largest(target)
    if true_labels.numel() == 0:
        return None
    box, label = np.zeros(4, np.float64), -1
    if prediction.boxes is not None and len(prediction.boxes):
        box = prediction.boxes[0].numpy().astype(np.float64)
        label = int(mapping[int(prediction.class_ids[0])])
    return (box, label, true_boxes[0].numpy().astype(np.float64), int(true_labels[0]),
            (int(size[0]), int(size[1])))  # fmt: skip


def score(rows: Sequence[Any], *, classes: Sequence[str], conf: float | None) -> TaskScore:
    import numpy as np

    from visiontool.metrics.single import single_object_metrics

    rows = [r for r in rows if r is not None]
    result = single_object_metrics(
        np.array([r[0] for r in rows]).reshape(-1, 4),
        np.array([r[1] for r in rows], np.int64),
        np.array([r[2] for r in rows]).reshape(-1, 4),
        np.array([r[3] for r in rows], np.int64),
        np.array([r[4] for r in rows], np.float64).reshape(-1, 2),
        num_classes=len(classes),
    )
    metrics = {"accuracy": result.accuracy, "box_l1": result.box_l1,
               "box_l1_rel": result.box_l1_rel, "mean_iou": result.mean_iou}  # fmt: skip
    per_class: list[dict[str, Any]] = [
        {"class": "all", "images": result.images, "accuracy": result.accuracy,
         "box_l1": result.box_l1, "box_l1_rel": result.box_l1_rel, "iou": result.mean_iou},
    ]  # fmt: skip
    for k, name in enumerate(classes):
        per_class.append({"class": name, "images": int(result.per_class_images[k]),
                          "accuracy": float(result.per_class_accuracy[k]),
                          "box_l1": float(result.per_class_box_l1[k]),
                          "iou": float(result.per_class_iou[k])})  # fmt: skip
    return TaskScore(metrics, per_class)


def sgd_lr(batch: int) -> float:
    """Lower than a classifier's: the box loss is in pixels, so its gradients grow with the
    input size (SGD at 0.01 saturates the box sigmoids; AdamW at its 1e-3 is not affected)."""
    return 0.001


SPEC = registry.add(
    "task",
    TaskSpec(
        name="single",
        description="largest-object detection: one box and one class per image",
        model_task="single",
        output="boxes",
        reads=("detect",),
        metrics=("accuracy", "mean_iou"),
        default_metric="accuracy",
        targets=model_targets,
        columns=(("acc", "accuracy"), ("box_L1", "box_l1"), ("IoU", "mean_iou")),
        panels={
            "single object (val)": {
                "val/accuracy": "accuracy",
                "val/mean_iou": "IoU",
                "val/box_l1_rel": "box L1 / size",
            }
        },  # fmt: skip
        default_augment="frcnn",
        default_conf=0.0,
        sgd_lr=sgd_lr,
        image_row=image_row,
        score=score,
    ),
)
