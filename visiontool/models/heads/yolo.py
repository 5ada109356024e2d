"""YOLOv2-style head: direct location prediction from 5 prior shapes on the backbone's last map
(stride 32) with a passthrough from the map before it (stride 16, space-to-depth by 2),
objectness trained towards IoU, optional multi-scale training.

The network itself is in `visiontool.models.onestage.yolo`; this module is its spec. Priors:
YOLOv2's VOC ones by default, or the shapes of an `anchors fit` file (`train --anchors FILE`,
the paper's k-means priors), or every size x ratio pair of `--anchor-sizes/--anchor-ratios`.
"""

from __future__ import annotations

import math
from typing import Any

from visiontool import registry
from visiontool.errors import ConfigError
from visiontool.models.heads import onestage_parts as parts


def priors(
    size: int, anchor_sizes: Any, anchor_ratios: Any, anchor_fit: dict[str, Any] | None
) -> list[tuple[float, float]] | None:
    """Prior (w, h) fractions of the input from the anchor options; None for the defaults."""
    if anchor_fit is not None:
        if anchor_sizes is not None or anchor_ratios is not None:
            raise ConfigError("pass --anchors FILE or --anchor-sizes/--anchor-ratios, not both")
        scale = float(anchor_fit.get("scale", 1.0))
        return [(w * scale / size, h * scale / size) for w, h in anchor_fit["wh"]]
    if anchor_sizes is None and anchor_ratios is None:
        return None
    sizes = _flat(anchor_sizes, "anchor sizes") or [size * 0.2, size * 0.4, size * 0.8]
    ratios = parts.one_ratio_group(anchor_ratios, "yolo") or (1.0,)
    return [(s * math.sqrt(r) / size, s / math.sqrt(r) / size) for s in sizes for r in ratios]


def _flat(values: Any, what: str) -> list[float] | None:
    if values is None:
        return None
    flat = [float(x) for v in values for x in (v if isinstance(v, (list, tuple)) else [v])]
    if not flat or min(flat) <= 0:
        raise ConfigError(f"yolo {what} must be positive numbers, got {values}")
    return flat


def build(
    *,
    backbone: Any,
    num_classes: int,
    size: int = 416,
    anchor_sizes: Any = None,
    anchor_ratios: Any = None,
    anchor_fit: dict[str, Any] | None = None,
    image_mean: Any = None,
    image_std: Any = None,
    width: int = 256,
    coord: float = 5.0,
    noobj: float = 0.5,
    ignore: float = 0.6,
    multiscale: bool = False,
    **_: Any,
) -> Any:
    from visiontool.models.onestage.yolo import VOC_PRIORS, YOLOv2

    if size % 32:
        raise ConfigError(f"yolo needs an input size that is a multiple of 32, got {size}")
    shapes = priors(size, anchor_sizes, anchor_ratios, anchor_fit) or VOC_PRIORS
    return YOLOv2(
        backbone, num_classes, size=size, priors=shapes, width=int(width), coord=float(coord),
        noobj=float(noobj), ignore=float(ignore), multiscale=bool(multiscale),
        image_mean=image_mean, image_std=image_std,
    )  # fmt: skip


SPEC = registry.add(
    "head",
    parts.head_spec(
        name="yolo",
        build=build,
        layers="ssd",  # the last two maps (stride 16 and 32 on ResNets): the passthrough
        default_backbone="resnet18",
        default_imgsz=416,
        arch_options=("width", "coord", "noobj", "ignore", "multiscale"),
        description="YOLOv2-style: 5 priors, direct location, multi-scale",
    ),
)
