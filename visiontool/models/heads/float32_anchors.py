"""torchvision's anchor generators, laying their anchors in float32 whatever the maps' dtype.

`AnchorGenerator` and `DefaultBoxGenerator` build anchors in the dtype of the first feature map.
Under autocast (`train --amp`, `detect --half`) that is bfloat16 or float16, and bfloat16 keeps
8 bits of mantissa: an anchor near x = 1300 px lands up to 8 px off (7 px measured on a 1344 x
800 input), float16 up to 0.5 px. Trained with `--amp`, a detector then learned its box offsets
from shifted anchors (the regression targets are encoded against them) and was run on exact
ones in float32. These subclasses give the generators a float32 stand-in of each map: the same
shape and device, no copy; the generators read nothing else from the maps.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator


def float32_stand_in(feature_map: torch.Tensor) -> torch.Tensor:
    """A float32 tensor of `feature_map`'s shape on its device, without memory of its own."""
    if feature_map.dtype == torch.float32:
        return feature_map
    return torch.zeros((), dtype=torch.float32, device=feature_map.device).expand(feature_map.shape)


class Float32Anchors:
    """Mixin for a torchvision anchor generator: its anchors are float32 under autocast."""

    def forward(self, image_list: Any, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        return super().forward(image_list, [float32_stand_in(f) for f in feature_maps])  # type: ignore[misc]


class Float32AnchorGenerator(Float32Anchors, AnchorGenerator):
    """torchvision's AnchorGenerator (Faster R-CNN, RetinaNet, FCOS), float32 anchors."""


class Float32DefaultBoxGenerator(Float32Anchors, DefaultBoxGenerator):
    """torchvision's DefaultBoxGenerator (SSD, SSDlite), float32 default boxes."""


def float32_anchors(model: Any) -> Any:
    """`model` (a torchvision detector built by torchvision's own builders) with its anchor
    generator made a float32 one in place; generators of other kinds are left as they are."""
    swaps = {
        AnchorGenerator: Float32AnchorGenerator,
        DefaultBoxGenerator: Float32DefaultBoxGenerator,
    }
    for owner in (getattr(model, "rpn", None), model):
        generator = getattr(owner, "anchor_generator", None)
        if type(generator) in swaps:
            generator.__class__ = swaps[type(generator)]
    return model
