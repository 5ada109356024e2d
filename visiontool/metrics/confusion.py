"""Confusion matrices: detection (with a background class) and classification.

Rows are the true class, columns the predicted class; for detection the last row and column are
"background": a prediction that matched no ground truth lands in the background row, a ground
truth no prediction matched lands in the background column.
"""

from __future__ import annotations

import numpy as np

from visiontool.metrics.voc import box_iou_pairs


def classification_confusion(
    labels: np.ndarray, predicted: np.ndarray, *, num_classes: int
) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    predicted = np.asarray(predicted, dtype=np.int64).reshape(-1)
    flat = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return flat[: num_classes * num_classes].reshape(num_classes, num_classes)


def detection_confusion(
    gt_image: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    gt_ignore: np.ndarray,
    det_image: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_labels: np.ndarray,
    *,
    num_classes: int,
    conf: float = 0.25,
    iou: float = 0.45,
) -> np.ndarray:
    """(K+1, K+1) counts of class-agnostic one-to-one matches at IoU >= `iou`.

    Predictions below `conf` are dropped first. Matching is greedy by IoU (highest first), so a
    well-placed box of the wrong class shows up as a confusion, not as two errors. Ignored
    (crowd/difficult) ground truth is left out, and predictions that fall on it are not counted.
    """
    gt_image = np.asarray(gt_image, dtype=np.int64).reshape(-1)
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_ignore = np.asarray(gt_ignore, dtype=bool).reshape(-1)
    keep = np.asarray(det_scores, dtype=np.float64).reshape(-1) >= conf
    det_image = np.asarray(det_image, dtype=np.int64).reshape(-1)[keep]
    det_labels = np.asarray(det_labels, dtype=np.int64).reshape(-1)[keep]
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)[keep]

    bg = num_classes
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    gt_groups = _groups(gt_image)
    det_groups = _groups(det_image)
    for image in set(gt_groups) | set(det_groups):
        g = gt_groups.get(image, np.zeros(0, dtype=np.int64))
        d = det_groups.get(image, np.zeros(0, dtype=np.int64))
        g_ign, g = g[gt_ignore[g]], g[~gt_ignore[g]]
        pairs = _greedy_pairs(gt_boxes[g], det_boxes[d], iou)
        matched_g = np.zeros(g.size, dtype=bool)
        matched_d = np.zeros(d.size, dtype=bool)
        for gi, di in pairs:
            matched_g[gi] = matched_d[di] = True
            matrix[gt_labels[g[gi]], det_labels[d[di]]] += 1
        np.add.at(matrix[:, bg], gt_labels[g[~matched_g]], 1)
        rest = d[~matched_d]
        if g_ign.size and rest.size:
            rest = rest[_best_iou(det_boxes[rest], gt_boxes[g_ign]) < iou]
        np.add.at(matrix[bg], det_labels[rest], 1)
    return matrix


def _groups(image: np.ndarray) -> dict[int, np.ndarray]:
    """Image id -> indices of its rows."""
    if image.size == 0:
        return {}
    order = np.argsort(image, kind="stable")
    ids, starts = np.unique(image[order], return_index=True)
    return dict(zip(ids.tolist(), np.split(order, starts[1:]), strict=True))


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ia = np.repeat(np.arange(len(a)), len(b))
    ib = np.tile(np.arange(len(b)), len(a))
    return box_iou_pairs(a[ia], b[ib]).reshape(len(a), len(b))


def _best_iou(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    return _iou_matrix(dets, gts).max(axis=1)


def _greedy_pairs(gts: np.ndarray, dets: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    if len(gts) == 0 or len(dets) == 0:
        return []
    ious = _iou_matrix(gts, dets)
    gi, di = np.nonzero(ious >= threshold)
    order = np.argsort(-ious[gi, di], kind="stable")
    used_g: set[int] = set()
    used_d: set[int] = set()
    pairs = []
    for g, d in zip(gi[order].tolist(), di[order].tolist(), strict=True):
        if g not in used_g and d not in used_d:
            used_g.add(g)
            used_d.add(d)
            pairs.append((g, d))
    return pairs
