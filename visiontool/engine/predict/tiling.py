"""Sliced inference for large images: `detect --tile SIZE --tile-overlap 0.2 [--merge nms|wbf]`.

A detector resizes its input to its own size (256-800 px): a 10 px object in a 4000x3000 scan
shrinks to nothing. Here each image is cut into SIZE x SIZE tiles that overlap by a fraction
of SIZE (the last row and column are aligned to the image's edge, so every tile has the same
size and tiles batch together), the model runs on the tiles in batches of `--batch`, boxes are
shifted back to the image, and the duplicates of objects seen by two tiles are merged:

- `nms` (default): per class, a box is dropped when a higher-scoring box of its class covers
  most of it (intersection over the SMALLER box >= `match`, 0.5): an object cut by a tile edge
  leaves a partial box inside the whole one, which plain IoU would keep (SAHI's default
  matching for the same reason).
- `wbf`: weighted box fusion (Solovyev et al. 2021): boxes matched the same way are fused into
  their score-weighted mean box, with the cluster's best score (the paper's mean score would
  punish an object seen whole in one tile and cut in another).

An image no larger than one tile is predicted whole, as without tiling.
"""

from __future__ import annotations

from typing import Any

MERGES = ("nms", "wbf")
DEFAULT_OVERLAP = 0.2
MATCH = 0.5  # intersection over the smaller box that makes two boxes one object


def check_tiling(tile: int | None, overlap: float, merge: str) -> None:
    """Range checks (ConfigError, exit 2)."""
    from visiontool.errors import ConfigError

    if tile is not None and tile < 32:
        raise ConfigError(f"--tile must be >= 32 px, got {tile}")
    if not 0.0 <= overlap < 0.9:
        raise ConfigError(f"--tile-overlap must be in [0, 0.9), got {overlap}")
    if merge not in MERGES:
        raise ConfigError(f"--merge must be one of {', '.join(MERGES)}, got {merge!r}")


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets along one side: every `tile * (1 - overlap)` px, the last one aligned to
    the end; [0] when the side fits one tile."""
    if length <= tile:
        return [0]
    step = max(1, int(tile * (1.0 - overlap)))
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


def tile_windows(width: int, height: int, tile: int, overlap: float) -> list[tuple[int, int]]:
    """(x, y) top-left corners of the tiles of a `width` x `height` image, row by row."""
    return [(x, y) for y in tile_starts(height, tile, overlap)
            for x in tile_starts(width, tile, overlap)]  # fmt: skip


def intersection_over_smaller(a: Any, b: Any) -> Any:
    """(N, M) intersection area over the smaller box's area, for xyxy boxes `a` and `b`."""
    import torch

    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    smaller = torch.min(area_a[:, None], area_b[None, :]).clamp(min=1e-9)
    return inter / smaller


def merge_detections(
    boxes: Any, scores: Any, labels: Any, *, method: str = "nms", match: float = MATCH
) -> tuple[Any, Any, Any]:
    """Merge duplicates (module docstring); returns (boxes, scores, labels) best first.
    Greedy per class, best first; memory grows with the boxes of one class, not their square."""
    import torch

    out_boxes, out_scores, out_labels = [], [], []
    for label in labels.unique().tolist():
        mine = labels == label
        cls_boxes, cls_scores = boxes[mine], scores[mine]
        order = cls_scores.argsort(descending=True)
        cls_boxes, cls_scores = cls_boxes[order], cls_scores[order]
        open_ = torch.ones(cls_boxes.shape[0], dtype=torch.bool)
        for i in range(cls_boxes.shape[0]):
            if not open_[i]:
                continue
            cluster = open_ & (intersection_over_smaller(cls_boxes[i : i + 1], cls_boxes)[0]
                               >= match)  # fmt: skip
            cluster[i] = True
            open_ &= ~cluster
            if method == "wbf":
                weights = cls_scores[cluster][:, None]
                out_boxes.append((cls_boxes[cluster] * weights).sum(0) / weights.sum())
            else:
                out_boxes.append(cls_boxes[i])
            out_scores.append(cls_scores[i])
            out_labels.append(label)
    if not out_boxes:
        return boxes[:0], scores[:0], labels[:0]
    merged_scores = torch.stack(out_scores)
    order = merged_scores.argsort(descending=True)
    merged_labels = torch.tensor(out_labels, dtype=labels.dtype)
    return torch.stack(out_boxes)[order], merged_scores[order], merged_labels[order]


class TiledPredictor:
    """A `Predictor` seen through tiles: the same `predict(images)` interface, one
    `ImagePrediction` per whole image (module docstring)."""

    def __init__(
        self,
        predictor: Any,
        *,
        tile: int,
        overlap: float = DEFAULT_OVERLAP,
        merge: str = "nms",
        batch: int = 1,
    ) -> None:
        from visiontool.errors import ConfigError

        check_tiling(tile, overlap, merge)
        if predictor.spec.output != "boxes" or predictor.task == "single":
            raise ConfigError(
                f"--tile needs a detector; {predictor.loaded.info.name!r} is a "
                f"{predictor.task} model"
            )
        self.inner = predictor
        self.tile, self.overlap, self.merge, self.batch = tile, overlap, merge, max(1, batch)

    def __getattr__(self, name: str) -> Any:  # device, loaded, conf, spec, task...
        return getattr(self.inner, name)

    def predict(self, images: list[Any]) -> list[Any]:
        return [self._predict_one(image) for image in images]

    def _predict_one(self, image: Any) -> Any:
        import torch

        from visiontool.engine.predict.predictor import ImagePrediction

        height, width = int(image.shape[-2]), int(image.shape[-1])
        if width <= self.tile and height <= self.tile:
            return self.inner.predict([image])[0]
        windows = tile_windows(width, height, self.tile, self.overlap)
        boxes, scores, labels = [], [], []
        for start in range(0, len(windows), self.batch):
            chunk = windows[start : start + self.batch]
            crops = [image[:, y : y + self.tile, x : x + self.tile] for x, y in chunk]
            for (x, y), found in zip(chunk, self.inner.predict(crops), strict=True):
                if found.error is not None:
                    return found  # the model failed on a tile: the image is reported failed
                shift = torch.tensor([x, y, x, y], dtype=found.boxes.dtype)
                boxes.append(found.boxes + shift)
                scores.append(found.scores)
                labels.append(found.class_ids)
        merged = merge_detections(torch.cat(boxes), torch.cat(scores), torch.cat(labels),
                                  method=self.merge)  # fmt: skip
        keep = slice(0, self.inner.max_det) if self.inner.max_det else slice(None)
        return ImagePrediction(boxes=merged[0][keep], scores=merged[1][keep],
                               class_ids=merged[2][keep])  # fmt: skip
