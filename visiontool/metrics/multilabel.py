"""Multi-label classification metrics: numpy only, no I/O.

Each image has a set of classes (a multi-hot row) and a score per class (a sigmoid output).

- Average precision per class is the step-wise AP of the images ranked by that class's score,
  AP = sum_n (R_n - R_(n-1)) P_n over the distinct scores from high to low (images with equal
  scores enter together): scikit-learn's `average_precision_score`, not an interpolated curve.
  mAP is its mean over the classes that have at least one positive image.
- At a threshold (a class is predicted when its score is >= threshold): per-class precision,
  recall and F1, their mean over classes (macro), and exact-match accuracy (the fraction of
  images whose predicted set is exactly their true set).

Undefined values are -1, as in `metrics.classification` and pycocotools: AP, recall and F1 of a
class without positive images, precision of a class never predicted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MultiLabelResult:
    ap: np.ndarray  # (K,) average precision per class
    precision: np.ndarray  # (K,) at the threshold
    recall: np.ndarray  # (K,)
    f1: np.ndarray  # (K,)
    support: np.ndarray  # (K,) positive images per class
    predicted: np.ndarray  # (K,) images predicted per class at the threshold
    map: float  # mean AP over classes with positives (-1: none)
    f1_macro: float  # mean F1 over classes with positives (-1: none)
    precision_macro: float  # mean over classes with a defined precision (-1: none)
    recall_macro: float  # mean over classes with positives (-1: none)
    exact_match: float  # images whose predicted set equals their true set (-1: no images)
    threshold: float


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Step-wise AP of one class (module docstring); -1 without a positive."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    truth = np.asarray(truth).reshape(-1).astype(bool)
    positives = int(truth.sum())
    if positives == 0:
        return -1.0
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], truth[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    last = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]  # end of each tie group
    precision = tp[last] / (tp[last] + fp[last])
    recall = tp[last] / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multilabel_metrics(
    scores: np.ndarray, truth: np.ndarray, *, threshold: float
) -> MultiLabelResult:
    """Metrics of (N, K) `scores` against an (N, K) multi-hot `truth` (module docstring)."""
    scores = np.asarray(scores, np.float64)
    truth = np.asarray(truth).astype(bool)
    if scores.ndim != 2 or scores.shape != truth.shape:
        raise ValueError(f"scores {scores.shape} and truth {truth.shape} must both be (N, K)")
    predicted = scores >= threshold
    tp = (predicted & truth).sum(axis=0).astype(np.float64)
    n_pred = predicted.sum(axis=0)
    support = truth.sum(axis=0)
    has_pos = support > 0
    ap = np.array([average_precision(scores[:, k], truth[:, k]) for k in range(truth.shape[1])])
    precision = np.where(n_pred > 0, tp / np.maximum(n_pred, 1), -1.0)
    # a class with positives that is never predicted has precision 0 (nothing right)
    precision = np.where((n_pred == 0) & has_pos, 0.0, precision)
    recall = np.where(has_pos, tp / np.maximum(support, 1), -1.0)
    both = np.maximum(precision, 0.0) + np.maximum(recall, 0.0)
    f1 = np.where(both > 0, 2 * precision * recall / np.where(both > 0, both, 1.0), 0.0)
    f1 = np.where(has_pos, f1, -1.0)
    exact = float((predicted == truth).all(axis=1).mean()) if truth.shape[0] else -1.0
    return MultiLabelResult(
        ap=ap,
        precision=precision,
        recall=recall,
        f1=f1,
        support=support.astype(np.int64),
        predicted=n_pred.astype(np.int64),
        map=_mean_defined(ap),
        f1_macro=_mean_defined(f1),
        precision_macro=_mean_defined(precision),
        recall_macro=_mean_defined(recall),
        exact_match=exact,
        threshold=float(threshold),
    )


def _mean_defined(values: np.ndarray) -> float:
    defined = values[values >= 0]
    return float(defined.mean()) if defined.size else -1.0
