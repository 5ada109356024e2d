"""Fit anchor shapes to a data set's boxes: k-means on 1 - IoU, optional evolution, recall.

The fitting functions take plain (N, 2) arrays of box widths and heights, so they are testable
without a data set; `box_shapes` and `run_fit` are the thin glue to `open_dataset`.

Why 1 - IoU and not Euclidean distance: with Euclidean k-means large boxes dominate the error and
small boxes get poorly shaped anchors; IoU is scale-invariant, and it is exactly what anchor
matching thresholds on. Cluster centres are updated with the median, which resists the long
tail of odd boxes. Evolution (random multiplicative mutations kept when the mean best IoU
improves) then escapes the local optima k-means settles in.

anchors.json (read by `train --anchors`, see docs/anchors.md) stores the fitted shapes as pixel
(w, h) pairs at `imgsz`, and for people the same anchors as size = sqrt(w*h) and ratio = w/h
(width / height, as every visiontool ratio), sorted by area. Its schema lives in
`visiontool.io.anchors_file`; spreading the anchors over a model's feature levels (in
torchvision's height / width form) in `visiontool.ops.anchors.anchor_generator_args`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visiontool.errors import ConfigError, DataError
from visiontool.ops.anchors import as_wh as _as_wh
from visiontool.ops.anchors import sort_by_area
from visiontool.ops.boxes import wh_iou

ALGOS = ("kmeans", "evolve")
JSON_NAME = "anchors.json"  # file names inside the run folder
PICTURE_NAME = "anchors.png"


@dataclass
class FitConfig:
    """Options of `visiontool anchors fit`."""

    num: int = 9
    imgsz: int = 640
    algo: str = "kmeans"
    iou: float = 0.5  # IoU a box's best anchor must reach to count as recalled
    thr: float = 4.0  # ratio metric threshold (YOLO-style): box/anchor width and height ratios
    generations: int = 1000
    max_boxes: int = 50_000  # boxes used for fitting (all boxes are used for the stats)
    min_size: float = 2.0  # boxes smaller than this (pixels at imgsz) are ignored
    iters: int = 300
    restarts: int = 3
    seed: int = 0

    def validate(self) -> None:
        if self.num < 1:
            raise ConfigError(f"--num must be at least 1, got {self.num}")
        if self.imgsz < 1:
            raise ConfigError(f"--imgsz must be positive, got {self.imgsz}")
        if self.algo not in ALGOS:
            raise ConfigError(f"--algo must be one of {', '.join(ALGOS)}, got {self.algo!r}")
        if not 0 < self.iou <= 1:
            raise ConfigError(f"--iou must be in (0, 1], got {self.iou}")
        if not (math.isfinite(self.thr) and self.thr > 1):
            raise ConfigError(f"--thr must be a finite number greater than 1, got {self.thr}")
        if self.generations < 0:
            raise ConfigError(f"--generations must be 0 or more, got {self.generations}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AnchorStats:
    """How well a set of anchor shapes covers a set of box shapes."""

    boxes: int
    mean_iou: float  # mean over boxes of the IoU with their best anchor
    bpr: float  # share of boxes whose best anchor has IoU >= iou
    bpr_ratio: float  # share of boxes whose best anchor passes the ratio metric at thr
    anchors_per_box: float  # mean number of anchors with IoU >= iou per box
    anchors_per_box_ratio: float  # same with the ratio metric

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    """Fitted anchors (K, 2) pixel w, h at imgsz, sorted by area, and their statistics."""

    wh: np.ndarray
    stats: AnchorStats
    config: FitConfig
    dropped: int = 0  # boxes ignored for being smaller than min_size
    source: str = ""
    initial: AnchorStats | None = None  # k-means stats before evolution
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **anchors_json(self),
            "stats": self.stats.to_dict(),
            "kmeans_stats": self.initial.to_dict() if self.initial else None,
            "dropped": self.dropped,
            "config": self.config.to_dict(),
            **self.extra,
        }


def anchor_stats(
    wh: np.ndarray, anchors: np.ndarray, *, iou: float = 0.5, thr: float = 4.0
) -> AnchorStats:
    """Mean best IoU, best possible recall (IoU and ratio metric) and anchors per box."""
    wh, anchors = _as_wh(wh), _as_wh(anchors)
    if len(wh) == 0:
        return AnchorStats(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    ious = wh_iou(wh, anchors)
    ratio = wh[:, None] / anchors[None]
    metric = np.minimum(ratio, 1 / ratio).min(axis=2)  # 1 = same shape, 1/thr = threshold
    best_iou, best_ratio = ious.max(axis=1), metric.max(axis=1)
    return AnchorStats(
        boxes=len(wh),
        mean_iou=float(best_iou.mean()),
        bpr=float((best_iou >= iou).mean()),
        bpr_ratio=float((best_ratio >= 1 / thr).mean()),
        anchors_per_box=float((ious >= iou).sum(axis=1).mean()),
        anchors_per_box_ratio=float((metric >= 1 / thr).sum(axis=1).mean()),
    )


def kmeans_anchors(
    wh: np.ndarray, k: int, *, iters: int = 300, restarts: int = 3, seed: int = 0
) -> np.ndarray:
    """k anchor shapes (k, 2) minimising the mean 1 - IoU of each box to its nearest anchor.

    k-means++ seeding in 1 - IoU distance, median updates, `restarts` runs, best kept.
    """
    wh = _as_wh(wh)
    if len(wh) < k:
        raise DataError(f"only {len(wh)} boxes to fit {k} anchors: lower --num")
    rng = np.random.default_rng(seed)
    best, best_score = None, -1.0
    for _ in range(max(1, restarts)):
        centres = _kmeans_once(wh, _seed_centres(wh, k, rng), iters)
        score = float(wh_iou(wh, centres).max(axis=1).mean())
        if score > best_score:
            best, best_score = centres, score
    return sort_by_area(best)


def _seed_centres(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [wh[rng.integers(len(wh))]]
    dist = 1 - wh_iou(wh, np.array(centres))[:, 0]
    for _ in range(1, k):
        weights = dist**2
        total = weights.sum()
        index = rng.choice(len(wh), p=weights / total) if total > 0 else rng.integers(len(wh))
        centres.append(wh[index])
        dist = np.minimum(dist, 1 - wh_iou(wh, wh[index][None])[:, 0])
    return np.array(centres, dtype=np.float64)


def _kmeans_once(wh: np.ndarray, centres: np.ndarray, iters: int) -> np.ndarray:
    assign = None
    for _ in range(iters):
        ious = wh_iou(wh, centres)
        new_assign = ious.argmax(axis=1)
        if assign is not None and np.array_equal(new_assign, assign):
            break
        assign = new_assign
        for j in range(len(centres)):
            members = wh[assign == j]
            if len(members):
                centres[j] = np.median(members, axis=0)
            else:  # empty cluster: restart it on the worst-covered box
                centres[j] = wh[ious.max(axis=1).argmin()]
    return centres


def evolve_anchors(
    wh: np.ndarray,
    anchors: np.ndarray,
    *,
    generations: int = 1000,
    prob: float = 0.9,
    sigma: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """Refine anchors by mutation: each generation scales them by random factors near 1 and
    keeps the result when the mean best IoU improves. Never returns worse anchors."""
    wh, best = _as_wh(wh), _as_wh(anchors).copy()
    rng = np.random.default_rng(seed)

    def fitness(candidate: np.ndarray) -> float:
        return float(wh_iou(wh, candidate).max(axis=1).mean())

    score = fitness(best)
    for _ in range(generations):
        factors = np.ones_like(best)
        while np.all(factors == 1):
            mutate = rng.random(best.shape) < prob
            factors = (mutate * rng.random() * rng.standard_normal(best.shape) * sigma + 1).clip(
                0.3, 3.0
            )
        candidate = (best * factors).clip(min=1e-6)
        candidate_score = fitness(candidate)
        if candidate_score > score:
            best, score = candidate, candidate_score
    return sort_by_area(best)


def fit_anchors(
    wh: np.ndarray, config: FitConfig, *, dropped: int = 0, source: str = ""
) -> FitResult:
    """k-means (and with algo=evolve, evolution) on box shapes (N, 2) already at imgsz pixels."""
    config.validate()
    wh = _as_wh(wh)
    if len(wh) == 0:
        raise DataError(f"{source or 'data set'}: no boxes to fit anchors to")
    sample = _subsample(wh, config.max_boxes, config.seed)
    anchors = kmeans_anchors(
        sample, config.num, iters=config.iters, restarts=config.restarts, seed=config.seed
    )
    initial = None
    if config.algo == "evolve":
        initial = anchor_stats(wh, anchors, iou=config.iou, thr=config.thr)
        anchors = evolve_anchors(
            _subsample(sample, 20_000, config.seed),
            anchors,
            generations=config.generations,
            seed=config.seed,
        )
    stats = anchor_stats(wh, anchors, iou=config.iou, thr=config.thr)
    return FitResult(anchors, stats, config, dropped=dropped, source=source, initial=initial)


def box_shapes(
    records: Sequence[Any], imgsz: int, *, min_size: float = 2.0
) -> tuple[np.ndarray, int]:
    """Box widths and heights (N, 2) as seen after resizing each image's long side to imgsz.

    Crowd boxes are skipped; boxes under `min_size` pixels either way are dropped and counted.
    """
    parts = []
    for record in records:
        boxes = np.asarray(record.boxes, dtype=np.float64).reshape(-1, 4)
        crowd = np.asarray(record.iscrowd, dtype=bool).reshape(-1)
        if len(crowd) == len(boxes):
            boxes = boxes[~crowd]
        scale = imgsz / max(record.width, record.height, 1)
        parts.append((boxes[:, 2:] - boxes[:, :2]) * scale)
    wh = np.concatenate(parts) if parts else np.zeros((0, 2))
    keep = (wh >= min_size).all(axis=1)
    return wh[keep], int((~keep).sum())


def run_fit(
    data: str | Path,
    config: FitConfig,
    *,
    split: str | None = None,
    out: str | Path | None = None,
    exist_ok: bool = False,
) -> FitResult:
    """`anchors fit`: fit, then write anchors.json and anchors.png (the anchors over a sample
    of box shapes) into the run folder: `out`, else runs/anchors/exp, exp2, ... (claimed only
    once the fit has succeeded). `result.extra` names the folder and both files."""
    from visiontool.engine.anchors.show import check_out, fit_picture, output_dir, save_png
    from visiontool.io.anchors_file import write_anchors_json

    config.validate()
    reads = [data] if Path(data).exists() else []
    check_out(out, exist_ok=exist_ok, reads=reads)  # before the data set is read
    from visiontool.data.datasets import open_dataset

    dataset = open_dataset(data, split=split, task="detect")
    wh, dropped = box_shapes(dataset.records(), config.imgsz, min_size=config.min_size)
    result = fit_anchors(wh, config, dropped=dropped, source=str(data))
    document = anchors_json(result)  # both made before anything is written: a failure
    drawn = fit_picture(result.wh, _subsample(wh, 300, config.seed), config.imgsz)  # leaves none
    try:
        json.dumps(document, allow_nan=False)
    except ValueError as exc:
        raise DataError(f"{data}: the fit gave numbers that are not finite ({exc})") from None
    with output_dir(out, exist_ok=exist_ok, owned=(JSON_NAME, PICTURE_NAME)) as claimed:
        folder = claimed.path
        json_path, picture = folder / JSON_NAME, folder / PICTURE_NAME
        save_png(drawn, picture)
        write_anchors_json(json_path, document)
    result.extra.update({"out": str(folder), "json": str(json_path), "picture": str(picture)})
    return result


def anchors_json(result: FitResult) -> dict[str, Any]:
    """The anchors.json document of a fit (schema in docs/anchors.md)."""
    from visiontool.io.anchors_file import anchors_document

    return anchors_document(
        result.wh,
        imgsz=result.config.imgsz,
        mean_iou=_round(result.stats.mean_iou),
        bpr=_round(result.stats.bpr),
        bpr_ratio=_round(result.stats.bpr_ratio),
        anchors_per_box=_round(result.stats.anchors_per_box),
        boxes=result.stats.boxes,
        algo=result.config.algo,
        iou=result.config.iou,
        thr=result.config.thr,
        source=result.source,
    )


def _subsample(wh: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(wh) <= limit:
        return wh
    return wh[np.random.default_rng(seed).choice(len(wh), limit, replace=False)]


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    return round(float(value), digits)
