"""Anchor boxes: the classic multibox scheme and the Faster R-CNN grid, vectorized torch.

Multibox conventions (kept at this edge only, see design.md): boxes are normalized xyxy in
[0, 1]; class ids in targets are 0-based, and the labels produced use background = 0 with object
classes shifted by +1. `grid_anchors` and `rpn_labels` work in pixels like Faster R-CNN.

Orders and ratios: sizes here are (H, W), as torch orders them (the CLI and the anchors
engine show and take WxH and convert). `anchor_shapes`, `multibox_prior` and `grid_anchors` take
ratio = width / height, the meaning users see everywhere; `anchor_generator_args` returns
torchvision `AnchorGenerator` aspect ratios, height / width.

Every function runs on the device of its inputs. Nothing here materialises a full anchors x boxes
IoU matrix for the multibox path: it is computed in cache-sized blocks of anchors and reduced on
the fly, so two million anchors against twenty boxes never builds an (A, G, 2) temporary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from visiontool.errors import ConfigError
from visiontool.ops.boxes import (
    DEFAULT_MEANS,
    DEFAULT_STDS,
    ENCODE_EPS,
    batched_nms,
    box_iou,
    decode_boxes,
    encode_boxes,
    iou_blocks,
    nms,
)

IOU_CHUNK = 8192  # anchors per IoU block in assign_anchors

__all__ = [
    "RPNLabels",
    "anchor_generator_args",
    "anchor_shapes",
    "assign_anchors",
    "grid_anchors",
    "inside_image",
    "level_groups",
    "level_sizes",
    "multibox_detection",
    "multibox_prior",
    "multibox_target",
    "offset_inverse",
    "rpn_labels",
    "sort_by_area",
]


def anchor_shapes(sizes: Sequence[float], ratios: Sequence[float]) -> list[tuple[float, float]]:
    """The (size, ratio) pairs of one pixel in multibox order: (s1, r1..rm), then (s2..sn, r1).

    Only pairs containing s1 or r1 are used: n + m - 1 anchors instead of n * m.
    """
    sizes, ratios = [float(s) for s in sizes], [float(r) for r in ratios]
    if not sizes or not ratios:
        raise ValueError("sizes and ratios must each hold at least one value")
    if not all(math.isfinite(v) and v > 0 for v in sizes + ratios):  # nan, inf, <= 0
        raise ValueError("sizes and ratios must be positive finite numbers")
    return [(sizes[0], r) for r in ratios] + [(s, ratios[0]) for s in sizes[1:]]


def multibox_prior(
    height: Any,
    width: Any = None,
    sizes: Any = None,
    ratios: Any = None,
    offset: float = 0.5,
    *,
    device: Any = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Anchors centred on every pixel of an H x W map: (1, H*W*(n+m-1), 4) normalized xyxy.

    Called as `multibox_prior(H, W, sizes, ratios)` or `multibox_prior(fmap, sizes, ratios)`
    with a feature map (N, C, H, W) whose device is used. Pixels are visited row-major (y, then
    x); each gets the `anchor_shapes` pairs in order. An anchor of size s and ratio r is
    s*sqrt(r) wide and s/sqrt(r) tall in normalized units around ((x+offset)/W, (y+offset)/H),
    so on a non-square image an r=1 anchor is square in normalized, not pixel, units.
    """
    if torch.is_tensor(height):
        fmap = height
        if width is not None:  # positional form (fmap, sizes, ratios[, offset])
            sizes, ratios, offset = width, sizes, offset if ratios is None else ratios
        device = fmap.device if device is None else device
        height, width = int(fmap.shape[-2]), int(fmap.shape[-1])
    if sizes is None or ratios is None:
        raise ValueError("multibox_prior needs sizes and ratios")
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"feature map size must be positive, got {height}x{width}")
    if not math.isfinite(float(offset)):
        raise ValueError(f"offset must be a finite number, got {offset}")
    pairs = torch.tensor(anchor_shapes(sizes, ratios), dtype=torch.float64)
    _check_anchor_memory(height * width, len(pairs), dtype, f"a {height}x{width} feature map")
    root = torch.sqrt(pairs[:, 1])
    ws, hs = pairs[:, 0] * root, pairs[:, 0] / root
    half = (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).to(device=device, dtype=dtype)
    cy = (torch.arange(height, device=device, dtype=dtype) + offset) / height
    cx = (torch.arange(width, device=device, dtype=dtype) + offset) / width
    centres = torch.empty(height, width, 4, device=device, dtype=dtype)
    centres[..., 0::2] = cx[None, :, None]
    centres[..., 1::2] = cy[:, None, None]
    out = centres.view(height * width, 1, 4) + half[None]
    return out.view(1, -1, 4)


def _check_anchor_memory(cells: int, per_cell: int, dtype: torch.dtype, what: str) -> None:
    """ConfigError (exit 2) before allocating more anchors than the memory budget allows
    (`runtime.check_budget`): the anchors, their centres, and about as much again for the
    caller's next step (IoU, inside masks)."""
    from visiontool.runtime import check_budget

    itemsize = torch.empty(0, dtype=dtype).element_size()
    count = cells * per_cell
    check_budget((2 * count + cells) * 4 * itemsize, f"{count:,} anchors for {what}")


def _as_rows(anchors: torch.Tensor) -> torch.Tensor:
    """(1, A, 4) or (A, 4) -> (A, 4)."""
    if anchors.dim() == 3:
        if anchors.shape[0] != 1:
            raise ValueError(f"anchors must be (A, 4) or (1, A, 4), got {tuple(anchors.shape)}")
        anchors = anchors[0]
    if anchors.dim() != 2 or anchors.shape[1] != 4:
        raise ValueError(f"anchors must be (A, 4) or (1, A, 4), got {tuple(anchors.shape)}")
    return anchors


def assign_anchors(
    gt_boxes: torch.Tensor, anchors: torch.Tensor, iou_threshold: float = 0.5
) -> torch.Tensor:
    """Index of the ground-truth box each anchor is assigned to, -1 for none: (A,) long.

    Greedy matching first: the largest entry of the anchors x boxes IoU matrix pairs that anchor
    with that box, whose row and column are then discarded, until every box has an anchor (so
    every box gets one even when no anchor overlaps it well). Every other anchor then takes its
    best box if that IoU >= `iou_threshold`. Ties resolve as a row-major argmax over the matrix
    would (lowest anchor, then lowest box). The matrix itself is never kept: its row and column
    maxima are reduced block by block, and a column is recomputed only when the anchor it
    pointed to is taken.
    """
    anchors = _as_rows(anchors)
    gt_boxes = gt_boxes.to(anchors.dtype).reshape(-1, 4)
    num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
    assigned = torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)
    if num_gt == 0 or num_anchors == 0:
        return assigned
    best_iou, best_gt, col_max, col_arg = _iou_extremes(anchors, gt_boxes)
    taken = torch.zeros(num_anchors, dtype=torch.bool, device=anchors.device)
    done = torch.zeros(num_gt, dtype=torch.bool, device=anchors.device)
    order = torch.arange(num_gt, device=anchors.device)
    for _ in range(min(num_anchors, num_gt)):
        values = col_max.masked_fill(done, -math.inf)
        ties = (values == values.max()) & ~done
        key = torch.where(ties, col_arg * num_gt + order, num_anchors * num_gt)
        g = int(torch.argmin(key))
        a = int(col_arg[g])
        assigned[a] = g
        taken[a] = True
        done[g] = True
        for stale in torch.nonzero((col_arg == a) & ~done).flatten().tolist():
            iou = box_iou(anchors, gt_boxes[stale : stale + 1])[:, 0].masked_fill_(taken, -1.0)
            col_arg[stale] = torch.argmax(iou)
            col_max[stale] = iou[col_arg[stale]]

    extra = (assigned < 0) & (best_iou >= iou_threshold)
    assigned[extra] = best_gt[extra]
    return assigned


def _iou_extremes(
    anchors: torch.Tensor, gt_boxes: torch.Tensor, chunk: int = IOU_CHUNK
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row maxima/argmax and column maxima/argmax of the anchors x boxes IoU matrix.

    Computed over slices of `chunk` anchors, so only a (chunk, G) block exists at a time and it
    stays in cache; argmax ties keep the first index, as a full-matrix argmax would.
    """
    num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
    best_iou = anchors.new_empty(num_anchors)
    best_gt = torch.empty(num_anchors, dtype=torch.long, device=anchors.device)
    col_max = anchors.new_full((num_gt,), -1.0)
    col_arg = torch.zeros(num_gt, dtype=torch.long, device=anchors.device)
    for start, iou in iou_blocks(anchors, gt_boxes, chunk):
        torch.max(iou, dim=1, out=(best_iou[start : start + chunk], best_gt[start : start + chunk]))
        values, index = iou.max(dim=0)
        better = values > col_max
        col_max = torch.where(better, values, col_max)
        col_arg = torch.where(better, index + start, col_arg)
    return best_iou, best_gt, col_max, col_arg


def multibox_target(
    anchors: torch.Tensor,
    labels: torch.Tensor,
    *,
    iou_threshold: float = 0.5,
    means: Sequence[float] = DEFAULT_MEANS,
    stds: Sequence[float] = DEFAULT_STDS,
    eps: float = ENCODE_EPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training targets for every anchor: (offsets (B, 4A), mask (B, 4A), classes (B, A)).

    `labels` is (B, G, 5) with rows [class, x1, y1, x2, y2] (0-based class, normalized xyxy),
    padded with rows whose class is -1. Assigned anchors get class + 1 and the `encode_boxes`
    offsets of their box; background anchors get class 0, zero offsets and a zero mask.
    """
    anchors = _as_rows(anchors)
    if labels.dim() != 3 or labels.shape[-1] != 5:
        raise ValueError(f"labels must be (B, G, 5), got {tuple(labels.shape)}")
    batch, num_anchors = labels.shape[0], anchors.shape[0]
    offsets = anchors.new_zeros(batch, num_anchors, 4)
    mask = anchors.new_zeros(batch, num_anchors, 4)
    classes = torch.zeros(batch, num_anchors, dtype=torch.long, device=anchors.device)
    for b in range(batch):
        rows = labels[b][labels[b, :, 0] >= 0].to(anchors.dtype)
        index = assign_anchors(rows[:, 1:], anchors, iou_threshold)
        pos = torch.nonzero(index >= 0).flatten()
        matched = rows[index[pos]]
        classes[b, pos] = matched[:, 0].long() + 1
        offsets[b, pos] = encode_boxes(
            anchors[pos], matched[:, 1:], means=means, stds=stds, eps=eps
        )
        mask[b, pos] = 1.0
    return offsets.view(batch, -1), mask.view(batch, -1), classes


def offset_inverse(
    anchors: torch.Tensor,
    offsets: torch.Tensor,
    *,
    means: Sequence[float] = DEFAULT_MEANS,
    stds: Sequence[float] = DEFAULT_STDS,
    eps: float = ENCODE_EPS,
) -> torch.Tensor:
    """Boxes from anchors and predicted offsets: the exact inverse of `multibox_target`'s encoding.

    `offsets` is (..., A, 4) or (..., 4A); the result is (..., A, 4) normalized xyxy.
    """
    anchors = _as_rows(anchors)
    num_anchors = anchors.shape[0]
    if not (offsets.dim() >= 2 and tuple(offsets.shape[-2:]) == (num_anchors, 4)):
        if offsets.shape[-1] != 4 * num_anchors:
            raise ValueError(f"offsets {tuple(offsets.shape)} do not match {num_anchors} anchors")
        offsets = offsets.reshape(*offsets.shape[:-1], num_anchors, 4)
    lead = offsets.shape[:-2]
    flat = offsets.reshape(-1, num_anchors, 4)
    out = torch.stack(
        [decode_boxes(anchors, o, means=means, stds=stds, eps=eps) for o in flat.to(anchors.dtype)]
    )
    return out.reshape(*lead, num_anchors, 4)


def multibox_detection(
    cls_probs: torch.Tensor,
    offset_preds: torch.Tensor,
    anchors: torch.Tensor,
    nms_threshold: float = 0.5,
    pos_threshold: float = 0.009999999,
    class_agnostic: bool = True,
) -> torch.Tensor:
    """Decoded, thresholded, NMS-filtered predictions: (B, A, 6) rows [class, conf, x1, y1, x2, y2].

    One row per anchor in anchor order. Each anchor's class is its best non-background class
    (0-based) and conf that class's probability. class is -1 when the background probability is
    higher than conf, when conf < `pos_threshold`, or when NMS (over all classes by default,
    per class with `class_agnostic=False`) suppresses the box. Only candidates that survive the
    first two tests take part in NMS, so a background anchor never suppresses an object.
    """
    anchors = _as_rows(anchors)
    batch, _, num_anchors = cls_probs.shape
    if num_anchors != anchors.shape[0]:
        raise ValueError(f"cls_probs has {num_anchors} anchors but anchors has {anchors.shape[0]}")
    boxes = offset_inverse(anchors, offset_preds.reshape(batch, -1))
    out = []
    for b in range(batch):
        probs = cls_probs[b]
        conf, cls = probs[1:].max(dim=0)
        cand = torch.nonzero((conf >= pos_threshold) & (probs[0] <= conf)).flatten()
        if class_agnostic:
            keep = nms(boxes[b, cand], conf[cand], nms_threshold)
        else:
            keep = batched_nms(boxes[b, cand], conf[cand], cls[cand], nms_threshold)
        class_id = torch.full_like(conf, -1.0)
        kept = cand[keep]
        class_id[kept] = cls[kept].to(conf.dtype)
        out.append(torch.cat([class_id[:, None], conf[:, None], boxes[b].to(conf.dtype)], dim=1))
    return torch.stack(out)


def grid_anchors(
    image_size: tuple[int, int],
    stride: int,
    scales: Sequence[float],
    ratios: Sequence[float],
    *,
    dtype: torch.dtype = torch.float32,
    device: Any = None,
) -> torch.Tensor:
    """Faster R-CNN anchors in pixels for an image of `image_size` (H, W): (N, 4) xyxy.

    The feature map has ceil(H/stride) x ceil(W/stride) cells with centres at stride/2 +
    k*stride; each cell gets, scale-major, width stride*scale*sqrt(ratio) and height
    stride*scale/sqrt(ratio) (ratio = width / height). Cells are row-major (y, then x).
    """
    height, width = image_size
    if not stride >= 1 or not all(math.isfinite(v) and v > 0 for v in [*scales, *ratios]):
        raise ValueError("stride must be >= 1, and scales and ratios positive finite numbers")
    rows, cols = math.ceil(height / stride), math.ceil(width / stride)
    _check_anchor_memory(
        rows * cols,
        len(scales) * len(ratios),
        dtype,
        f"a {height}x{width} image at stride {stride}",
    )
    shapes = torch.tensor(
        [(stride * s * math.sqrt(r), stride * s / math.sqrt(r)) for s in scales for r in ratios],
        dtype=torch.float64,
    ).reshape(-1, 2)
    half = (torch.cat([-shapes, shapes], dim=1) / 2).to(device=device, dtype=dtype)
    cy = stride / 2 + stride * torch.arange(rows, device=device, dtype=dtype)
    cx = stride / 2 + stride * torch.arange(cols, device=device, dtype=dtype)
    centres = torch.empty(rows, cols, 4, device=device, dtype=dtype)
    centres[..., 0::2] = cx[None, :, None]
    centres[..., 1::2] = cy[:, None, None]
    return (centres.view(-1, 1, 4) + half[None]).view(-1, 4)


def inside_image(anchors: torch.Tensor, image_size: tuple[int, int], border: float = 0) -> Any:
    """Which anchors (N, 4) pixel xyxy lie fully inside an (H, W) image (give or take `border`)."""
    height, width = image_size
    return (
        (anchors[:, 0] >= -border)
        & (anchors[:, 1] >= -border)
        & (anchors[:, 2] <= width + border)
        & (anchors[:, 3] <= height + border)
    )


class RPNLabels(NamedTuple):
    """`labels`: 1 positive, 0 negative, -1 ignored, after sampling; `matched`: best box per
    anchor (-1 when there are no boxes); `full`: the labels before sampling."""

    labels: torch.Tensor
    matched: torch.Tensor
    full: torch.Tensor


def rpn_labels(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    pos_iou: float = 0.7,
    neg_iou: float = 0.3,
    batch: int = 256,
    pos_fraction: float = 0.5,
    *,
    image_size: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
) -> RPNLabels:
    """Faster R-CNN RPN training labels for pixel anchors (A, 4) against boxes (G, 4).

    1 for each box's best anchor(s) (ties included, when that IoU > 0) and for IoU > `pos_iou`;
    0 for max IoU < `neg_iou`; -1 otherwise. With `image_size`, anchors crossing the image border
    are ignored and take no part in the best-anchor rule. Then a minibatch of `batch` anchors is
    sampled: at most batch*pos_fraction positives, negatives fill the rest; the others become -1.
    """
    num = anchors.shape[0]
    device = anchors.device
    full = torch.full((num,), -1, dtype=torch.long, device=device)
    matched = torch.full((num,), -1, dtype=torch.long, device=device)
    valid = (
        inside_image(anchors, image_size)
        if image_size is not None
        else torch.ones(num, dtype=torch.bool, device=device)
    )
    gt_boxes = gt_boxes.reshape(-1, 4).to(anchors.dtype)
    if gt_boxes.shape[0] == 0:
        full[valid] = 0
    else:
        iou = box_iou(anchors, gt_boxes).masked_fill_(~valid[:, None], -1.0)
        best, matched = iou.max(dim=1)
        matched[~valid] = -1
        full[valid & (best < neg_iou)] = 0
        col_best = iou.max(dim=0).values
        is_best = ((iou == col_best[None]) & (col_best[None] > 0)).any(dim=1)
        full[valid & (is_best | (best > pos_iou))] = 1
    labels = _sample(full, batch, pos_fraction, generator)
    return RPNLabels(labels=labels, matched=matched, full=full)


def _sample(
    full: torch.Tensor, batch: int, pos_fraction: float, generator: torch.Generator | None
) -> torch.Tensor:
    labels = torch.full_like(full, -1)
    pos = torch.nonzero(full == 1).flatten()
    neg = torch.nonzero(full == 0).flatten()
    num_pos = min(pos.numel(), int(batch * pos_fraction))
    num_neg = min(neg.numel(), batch - num_pos)
    pick_pos = pos[torch.randperm(pos.numel(), generator=generator)[:num_pos].to(pos.device)]
    pick_neg = neg[torch.randperm(neg.numel(), generator=generator)[:num_neg].to(neg.device)]
    labels[pick_pos] = 1
    labels[pick_neg] = 0
    return labels


# ---------------------------------------------------------------------------- fitted anchors
# Fitted anchor shapes (pixel widths and heights, as in anchors.json) spread over the feature
# levels of a torchvision detector. numpy in, plain Python tuples out.


def sort_by_area(wh: Any) -> np.ndarray:
    """Widths and heights (K, 2) as float64, sorted by area (stable: ties keep their order)."""
    wh = as_wh(wh)
    return wh[np.argsort(wh[:, 0] * wh[:, 1], kind="stable")]


def as_wh(wh: Any) -> np.ndarray:
    """`wh` as a float64 (N, 2) array of widths and heights; `ValueError` for another shape."""
    array = np.asarray(wh, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, 2)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"expected (N, 2) widths and heights, got shape {array.shape}")
    return array


def level_groups(wh: Any, num_levels: int) -> list[np.ndarray]:
    """K anchor shapes (w, h) spread over `num_levels` feature levels by size: L arrays of the
    same length m, finest level (smallest anchors) first.

    - K a multiple of L: the area-sorted anchors are cut into L consecutive groups of m = K/L.
    - K > L otherwise: m = ceil(K/L), and level i takes the m consecutive anchors starting at
      round(i * (K - m) / (L - 1)) (halves round up): windows evenly spaced from the first
      anchor to the last. Neighbouring windows may share anchors, every anchor is on some
      level, and each level's window starts further along than the one below.
      E.g. K=9, L=5: m=2, windows 0-1, 2-3, 4-5, 5-6, 7-8; K=9, L=6: 0-1, 1-2, 3-4, 4-5, 6-7, 7-8.
    - K < L: one anchor per level. Level i sits at position t = i * (K - 1) / (L - 1) along the
      area-sorted list, and its shape is interpolated geometrically between the anchors on
      either side of t (log w and log h linear in t), so sizes grow steadily from the smallest
      fitted anchor to the largest and the fitted anchors themselves appear at their positions.
      With K = 1 every level gets that one anchor.

    Equal counts per level because torchvision's RPN, RetinaNet and FCOS heads share one conv
    across levels, so each level must have the same number of anchors per location.
    """
    wh = sort_by_area(wh)
    k = len(wh)
    if num_levels < 1 or k < 1:
        raise ConfigError(f"cannot spread {k} anchors over {num_levels} feature levels")
    if num_levels == 1:
        return [wh]
    if k < num_levels:
        logs = np.log(wh)
        groups = []
        for i in range(num_levels):
            t = i * (k - 1) / (num_levels - 1)
            low = min(int(math.floor(t)), k - 1)
            high = min(low + 1, k - 1)
            frac = t - low
            if frac < 1e-9 or low == high:  # on a fitted anchor: keep it exactly
                groups.append(wh[low][None].copy())
            else:
                groups.append(np.exp(logs[low] * (1 - frac) + logs[high] * frac)[None])
        return groups
    m = -(-k // num_levels)
    step = (k - m) / (num_levels - 1)
    starts = [int(math.floor(i * step + 0.5)) for i in range(num_levels)]
    return [wh[s : s + m] for s in starts]


def anchor_generator_args(
    wh: Any, num_levels: int, *, scale: float = 1.0
) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
    """(sizes, aspect_ratios) for torchvision's `AnchorGenerator` with `num_levels` feature maps,
    from K fitted anchor shapes: `wh` (K, 2) pixel widths and heights, or an anchors.json dict
    (its "wh" is used). Works for any K >= 1 and any number of levels.

    The anchors are spread over the levels by `level_groups` (smallest on the finest level,
    the same number m on every level). Each level gets one size, the geometric mean of its
    group's sqrt(w*h), and its group's m aspect ratios h/w (torchvision's ratio is
    height/width): torchvision combines every size with every ratio, so shapes are kept and
    sizes within a level are pooled. With one anchor per level the fitted shapes come back
    exactly. `scale` converts pixels at the fit's imgsz to the training image size
    (train size / imgsz). `AnchorGenerator(sizes, aspect_ratios).num_anchors_per_location()`
    is m on every level.
    """
    groups = level_groups(_spec_wh(wh), num_levels)
    sizes = tuple((_group_size(g) * scale,) for g in groups)
    ratios = tuple(tuple(float(h / w) for w, h in g) for g in groups)
    return sizes, ratios


def level_sizes(wh: Any, num_levels: int, *, scale: float = 1.0) -> tuple[float, ...]:
    """One anchor size per feature level and no ratios: for heads that take a single size per
    level (anchor-free FCOS's per-level object sizes, SSD-style default boxes). The same
    spreading as `anchor_generator_args` (`level_groups`), each level's size the geometric mean
    of its group's sqrt(w*h), times `scale`; non-decreasing from the finest level up."""
    return tuple(_group_size(g) * scale for g in level_groups(_spec_wh(wh), num_levels))


def _spec_wh(wh: Any) -> Any:
    return wh["wh"] if isinstance(wh, dict) else wh


def _group_size(group: np.ndarray) -> float:
    if len(group) == 1:
        return float(math.sqrt(group[0, 0] * group[0, 1]))
    return float(np.exp(0.5 * np.log(group[:, 0] * group[:, 1]).mean()))
