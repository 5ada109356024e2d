"""Single-object (largest-object) metrics: numpy only, no I/O.

Each image has one true object (its largest box and class) and one predicted box and class.

- accuracy: the fraction of images whose predicted class is the true one (an image without a
  prediction counts as wrong);
- box_l1: the mean absolute difference of the four box coordinates (x1, y1, x2, y2), in
  pixels of the image;
- box_l1_rel: the same with x differences divided by the image's width and y differences by
  its height (0.1 = off by a tenth of the image on average);
- mean_iou: the mean IoU of the predicted box with the true one.

Box numbers are over the images that have a prediction. Per class (by true class): images,
accuracy (the class's recall), box_l1, mean_iou. Undefined values are -1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SingleObjectResult:
    accuracy: float
    box_l1: float
    box_l1_rel: float
    mean_iou: float
    images: int
    per_class_images: np.ndarray  # (K,)
    per_class_accuracy: np.ndarray  # (K,) -1 for a class without images
    per_class_box_l1: np.ndarray  # (K,)
    per_class_iou: np.ndarray  # (K,)


def box_iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each row of `a` with the same row of `b`, both (N, 4) xyxy."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    wh = np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None)
    inter = wh[:, 0] * wh[:, 1]
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def single_object_metrics(
    pred_boxes: np.ndarray,
    pred_labels: np.ndarray,
    true_boxes: np.ndarray,
    true_labels: np.ndarray,
    sizes: np.ndarray,
    *,
    num_classes: int,
) -> SingleObjectResult:
    """Metrics of N images (module docstring). `pred_labels` is -1 where an image has no
    prediction (its box row is then ignored); `sizes` holds each image's (width, height)."""
    pred_boxes = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
    true_boxes = np.asarray(true_boxes, np.float64).reshape(-1, 4)
    pred_labels = np.asarray(pred_labels, np.int64).reshape(-1)
    true_labels = np.asarray(true_labels, np.int64).reshape(-1)
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    n = true_labels.size
    has_pred = pred_labels >= 0
    correct = (pred_labels == true_labels) & has_pred
    l1 = np.abs(pred_boxes - true_boxes).mean(axis=1)
    scale = np.maximum(np.concatenate([sizes, sizes], axis=1), 1.0)
    l1_rel = (np.abs(pred_boxes - true_boxes) / scale).mean(axis=1)
    iou = box_iou_pairs(pred_boxes, true_boxes)
    per_images = np.bincount(true_labels, minlength=num_classes)[:num_classes]
    per_acc = np.full(num_classes, -1.0)
    per_l1 = np.full(num_classes, -1.0)
    per_iou = np.full(num_classes, -1.0)
    for k in range(num_classes):
        mine = true_labels == k
        if mine.any():
            per_acc[k] = float(correct[mine].mean())
        boxed = mine & has_pred
        if boxed.any():
            per_l1[k] = float(l1[boxed].mean())
            per_iou[k] = float(iou[boxed].mean())
    return SingleObjectResult(
        accuracy=float(correct.mean()) if n else -1.0,
        box_l1=float(l1[has_pred].mean()) if has_pred.any() else -1.0,
        box_l1_rel=float(l1_rel[has_pred].mean()) if has_pred.any() else -1.0,
        mean_iou=float(iou[has_pred].mean()) if has_pred.any() else -1.0,
        images=int(n),
        per_class_images=per_images.astype(np.int64),
        per_class_accuracy=per_acc,
        per_class_box_l1=per_l1,
        per_class_iou=per_iou,
    )
