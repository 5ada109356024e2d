"""Fit anchor shapes to a data set's boxes: k-means on 1 - IoU, optional evolution, recall.

The fitting functions take plain (N, 2) arrays of box widths and heights, so they are testable
without a data set; `box_shapes` and `run_fit` are the thin glue to `open_dataset`.

Why 1 - IoU and not Euclidean distance: with Euclidean k-means large boxes dominate the error and
small boxes get poorly shaped anchors; IoU is scale-invariant, and it is exactly what anchor
matching thresholds on. Cluster centres are updated with the median, which resists the long
tail of odd boxes. Evolution (random multiplicative mutations kept when the mean best IoU
improves) then escapes the local optima k-means settles in.

anchors.json (read by `train --anchors`, see docs/anchors.md) stores the fitted shapes as pixel
(w, h) pairs at `imgsz`, and the same anchors in torchvision's AnchorGenerator form:
size = sqrt(w*h), aspect ratio = h/w, one feature level per anchor (sorted by area).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visiontool.errors import ConfigError, DataError
from visiontool.ops.boxes import wh_iou

ALGOS = ("kmeans", "evolve")
SCHEMA_KEYS = ("num", "imgsz", "wh", "sizes", "ratios")


@dataclass
class FitConfig:
    """Options of `visiontool anchors fit`."""

    num: int = 9
    imgsz: int = 640
    algo: str = "kmeans"
    iou: float = 0.5  # IoU a box's best anchor must reach to count as recalled
    thr: float = 4.0  # width/height ratio metric threshold (YOLO-style)
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
        if not 0 < self.iou <= 1 or self.thr <= 1:
            raise ConfigError("--iou must be in (0, 1] and --thr greater than 1")

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
    data: str | Path, config: FitConfig, *, split: str | None = None, out: str | Path
) -> FitResult:
    """`anchors fit`: fit, write anchors.json at `out` and a picture beside it (.png)."""
    from visiontool.engine.anchors.show import draw_fit

    config.validate()
    from visiontool.data.datasets import open_dataset

    dataset = open_dataset(data, split=split, task="detect")
    wh, dropped = box_shapes(dataset.records(), config.imgsz, min_size=config.min_size)
    result = fit_anchors(wh, config, dropped=dropped, source=str(data))
    out = Path(out)
    picture = (
        out.with_suffix(".png") if out.suffix != ".png" else out.with_name(out.stem + "_fit.png")
    )
    write_anchors_json(out, result)
    draw_fit(result.wh, _subsample(wh, 300, config.seed), config.imgsz, picture)
    result.extra.update({"json": str(out), "picture": str(picture)})
    return result


def anchors_json(result: FitResult) -> dict[str, Any]:
    """The anchors.json document (schema in docs/anchors.md)."""
    wh = sort_by_area(result.wh)
    return {
        "num": len(wh),
        "imgsz": result.config.imgsz,
        "wh": _round(wh.tolist()),
        "sizes": [[_round(math.sqrt(w * h))] for w, h in wh],
        "ratios": [[_round(h / w)] for w, h in wh],
        "mean_iou": _round(result.stats.mean_iou),
        "bpr": _round(result.stats.bpr),
        "bpr_ratio": _round(result.stats.bpr_ratio),
        "anchors_per_box": _round(result.stats.anchors_per_box),
        "boxes": result.stats.boxes,
        "algo": result.config.algo,
        "iou": result.config.iou,
        "thr": result.config.thr,
        "source": result.source,
    }


def write_anchors_json(path: str | Path, result: FitResult) -> Path:
    from visiontool.io.atomic import write_json

    return write_json(path, anchors_json(result))


def read_anchors_json(path: str | Path) -> dict[str, Any]:
    """Load and check an anchors.json; `DataError` naming the file and the problem otherwise."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from exc
    missing = [key for key in SCHEMA_KEYS if not isinstance(data, dict) or key not in data]
    if missing:
        raise DataError(
            f"{path}: missing {', '.join(missing)}; write it with `visiontool anchors fit`"
        )
    wh = np.asarray(data["wh"], dtype=np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2 or len(wh) != data["num"] or (wh <= 0).any():
        raise DataError(f"{path}: 'wh' must be {data['num']} positive [w, h] pairs")
    return data


def anchor_generator_args(
    spec: dict[str, Any], num_levels: int, *, scale: float = 1.0
) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
    """(sizes, aspect_ratios) for torchvision's AnchorGenerator with `num_levels` feature maps.

    Anchors sorted by area are split into `num_levels` equal groups, smallest on the finest
    level. With one anchor per level this reproduces the fitted shapes exactly. With g > 1 per
    level, torchvision combines every size with every ratio, so each level gets one size (the
    geometric mean of its group) and the group's g aspect ratios: shapes are kept, sizes within a
    level are pooled. `scale` converts from the fit's imgsz to the training image size.
    """
    wh = sort_by_area(np.asarray(spec["wh"], dtype=np.float64)) * scale
    if num_levels < 1 or len(wh) % num_levels:
        raise ConfigError(
            f"{len(wh)} anchors cannot be spread evenly over {num_levels} feature levels: "
            f"fit a multiple of {num_levels} with `visiontool anchors fit --num`"
        )
    groups = np.split(wh, num_levels)
    if len(groups[0]) == 1:
        sizes = tuple((float(math.sqrt(g[0, 0] * g[0, 1])),) for g in groups)
        return sizes, tuple((float(g[0, 1] / g[0, 0]),) for g in groups)
    sizes = tuple((float(np.exp(np.log(np.sqrt(g[:, 0] * g[:, 1])).mean())),) for g in groups)
    return sizes, tuple(tuple(float(r) for r in g[:, 1] / g[:, 0]) for g in groups)


def sort_by_area(wh: np.ndarray) -> np.ndarray:
    wh = _as_wh(wh)
    return wh[np.argsort(wh[:, 0] * wh[:, 1], kind="stable")]


def _as_wh(wh: Any) -> np.ndarray:
    array = np.asarray(wh, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, 2)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"expected (N, 2) widths and heights, got shape {array.shape}")
    return array


def _subsample(wh: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(wh) <= limit:
        return wh
    return wh[np.random.default_rng(seed).choice(len(wh), limit, replace=False)]


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    return round(float(value), digits)
