"""Detection heads: torchvision detector families built around any compatible backbone.

Each head builder takes a backbone module (from `visiontool.models.backbones`), the number of
classes *including background at index 0* (torchvision's convention) and an anchor
configuration, and returns a torchvision detector. Which backbone layout each head needs is in
its registry metadata (`fpn`, `layers`, `extra_blocks`, `backbones`); `visiontool.models.build`
checks combinations before building.

Anchors (`anchor_sizes`, `anchor_ratios`) are per feature level. Sizes given as a flat list mean
one size per level; ratios (height / width) given as a flat list apply at every level; a list of
one group is repeated on every level. Defaults follow torchvision where it has one.

This module imports without torch; builders import inside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from visiontool import registry
from visiontool.errors import ConfigError

Levels = tuple[tuple[float, ...], ...]
DEFAULT_RATIOS = (0.5, 1.0, 2.0)
SSD_EXTRA_CHANNELS = (512, 256, 256, 256)  # SSD300's extra layers
SSDLITE_EXTRA_CHANNELS = (512, 256, 256, 128)  # SSDlite320's extra blocks
MOBILENET_BACKBONES = ("mobilenet_v3_large", "mobilenet_v3_small")


# --- anchors (pure Python) -------------------------------------------------------------------


def per_level(values: Any, levels: int, *, what: str, flat_is_per_level: bool) -> Levels | None:
    """Normalise an anchor option to one tuple per feature level (see the module docstring)."""
    if values is None:
        return None
    values = list(values)
    if not values:
        raise ConfigError(f"{what} is empty")
    if all(isinstance(v, (int, float)) for v in values):
        if flat_is_per_level and levels > 1:
            groups = [(float(v),) for v in values]
        else:
            groups = [tuple(float(v) for v in values)]
    else:
        groups = [tuple(float(x) for x in group) for group in values]
    if len(groups) == 1:
        groups = groups * levels
    if len(groups) != levels:
        raise ConfigError(
            f"{what}: the backbone gives {levels} feature maps, so pass {levels} values "
            f"(one per level) or {levels} groups, got {len(groups)}"
        )
    if any(not group or min(group) <= 0 for group in groups):
        raise ConfigError(f"{what} must be positive numbers, got {groups}")
    return tuple(groups)


def _pyramid(strides: Sequence[int]) -> bool:
    return len(strides) > 1 and all(b > a for a, b in pairwise(strides))


def default_anchor_sizes(head: str, strides: Sequence[int]) -> Levels:
    """torchvision's defaults, generalised: sizes scale with each level's stride on a pyramid."""
    pyramid = _pyramid(strides)
    if head == "fcos":
        return tuple((float(s if pyramid else 8 * 2**i),) for i, s in enumerate(strides))
    if head == "retinanet":
        bases = [4 * s if pyramid else 32 * 2**i for i, s in enumerate(strides)]
        return tuple(tuple(float(int(b * 2 ** (k / 3))) for k in range(3)) for b in bases)
    if pyramid:
        return tuple((float(8 * s),) for s in strides)
    return ((32.0, 64.0, 128.0, 256.0, 512.0),) * len(strides)


def grid_anchors(
    head: str, strides: Sequence[int], sizes: Any, ratios: Any
) -> tuple[Levels, Levels]:
    """Sizes and ratios for an AnchorGenerator: user values checked, or the head's defaults."""
    levels = len(strides)
    size_groups = per_level(sizes, levels, what="anchor sizes", flat_is_per_level=True)
    if head == "fcos":
        if ratios is not None:
            raise ConfigError("fcos is anchor-free: pass anchor sizes (one per level), not ratios")
        if size_groups and any(len(g) != 1 for g in size_groups):
            raise ConfigError("fcos takes one anchor size per feature level")
        ratio_groups: Levels = ((1.0,),) * levels
    else:
        ratio_groups = per_level(ratios, levels, what="anchor ratios", flat_is_per_level=False) or (
            (DEFAULT_RATIOS,) * levels
        )
    size_groups = size_groups or default_anchor_sizes(head, strides)
    counts = {len(s) * len(r) for s, r in zip(size_groups, ratio_groups, strict=True)}
    if len(counts) > 1:
        raise ConfigError(
            f"{head} shares one prediction layer across levels, so every level needs the same "
            f"number of anchors (sizes x ratios); got {sorted(counts)}"
        )
    return size_groups, ratio_groups


def ssd_box_options(levels: int, size: int, sizes: Any, ratios: Any, *, lite: bool) -> dict:
    """Keyword arguments of DefaultBoxGenerator: ratios > 1 per level, scales from pixel sizes."""
    if ratios is None:
        aspect = [[2, 3]] * levels
        if not lite and levels == 6:
            aspect = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]  # SSD300
    else:
        groups = per_level(ratios, levels, what="anchor ratios", flat_is_per_level=False) or ()
        # DefaultBoxGenerator adds r and 1/r for each r, plus two square boxes
        aspect = [sorted({round(max(r, 1 / r), 4) for r in g if r != 1.0}) for g in groups]
    options: dict[str, Any] = {"aspect_ratios": aspect}
    if sizes is None:
        options.update(min_ratio=0.2, max_ratio=0.95)
        return options
    groups = per_level(sizes, levels, what="anchor sizes", flat_is_per_level=True) or ()
    if any(len(g) != 1 for g in groups):
        raise ConfigError("ssd heads take one anchor size per feature level (pixels)")
    options["scales"] = [g[0] / size for g in groups] + [1.0]
    return options


# --- builders --------------------------------------------------------------------------------


def _anchor_generator(head: str, backbone: Any, sizes: Any, ratios: Any) -> tuple[Any, list]:
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    from visiontool.models.parts import probe

    maps = probe(backbone)
    size_groups, ratio_groups = grid_anchors(head, [m.stride for m in maps], sizes, ratios)
    return AnchorGenerator(sizes=size_groups, aspect_ratios=ratio_groups), maps


@registry.register(
    "head",
    "frcnn",
    fpn="any",
    layers="fpn",
    extra_blocks="pool",
    description="Faster R-CNN (two-stage: RPN + RoI heads)",
)
def frcnn(
    *,
    backbone: Any,
    num_classes: int,
    anchor_sizes: Any = None,
    anchor_ratios: Any = None,
    min_size: int = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    representation_size: int = 1024,
) -> Any:
    """`representation_size`: width of the two-layer box head (torchvision uses 1024; the
    box head is most of a light model's size: 256*7*7*1024 = 12.8M weights)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    anchors, maps = _anchor_generator("frcnn", backbone, anchor_sizes, anchor_ratios)
    names = [m.name for m in maps if m.name != "pool"] or [maps[0].name]
    box_head = TwoMLPHead(backbone.out_channels * 7 * 7, representation_size)
    return FasterRCNN(
        backbone,
        num_classes=None,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
        min_size=min_size,
        max_size=max_size,
        image_mean=_list(image_mean),
        image_std=_list(image_std),
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2),
    )


@registry.register(
    "head",
    "retinanet",
    fpn=True,
    layers="dense",
    extra_blocks="p6p7",
    description="RetinaNet (one-stage, focal loss)",
)
def retinanet(
    *,
    backbone: Any,
    num_classes: int,
    anchor_sizes: Any = None,
    anchor_ratios: Any = None,
    min_size: int = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
) -> Any:
    from torchvision.models.detection import RetinaNet

    anchors, _ = _anchor_generator("retinanet", backbone, anchor_sizes, anchor_ratios)
    return RetinaNet(backbone, num_classes=num_classes, anchor_generator=anchors,
                 **_transform_args(min_size, max_size, image_mean, image_std))  # fmt: skip


@registry.register(
    "head",
    "fcos",
    fpn=True,
    layers="dense",
    extra_blocks="p6p7",
    description="FCOS (anchor-free, one-stage)",
)
def fcos(
    *,
    backbone: Any,
    num_classes: int,
    anchor_sizes: Any = None,
    anchor_ratios: Any = None,
    min_size: int = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
) -> Any:
    from torchvision.models.detection import FCOS

    anchors, _ = _anchor_generator("fcos", backbone, anchor_sizes, anchor_ratios)
    return FCOS(backbone, num_classes=num_classes, anchor_generator=anchors,
                 **_transform_args(min_size, max_size, image_mean, image_std))  # fmt: skip


def _transform_args(
    min_size: int,
    max_size: int,
    image_mean: Sequence[float] | None,
    image_std: Sequence[float] | None,
) -> dict[str, Any]:
    """The GeneralizedRCNNTransform arguments every torchvision detector takes."""
    return {"min_size": min_size, "max_size": max_size, "image_mean": _list(image_mean),
            "image_std": _list(image_std)}  # fmt: skip


@registry.register(
    "head",
    "ssd",
    fpn=False,
    layers="ssd",
    fixed_size=300,
    description="SSD (multi-scale single shot, extra conv layers on the backbone)",
)
def ssd(
    *,
    backbone: Any,
    num_classes: int,
    anchor_sizes: Any = None,
    anchor_ratios: Any = None,
    size: int = 300,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
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

    return _ssd_family(
        backbone, block, head, SSD_EXTRA_CHANNELS, num_classes, anchor_sizes, anchor_ratios,
        size, image_mean, image_std, lite=False,
    )  # fmt: skip


@registry.register(
    "head",
    "ssdlite",
    fpn=False,
    layers="ssd",
    fixed_size=320,
    backbones=MOBILENET_BACKBONES,
    description="SSDlite (depthwise-separable SSD for MobileNet backbones)",
)
def ssdlite(
    *,
    backbone: Any,
    num_classes: int,
    anchor_sizes: Any = None,
    anchor_ratios: Any = None,
    size: int = 320,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
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

    model = _ssd_family(
        backbone, block, head, SSDLITE_EXTRA_CHANNELS, num_classes, anchor_sizes, anchor_ratios,
        size, image_mean, image_std, lite=True,
    )  # fmt: skip
    # torchvision's SSDlite320 post-processing settings
    model.score_thresh, model.nms_thresh = 0.001, 0.55
    model.detections_per_img, model.topk_candidates = 300, 300
    return model


def _ssd_family(
    backbone: Any,
    block: Any,
    make_head: Any,
    extra_channels: Sequence[int],
    num_classes: int,
    sizes: Any,
    ratios: Any,
    size: int,
    image_mean: Sequence[float] | None,
    image_std: Sequence[float] | None,
    *,
    lite: bool,
) -> Any:
    """SSD over backbone maps + extra stride-2 blocks, one head conv per level."""
    from torch import nn
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD

    from visiontool.models.parts import MultiScaleFeatures, probe

    last = probe(backbone)[-1].channels
    extras = nn.ModuleList()
    for channels in extra_channels:
        extras.append(block(last, channels))
        last = channels
    features = MultiScaleFeatures(backbone, extras)
    maps = probe(features)
    boxes = DefaultBoxGenerator(**ssd_box_options(len(maps), size, sizes, ratios, lite=lite))
    head = make_head([m.channels for m in maps], boxes.num_anchors_per_location())
    return SSD(
        features,
        boxes,
        (size, size),
        num_classes,
        image_mean=_list(image_mean),
        image_std=_list(image_std),
        head=head,
    )


def _list(values: Sequence[float] | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def prior_bias(probability: float = 0.01) -> float:
    """Initial classification bias so every anchor starts at `probability` (focal-loss prior)."""
    return -math.log((1 - probability) / probability)
