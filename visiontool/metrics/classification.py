"""Classification metrics: top-1/top-5 accuracy and per-class precision, recall and F1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from visiontool.metrics.confusion import classification_confusion


@dataclass
class ClassificationResult:
    top1: float
    top5: float
    precision: np.ndarray  # (K,) 0 where the class was never predicted
    recall: np.ndarray  # (K,) 0 where the class has no samples
    f1: np.ndarray  # (K,)
    support: np.ndarray  # (K,) true samples per class
    confusion: np.ndarray  # (K, K) rows = true, columns = predicted


def classification_metrics(
    scores: np.ndarray, labels: np.ndarray, *, num_classes: int | None = None
) -> ClassificationResult:
    """Metrics from per-class scores (N, C) and true labels (N,).

    Top-k counts a sample as right when its label is among the k highest scores (ties broken by
    the lower class index); with fewer than 5 classes top-5 is top-C. With no samples top-1 and
    top-5 are undefined: -1, as pycocotools reports an empty split.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n, c = scores.shape if scores.ndim == 2 else (0, num_classes or 0)
    k_classes = num_classes or c
    if n == 0:  # nothing to score: undefined (-1), as pycocotools reports empty splits
        zeros = np.zeros(k_classes)
        empty = np.zeros((k_classes, k_classes), dtype=np.int64)
        return ClassificationResult(-1.0, -1.0, zeros, zeros, zeros, zeros.astype(np.int64), empty)
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, : min(5, c)]
    correct = ranked == labels[:, None]
    matrix = classification_confusion(labels, ranked[:, 0], num_classes=k_classes)
    true_pos = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = _ratio(true_pos, predicted)
    recall = _ratio(true_pos, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return ClassificationResult(
        top1=float(correct[:, 0].mean()),
        top5=float(correct.any(axis=1).mean()),
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        confusion=matrix,
    )


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)
