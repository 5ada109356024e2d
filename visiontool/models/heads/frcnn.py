"""Faster R-CNN head (two-stage: RPN + RoI heads) over any registered backbone, FPN or not."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visiontool import registry
from visiontool.models.heads import torchvision_parts as tv
from visiontool.models.heads.anchors import Levels, is_pyramid
from visiontool.models.specs import HeadSpec


def default_sizes(strides: Sequence[int]) -> Levels:
    """torchvision's defaults, generalised: 8 x stride per level on a pyramid (32..512 on an
    FPN), or the five sizes 32..512 on every map of a single-map backbone."""
    if is_pyramid(strides):
        return tuple((float(8 * s),) for s in strides)
    return ((32.0, 64.0, 128.0, 256.0, 512.0),) * len(strides)


def build(
    *,
    backbone: Any,
    num_classes: int,
    anchor_sizes: Any = None,
    anchor_ratios: Any = None,
    min_size: int = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    anchor_fit: dict[str, Any] | None = None,
    box_head: int = 1024,
    **_: Any,
) -> Any:
    """`box_head`: width of the two-layer box head (torchvision uses 1024; the box head is
    most of a light model's size: 256*7*7*1024 = 12.8M weights)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    anchors, maps = tv.grid_generator(
        backbone,
        "frcnn",
        anchor_sizes,
        anchor_ratios,
        default_sizes,
        anchor_free=False,
        anchor_fit=anchor_fit,
    )
    names = [m.name for m in maps if m.name != "pool"] or [maps[0].name]
    return FasterRCNN(
        backbone,
        num_classes=None,
        box_head=TwoMLPHead(backbone.out_channels * 7 * 7, box_head),
        box_predictor=FastRCNNPredictor(box_head, num_classes),
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2),
        **tv.transform_args(min_size, max_size, image_mean, image_std),
    )


SPEC = registry.add(
    "head",
    HeadSpec(
        name="frcnn",
        build=build,
        **tv.TWO_STAGE,
        fpn=None,
        layers="fpn",
        extra_blocks="pool",
        default_backbone="mobilenet_v3_large",
        default_imgsz=512,
        default_augment="frcnn",
        arch_options=("box_head",),
        description="Faster R-CNN (two-stage: RPN + RoI heads)",
    ),
)
