"""A multi-scale SSD head with focal loss, as taught in fast.ai's 2018 course (lesson 9) on the
RetinaNet paper's loss.

On the backbone's last map: a stride-1 conv block, then three stride-2 conv blocks whose grids
(4x4, 2x2 and 1x1 cells at 224 px on a ResNet: the grids follow the feature strides) carry the
predictions. Each block is conv 3x3 -> ReLU -> BatchNorm -> Dropout. k = 9 anchors per cell:
zooms 0.75, 1, 1.3 x aspects (w, h) (1, 1), (1, 0.5), (0.5, 1) of the cell, centred in it.

Box decoding is bounded by tanh: the centre moves at most half a cell, width and height stay
within 0.5x..1.5x the anchor. Matching: each ground-truth box takes its best anchor (forced),
other anchors their best box when IoU >= 0.5, the rest are background. Classes: one sigmoid per
class (no background column; background is the all-zero target) trained with focal loss
FL = -alpha_t (1 - p_t)^gamma log(p_t), alpha 0.25, gamma 2, summed and divided by the number of
classes (per image); localisation: L1 between decoded and true boxes (normalised corners) of
the positives. Inference: per-class NMS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import box_iou, sigmoid_focal_loss

from visiontool.models.heads.torchvision_parts import prior_bias
from visiontool.models.onestage.base import (
    BatchNorm2d,
    SingleShotDetector,
    flatten_levels,
    last_channels,
    replace_conv,
)

ZOOMS = (0.75, 1.0, 1.3)
ASPECTS = ((1.0, 1.0), (1.0, 0.5), (0.5, 1.0))  # (width, height) multipliers of a cell
MATCH_IOU = 0.5


def conv_block(cin: int, cout: int, stride: int, dropout: float) -> nn.Sequential:
    """conv 3x3 -> ReLU -> BatchNorm -> Dropout (the course's order)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
        nn.ReLU(),
        BatchNorm2d(cout),
        nn.Dropout(dropout),
    )


class FocalSSD(SingleShotDetector):
    """The multi-scale focal-loss SSD (module docstring) over any backbone's last map."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        size: int = 224,
        width: int = 256,
        dropout: float = 0.1,
        alpha: float = 0.25,
        gamma: float = 2.0,
        zooms: Sequence[float] = ZOOMS,
        aspects: Sequence[tuple[float, float]] = ASPECTS,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
    ):
        channels, _ = last_channels(backbone)
        extras = nn.ModuleList(
            [conv_block(channels, width, 1, dropout)]
            + [conv_block(width, width, 2, dropout) for _ in range(3)]
        )
        returned = _returned_maps(backbone)
        use = tuple(range(returned + 1, returned + 4))  # the three stride-2 blocks
        super().__init__(backbone, extras, use=use, num_classes=num_classes, size=size,
                         image_mean=image_mean, image_std=image_std)  # fmt: skip
        self.shapes = [(z * w, z * h) for z in zooms for (w, h) in aspects]
        k = len(self.shapes)
        self.alpha, self.gamma = float(alpha), float(gamma)
        classes = num_classes - 1  # no background column
        self.cls_convs = nn.ModuleList(nn.Conv2d(width, k * classes, 3, padding=1) for _ in use)
        self.box_convs = nn.ModuleList(nn.Conv2d(width, k * 4, 3, padding=1) for _ in use)
        for conv in self.cls_convs:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, prior_bias(0.01))

    def head(self, maps: list[Tensor]) -> tuple[Tensor, Tensor]:
        cls = flatten_levels([c(m) for c, m in zip(self.cls_convs, maps, strict=True)],
                             self.num_classes - 1)  # fmt: skip
        box = flatten_levels([c(m) for c, m in zip(self.box_convs, maps, strict=True)], 4)
        return cls, box

    def anchors(self, shapes: list[tuple[int, int]], device: Any = None) -> Tensor:
        return cell_anchors(shapes, self.shapes, device)

    def decode(self, box_preds: Tensor, anchors: Tensor) -> Tensor:
        """Bounded decoding: centre within half a cell, size 0.5x..1.5x the anchor."""
        wh = anchors[:, 2:] - anchors[:, :2]
        centre = anchors[:, :2] + wh / 2
        k = len(self.shapes)
        cells = wh / anchors.new_tensor(self.shapes).repeat(wh.shape[0] // k, 1)
        t = torch.tanh(box_preds.float())
        xy = centre + t[..., :2] / 2 * cells
        size = (t[..., 2:] / 2 + 1) * wh
        return torch.cat([xy - size / 2, xy + size / 2], dim=-1)

    def loss(
        self, outputs: tuple[Tensor, Tensor], anchors: Tensor, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        cls_preds, box_preds = outputs
        boxes = self.decode(box_preds, anchors)
        classes = self.num_classes - 1
        cls_total = cls_preds.new_zeros(())
        box_total = cls_preds.new_zeros(())
        for b, target in enumerate(targets):
            matched, positive = match(anchors, target["boxes"].float())
            onehot = torch.zeros_like(cls_preds[b], dtype=torch.float32)
            if positive.any():
                labels = target["labels"][matched[positive]] - 1
                onehot[positive.nonzero().flatten(), labels] = 1.0
                truth = target["boxes"].float()[matched[positive]]
                box_total = box_total + (boxes[b, positive] - truth).abs().mean()
            focal = sigmoid_focal_loss(cls_preds[b].float(), onehot, alpha=self.alpha,
                                       gamma=self.gamma, reduction="sum")  # fmt: skip
            cls_total = cls_total + focal / classes
        count = max(1, len(targets))
        return {"loss_cls": cls_total / count, "loss_box": box_total / count}

    def detect(
        self, outputs: tuple[Tensor, Tensor], anchors: Tensor
    ) -> list[tuple[Tensor, Tensor, Tensor]]:
        cls_preds, box_preds = outputs
        boxes = self.decode(box_preds, anchors)
        probs = torch.sigmoid(cls_preds.float())
        results = []
        for b in range(probs.shape[0]):
            # every (anchor, class) pair above the threshold is a candidate (per-class NMS)
            anchor, cls = (probs[b] > self.score_thresh).nonzero(as_tuple=True)
            results.append((boxes[b, anchor], probs[b, anchor, cls], cls + 1))
        return results

    def replace_class_layers(self, num_classes: int) -> list[str]:
        k = len(self.shapes)
        for i, conv in enumerate(self.cls_convs):
            self.cls_convs[i] = replace_conv(conv, k * (num_classes - 1), prior_bias(0.01))
        self.num_classes = num_classes
        return [n for n, _ in self.named_parameters() if n.startswith("cls_convs.")]


def _returned_maps(backbone: nn.Module) -> int:
    from visiontool.models.parts import probe

    return len(probe(backbone))


def cell_anchors(
    shapes: list[tuple[int, int]], sizes: Sequence[tuple[float, float]], device: Any = None
) -> Tensor:
    """Anchors (A, 4) normalised xyxy centred in the cells of each (H, W) grid, `sizes` (w, h)
    in cells, in prediction order (row-major cells, then sizes)."""
    out = []
    size = torch.tensor(sizes, dtype=torch.float32, device=device)  # (k, 2) in cells
    for h, w in shapes:
        cell = torch.tensor([1.0 / w, 1.0 / h], device=device)
        ys, xs = torch.meshgrid(
            (torch.arange(h, device=device) + 0.5) / h,
            (torch.arange(w, device=device) + 0.5) / w,
            indexing="ij",
        )
        centre = torch.stack([xs, ys], dim=-1).reshape(-1, 1, 2)
        half = (size * cell / 2)[None]
        out.append(torch.cat([centre - half, centre + half], dim=-1).reshape(-1, 4))
    return torch.cat(out)


def match(anchors: Tensor, boxes: Tensor, threshold: float = MATCH_IOU) -> tuple[Tensor, Tensor]:
    """(index of each anchor's box, positive mask): each box forces its best anchor, other
    anchors take their best box at IoU >= `threshold`."""
    count = anchors.shape[0]
    if boxes.numel() == 0:
        return torch.zeros(count, dtype=torch.long, device=anchors.device), torch.zeros(
            count, dtype=torch.bool, device=anchors.device
        )
    iou = box_iou(anchors, boxes)  # (A, G): a few hundred anchors, so the matrix is small
    best_iou, best_box = iou.max(dim=1)
    forced = iou.argmax(dim=0)  # (G,) each box's best anchor
    best_iou[forced] = 2.0  # beats any threshold
    best_box[forced] = torch.arange(boxes.shape[0], device=anchors.device)
    return best_box, best_iou >= threshold


def focal_loss_reference(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
    """FL summed over elements, written out (checks torchvision's `sigmoid_focal_loss`)."""
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (-alpha_t * (1 - p_t) ** gamma * torch.log(p_t.clamp(min=1e-12))).sum()
