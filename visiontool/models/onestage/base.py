"""What the classic one-stage detectors share: torchvision's detector interface around a
fixed-size single-shot network.

`SingleShotDetector` takes a list of float images (and targets in training), resizes and
normalises them to one square with torchvision's `GeneralizedRCNNTransform` (as torchvision's
SSD does), runs a feature stack and a dense head, and returns a loss dict in training or
`[{"boxes", "scores", "labels"}]` in the original image coordinates at inference. Because it
speaks that interface, the trainer, `detect`, `eval`, `anchors check` and `benchmark` use it
without learning its name, and the `torchvision_parts` behaviours (input size, pre-resize,
inference thresholds) apply unchanged.

A subclass supplies four things: `head(maps)` (raw predictions), `anchors(shapes)` (normalised
xyxy, one row per prediction), `loss(outputs, anchors, targets)` and `detect(outputs,
anchors)`. Boxes inside are normalised xyxy in [0, 1] of the square input; labels follow
torchvision (background 0, objects 1..C).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import batched_nms


class SingleShotDetector(nn.Module):
    """Base of TinySSD, the focal-loss SSD and the YOLOv2-style detector (module docstring)."""

    def __init__(
        self,
        backbone: nn.Module,
        extras: nn.ModuleList,
        *,
        use: Sequence[int] = (),
        num_classes: int,
        size: int,
        image_mean: Sequence[float] | None,
        image_std: Sequence[float] | None,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.45,
        detections_per_img: int = 100,
        topk_candidates: int = 1000,
    ):
        super().__init__()
        self.backbone = backbone  # named so: fine-tuning finds the trunk's stages under it
        self.extras = extras
        self.use = tuple(use)
        self.num_classes = int(num_classes)  # background included, as torchvision counts
        self.transform = GeneralizedRCNNTransform(
            size,
            size,
            list(image_mean or (0.485, 0.456, 0.406)),
            list(image_std or (0.229, 0.224, 0.225)),
            size_divisible=1,
            fixed_size=(size, size),
        )
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates

    # --- what a subclass provides --------------------------------------------------------------

    def head(self, maps: list[Tensor]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def anchors(self, shapes: list[tuple[int, int]], device: Any = None) -> Tensor:
        """(A, 4) normalised xyxy for maps of these (H, W), in prediction order."""
        raise NotImplementedError  # pragma: no cover - abstract

    def loss(
        self, outputs: Any, anchors: Tensor, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def detect(
        self, outputs: Any, anchors: Tensor
    ) -> list[tuple[Tensor, Tensor, Tensor]]:  # pragma: no cover - abstract
        """Per image (boxes normalised xyxy, scores, labels 1..C), before NMS."""
        raise NotImplementedError

    # --- the shared forward --------------------------------------------------------------------

    def input_size(self) -> int:
        return int(self.transform.fixed_size[0])

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        # channels-last: 1.5-2x faster convolutions on CPU (oneDNN) and on tensor cores
        x = x.contiguous(memory_format=torch.channels_last)
        return run_features(self.backbone, self.extras, self.use, x)

    def map_channels(self) -> list[int]:
        """Channels of the maps the head sees (a shapes-only pass on the meta device)."""
        return [m.shape[1] for m in self.meta_maps()]

    def meta_maps(self) -> list[Tensor]:
        """The maps the head sees for one input, computed on the meta device: shapes only."""
        import copy

        side = self.input_size()
        stack = copy.deepcopy(nn.ModuleList([self.backbone, self.extras])).to("meta").eval()
        with torch.no_grad():
            x = torch.empty(1, 3, side, side, device="meta")
            return run_features(stack[0], stack[1], self.use, x)

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets = self.transform(images, targets)
        height, width = image_list.tensors.shape[-2:]
        maps = self.feature_maps(image_list.tensors)
        outputs = self.head(maps)
        anchors = self.anchors([(int(m.shape[-2]), int(m.shape[-1])) for m in maps], maps[0].device)
        if self.training:
            scale = torch.tensor([width, height, width, height], device=anchors.device)
            normalised = [{**t, "boxes": t["boxes"] / scale} for t in targets or []]
            return self.loss(outputs, anchors, normalised)
        detections = self._postprocess(self.detect(outputs, anchors), (height, width))
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def _postprocess(
        self, per_image: list[tuple[Tensor, Tensor, Tensor]], size: tuple[int, int]
    ) -> list[dict[str, Tensor]]:
        """Score threshold, top-k candidates, per-class NMS, `detections_per_img` best."""
        height, width = size
        results = []
        for boxes, scores, labels in per_image:
            keep = scores > self.score_thresh
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            if scores.numel() > self.topk_candidates:
                scores, order = scores.topk(self.topk_candidates)
                boxes, labels = boxes[order], labels[order]
            scale = boxes.new_tensor([width, height, width, height])
            boxes = (boxes.float() * scale).clamp_(min=0)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(max=width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(max=height)
            keep = batched_nms(boxes, scores.float(), labels, self.nms_thresh)
            keep = keep[: self.detections_per_img]
            results.append({"boxes": boxes[keep], "scores": scores[keep].float(),
                            "labels": labels[keep]})  # fmt: skip
        return results


def run_features(
    backbone: nn.Module, extras: nn.Module, use: tuple[int, ...], x: Tensor
) -> list[Tensor]:
    """The backbone's returned maps, then each extra block on the previous output; `use` picks
    the maps the head sees (all when empty)."""
    out = backbone(x)
    maps = list(out.values()) if isinstance(out, (dict, OrderedDict)) else [out]
    last = maps[-1]
    for block in extras:
        last = block(last)
        maps.append(last)
    return [maps[i] for i in use] if use else maps


def last_channels(backbone: nn.Module) -> tuple[int, int]:
    """Channels and stride of the backbone's last returned map (a shapes-only probe)."""
    from visiontool.models.parts import probe

    last = probe(backbone)[-1]
    return last.channels, last.stride


def flatten_levels(preds: list[Tensor], per_anchor: int) -> Tensor:
    """(N, A*k, H, W) per level -> (N, sum(H*W*A), k): channels-last, pixels row-major, then
    anchors, the order `multibox_prior` lays anchors in."""
    flat = [p.permute(0, 2, 3, 1).reshape(p.shape[0], -1, per_anchor) for p in preds]
    return torch.cat(flat, dim=1)


def normalised_image_anchors(model: SingleShotDetector, size: tuple[int, int]) -> Any:
    """`HeadSpec.image_anchors` for these detectors: the anchors in input pixels (A, 4) and the
    input size (every image is resized to the model's square, whatever `size`)."""
    side = model.input_size()
    shapes = [tuple(m.shape[-2:]) for m in model.meta_maps()]
    return model.anchors(shapes, "cpu").float() * side, (side, side)


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that normalises a single value per channel (one image on a 1x1 grid: the last
    batch of an epoch can hold one image) with its running statistics instead of failing."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)  # fmt: skip
        return super().forward(x)


def replace_conv(conv: nn.Conv2d, out_channels: int, bias: float = 0.0) -> nn.Conv2d:
    """A fresh conv like `conv` with `out_channels` outputs (new classes when fine-tuning)."""
    new = nn.Conv2d(
        conv.in_channels,
        out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
    )
    nn.init.normal_(new.weight, std=0.01)
    nn.init.constant_(new.bias, bias)
    return new
