"""Validation during training, through the eval engine: COCO/VOC metrics for detectors,
top-1/top-5 for classifiers.

The model being trained is wrapped in the same `Predictor` that `detect` and `eval` use, and
scored by the same functions as `visiontool eval`, so a validation number is exactly what
`eval --weights best.pt` reports. Each rank predicts its share of the validation set; the
predictions are gathered so every rank sees the same metrics (and stops at the same epoch).
"""

from __future__ import annotations

from typing import Any

from visiontool.engine.train.distributed import DistInfo, gather_objects
from visiontool.models.info import ModelInfo


def _shard_loader(dataset: Any, *, batch: int, workers: int, dist: DistInfo) -> Any:
    from torch.utils.data import DataLoader, Subset

    from visiontool.data.collate import detection_collate

    indices = list(range(dist.rank, len(dataset), dist.world_size))
    return DataLoader(Subset(dataset, indices), batch_size=batch, shuffle=False,
                      num_workers=workers, collate_fn=detection_collate)  # fmt: skip


def _predictor(module: Any, info: ModelInfo, device: Any) -> Any:
    from visiontool.engine.evaluate.inputs import EVAL_CONF, EVAL_MAX_DET
    from visiontool.engine.predict.predictor import Predictor
    from visiontool.models.factory import LoadedModel

    loaded = LoadedModel(module=module, info=info, device=device)
    # the module is still being trained: no folding, no change of memory layout
    return Predictor(loaded, conf=EVAL_CONF, max_det=EVAL_MAX_DET, optimize=False)


def validate_detector(
    module: Any,
    dataset: Any,
    *,
    info: ModelInfo,
    device: Any,
    batch: int,
    workers: int,
    dist: DistInfo,
) -> dict[str, float]:
    """The scalar metrics of `visiontool eval` (map, map50, ..., voc_map50) on `dataset`."""
    import numpy as np

    from visiontool.data.formats.coco import to_coco_dict
    from visiontool.engine.evaluate.inputs import (
        collect_detections,
        detections_from_parts,
        ground_truth_from_coco,
    )
    from visiontool.engine.evaluate.run import score_detections

    module.eval()
    gt = ground_truth_from_coco(to_coco_dict(dataset), where=str(getattr(dataset, "root", "")))
    loader = _shard_loader(dataset, batch=batch, workers=workers, dist=dist)
    mine = collect_detections(_predictor(module, info, device), loader, gt, info.classes)
    parts: dict[str, list[np.ndarray]] = {"image": [], "boxes": [], "scores": [], "labels": []}
    for dets in gather_objects(mine, dist):
        parts["image"].append(dets.image_ids)
        parts["boxes"].append(dets.boxes)
        parts["scores"].append(dets.scores)
        parts["labels"].append(dets.labels)
    metrics, _ = score_detections(gt, detections_from_parts(parts))
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def validate_classifier(
    module: Any,
    dataset: Any,
    *,
    info: ModelInfo,
    device: Any,
    batch: int,
    workers: int,
    dist: DistInfo,
) -> dict[str, float]:
    """top1/top5 of `module` on `dataset`, with the predictor's resize/crop/normalise."""
    import numpy as np

    from visiontool.metrics.classification import classification_metrics

    module.eval()
    predictor = _predictor(module, info, device)
    scores: list[Any] = []
    labels: list[int] = []
    for images, targets in _shard_loader(dataset, batch=batch, workers=workers, dist=dist):
        scores.extend(p.probs.numpy() for p in predictor.predict(images))
        labels.extend(int(t) for t in targets)
    gathered = gather_objects((scores, labels), dist)
    all_scores = [s for part in gathered for s in part[0]]
    all_labels = [label for part in gathered for label in part[1]]
    result = classification_metrics(
        np.stack(all_scores), np.asarray(all_labels), num_classes=len(dataset.classes)
    )
    return {"top1": result.top1, "top5": result.top5}
