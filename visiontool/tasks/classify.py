"""Image classification: one class per image.

Read from ImageFolder trees and CSVs; the model is a classifier (logits), trained with
cross-entropy; `detect` reports the top-k classes by softmax score; scored by top-1/top-5 and
per-class precision, recall and F1 (`engine.evaluate`, `metrics.classification`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visiontool import registry
from visiontool.tasks.spec import TaskSpec


def model_targets(targets: Sequence[Any], device: Any) -> Any:
    """Class ids -> one int64 tensor."""
    import torch

    return torch.as_tensor([int(t) for t in targets], dtype=torch.int64, device=device)


def loss(logits: Any, labels: Any) -> dict[str, Any]:
    import torch.nn.functional as F

    return {"cls_loss": F.cross_entropy(logits.float(), labels)}


def activation(logits: Any) -> Any:
    return logits.float().softmax(dim=1)


def top_classes(scores: Any, names: Sequence[str], *, topk: int, conf: float | None) -> list[Any]:
    """The `topk` best classes, best first (the score threshold does not apply: a classifier
    always names its best guesses)."""
    from visiontool.results import ClassScore

    k = min(topk, scores.numel())
    values, ids = scores.topk(k)
    return [ClassScore(int(i), names[int(i)], float(s))
            for s, i in zip(values.tolist(), ids.tolist(), strict=True)]  # fmt: skip


SPEC = registry.add(
    "task",
    TaskSpec(
        name="classify",
        description="image classification: one class per image (softmax, top-k)",
        model_task="classify",
        output="scores",
        reads=("classify",),
        metrics=("top1", "top5"),
        default_metric="top1",
        targets=model_targets,
        columns=(("top1", "top1"), ("top5", "top5")),
        panels={"accuracy (val)": {"val/top1": "top1", "val/top5": "top5"}},
        default_augment="classify",
        loss=loss,
        activation=activation,
        classes=top_classes,
    ),
)
