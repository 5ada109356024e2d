"""The pieces of the original Faster R-CNN (Ren et al., 2015) that torchvision's FasterRCNN
lacks, each a small subclass of torchvision's own part, so `GeneralizedRCNN` composes them as
usual (`visiontool.models.heads.frcnn_classic` builds the detector):

- `CellCentredAnchors`: the paper's anchors, centred on each feature-map cell and not rounded,
  so the model lays exactly the anchors `visiontool anchors grid` draws;
- `RoIMaxPool`: Fast R-CNN's RoI max pooling on one map, called like `MultiScaleRoIAlign`;
- `ClassicRPN`: cross-boundary anchors ignored in training, the paper's proposal order
  (clip, drop small boxes, top-N by objectness, NMS, keep N) and smooth L1 with its beta;
- `ClassicRoIHeads`: background RoIs only in [bg_low, fg_iou), Fast R-CNN's loss with its
  smooth L1 beta.

Boxes are absolute pixel xyxy at the model's input; torchvision's label convention
(background 0) holds throughout.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import box_iou, clip_boxes_to_image, nms, remove_small_boxes, roi_pool

from visiontool.models.heads.float32_anchors import Float32AnchorGenerator


class CellCentredAnchors(Float32AnchorGenerator):
    """torchvision's AnchorGenerator puts anchor centres on cell corners (0, s, 2s, ...) and
    rounds their sides; the paper (and `ops.anchors.grid_anchors`, what `anchors grid` shows)
    centres them in the cells (s/2, 3s/2, ...) with exact sides. Anchors per cell are
    size-major, as `anchors grid` lists them; ratios are torchvision's height / width."""

    def generate_anchors(
        self,
        scales: list[int],
        aspect_ratios: list[float],
        dtype: torch.dtype = torch.float32,
        device: torch.device = torch.device("cpu"),  # noqa: B008 - torchvision's signature
    ) -> Tensor:
        scales_t = torch.as_tensor(scales, dtype=torch.float64)
        h_ratios = torch.as_tensor(aspect_ratios, dtype=torch.float64).sqrt()
        ws = (scales_t[:, None] / h_ratios[None, :]).reshape(-1)
        hs = (scales_t[:, None] * h_ratios[None, :]).reshape(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).to(dtype=dtype, device=device)

    def grid_anchors(
        self, grid_sizes: list[list[int]], strides: list[list[Tensor]]
    ) -> list[Tensor]:
        anchors = super().grid_anchors(grid_sizes, strides)
        return [
            a + torch.stack([sw, sh, sw, sh]).to(a) / 2
            for a, (sh, sw) in zip(anchors, strides, strict=True)
        ]


class RoIMaxPool(nn.Module):
    """Fast R-CNN's RoI max pooling (`torchvision.ops.roi_pool`) on the one map `name` at
    1/`stride` scale, with `MultiScaleRoIAlign`'s call signature so `RoIHeads` takes it.
    It always runs in float32: torchvision's CPU kernel has no bfloat16/half version (`train
    --amp` failed), and boxes in bfloat16 would be off by pixels (8 bits of mantissa)."""

    def __init__(self, name: str, output_size: int, stride: int):
        super().__init__()
        self.name = name
        self.output_size = output_size
        self.spatial_scale = 1.0 / stride

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        boxes = [b.float() for b in boxes]
        return roi_pool(x[self.name].float(), boxes, self.output_size, self.spatial_scale)


def inside_image(anchors: Tensor, size: tuple[int, int], border: float = 0.0) -> Tensor:
    """Anchors lying within the (H, W) image, up to `border` pixels over its edges."""
    height, width = size
    return (
        (anchors[:, 0] >= -border)
        & (anchors[:, 1] >= -border)
        & (anchors[:, 2] <= width + border)
        & (anchors[:, 3] <= height + border)
    )


class ClassicRPN(RegionProposalNetwork):
    """The paper's RPN on torchvision's: in training, anchors crossing the image border are
    ignored (neither positive nor negative, and never a box's best anchor), as in the paper
    (sec. 3.3); proposals are clipped, boxes under `min_size` input pixels dropped, then the
    top `pre_nms_top_n` by objectness go to NMS (torchvision takes the top N first and drops
    boxes under 0.001 px); both losses are sums over the sampled anchors divided by their
    count, the box term a smooth L1 with `beta` (torchvision: 1/9)."""

    def __init__(self, *args: Any, min_size: float, beta: float = 1.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.min_size = float(min_size)
        self.beta = float(beta)

    def forward(
        self, images: Any, features: dict[str, Tensor], targets: list[dict[str, Any]] | None = None
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        if targets is not None:  # the matcher needs each image's size to find border anchors
            targets = [
                {**t, "image_size": s} for t, s in zip(targets, images.image_sizes, strict=True)
            ]
        return super().forward(images, features, targets)

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Any]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Labels 1 (IoU >= fg with some box, or the best anchor of a box), 0 (IoU < bg with
        every box), -1 (ignored: in between, or crossing the border)."""
        fg, bg = self.proposal_matcher.high_threshold, self.proposal_matcher.low_threshold
        labels, matched = [], []
        for boxes, target in zip(anchors, targets, strict=True):
            inside = inside_image(boxes, target["image_size"])
            gt = target["boxes"]
            label = torch.full((boxes.shape[0],), -1.0, device=boxes.device)
            if gt.numel() == 0:  # no objects: every inside anchor is background
                label[inside] = 0.0
                labels.append(label)
                matched.append(torch.zeros_like(boxes))
                continue
            iou = box_iou(gt, boxes)
            iou[:, ~inside] = -1.0  # outside anchors match nothing
            best, index = iou.max(dim=0)
            label[best < bg] = 0.0
            label[best >= fg] = 1.0
            per_box = iou.max(dim=1, keepdim=True).values
            label[torch.where((iou == per_box) & (per_box > 0))[1]] = 1.0
            label[~inside] = -1.0
            labels.append(label)
            matched.append(gt[index])
        return labels, matched

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        scores_all = objectness.detach().reshape(proposals.shape[0], -1)
        final_boxes, final_scores = [], []
        for boxes, scores, shape in zip(proposals, scores_all, image_shapes, strict=True):
            boxes = clip_boxes_to_image(boxes, shape)
            keep = remove_small_boxes(boxes, self.min_size)
            boxes, scores = boxes[keep], scores[keep]
            top = scores.topk(min(self.pre_nms_top_n(), scores.numel())).indices
            boxes, scores = boxes[top], scores[top]
            keep = nms(boxes, scores, self.nms_thresh)[: self.post_nms_top_n()]
            final_boxes.append(boxes[keep])
            final_scores.append(torch.sigmoid(scores[keep]))
        return final_boxes, final_scores

    def compute_loss(
        self,
        objectness: Tensor,
        pred_bbox_deltas: Tensor,
        labels: list[Tensor],
        regression_targets: list[Tensor],
    ) -> tuple[Tensor, Tensor]:
        positive, negative = self.fg_bg_sampler(labels)
        positive_i = torch.where(torch.cat(positive))[0]
        sampled = torch.cat([positive_i, torch.where(torch.cat(negative))[0]])
        count = max(1, sampled.numel())  # small images may leave no anchor inside
        targets = torch.cat(regression_targets)
        box_loss = F.smooth_l1_loss(
            pred_bbox_deltas[positive_i], targets[positive_i], beta=self.beta, reduction="sum"
        )
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.flatten()[sampled], torch.cat(labels)[sampled], reduction="sum"
        )
        return objectness_loss / count, box_loss / count


class ClassicRoIHeads(RoIHeads):
    """Fast R-CNN's RoI sampling and loss on torchvision's RoI heads: a proposal is foreground
    at IoU >= fg_iou with its best box, background in [bg_low, fg_iou) and ignored below
    bg_low (torchvision makes every proposal under fg_iou background: the paper keeps the
    near-empty ones out, as hard negatives lie near objects); in an image without boxes every
    proposal is background (torchvision's rule; the paper trains on none). The box loss is a
    smooth L1 with `beta` (torchvision: 1/9). Inference is torchvision's."""

    def __init__(self, *args: Any, bg_low: float, beta: float = 1.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.bg_low = float(bg_low)
        self.beta = float(beta)

    def assign_targets_to_proposals(
        self, proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        fg = self.proposal_matcher.high_threshold
        matched, labels = [], []
        for boxes, gt, gt_label in zip(proposals, gt_boxes, gt_labels, strict=True):
            if gt.numel() == 0:
                zeros = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
                matched.append(zeros)
                labels.append(zeros.clone())
                continue
            best, index = box_iou(gt, boxes).max(dim=0)
            label = gt_label[index].to(torch.int64)
            label[best < fg] = 0
            label[best < self.bg_low] = -1
            matched.append(index)
            labels.append(label)
        return matched, labels

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if not self.training:
            return super().forward(features, proposals, image_shapes)
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        pooled = self.box_roi_pool(features, proposals, image_shapes)
        class_logits, box_regression = self.box_predictor(self.box_head(pooled))
        loss_classifier, loss_box_reg = fast_rcnn_loss(
            class_logits, box_regression, labels, regression_targets, beta=self.beta
        )
        return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}


def fast_rcnn_loss(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: list[Tensor],
    regression_targets: list[Tensor],
    *,
    beta: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Cross-entropy over the sampled RoIs and smooth L1 on the foreground ones' offsets for
    their own class, summed and divided by the number of sampled RoIs (Fast R-CNN)."""
    label = torch.cat(labels)
    targets = torch.cat(regression_targets)
    count = max(1, label.numel())
    class_loss = F.cross_entropy(class_logits, label, reduction="sum") / count
    positive = torch.where(label > 0)[0]
    per_class = box_regression.reshape(class_logits.shape[0], -1, 4)
    box_loss = F.smooth_l1_loss(
        per_class[positive, label[positive]], targets[positive], beta=beta, reduction="sum"
    )
    return class_loss, box_loss / count
