"""Validation during training, through the eval engine: COCO/VOC metrics for detectors,
top-1/top-5 for classifiers, each with a per-class table and the data behind the PR curve and
confusion matrix (`ValidationReport`); tasks scored per image (single, multilabel) by their
own `TaskSpec.score`, as `visiontool eval` scores them.

The model being trained is wrapped in the same `Predictor` that `detect` and `eval` use, and
scored by the same functions as `visiontool eval`, so a validation number is exactly what
`eval --weights best.pt` reports. Each rank predicts its share of the validation set; the
predictions are gathered so every rank sees the same metrics (and stops at the same epoch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from visiontool.distributed import DistInfo, gather_objects
from visiontool.models.info import ModelInfo


@dataclass
class PlotInputs:
    """What an epoch's PR curve and confusion matrix are drawn from, kept for the best epoch
    and drawn once at the end (`pictures.write_validation_plots`). Small: 101 points per class
    for the curves; a detector's confusion matrix is matched from `gt` and `dets` only when it
    is drawn, so an epoch that does not become the best never pays for it."""

    classes: list[str]
    curves: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # detection: (R, P)
    ap50: dict[str, float] = field(default_factory=dict)
    confusion: Any = None  # classification: (K, K) counts
    gt: Any = None  # detection: the ground truth and the detections scored against it
    dets: Any = None


@dataclass
class ValidationReport:
    """One validation: the scalars results.csv keeps, one row per class (the table printed at
    the end of training, `all` first) and the data behind its plots."""

    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    plots: PlotInputs | None  # None: nothing to draw (tasks scored per image)


def _shard_loader(dataset: Any, *, batch: int, workers: int, dist: DistInfo) -> Any:
    from torch.utils.data import DataLoader, Subset

    from visiontool.data.collate import detection_collate

    indices = list(range(dist.rank, len(dataset), dist.world_size))
    return DataLoader(Subset(dataset, indices), batch_size=batch, shuffle=False,
                      num_workers=workers, collate_fn=detection_collate)  # fmt: skip


def _predictor(module: Any, info: ModelInfo, device: Any, *, own_conf: bool = False) -> Any:
    """A predictor over the module being trained (no folding, no change of memory layout), at
    `eval`'s score threshold and detection cap, or with `own_conf` at the threshold the model
    records (the per-image tasks)."""
    from visiontool.engine.evaluate.inputs import EVAL_CONF, EVAL_MAX_DET
    from visiontool.engine.predict.predictor import Predictor
    from visiontool.models.factory import LoadedModel

    loaded = LoadedModel(module=module, info=info, device=device)
    if own_conf:
        return Predictor(loaded, conf=None, optimize=False)
    return Predictor(loaded, conf=EVAL_CONF, max_det=EVAL_MAX_DET, optimize=False)


PR_CONF = 0.25
"""Score threshold of the precision and recall shown after each epoch (as `yolo val`): AP is
computed over every score; P and R are of the detections a user would keep at this conf."""


def validate_detector(
    module: Any,
    dataset: Any,
    *,
    info: ModelInfo,
    device: Any,
    batch: int,
    workers: int,
    dist: DistInfo,
    progress: Any = None,
) -> dict[str, float]:
    """The scalar metrics of `visiontool eval` (map, map50, ..., voc_map50) on `dataset`, plus
    `precision` and `recall` at PR_CONF."""
    return detector_report(module, dataset, info=info, device=device, batch=batch,
                           workers=workers, dist=dist, progress=progress).metrics  # fmt: skip


def detector_report(
    module: Any,
    dataset: Any,
    *,
    info: ModelInfo,
    device: Any,
    batch: int,
    workers: int,
    dist: DistInfo,
    progress: Any = None,
) -> ValidationReport:
    """`validate_detector`'s metrics, one row per class (class, images, instances, precision,
    recall (at PR_CONF), map50, map; -1 where undefined: no ground truth) and the PR curves
    `visiontool eval` draws."""
    import numpy as np

    from visiontool.data.formats.coco import to_coco_dict
    from visiontool.engine.evaluate.inputs import (
        collect_detections,
        detections_from_parts,
        ground_truth_from_coco,
    )
    from visiontool.engine.evaluate.plots import pr_curves
    from visiontool.engine.evaluate.run import score_detections

    module.eval()
    gt = ground_truth_from_coco(to_coco_dict(dataset), where=str(getattr(dataset, "root", "")))
    loader = _shard_loader(dataset, batch=batch, workers=workers, dist=dist)
    mine = collect_detections(_predictor(module, info, device), loader, gt, info.classes,
                              len(loader.dataset), progress)  # fmt: skip
    parts: dict[str, list[np.ndarray]] = {"image": [], "boxes": [], "scores": [], "labels": []}
    for dets in gather_objects(mine, dist):
        parts["image"].append(dets.image_ids)
        parts["boxes"].append(dets.boxes)
        parts["scores"].append(dets.scores)
        parts["labels"].append(dets.labels)
    dets = detections_from_parts(parts)
    metrics, extras = score_detections(gt, dets)
    scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    precision, recall = _precision_recall(gt, dets, conf=PR_CONF)
    rows = []
    for k, name in enumerate(gt.classes):
        scored = metrics["per_class"][name]
        in_class = gt.labels == k
        rows.append({
            "class": name,
            "images": int(np.unique(gt.image[in_class]).size),
            "instances": int(scored["n_gt"]),
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "map50": float(scored["ap50"]),
            "map": float(scored["ap"]),
        })  # fmt: skip
    scalars["precision"] = _mean_defined(precision)
    scalars["recall"] = _mean_defined(recall)
    all_row = {"class": "all", "images": len(gt.coco["images"]), "instances": int(gt.labels.size),
               "precision": scalars["precision"], "recall": scalars["recall"],
               "map50": scalars.get("map50", -1.0), "map": scalars.get("map", -1.0)}  # fmt: skip
    curves, ap50 = pr_curves(gt, metrics, extras)
    plots = PlotInputs(list(gt.classes), curves=curves, ap50=ap50, gt=gt, dets=dets)
    return ValidationReport(scalars, [all_row, *rows], plots)


def _precision_recall(gt: Any, dets: Any, *, conf: float) -> tuple[Any, Any]:
    """Per class: precision and recall of the detections scoring >= conf (VOC matching at IoU
    0.5); -1 for a class without ground truth."""
    import numpy as np

    from visiontool.metrics.voc import evaluate_voc

    keep = dets.scores >= conf
    voc = evaluate_voc(gt.image, gt.boxes, gt.labels, gt.difficult | gt.crowd,
                       dets.image_ids[keep], dets.boxes[keep], dets.scores[keep],
                       dets.labels[keep], num_classes=len(gt.classes))  # fmt: skip
    precision = np.full(len(gt.classes), -1.0)
    recall = np.full(len(gt.classes), -1.0)
    for k, (rec, prec) in enumerate(voc.curves):
        if voc.n_pos[k] == 0:
            continue
        precision[k] = float(prec[-1]) if prec.size else 0.0
        recall[k] = float(rec[-1]) if rec.size else 0.0
    return precision, recall


def _mean_defined(values: Any) -> float:
    defined = [float(v) for v in values if v >= 0]
    return sum(defined) / len(defined) if defined else -1.0


def validate_classifier(
    module: Any,
    dataset: Any,
    *,
    info: ModelInfo,
    device: Any,
    batch: int,
    workers: int,
    dist: DistInfo,
    progress: Any = None,
) -> dict[str, float]:
    """top1/top5 of `module` on `dataset`, with the predictor's resize/crop/normalise."""
    return classifier_report(module, dataset, info=info, device=device, batch=batch,
                             workers=workers, dist=dist, progress=progress).metrics  # fmt: skip


def classifier_report(
    module: Any,
    dataset: Any,
    *,
    info: ModelInfo,
    device: Any,
    batch: int,
    workers: int,
    dist: DistInfo,
    progress: Any = None,
) -> ValidationReport:
    """`validate_classifier`'s metrics, one row per class (`classification_rows`) and the
    confusion matrix, all from `metrics.classification` as `visiontool eval` reports them."""
    import numpy as np

    from visiontool.metrics.classification import classification_metrics

    module.eval()
    predictor = _predictor(module, info, device)
    scores: list[Any] = []
    labels: list[int] = []
    loader = _shard_loader(dataset, batch=batch, workers=workers, dist=dist)
    for images, targets in loader:
        scores.extend(p.probs.numpy() for p in predictor.predict(images))
        labels.extend(int(t) for t in targets)
        if progress is not None:
            progress(len(labels), len(loader.dataset))
    gathered = gather_objects((scores, labels), dist)
    all_scores = [s for part in gathered for s in part[0]]
    all_labels = [label for part in gathered for label in part[1]]
    result = classification_metrics(
        np.stack(all_scores), np.asarray(all_labels), num_classes=len(dataset.classes)
    )
    classes = list(dataset.classes)
    plots = PlotInputs(classes, confusion=result.confusion)
    metrics = {"top1": result.top1, "top5": result.top5}
    return ValidationReport(metrics, classification_rows(result, classes), plots)


def classification_rows(result: Any, classes: list[str]) -> list[dict[str, Any]]:
    """`all` (the mean over classes, as detection's row, with top1 and top5), then per class:
    class, images, precision, recall (the class's top-1 accuracy), f1. -1 where undefined:
    recall and f1 of a class without images, precision of one never predicted and without."""
    predicted = result.confusion.sum(axis=0)
    rows = []
    for k, name in enumerate(classes):
        has_images = bool(result.support[k])
        rows.append({
            "class": name,
            "images": int(result.support[k]),
            "precision": float(result.precision[k]) if has_images or predicted[k] else -1.0,
            "recall": float(result.recall[k]) if has_images else -1.0,
            "f1": float(result.f1[k]) if has_images else -1.0,
        })  # fmt: skip
    all_row: dict[str, Any] = {"class": "all", "images": int(result.support.sum()),
                               "top1": result.top1, "top5": result.top5}  # fmt: skip
    for key in ("precision", "recall", "f1"):
        all_row[key] = _mean_defined([row[key] for row in rows])
    return [all_row, *rows]


def task_report(
    module: Any,
    dataset: Any,
    *,
    task: Any,
    info: ModelInfo,
    device: Any,
    batch: int,
    workers: int,
    dist: DistInfo,
    progress: Any = None,
) -> ValidationReport:
    """A task scored per image (`TaskSpec.image_row`, `score`): each rank predicts its share,
    the rows are gathered, and the task reduces them as `visiontool eval` does."""
    import numpy as np

    from visiontool.engine.evaluate.inputs import collect_rows

    module.eval()
    predictor = _predictor(module, info, device, own_conf=True)
    loader = _shard_loader(dataset, batch=batch, workers=workers, dist=dist)
    mapping = np.arange(len(info.classes), dtype=np.int64)  # trained on these very classes
    mine = collect_rows(task, predictor, loader, mapping, len(loader.dataset), progress)
    rows = [row for part in gather_objects(mine, dist) for row in part]
    scored = task.score(rows, classes=list(dataset.classes), conf=predictor.conf)
    return ValidationReport(dict(scored.metrics), scored.per_class, None)
