"""What `eval` scores: ground truth from `--data`, and predictions from a model run over it.

A bare COCO annotations json is read with `json` alone (no images, no torch), so scoring a
predictions file stays light; any other data set goes through `visiontool.data` and
`data.formats.coco.to_coco_dict`, the same conversion `data convert` uses. Predictions from a
model come from the shared `Predictor` over a DataLoader of the data set, at COCO's settings
(low confidence, 100 boxes per image).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visiontool.engine.predict.inflight import map_in_order
from visiontool.errors import ConfigError, DataError
from visiontool.io.predictions import Detections, no_gc
from visiontool.ops.boxes import xywh_to_xyxy

EVAL_CONF = 0.001
EVAL_MAX_DET = 100


@dataclass
class GroundTruth:
    """Detection ground truth as a COCO dict (for faster-coco-eval) and as flat arrays."""

    coco: dict[str, Any]
    classes: list[str]
    category_ids: list[int]
    images: list[tuple[int, str]]  # (image id, a name predictions may use for it)
    image: np.ndarray  # per annotation: image id
    boxes: np.ndarray  # (M, 4) xyxy
    labels: np.ndarray  # (M,) 0-based class index
    crowd: np.ndarray  # (M,) bool
    difficult: np.ndarray  # (M,) bool (VOC 'difficult', COCO 'ignore')

    @property
    def image_ids(self) -> list[int]:
        return [int(img["id"]) for img in self.coco["images"]]


def coco_json(path: Path) -> dict[str, Any] | None:
    """The parsed file when `path` is a COCO annotations json, else None."""
    if not (path.is_file() and path.suffix.lower() == ".json"):
        return None
    try:
        with no_gc():
            data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as JSON ({exc})") from None
    if isinstance(data, dict) and "images" in data and "categories" in data:
        return data
    return None


def ground_truth_from_coco(
    coco: dict[str, Any], *, where: str = "annotations", extra_names: list[tuple[int, str]] = ()
) -> GroundTruth:
    """Check a COCO dict just enough to score against it and index it."""
    try:
        cats = sorted(coco["categories"], key=lambda c: int(c["id"]))
        category_ids = [int(c["id"]) for c in cats]
        classes = [str(c.get("name", c["id"])) for c in cats]
        images = [(int(img["id"]), str(img.get("file_name", img["id"]))) for img in coco["images"]]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: 'images' and 'categories' need integer 'id's") from None
    index = {c: i for i, c in enumerate(category_ids)}
    anns = coco.setdefault("annotations", [])
    known_images = {i for i, _ in images}
    for n, ann in enumerate(anns):
        ok = (
            isinstance(ann, dict)
            and ann.get("category_id") in index
            and ann.get("image_id") in known_images
            and isinstance(ann.get("bbox"), list)
            and len(ann["bbox"]) == 4
            and "id" in ann
        )
        if not ok:
            raise DataError(
                f"{where}: annotations[{n}] needs 'id', an 'image_id' and 'category_id' that "
                "exist, and a 4-number 'bbox'"
            )
    xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    return GroundTruth(
        coco=coco,
        classes=classes,
        category_ids=category_ids,
        images=images + list(extra_names),
        image=np.asarray([a["image_id"] for a in anns], dtype=np.int64),
        boxes=xywh_to_xyxy(xywh),
        labels=np.asarray([index[a["category_id"]] for a in anns], dtype=np.int64),
        crowd=np.asarray([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
        difficult=np.asarray(
            [bool(a.get("ignore", 0) or a.get("difficult", 0)) for a in anns], dtype=bool
        ),
    )


def load_ground_truth(data: Path, *, split: str | None) -> tuple[GroundTruth | None, Any]:
    """(detection ground truth or None for classification sets, the data set or None).

    A bare COCO json gives no data set object: it is scored without touching images.
    """
    coco = coco_json(data)
    if coco is not None:
        return ground_truth_from_coco(coco, where=str(data)), None
    from visiontool.data.datasets import open_dataset
    from visiontool.data.formats.coco import to_coco_dict

    dataset = open_dataset(data, split=split)
    if dataset.task != "detect":
        return None, dataset
    extra = [(int(r.image_id), str(r.path)) for r in dataset.records()]
    return ground_truth_from_coco(
        to_coco_dict(dataset), where=str(data), extra_names=extra
    ), dataset


def model_class_map(model_classes: list[str], data_classes: list[str]) -> np.ndarray:
    """For each model class, its data-set class index (-1 when the data set lacks it)."""
    if list(model_classes) == list(data_classes):
        return np.arange(len(data_classes), dtype=np.int64)
    index = {name: i for i, name in enumerate(data_classes)}
    mapping = np.asarray([index.get(name, -1) for name in model_classes], dtype=np.int64)
    if not (mapping >= 0).any():
        raise ConfigError(
            f"the model's classes ({', '.join(model_classes[:5])}...) share no name with the "
            f"data set's ({', '.join(data_classes[:5])}...); pass weights trained on this data"
        )
    return mapping


Progress = Callable[[int, int], None]


@dataclass
class ModelRun:
    """Settings for running a model over the data set."""

    model: str | None
    weights: str | None
    device: str = "auto"
    batch: int = 8
    workers: int | None = None
    half: bool = False
    imgsz: int | None = None
    loaded: Any = None  # the model, when already loaded (a `LoadedModel`)
    conf: float | None = None  # tasks scored per image: the score threshold (None: the model's)
    failures: list[str] = field(default_factory=list)  # why the model failed, one per image

    def load(self) -> Any:
        """The `LoadedModel` (loaded once, then reused)."""
        if self.loaded is None:
            from visiontool.models.factory import load_model
            from visiontool.runtime import resolve_device

            self.loaded = load_model(self.model, self.weights, device=resolve_device(self.device))
        return self.loaded


def _loaded_predictor(run: ModelRun, task: str) -> tuple[Any, Any]:
    from visiontool.engine.predict.predictor import Predictor

    loaded = run.load()
    if loaded.info.task != task:
        raise ConfigError(
            f"model {loaded.info.name!r} is a {loaded.info.task} model but the data set is for "
            f"{task}"
        )
    predictor = Predictor(
        loaded, conf=EVAL_CONF, max_det=EVAL_MAX_DET, imgsz=run.imgsz, half=run.half
    )
    return loaded, predictor


def _loader(dataset: Any, run: ModelRun) -> Any:
    from torch.utils.data import DataLoader

    from visiontool.data.collate import detection_collate
    from visiontool.runtime import default_workers

    workers = default_workers() if run.workers is None else run.workers
    return DataLoader(
        dataset,
        batch_size=max(1, run.batch),
        num_workers=workers,
        collate_fn=detection_collate,
        shuffle=False,
    )


def predict_detections(
    dataset: Any, gt: GroundTruth, run: ModelRun, progress: Progress | None = None
) -> tuple[Detections, str]:
    """Run a detector over every image of `dataset`; (detections, model name)."""
    loaded, predictor = _loaded_predictor(run, "detect")
    batches = _loader(dataset, run)
    dets = collect_detections(predictor, batches, gt, loaded.info.classes, len(dataset), progress,
                              failures=run.failures)  # fmt: skip
    return dets, loaded.info.name


def collect_detections(
    predictor: Any,
    batches: Any,
    gt: GroundTruth,
    model_classes: list[str],
    total: int = 0,
    progress: Progress | None = None,
    *,
    failures: list[str] | None = None,
) -> Detections:
    """Predict every (images, targets) batch and tie the boxes to `gt`'s images and classes.

    Shared by `eval --model` and validation during training, so both score the same way. An
    image the model failed on scores as finding nothing; its reason goes to `failures`.
    """
    mapping = model_class_map(model_classes, gt.classes)
    parts: dict[str, list[np.ndarray]] = {"image": [], "boxes": [], "scores": [], "labels": []}
    done = 0
    for (images, targets), predictions in map_in_order(_predict_batch(predictor), batches):
        for target, pred in zip(targets, predictions, strict=True):
            _note_failure(pred, target, failures)
            labels = mapping[pred.class_ids.numpy()]
            keep = labels >= 0
            parts["image"].append(np.full(int(keep.sum()), int(target["image_id"])))
            parts["boxes"].append(pred.boxes.numpy().astype(np.float64)[keep])
            parts["scores"].append(pred.scores.numpy().astype(np.float64)[keep])
            parts["labels"].append(labels[keep])
        done += len(images)
        if progress is not None:
            progress(done, total)
    return detections_from_parts(parts)


def _note_failure(pred: Any, target: Any, failures: list[str] | None) -> None:
    """Record why the model failed on an image (`ImagePrediction.error`), naming the image."""
    error = getattr(pred, "error", None)
    if error is None or failures is None:
        return
    image_id = target.get("image_id") if isinstance(target, dict) else None
    failures.append(f"image {int(image_id)}: {error}" if image_id is not None else error)


def _predict_batch(predictor: Any) -> Callable[[tuple[Any, Any]], list[Any]]:
    """(images, targets) -> predictions, for `map_in_order` (two batches in the model at once)."""
    return lambda batch: predictor.predict(batch[0])


def detections_from_parts(parts: dict[str, list[np.ndarray]]) -> Detections:
    if not parts["image"]:
        return Detections.empty()
    boxes = np.concatenate(parts["boxes"]).reshape(-1, 4)
    return Detections(
        image_ids=np.concatenate(parts["image"]).astype(np.int64),
        boxes=boxes,
        coco_boxes=np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1),
        scores=np.concatenate(parts["scores"]),
        labels=np.concatenate(parts["labels"]).astype(np.int64),
    )


def predict_rows(
    task: Any, dataset: Any, run: ModelRun, progress: Progress | None = None
) -> tuple[list[Any], float | None, str]:
    """Run a model of a task scored per image over `dataset` (as the task reads it); (one row
    per image (`TaskSpec.image_row`), the score threshold used, model name)."""
    from visiontool.engine.predict.predictor import Predictor

    loaded = run.load()
    mapping = model_class_map(loaded.info.classes, dataset.classes)
    missing = sorted(set(range(len(dataset.classes))) - set(mapping[mapping >= 0].tolist()))
    if missing and task.output == "scores":
        names = ", ".join(dataset.classes[i] for i in missing[:5])
        raise ConfigError(f"the model cannot predict data-set classes {names}")
    predictor = Predictor(loaded, conf=run.conf, imgsz=run.imgsz, half=run.half)
    rows = collect_rows(task, predictor, _loader(dataset, run), mapping, len(dataset), progress,
                        failures=run.failures)  # fmt: skip
    return rows, predictor.conf, loaded.info.name


def collect_rows(
    task: Any,
    predictor: Any,
    batches: Any,
    mapping: np.ndarray,
    total: int = 0,
    progress: Progress | None = None,
    *,
    failures: list[str] | None = None,
) -> list[Any]:
    """Predict every (images, targets) batch; one `task.image_row` per image (`mapping`: the
    model's class ids -> the data set's, -1 for a class it lacks). Shared by `eval` and
    validation during training. Why the model failed on an image goes to `failures`."""
    rows: list[Any] = []
    done = 0
    for (images, targets), predictions in map_in_order(_predict_batch(predictor), batches):
        for image, target, pred in zip(images, targets, predictions, strict=True):
            _note_failure(pred, target, failures)
            size = (int(image.shape[-1]), int(image.shape[-2]))
            rows.append(task.image_row(pred, target, mapping=mapping, size=size))
        done += len(images)
        if progress is not None:
            progress(done, total)
    return rows


def predict_classes(
    dataset: Any, run: ModelRun, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Run a classifier over `dataset`; (scores (N, K) in data-set class order, labels, name)."""
    if getattr(dataset, "multi_label", False):
        raise DataError(
            "multi-label classification data sets cannot be scored with top-1/top-5: score a "
            "multi-label model (train --task multilabel) on them"
        )
    loaded, predictor = _loaded_predictor(run, "classify")
    mapping = model_class_map(loaded.info.classes, dataset.classes)
    missing = sorted(set(range(len(dataset.classes))) - set(mapping[mapping >= 0].tolist()))
    if missing:
        names = ", ".join(dataset.classes[i] for i in missing[:5])
        raise ConfigError(f"the model cannot predict data-set classes {names}")
    scores, labels = [], []
    done = 0
    batches = _loader(dataset, run)
    for (images, targets), predictions in map_in_order(_predict_batch(predictor), batches):
        for target, pred in zip(targets, predictions, strict=True):
            _note_failure(pred, target, run.failures)
            row = np.zeros(len(dataset.classes))
            if pred.error is None:  # a failed image scores nothing (no class ranked first)
                probs = pred.probs.numpy().astype(np.float64)
                keep = mapping >= 0
                row[mapping[keep]] = probs[keep]
            scores.append(row)
            labels.append(int(target))
        done += len(images)
        if progress is not None:
            progress(done, len(dataset))
    matrix = np.stack(scores) if scores else np.zeros((0, len(dataset.classes)))
    return matrix, np.asarray(labels, dtype=np.int64), loaded.info.name
