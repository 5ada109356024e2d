"""Multi-label classification: every class an image shows, each scored on its own.

A classifier (any registered one: `train --task multilabel --model resnet18`) whose logits go
through a per-class sigmoid, trained with binary cross-entropy. It reads multi-label CSVs
(`filename,label label ...`), any other classification set (one label each) and detection data
sets (the set of classes of each image's boxes, `data.classification.as_multilabel`). `detect`
reports every class scoring at least the threshold (`--conf`; default the model's, the
`train --threshold` it was trained with, 0.4 unless set). Scored by mean average precision over
classes (threshold-free), per-class precision, recall and F1 and exact-match accuracy at the
threshold (`metrics.multilabel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visiontool import registry
from visiontool.tasks.spec import TaskScore, TaskSpec

DEFAULT_THRESHOLD = 0.4


def adapt(dataset: Any) -> Any:
    from visiontool.data.classification import as_multilabel

    return as_multilabel(dataset)


def model_targets(targets: Sequence[Any], device: Any) -> Any:
    """Multi-hot rows -> one (N, K) float tensor."""
    import torch

    return torch.stack([torch.as_tensor(t, dtype=torch.float32) for t in targets]).to(device)


def loss(logits: Any, targets: Any) -> dict[str, Any]:
    """Binary cross-entropy of each class's sigmoid, averaged over images and classes."""
    import torch.nn.functional as F

    return {"bce_loss": F.binary_cross_entropy_with_logits(logits.float(), targets.float())}


def activation(logits: Any) -> Any:
    return logits.float().sigmoid()


def classes_above(scores: Any, names: Sequence[str], *, topk: int, conf: float | None) -> list[Any]:
    """Every class scoring >= `conf`, best first (`topk` does not apply: the threshold decides
    how many)."""
    from visiontool.results import ClassScore

    threshold = DEFAULT_THRESHOLD if conf is None else conf
    values = scores.tolist()
    chosen = sorted((k for k, v in enumerate(values) if v >= threshold), key=lambda k: -values[k])
    return [ClassScore(k, names[k], float(values[k])) for k in chosen]


def train_conf(cfg: Any) -> float:
    return float(cfg.threshold)


def image_row(prediction: Any, target: Any, *, mapping: Any, size: tuple[int, int]) -> Any:
    """(scores in data-set class order, true multi-hot row) of one image; a failed prediction
    scores every class 0."""
    import numpy as np

    truth = np.asarray(target, dtype=np.float32).reshape(-1) > 0.5
    row = np.zeros(truth.size, np.float32)
    probs = prediction.probs
    if probs is not None and probs.numel() == len(mapping):
        values = probs.numpy().astype(np.float32)
        keep = mapping >= 0
        row[mapping[keep]] = values[keep]
    return row, truth


def score(rows: Sequence[Any], *, classes: Sequence[str], conf: float | None) -> TaskScore:
    import numpy as np

    from visiontool.metrics.multilabel import multilabel_metrics

    k = len(classes)
    scores = np.stack([r for r, _ in rows]) if rows else np.zeros((0, k))
    truth = np.stack([t for _, t in rows]) if rows else np.zeros((0, k), bool)
    threshold = DEFAULT_THRESHOLD if conf is None else conf
    result = multilabel_metrics(scores, truth, threshold=threshold)
    metrics = {"map": result.map, "f1": result.f1_macro, "exact_match": result.exact_match,
               "precision": result.precision_macro, "recall": result.recall_macro}  # fmt: skip
    per_class: list[dict[str, Any]] = [
        {"class": "all", "images": int(truth.shape[0]), "ap": result.map,
         "precision": result.precision_macro, "recall": result.recall_macro,
         "f1": result.f1_macro, "exact_match": result.exact_match},
    ]  # fmt: skip
    for i, name in enumerate(classes):
        per_class.append({
            "class": name, "images": int(result.support[i]), "ap": float(result.ap[i]),
            "precision": float(result.precision[i]), "recall": float(result.recall[i]),
            "f1": float(result.f1[i]),
        })  # fmt: skip
    return TaskScore(metrics, per_class)


SPEC = registry.add(
    "task",
    TaskSpec(
        name="multilabel",
        description="multi-label classification: every class present (per-class sigmoid)",
        model_task="classify",
        output="scores",
        reads=("classify", "detect"),
        metrics=("map", "f1", "exact_match", "precision", "recall"),
        default_metric="map",
        targets=model_targets,
        columns=(("mAP", "map"), ("F1", "f1"), ("exact", "exact_match")),
        panels={
            "multi-label (val)": {
                "val/map": "mAP",
                "val/f1": "F1",
                "val/exact_match": "exact match",
            }
        },  # fmt: skip
        default_augment="multilabel",
        whole_image=True,
        adapt=adapt,
        loss=loss,
        train_conf=train_conf,
        default_conf=DEFAULT_THRESHOLD,
        activation=activation,
        classes=classes_above,
        image_row=image_row,
        score=score,
    ),
)
