"""`--task eval`: our COCO box scoring (faster-coco-eval, `metrics.coco.evaluate_coco`)
against pycocotools, in this process, on the same synthetic ground truth and predictions.

One timed call scores the whole set: index the ground truth and the predictions, match,
accumulate, summarise (what `visiontool eval` does after reading its files, and what a
pycocotools script does after `json.load`). The 12 COCO numbers of both must agree; the
pycocotools row's note says how closely. pycocotools is an optional (dev) dependency: without
it only our row is timed. `benchmarks/eval_speed.py` times the same data end to end, as
whole processes, from `synthetic_coco`.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from visiontool.engine.benchmark.config import BenchmarkConfig
from visiontool.engine.benchmark.memory import MemoryProbe
from visiontool.engine.benchmark.model import progress_line
from visiontool.engine.benchmark.report import BenchRow
from visiontool.engine.benchmark.timing import summarize, time_calls

PREDICTIONS = 100  # per image: COCO's maxDets
CLASSES = 80
WIDTH, HEIGHT = 640, 480


@dataclass
class SyntheticCoco:
    """A COCO ground-truth dict and COCO result rows (`bbox` xywh, ids from 1) with COCO-like
    statistics: 0-14 objects per image, 2% crowd, predictions that are jittered copies of the
    objects (80% with the right class) plus background boxes, scores with many ties."""

    gt: dict[str, Any]
    results: list[dict[str, Any]]


def synthetic_coco(
    *,
    images: int,
    preds: int = PREDICTIONS,
    classes: int = CLASSES,
    seed: int = 0,
    detections: int | None = None,
) -> SyntheticCoco:
    """`preds` predictions an image, or `detections` in all spread evenly over the images."""
    import numpy as np

    rng = np.random.default_rng(seed)
    counts = per_image_counts(images, preds, detections)
    gt: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": f"class{i}"} for i in range(classes)],
    }
    results: list[dict[str, Any]] = []
    for image_id, n_pred in enumerate(counts, start=1):
        gt["images"].append({"id": image_id, "file_name": f"img{image_id:06d}.jpg",
                             "width": WIDTH, "height": HEIGHT})  # fmt: skip
        xy, wh, labels = _objects(rng, gt, image_id, classes)
        results.extend(_predictions(rng, image_id, xy, wh, labels, n_pred, classes))
    return SyntheticCoco(gt=gt, results=results)


def per_image_counts(images: int, preds: int, detections: int | None) -> list[int]:
    if detections is None:
        return [preds] * images
    return [(i + 1) * detections // images - i * detections // images for i in range(images)]


def _objects(rng: Any, gt: dict[str, Any], image_id: int, classes: int) -> tuple[Any, Any, Any]:
    """Add an image's ground-truth boxes to `gt`; returns their corners, sizes and labels."""
    import numpy as np

    n_gt = int(rng.integers(0, 15))
    xy = rng.uniform(0, [WIDTH - 20, HEIGHT - 20], size=(n_gt, 2))
    wh = np.minimum(rng.uniform(4, 300, size=(n_gt, 2)), [WIDTH, HEIGHT] - xy)
    labels = rng.integers(1, classes + 1, size=n_gt)
    crowd = rng.random(n_gt) < 0.02
    for k in range(n_gt):
        box = [round(float(v), 2) for v in (*xy[k], *wh[k])]
        gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id,
                                  "category_id": int(labels[k]), "bbox": box,
                                  "area": box[2] * box[3], "iscrowd": int(crowd[k])})  # fmt: skip
    return xy, wh, labels


def _predictions(
    rng: Any, image_id: int, xy: Any, wh: Any, labels: Any, preds: int, classes: int
) -> list[dict[str, Any]]:
    """Jittered copies of the objects (3 per object at most) and background boxes."""
    import numpy as np

    n_gt = len(labels)
    n_hit = min(n_gt * 3, preds)
    src = rng.integers(0, max(n_gt, 1), size=n_hit)
    near = xy[src] + rng.normal(0, 6, (n_hit, 2)) if n_gt else np.zeros((0, 2))
    p_xy = np.concatenate([near, rng.uniform(0, [WIDTH - 20, HEIGHT - 20], (preds - n_hit, 2))])
    sizes = wh[src] * rng.uniform(0.8, 1.2, (n_hit, 2)) if n_gt else np.zeros((0, 2))
    p_wh = np.maximum(np.concatenate([sizes, rng.uniform(4, 200, (preds - n_hit, 2))]), 1.0)
    wrong = rng.integers(1, classes + 1, n_hit)
    right = labels[src] if n_gt else wrong
    p_cls = np.concatenate([np.where(rng.random(n_hit) < 0.8, right, wrong),
                            rng.integers(1, classes + 1, preds - n_hit)])  # fmt: skip
    p_score = np.round(rng.random(preds), 3)  # rounded: plenty of tied scores
    return [
        {"image_id": image_id, "category_id": int(p_cls[k]),
         "bbox": [round(float(v), 2) for v in (p_xy[k, 0], p_xy[k, 1], p_wh[k, 0], p_wh[k, 1])],
         "score": float(p_score[k])}
        for k in range(preds)
    ]  # fmt: skip


def eval_rows(config: BenchmarkConfig, on_log: Callable[[str], None]) -> Iterator[BenchRow]:
    """Our evaluator's row, then pycocotools' (when installed) with how well they agree."""
    data = synthetic_coco(images=config.eval_images)
    ours_stats: list[float] = []
    evaluators = [("faster-coco-eval", _ours)]
    if _has_pycocotools():
        evaluators.append(("pycocotools", _pycocotools))
    else:
        on_log("pycocotools is not installed (pip install pycocotools): timing ours alone")
    for name, evaluate in evaluators:
        row, stats = time_evaluator(name, evaluate, data, config)
        if name == "faster-coco-eval":
            ours_stats = stats
            row.note = f"{len(data.results) // max(1, config.eval_images)} predictions per image"
        else:
            row.note = _agreement(ours_stats, stats)
        on_log(progress_line(row))
        yield row


def time_evaluator(
    name: str,
    prepare: Callable[[SyntheticCoco], Callable[[], list[float]]],
    data: SyntheticCoco,
    config: BenchmarkConfig,
) -> tuple[BenchRow, list[float]]:
    """Time one evaluator on its own copy of the data (evaluators annotate their inputs);
    `prepare` does the untimed part and returns the timed call."""
    import torch

    cpu = torch.device("cpu")
    own = SyntheticCoco(gt=copy.deepcopy(data.gt), results=copy.deepcopy(data.results))
    probe = MemoryProbe(cpu)
    probe.start()
    evaluate = prepare(own)
    found: list[list[float]] = []
    row = BenchRow(task="eval", model=name, device="cpu", batch=config.eval_images,
                   warmup=config.warmup_calls, iters=config.timed_calls,
                   threads=torch.get_num_threads(), peak_mem_source=probe.source)  # fmt: skip
    row.cold_ms = time_calls(lambda: found.append(evaluate()), 1, cpu)[0]
    time_calls(evaluate, config.warmup_calls, cpu)
    row.stats = summarize(time_calls(evaluate, config.timed_calls, cpu))
    row.peak_mem_mb = probe.peak_mb()
    return row, found[0]


def _ours(data: SyntheticCoco) -> Callable[[], list[float]]:
    """What `visiontool eval` does once its detections are arrays (`evaluate.run.
    score_detections`): COCO result rows from the arrays, then faster-coco-eval."""
    import numpy as np

    from visiontool.metrics.coco import COCO_KEYS, evaluate_coco, results_from_arrays

    image_ids = np.asarray([r["image_id"] for r in data.results], dtype=np.int64)
    boxes = np.asarray([r["bbox"] for r in data.results], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray([r["score"] for r in data.results], dtype=np.float64)
    category_ids = np.asarray([r["category_id"] for r in data.results], dtype=np.int64)

    def evaluate() -> list[float]:
        results = results_from_arrays(image_ids, boxes, scores, category_ids)
        stats = evaluate_coco(data.gt, results).stats
        return [stats[key] for key in COCO_KEYS]

    return evaluate


def _pycocotools(data: SyntheticCoco) -> Callable[[], list[float]]:
    """What a pycocotools script does once its json is loaded (index, loadRes, evaluate,
    accumulate, summarize); its prints are swallowed (stdout is --json's). loadRes adds box
    polygons to the result rows in place: calls after the first skip that (a little less
    work than a fresh json load, in pycocotools' favour)."""

    def evaluate() -> list[float]:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = data.gt
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(data.results)
            evaluator = COCOeval(coco_gt, coco_dt, "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return [float(value) for value in evaluator.stats[:12]]

    return evaluate


def _has_pycocotools() -> bool:
    import importlib.util

    return importlib.util.find_spec("pycocotools") is not None


def _agreement(ours: list[float], theirs: list[float]) -> str:
    if not ours or len(ours) != len(theirs):
        return "not compared"
    diff = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
    return "12 COCO numbers identical" if diff <= 1e-12 else f"COCO numbers differ by {diff:.3g}"
