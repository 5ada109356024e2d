"""SSDlite head: depthwise-separable SSD for MobileNet backbones (torchvision's SSDlite320)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visiontool import registry
from visiontool.models.heads import torchvision_parts as tv
from visiontool.models.heads.ssd import ssd_detector
from visiontool.models.specs import HeadSpec

EXTRA_CHANNELS = (512, 256, 256, 128)  # SSDlite320's extra blocks
BACKBONES = ("mobilenet_v3_large", "mobilenet_v3_small")


def build(
    *,
    backbone: Any,
    num_classes: int,
    anchor_sizes: Any = None,
    anchor_ratios: Any = None,
    size: int = 320,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    anchor_fit: dict[str, Any] | None = None,
    **_: Any,
) -> Any:
    from functools import partial

    from torch import nn
    from torchvision.models.detection.ssdlite import SSDLiteHead, _extra_block, _normal_init

    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)

    def block(cin: int, cout: int) -> nn.Module:
        extra = _extra_block(cin, cout, norm)
        _normal_init(extra)
        return extra

    def head(channels: list[int], anchors: list[int]) -> nn.Module:
        return SSDLiteHead(channels, anchors, num_classes, norm)

    model = ssd_detector(
        backbone, block, head, EXTRA_CHANNELS, num_classes, anchor_sizes, anchor_ratios,
        size, image_mean, image_std, lite=True, anchor_fit=anchor_fit,
    )  # fmt: skip
    # torchvision's SSDlite320 post-processing settings
    model.score_thresh, model.nms_thresh = 0.001, 0.55
    model.detections_per_img, model.topk_candidates = 300, 300
    return model


SPEC = registry.add(
    "head",
    HeadSpec(
        name="ssdlite",
        build=build,
        replace_class_layers=tv.new_ssd_logits,
        configure=tv.configure_one_stage,
        **tv.TORCHVISION_INPUT,
        fpn=False,
        layers="ssd",
        backbones=BACKBONES,
        default_backbone="mobilenet_v3_large",
        default_imgsz=320,
        default_augment="ssd",
        fixed_size=True,
        description="SSDlite (depthwise-separable SSD for MobileNet backbones)",
    ),
)
