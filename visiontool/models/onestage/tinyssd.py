"""TinySSD: the small multi-scale single-shot detector of Dive into Deep Learning (sec. 14.7).

Base network: down-sampling blocks 3 -> 16 -> 32 -> 64 (each two 3x3 conv + BatchNorm + ReLU,
then a 2x2 max-pool); then down-sampling blocks 64 -> 128 -> 128 -> 128 and a global max-pool:
five feature maps (32, 16, 8, 4, 1 cells at 256 px). Per scale, `multibox_prior` anchors with
the sizes below and ratios 1, 2, 0.5 (4 per pixel); a 3x3 class conv (anchors x (classes + 1))
and a 3x3 box conv (anchors x 4); predictions flattened channels-last and concatenated over
scales. Loss: cross-entropy over anchor classes + L1 on masked offsets (`multibox_target`);
inference: `offset_inverse` then per-class NMS (the `multibox_detection` decoding).

One choice beyond the book: the book averages the cross-entropy over every anchor, so the ~99%
background anchors drown the objects. With `neg_ratio` > 0 (default 3) the classification loss
keeps the positives and the `neg_ratio` x as many hardest negatives and divides by the number
of positives, as the SSD paper does (hard negative mining); `neg_ratio=0` is the book's mean.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visiontool.models.onestage.base import (
    SingleShotDetector,
    flatten_levels,
    last_channels,
    replace_conv,
)
from visiontool.ops.anchors import anchor_shapes, multibox_prior, multibox_target, offset_inverse

SIZES = ((0.2, 0.272), (0.37, 0.447), (0.54, 0.619), (0.71, 0.79), (0.88, 0.961))
RATIOS = (1.0, 2.0, 0.5)  # width / height
SCALES = len(SIZES)
MAX_LOG_SCALE = 20.0  # offsets clamp before exp (x 0.2 std: boxes up to e^4 the anchor)


def down_block(cin: int, cout: int) -> nn.Sequential:
    """Two [3x3 conv (padding 1) -> BatchNorm -> ReLU], then a 2x2 max-pool: half the size."""
    layers: list[nn.Module] = []
    for channels_in in (cin, cout):
        layers += [nn.Conv2d(channels_in, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class TinySSDBase(nn.Module):
    """The base network 3 -> 16 -> 32 -> 64: one map at stride 8 (a registered backbone)."""

    def __init__(self, channels: Sequence[int] = (3, 16, 32, 64)):
        super().__init__()
        self.blocks = nn.Sequential(
            *[down_block(a, b) for a, b in zip(channels[:-1], channels[1:], strict=True)]
        )
        self.out_channels = int(channels[-1])
        self.stages = tuple((f"blocks.{i}",) for i in range(len(channels) - 1))

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict([("0", self.blocks(x))])


class GlobalMaxPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_max_pool2d(x, 1)


class TinySSD(SingleShotDetector):
    """TinySSD (module docstring) over any backbone: the backbone's maps, then down-sampling
    blocks to 128 channels and a global max-pool until there are `len(sizes)` scales."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        size: int = 256,
        sizes: Sequence[Sequence[float]] = SIZES,
        ratios: Sequence[float] = RATIOS,
        neg_ratio: float = 3.0,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
    ):
        from visiontool.models.parts import probe

        returned = len(probe(backbone))
        if returned >= len(sizes):
            raise ValueError(f"TinySSD needs fewer than {len(sizes)} backbone maps, got {returned}")
        channels, _ = last_channels(backbone)
        extras = nn.ModuleList()
        for i in range(len(sizes) - returned):
            last = i == len(sizes) - returned - 1
            extras.append(GlobalMaxPool() if last else down_block(channels, 128))
            channels = channels if last else 128
        super().__init__(backbone, extras, num_classes=num_classes, size=size,
                         image_mean=image_mean, image_std=image_std)  # fmt: skip
        self.sizes = [tuple(float(s) for s in group) for group in sizes]
        self.ratios = tuple(float(r) for r in ratios)
        self.per_pixel = len(anchor_shapes(self.sizes[0], self.ratios))
        if any(len(anchor_shapes(g, self.ratios)) != self.per_pixel for g in self.sizes):
            raise ValueError("every TinySSD scale needs the same number of anchor sizes")
        self.neg_ratio = float(neg_ratio)
        map_channels = self.map_channels()
        k = self.per_pixel
        self.cls_convs = nn.ModuleList(
            nn.Conv2d(c, k * num_classes, 3, padding=1) for c in map_channels
        )
        self.box_convs = nn.ModuleList(nn.Conv2d(c, k * 4, 3, padding=1) for c in map_channels)

    def head(self, maps: list[Tensor]) -> tuple[Tensor, Tensor]:
        cls = flatten_levels([conv(m) for conv, m in zip(self.cls_convs, maps, strict=True)],
                             self.num_classes)  # fmt: skip
        box = flatten_levels([conv(m) for conv, m in zip(self.box_convs, maps, strict=True)], 4)
        return cls, box

    def anchors(self, shapes: list[tuple[int, int]], device: Any = None) -> Tensor:
        return torch.cat(
            [
                multibox_prior(h, w, sizes, self.ratios, device=device)[0]
                for (h, w), sizes in zip(shapes, self.sizes, strict=True)
            ]
        )

    def loss(
        self, outputs: tuple[Tensor, Tensor], anchors: Tensor, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        cls_preds, box_preds = outputs
        labels = pad_labels(targets, anchors.device)
        offsets, mask, classes = multibox_target(anchors, labels)
        ce = F.cross_entropy(
            cls_preds.float().reshape(-1, self.num_classes), classes.reshape(-1), reduction="none"
        ).reshape(classes.shape)
        positives = classes > 0
        l1 = F.l1_loss(box_preds.float().reshape(offsets.shape) * mask, offsets * mask,
                       reduction="none")  # fmt: skip
        if self.neg_ratio <= 0:  # the book: means over every anchor
            return {"loss_cls": ce.mean(), "loss_box": l1.mean()}
        keep = positives | hard_negatives(ce, positives, self.neg_ratio)
        count = positives.sum().clamp(min=1)
        return {"loss_cls": (ce * keep).sum() / count, "loss_box": l1.sum() / count}

    def detect(
        self, outputs: tuple[Tensor, Tensor], anchors: Tensor
    ) -> list[tuple[Tensor, Tensor, Tensor]]:
        cls_preds, box_preds = outputs
        probs = F.softmax(cls_preds.float(), dim=-1)
        offsets = box_preds.float().reshape(box_preds.shape[0], -1, 4)
        offsets = torch.cat([offsets[..., :2], offsets[..., 2:].clamp(max=MAX_LOG_SCALE)], -1)
        boxes = offset_inverse(anchors, offsets)
        results = []
        for b in range(probs.shape[0]):
            scores, labels = probs[b, :, 1:].max(dim=-1)
            results.append((boxes[b], scores, labels + 1))
        return results

    def replace_class_layers(self, num_classes: int) -> list[str]:
        k = self.per_pixel
        for i, conv in enumerate(self.cls_convs):
            self.cls_convs[i] = replace_conv(conv, k * num_classes)
        self.num_classes = num_classes
        return [n for n, _ in self.named_parameters() if n.startswith("cls_convs.")]


def pad_labels(targets: list[dict[str, Tensor]], device: Any) -> Tensor:
    """Targets (normalised boxes, labels 1..C) as multibox's (B, G, 5) rows [class, x1, y1, x2,
    y2] with 0-based classes, padded with class -1."""
    most = max([len(t["boxes"]) for t in targets] + [1])
    rows = torch.full((len(targets), most, 5), -1.0, device=device)
    for i, t in enumerate(targets):
        n = len(t["boxes"])
        rows[i, :n, 0] = t["labels"].float() - 1
        rows[i, :n, 1:] = t["boxes"].float()
    return rows


def hard_negatives(loss: Tensor, positives: Tensor, ratio: float) -> Tensor:
    """The `ratio` x positives highest-loss negatives of each image (at least one per image)."""
    negative_loss = loss.detach().masked_fill(positives, -1.0)
    order = negative_loss.argsort(dim=1, descending=True).argsort(dim=1)
    wanted = (positives.sum(dim=1, keepdim=True) * ratio).clamp(min=1)
    return (order < wanted) & ~positives
