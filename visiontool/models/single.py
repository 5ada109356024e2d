"""The single-object (largest-object) detector: one box and one class per image.

A registered backbone's last map -> a small head (1x1 conv, a 4 x 4 average-pooled grid, two
linear layers) -> 4 box numbers + C class scores. The grid keeps where things are, which a
global pool would average away. The box numbers go through a sigmoid and are scaled by the
input size: (cx, cy, w, h) as fractions of the image, so a box always lies on the image and
never has x2 < x1.

The model speaks torchvision's detector interface, so `train`, `detect`, `eval` and
`benchmark` run it like any detector: `model(images, targets)` in train mode returns a loss dict,
`model(images)` in eval mode one `{"boxes" (1, 4), "labels" (1,), "scores" (1,)}` per image.
Images are float (3, H, W) in [0, 1] of any size; each is resized to a `size` x `size` square
and normalised inside. Labels are 0-based class ids (no background: every image has an object).

Loss: L1 of the four box coordinates (x1, y1, x2, y2) in pixels of the `size` input, plus
`box_weight` x the cross-entropy of the class (the weight balances a pixel error of a few
units against a cross-entropy near 1). An image whose target has no box adds nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_SIZE = 224
DEFAULT_BOX_WEIGHT = 20.0


class SingleObjectNet(nn.Module):
    """`backbone` (a module with `out_channels`, returning a map or an OrderedDict of maps)
    under the single-object head; see the module docstring."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        size: int = DEFAULT_SIZE,
        box_weight: float = DEFAULT_BOX_WEIGHT,
        image_mean: Any = (0.485, 0.456, 0.406),
        image_std: Any = (0.229, 0.224, 0.225),
        width: int = 64,
        grid: int = 4,
        hidden: int = 256,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.size = int(size)
        self.box_weight = float(box_weight)
        self.head = nn.Sequential(
            OrderedDict(
                reduce=nn.Conv2d(int(backbone.out_channels), width, kernel_size=1),
                act=nn.ReLU(inplace=True),
                pool=nn.AdaptiveAvgPool2d(grid),
                flat=nn.Flatten(),
                fc=nn.Linear(width * grid * grid, hidden),
                fc_act=nn.ReLU(inplace=True),
                out=nn.Linear(hidden, 4 + self.num_classes),
            )
        )
        self.register_buffer("image_mean", torch.tensor(image_mean).view(-1, 1, 1), False)
        self.register_buffer("image_std", torch.tensor(image_std).view(-1, 1, 1), False)

    def set_input_size(self, imgsz: int) -> None:
        """Resize inputs to `imgsz` x `imgsz` from now on (`detect --imgsz`)."""
        self.size = int(imgsz)

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and targets is None:
            raise ValueError("in training mode the single-object model needs targets")
        sizes = [(int(img.shape[-1]), int(img.shape[-2])) for img in images]  # (W, H)
        batch = torch.cat([self._resized(img) for img in images])
        batch = (batch - self.image_mean) / self.image_std
        features = self.backbone(batch)
        if isinstance(features, dict):
            features = list(features.values())[-1]
        out = self.head(features)
        boxes = _boxes(out[:, :4].float(), self.size)  # xyxy in input pixels
        logits = out[:, 4:].float()
        if self.training:
            return self._loss(boxes, logits, targets, sizes)  # type: ignore[arg-type]
        return self._detections(boxes, logits, sizes)

    def _resized(self, image: Tensor) -> Tensor:
        if tuple(image.shape[-2:]) == (self.size, self.size):
            return image[None]
        return F.interpolate(image[None], size=(self.size, self.size), mode="bilinear",
                             align_corners=False, antialias=True)  # fmt: skip

    def _loss(
        self,
        boxes: Tensor,
        logits: Tensor,
        targets: list[dict[str, Tensor]],
        sizes: list[tuple[int, int]],
    ) -> dict[str, Tensor]:
        keep = [i for i, t in enumerate(targets) if t["boxes"].numel() >= 4]
        if not keep:  # nothing to learn from: a zero that still reaches every parameter
            zero = boxes.sum() * 0.0 + logits.sum() * 0.0
            return {"loss_box": zero, "loss_cls": zero}
        scale = torch.tensor(
            [[self.size / w, self.size / h, self.size / w, self.size / h] for w, h in sizes],
            device=boxes.device,
        )
        true = torch.stack([targets[i]["boxes"].reshape(-1, 4)[0].float() for i in keep])
        true = true * scale[keep]
        labels = torch.stack([targets[i]["labels"].reshape(-1)[0] for i in keep]).long()
        return {
            "loss_box": F.l1_loss(boxes[keep], true),
            "loss_cls": self.box_weight * F.cross_entropy(logits[keep], labels),
        }

    def _detections(
        self, boxes: Tensor, logits: Tensor, sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        probs = logits.softmax(dim=1)
        scores, labels = probs.max(dim=1)
        results = []
        for i, (w, h) in enumerate(sizes):
            scale = boxes.new_tensor([w / self.size, h / self.size, w / self.size, h / self.size])
            box = boxes[i] * scale
            box = torch.minimum(box.clamp(min=0), boxes.new_tensor([w, h, w, h]))
            results.append({"boxes": box[None], "labels": labels[i : i + 1],
                            "scores": scores[i : i + 1]})  # fmt: skip
        return results


def _boxes(raw: Tensor, size: int) -> Tensor:
    """Four raw numbers -> (cx, cy, w, h) = sigmoid x size -> xyxy."""
    cx, cy, w, h = (raw.sigmoid() * size).unbind(dim=1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def build_single_object(
    *,
    num_classes: int,
    backbone: str = "resnet18",
    size: int = DEFAULT_SIZE,
    box_weight: float = DEFAULT_BOX_WEIGHT,
    backbone_weights: Any = None,
    trainable_layers: int | None = None,
    frozen_bn: bool | None = None,
    width: int = 64,
    hidden: int = 256,
) -> nn.Module:
    """A `SingleObjectNet` over registered `backbone` (its last map, one tensor). The module
    carries `build_kwargs`: what a checkpoint records to rebuild it (registry model "single";
    the backbone's weights then come from the checkpoint)."""
    from visiontool.errors import ConfigError
    from visiontool.models.backbones import last_map_trunk

    if num_classes < 1:
        raise ConfigError(f"the single-object model needs >= 1 class, got {num_classes}")
    if size < 32:
        raise ConfigError(f"the single-object model needs an input size >= 32, got {size}")
    spec, body, frozen = last_map_trunk(
        backbone, weights=backbone_weights, trainable_layers=trainable_layers, frozen_bn=frozen_bn
    )
    model = SingleObjectNet(body, num_classes, size=size, box_weight=box_weight,
                            image_mean=spec.mean, image_std=spec.std, width=width,
                            hidden=hidden)  # fmt: skip
    model.build_kwargs = {
        "model": "single", "backbone": spec.name, "num_classes": int(num_classes),
        "size": int(size), "box_weight": float(box_weight), "frozen_bn": frozen,
        "width": int(width), "hidden": int(hidden),
    }  # fmt: skip
    return model
