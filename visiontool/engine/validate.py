"""Validation during training: COCO mAP for detectors, top-1/top-5 for classifiers.

Each rank predicts its share of the validation set; predictions are gathered on every rank and
scored with the metrics of `visiontool.metrics` (faster-coco-eval for COCO numbers), so all
ranks see the same metrics and take the same early-stopping decisions.
"""

from __future__ import annotations

from typing import Any

from visiontool.engine.distributed import DistInfo, gather_objects


def _loader(dataset: Any, *, batch: int, workers: int, dist: DistInfo) -> Any:
    from torch.utils.data import DataLoader, Subset

    from visiontool.data.collate import detection_collate

    indices = list(range(dist.rank, len(dataset), dist.world_size))
    return DataLoader(
        Subset(dataset, indices),
        batch_size=batch,
        shuffle=False,
        num_workers=workers,
        collate_fn=detection_collate,
    )


def validate_detector(
    module: Any, dataset: Any, *, device: Any, batch: int, workers: int, dist: DistInfo
) -> dict[str, float]:
    """COCO metrics (map, map50, ... as in metrics.json) of `module` on `dataset`."""
    import numpy as np
    import torch

    from visiontool.data.convert import to_coco_dict
    from visiontool.metrics.coco import evaluate_coco, results_from_arrays

    module.eval()
    rows: list[tuple[int, list, list, list]] = []
    with torch.inference_mode():
        for images, targets in _loader(dataset, batch=batch, workers=workers, dist=dist):
            outputs = module([image.to(device, non_blocking=True) for image in images])
            for target, output in zip(targets, outputs, strict=True):
                rows.append(
                    (
                        int(target["image_id"]),
                        output["boxes"].float().cpu().tolist(),
                        output["scores"].float().cpu().tolist(),
                        (output["labels"].cpu() - 1).tolist(),
                    )
                )
    rows = [row for part in gather_objects(rows, dist) for row in part]
    category_ids = np.asarray(dataset.category_ids)
    image_ids, boxes, scores, cats = [], [], [], []
    for image_id, box_list, score_list, label_list in rows:
        for box, score, label in zip(box_list, score_list, label_list, strict=True):
            if label < 0:
                continue
            x1, y1, x2, y2 = box
            image_ids.append(image_id)
            boxes.append([x1, y1, x2 - x1, y2 - y1])
            scores.append(score)
            cats.append(int(category_ids[label]))
    results = results_from_arrays(
        np.asarray(image_ids, dtype=np.int64),
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        np.asarray(scores, dtype=np.float64),
        np.asarray(cats, dtype=np.int64),
    )
    coco = evaluate_coco(to_coco_dict(dataset), results)
    return {key: max(0.0, value) for key, value in coco.stats.items()}


def validate_classifier(
    module: Any,
    dataset: Any,
    *,
    preprocess: dict[str, Any],
    device: Any,
    batch: int,
    workers: int,
    dist: DistInfo,
) -> dict[str, float]:
    """top1/top5 of `module` on `dataset`, with the predictor's resize/crop/normalise."""
    import numpy as np
    import torch

    from visiontool.engine.predictor import classify_transform
    from visiontool.metrics.classification import classification_metrics

    module.eval()
    scores: list[Any] = []
    labels: list[int] = []
    with torch.inference_mode():
        for images, targets in _loader(dataset, batch=batch, workers=workers, dist=dist):
            inputs = torch.stack(
                [classify_transform(image.to(device), preprocess) for image in images]
            )
            logits = module(inputs)
            logits = logits[0] if isinstance(logits, tuple) else logits
            scores.extend(logits.float().softmax(dim=1).cpu().numpy())
            labels.extend(int(t) for t in targets)
    gathered = gather_objects((scores, labels), dist)
    all_scores = [s for part in gathered for s in part[0]]
    all_labels = [label for part in gathered for label in part[1]]
    result = classification_metrics(
        np.stack(all_scores), np.asarray(all_labels), num_classes=len(dataset.classes)
    )
    return {"top1": result.top1, "top5": result.top5}
