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
    scored = np.flatnonzero(~gt_ignore)
    g, d = _same_image_pairs(gt_image[scored], det_image)
    g = scored[g]
    ious = box_iou_pairs(gt_boxes[g], det_boxes[d])
    matched_g = np.zeros(gt_labels.size, dtype=bool)
    matched_d = np.zeros(det_labels.size, dtype=bool)
    pair_g, pair_d = _greedy_pairs(g, d, ious, iou)
    matched_g[pair_g] = matched_d[pair_d] = True
    np.add.at(matrix, (gt_labels[pair_g], det_labels[pair_d]), 1)
    np.add.at(matrix[:, bg], gt_labels[scored[~matched_g[scored]]], 1)
    rest = np.flatnonzero(~matched_d)
    ignored = np.flatnonzero(gt_ignore)
    if ignored.size and rest.size:  # a prediction on ignored ground truth is not counted
        gi, di = _same_image_pairs(gt_image[ignored], det_image[rest])
        on_ignored = box_iou_pairs(gt_boxes[ignored[gi]], det_boxes[rest[di]]) >= iou
        rest = np.delete(rest, di[on_ignored])
    np.add.at(matrix[bg], det_labels[rest], 1)
    return matrix


def _same_image_pairs(gt_image: np.ndarray, det_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (ground truth, prediction) index pair of one image: image by image, then by
    ground-truth index, then by prediction index (each image's IoU matrix read row by row)."""
    g_order = np.argsort(gt_image, kind="stable")
    d_order = np.argsort(det_image, kind="stable")
    d_sorted = det_image[d_order]
    g_sorted = gt_image[g_order]
    starts = np.searchsorted(d_sorted, g_sorted, side="left")
    counts = np.searchsorted(d_sorted, g_sorted, side="right") - starts
    total = int(counts.sum())
    first = np.repeat(np.cumsum(counts) - counts, counts)
    offsets = np.arange(total) - first
    return np.repeat(g_order, counts), d_order[np.repeat(starts, counts) + offsets]


def _greedy_pairs(
    g: np.ndarray, d: np.ndarray, ious: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches among candidate pairs (g[i], d[i]) of IoU >= `threshold`, highest IoU
    first (ties: candidate order). Images never share an index, so one pass over all images
    gives each image's own greedy matching."""
    keep = np.flatnonzero(ious >= threshold)
    order = keep[np.argsort(-ious[keep], kind="stable")]
    used_g: set[int] = set()
    used_d: set[int] = set()
    pairs_g, pairs_d = [], []
    for gi, di in zip(g[order].tolist(), d[order].tolist(), strict=True):
        if gi not in used_g and di not in used_d:
            used_g.add(gi)
            used_d.add(di)
            pairs_g.append(gi)
            pairs_d.append(di)
    return np.asarray(pairs_g, dtype=np.int64), np.asarray(pairs_d, dtype=np.int64)
