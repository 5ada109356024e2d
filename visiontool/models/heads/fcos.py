"""FCOS head (anchor-free, one-stage) over an FPN backbone with P6/P7."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visiontool import registry
from visiontool.models.heads import torchvision_parts as tv
from visiontool.models.heads.anchors import Levels, is_pyramid
from visiontool.models.specs import HeadSpec


def default_sizes(strides: Sequence[int]) -> Levels:
    """One 'anchor' per location, its size the level's stride (what FCOS's centre sampling and
    size ranges use)."""
    pyramid = is_pyramid(strides)
    return tuple((float(s if pyramid else 8 * 2**i),) for i, s in enumerate(strides))


def build(**options: Any) -> Any:
    """`FCOS` over the backbone (see `torchvision_parts.dense_detector` for the options)."""
    return tv.dense_detector(
        "FCOS", head="fcos", default_sizes=default_sizes, anchor_free=True, **options
    )


SPEC = registry.add(
    "head",
    HeadSpec(
        name="fcos",
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
        anchor_free=True,
        description="FCOS (anchor-free, one-stage)",
    ),
)
