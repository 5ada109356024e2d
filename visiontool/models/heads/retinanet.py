"""RetinaNet head (one-stage, focal loss) over an FPN backbone with P6/P7."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visiontool import registry
from visiontool.models.heads import torchvision_parts as tv
from visiontool.models.heads.anchors import Levels, is_pyramid
from visiontool.models.specs import HeadSpec


def default_sizes(strides: Sequence[int]) -> Levels:
    """torchvision's: 4 x stride per level (32..512 on P3-P7), times 2^0, 2^(1/3), 2^(2/3)."""
    pyramid = is_pyramid(strides)
    bases = [4 * s if pyramid else 32 * 2**i for i, s in enumerate(strides)]
    return tuple(tuple(float(int(b * 2 ** (k / 3))) for k in range(3)) for b in bases)


def build(**options: Any) -> Any:
    """`RetinaNet` over the backbone (see `torchvision_parts.dense_detector` for the options)."""
    return tv.dense_detector(
        "RetinaNet", head="retinanet", default_sizes=default_sizes, anchor_free=False, **options
    )


SPEC = registry.add(
    "head",
    HeadSpec(
        name="retinanet",
        build=build,
        replace_class_layers=tv.new_dense_logits,
        configure=tv.configure_one_stage,
        **tv.TORCHVISION_INPUT,
        fpn=True,
        layers="dense",
        extra_blocks="p6p7",
        default_backbone="resnet18",
        default_imgsz=512,
        default_augment="frcnn",
        description="RetinaNet (one-stage, focal loss)",
    ),
)
