"""Pascal VOC AP at one IoU threshold: the 2007 11-point and the 2010+ all-point definitions.

Matching follows the VOC devkit (VOCevaldet.m): detections of a class are taken in descending
score order (ties keep input order); each is compared with every ground-truth box of its class
in its image and takes the one of highest IoU. If that IoU reaches the threshold and the box is
`difficult` (ignored), the detection counts as neither true nor false positive; if the box was
already taken by a higher-scoring detection it is a false positive. Difficult boxes are not
counted in recall. Boxes are continuous xyxy (area = w * h, no devkit "+1" pixel).

Because a detection's best box does not depend on earlier matches, the whole evaluation is a
handful of vectorised numpy passes, fast enough for 500k detections.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class VocResult:
    """Per-class AP (11-point and all-point; -1 for classes without ground truth) and curves."""

    ap07: np.ndarray  # (K,)
    ap: np.ndarray  # (K,)
    n_pos: np.ndarray  # (K,) non-difficult ground-truth boxes
    curves: list[tuple[np.ndarray, np.ndarray]]  # per class (recall, precision), score order
    f1: float = 0.0  # the best F1 over all classes together (micro), keeping scores >= f1_conf
    f1_conf: float = 0.0  # the lowest score kept at that F1: a tuned default --conf

    @property
    def map07(self) -> float:
        return _mean_defined(self.ap07)

    @property
    def map(self) -> float:
        return _mean_defined(self.ap)


def voc_ap(recall: np.ndarray, precision: np.ndarray, *, use_07_metric: bool = False) -> float:
    """Area under a precision/recall curve, VOC style.

    11-point (VOC2007): mean over t in {0, 0.1, ..., 1} of the best precision at recall >= t.
    All-point (VOC2010+): area under the precision envelope (precision made monotone
    non-increasing), summed where recall changes.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        total = 0.0
        for t in np.arange(11) / 10.0:  # k / 10 exactly: 0.3 stays 0.3
            above = precision[recall >= t]
            total += float(above.max()) if above.size else 0.0
        return total / 11.0
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def evaluate_voc(
    gt_image: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    gt_difficult: np.ndarray,
    det_image: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_labels: np.ndarray,
    *,
    num_classes: int,
    iou_threshold: float = 0.5,
) -> VocResult:
    """VOC AP per class. Images are any integer ids; boxes are xyxy; labels are 0-based."""
    gt_image, gt_labels = _ints(gt_image), _ints(gt_labels)
    det_image, det_labels = _ints(det_image), _ints(det_labels)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    difficult = np.asarray(gt_difficult, dtype=bool).reshape(-1)

    best_gt, best_iou = _best_match(gt_image, gt_labels, gt_boxes, det_image, det_labels, det_boxes)
    order = np.argsort(-det_scores, kind="stable")
    hit = best_iou[order] >= iou_threshold
    target = best_gt[order]
    # a detection that matched a difficult box is ignored; `target` is -1 where nothing
    # matched, and there may be no ground truth at all (an empty split): index only matches
    ignored = hit & (target >= 0)
    ignored[ignored] = difficult[target[ignored]]
    claim = hit & ~ignored
    first = np.zeros(order.size, dtype=bool)
    _, first_pos = np.unique(np.where(claim, target, -1), return_index=True)
    first[first_pos] = True
    tp = claim & first
    keep = ~ignored
    order, tp = order[keep], tp[keep]

    n_pos = np.bincount(gt_labels[~difficult], minlength=num_classes)[:num_classes]
    f1, f1_conf = best_f1(det_scores[order], tp, int(n_pos.sum()))
    labels = det_labels[order]
    by_class = np.argsort(labels, kind="stable")
    labels, tp = labels[by_class], tp[by_class]
    bounds = np.searchsorted(labels, np.arange(num_classes + 1))
    ap07 = np.full(num_classes, -1.0)
    ap = np.full(num_classes, -1.0)
    curves = []
    for k in range(num_classes):
        tp_k = np.cumsum(tp[bounds[k] : bounds[k + 1]])
        seen = np.arange(1, tp_k.size + 1)
        recall = tp_k / max(int(n_pos[k]), 1)
        precision = tp_k / seen
        curves.append((recall, precision))
        if n_pos[k] > 0:
            ap07[k] = voc_ap(recall, precision, use_07_metric=True)
            ap[k] = voc_ap(recall, precision, use_07_metric=False)
    return VocResult(ap07=ap07, ap=ap, n_pos=n_pos, curves=curves, f1=f1, f1_conf=f1_conf)


def best_f1(scores: np.ndarray, tp: np.ndarray, n_pos: int) -> tuple[float, float]:
    """(F1, score threshold) where F1 = 2 TP / (kept + ground truth) is highest, over
    detections in descending `scores` order with their true-positive flags; thresholds sit on
    the last of equal scores (a threshold keeps all of a tie). (0, 0) without detections."""
    if scores.size == 0 or n_pos == 0:
        return 0.0, 0.0
    f1 = 2.0 * np.cumsum(tp) / (np.arange(1, scores.size + 1) + n_pos)
    last_of_tie = np.append(scores[1:] != scores[:-1], True)
    best = int(np.flatnonzero(last_of_tie)[np.argmax(f1[last_of_tie])])
    return float(f1[best]), float(scores[best])


def box_iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row i of `a` with row i of `b` (xyxy), 0 where the union is empty."""
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = union - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _best_match(
    gt_image: np.ndarray,
    gt_labels: np.ndarray,
    gt_boxes: np.ndarray,
    det_image: np.ndarray,
    det_labels: np.ndarray,
    det_boxes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """For each detection, the index of the same-image same-class ground truth of highest IoU
    (first in input order on ties) and that IoU; -1 and -inf where there is none."""
    n_det = det_labels.size
    best_gt = np.full(n_det, -1, dtype=np.int64)
    best_iou = np.full(n_det, -np.inf)
    if n_det == 0 or gt_labels.size == 0:
        return best_gt, best_iou
    keys_all = np.unique(np.concatenate([gt_image, det_image]))
    span = int(max(gt_labels.max(initial=0), det_labels.max(initial=0))) + 1
    gt_key = np.searchsorted(keys_all, gt_image) * span + gt_labels
    det_key = np.searchsorted(keys_all, det_image) * span + det_labels
    gt_order = np.argsort(gt_key, kind="stable")
    sorted_keys = gt_key[gt_order]
    start = np.searchsorted(sorted_keys, det_key, side="left")
    count = np.searchsorted(sorted_keys, det_key, side="right") - start
    det_of_pair = np.repeat(np.arange(n_det), count)
    offsets = np.arange(det_of_pair.size) - np.repeat(np.cumsum(count) - count, count)
    gt_of_pair = gt_order[np.repeat(start, count) + offsets]
    iou = box_iou_pairs(det_boxes[det_of_pair], gt_boxes[gt_of_pair])
    has = count > 0
    seg_max = np.maximum.reduceat(iou, (np.cumsum(count) - count)[has]) if iou.size else iou
    best_iou[has] = seg_max
    is_max = iou == best_iou[det_of_pair]
    dets, first = np.unique(det_of_pair[is_max], return_index=True)
    best_gt[dets] = gt_of_pair[is_max][first]
    return best_gt, best_iou


def _ints(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


def _mean_defined(values: np.ndarray) -> float:
    defined = values[values >= 0]
    return float(defined.mean()) if defined.size else -1.0
