"""SSD head: the backbone's native maps plus extra stride-2 blocks, one conv per level.

`ssd_detector` is shared with SSDlite (`ssdlite.py`), which swaps the blocks and the head for
depthwise-separable ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from visiontool import registry
from visiontool.models.heads import torchvision_parts as tv
from visiontool.models.heads.anchors import fitted_levels, ssd_box_options
from visiontool.models.specs import HeadSpec

EXTRA_CHANNELS = (512, 256, 256, 256)  # SSD300's extra layers


def build(
    *,
    backbone: Any,
    num_classes: int,
    anchor_sizes: Any = None,
    anchor_ratios: Any = None,
    size: int = 300,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    anchor_fit: dict[str, Any] | None = None,
    **_: Any,
) -> Any:
    from torch import nn
    from torchvision.models.detection.ssd import SSDHead
    from torchvision.ops.misc import Conv2dNormActivation

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(
            Conv2dNormActivation(cin, cout // 2, kernel_size=1),
            Conv2dNormActivation(cout // 2, cout, kernel_size=3, stride=2),
        )

    def head(channels: list[int], anchors: list[int]) -> nn.Module:
        return SSDHead(channels, anchors, num_classes)

    return ssd_detector(
        backbone, block, head, EXTRA_CHANNELS, num_classes, anchor_sizes, anchor_ratios,
        size, image_mean, image_std, lite=False, anchor_fit=anchor_fit,
    )  # fmt: skip


def ssd_detector(
    backbone: Any,
    block: Callable[[int, int], Any],
    make_head: Callable[[list[int], list[int]], Any],
    extra_channels: Sequence[int],
    num_classes: int,
    sizes: Any,
    ratios: Any,
    size: int,
    image_mean: Sequence[float] | None,
    image_std: Sequence[float] | None,
    *,
    lite: bool,
    anchor_fit: dict[str, Any] | None = None,
) -> Any:
    """SSD over backbone maps + extra stride-2 blocks, one head conv per level."""
    from torch import nn
    from torchvision.models.detection.ssd import SSD

    from visiontool.models.heads.float32_anchors import Float32DefaultBoxGenerator
    from visiontool.models.parts import MultiScaleFeatures, probe

    last = probe(backbone)[-1].channels
    extras = nn.ModuleList()
    for channels in extra_channels:
        extras.append(block(last, channels))
        last = channels
    features = MultiScaleFeatures(backbone, extras)
    maps = probe(features)
    if anchor_fit is not None:
        sizes, ratios = fitted_levels(anchor_fit, len(maps), one_size=False)
    boxes = Float32DefaultBoxGenerator(**ssd_box_options(len(maps), size, sizes, ratios, lite=lite))
    head = make_head([m.channels for m in maps], boxes.num_anchors_per_location())
    return SSD(
        features,
        boxes,
        (size, size),
        num_classes,
        image_mean=tv.floats(image_mean),
        image_std=tv.floats(image_std),
        head=head,
    )


SPEC = registry.add(
    "head",
    HeadSpec(
        name="ssd",
        build=build,
        replace_class_layers=tv.new_ssd_logits,
        configure=tv.configure_one_stage,
        **tv.TORCHVISION_INPUT,
        fpn=False,
        layers="ssd",
        default_backbone="vgg16",
        default_imgsz=300,
        default_augment="ssd",
        fixed_size=True,
        description="SSD (multi-scale single shot, extra conv layers on the backbone)",
    ),
)
